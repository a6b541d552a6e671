/* fuzz_common.h - what the libFuzzer targets in tests/fuzz share.
 *
 * The project's readers take paths, so each input is written to a file in a
 * scratch folder private to the process (under /dev/shm when it exists).
 * Besides the sanitizers, every target has a validity oracle: an input the
 * reader accepts must pass the target's own checks, and an input it refuses
 * must get a message naming the file (fuzz_refused).  A broken promise
 * aborts, so libFuzzer keeps the input. */
#ifndef SS_FUZZ_COMMON_H
#define SS_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"

/* Writes data[size] to SCRATCH/name (name may contain one folder level,
 * created on demand) and returns the full path (static storage per name
 * slot: valid until the next call with the same name). */
const char *fuzz_write(const char *name, const void *data, size_t size);
/* SCRATCH/name without writing anything. */
const char *fuzz_path(const char *name);

/* The reader refused the input: its message must not be empty and must
 * name `file` (a path fuzz_write returned, or a folder).  With
 * $SS_FUZZ_VERBOSE set, prints it (to see why a seed is refused). */
void fuzz_refused(const ss_error *err, const char *file);

/* The oracle rejects what the reader accepted: prints and aborts. */
_Noreturn void fuzz_reject(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Splits the input at the first occurrence of sep (a few bytes unlikely in
 * real files): *a gets what is before, *b what is after (NULL/0 if absent). */
void fuzz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **a,
                size_t *na, const uint8_t **b, size_t *nb);

#endif
