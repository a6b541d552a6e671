/* error.c - ss_error formatting and checked allocation. */
#include "safesteer/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ss_fail(ss_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->kind = SS_ERR_FAILED;
    }
    return -1;
}

int ss_fail_kind(ss_error *err, int kind, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->kind = kind;
    }
    return -1;
}

int ss_fail_context(ss_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[SS_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    /* "prefix: old", cut to the buffer; the old message moves right. */
    size_t plen = strlen(prefix), olen = strlen(err->msg), cap = sizeof err->msg - 1;
    if (plen + 2 > cap)
        plen = cap - 2;
    if (plen + 2 + olen > cap)
        olen = cap - plen - 2;
    memmove(err->msg + plen + 2, err->msg, olen);
    memcpy(err->msg, prefix, plen);
    memcpy(err->msg + plen, ": ", 2);
    err->msg[plen + 2 + olen] = '\0';
    return -1;
}

void *ss_malloc(size_t bytes, ss_error *err)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        ss_fail(err, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *ss_calloc(size_t count, size_t size, ss_error *err)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        ss_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
