/* error.h - status reporting shared by every safesteer module.
 *
 * Library functions never exit: they return 0 on success or -1 on failure
 * and fill an ss_error whose message names the file, field and value at
 * fault.  The CLI prints the message and chooses the exit code. */
#ifndef SAFESTEER_ERROR_H
#define SAFESTEER_ERROR_H

#include <stddef.h>

#define SS_ERROR_MSG_MAX 1024

typedef struct {
    char msg[SS_ERROR_MSG_MAX];
} ss_error;

/* Formats msg into err (if err is non-NULL) and returns -1, so a failure
 * path reads: return ss_fail(err, "%s: field %s ...", path, key); */
int ss_fail(ss_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes the existing message ("context: old message"); returns -1. */
int ss_fail_context(ss_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocation helpers that report failure through err with the byte count. */
void *ss_malloc(size_t bytes, ss_error *err);
void *ss_calloc(size_t count, size_t size, ss_error *err);

#endif
