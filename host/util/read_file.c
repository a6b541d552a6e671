/* read_file.c - whole-file reads (see util.h). */
#include "safesteer/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ss_read_file(const char *path, char **buf, size_t *len, ss_error *err)
{
    *buf = NULL;
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return ss_fail(err, "%s: cannot open: %s", path, strerror(errno));
    /* read until EOF rather than trusting a size: pipes and /proc files have none */
    size_t cap = 1 << 16, n = 0;
    char *b = ss_malloc(cap, err);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *nb = cap < ((size_t)1 << 62) ? realloc(b, cap * 2) : NULL;
        if (!nb)
            free(b);
        b = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!b)
        return ss_fail(err, "%s: out of memory reading the file", path);
    if (bad) {
        free(b);
        return ss_fail(err, "%s: read error: %s", path, strerror(errno));
    }
    b[n] = '\0';
    *buf = b;
    if (len)
        *len = n;
    return 0;
}
