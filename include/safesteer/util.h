/* util.h - what every safesteer module shares: error reporting, checked
 * allocation, the monotonic clock, progress reports, the seeded random
 * stream, whole-file reads, medians and SHA-256 fingerprints.
 *
 * Library functions never print and never exit: they return 0 on success or
 * -1 on failure and fill an ss_error whose message names the file, field or
 * parameter and the value at fault.  Front ends (the CLI, the Python
 * package) print the message, add their own option names and remedies
 * (keyed on ss_error.kind) and choose the exit code. */
#ifndef SAFESTEER_UTIL_H
#define SAFESTEER_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- errors */

#define SS_ERROR_MSG_MAX 1024

/* What a front end can do about a failure, beyond showing the message. */
typedef enum {
    SS_ERR_FAILED = 0,     /* anything else */
    SS_ERR_EXISTS = 1,     /* an output already exists and would be overwritten (force it) */
    SS_ERR_INCOMPLETE = 2, /* a file holds an unfinished run (resume it, or delete it) */
    SS_ERR_STOPPED = 3,    /* the progress sink asked to stop (Ctrl-C) */
} ss_error_kind;

typedef struct {
    char msg[SS_ERROR_MSG_MAX];
    int kind;              /* ss_error_kind */
} ss_error;

/* Formats msg into err (if err is non-NULL), sets kind SS_ERR_FAILED and
 * returns -1, so a failure path reads: return ss_fail(err, "%s: ...", path); */
int ss_fail(ss_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ss_fail with a kind. */
int ss_fail_kind(ss_error *err, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes the existing message ("context: old message"), keeps the kind;
 * returns -1. */
int ss_fail_context(ss_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation that reports failure through err with the byte count. */
void *ss_malloc(size_t bytes, ss_error *err);
void *ss_calloc(size_t count, size_t size, ss_error *err);

/* ---------------------------------------------------------------- time and progress */

/* Seconds on a monotonic clock (differences only). */
double ss_seconds(void);

/* One progress report of a long loop (capture, vector passes, clustering,
 * sweeps, generation). */
typedef struct {
    const char *task;      /* "capture", "vectors: pass 2 of at most 4 (norms)", ... */
    const char *unit;      /* "prompts", "generations", ... */
    int64_t done, total;
    double elapsed, rate;  /* seconds since the loop began; units per second */
    double eta;            /* seconds left at that rate */
    int final;             /* 1: the loop's last report */
} ss_progress_report;

/* Receives reports, at most one a second and one when the loop ends; returns
 * 0 to go on or non-zero to stop the work, which then fails with kind
 * SS_ERR_STOPPED.  fn NULL: no reports. */
typedef struct {
    int (*fn)(void *user, const ss_progress_report *r);
    void *user;
} ss_progress_sink;

/* The state of one loop's reporting. */
typedef struct {
    ss_progress_sink sink;
    char task[96];
    const char *unit;
    int64_t start, total;  /* items done before this run (a resume), items in all */
    double t0, last;
    int reported;
    int only_if_slow;      /* 1: no report at all for loops that end within a second */
} ss_progress;

void ss_progress_begin(ss_progress *p, const ss_progress_sink *sink, const char *task,
                       const char *unit, int64_t start, int64_t total, int only_if_slow);
/* done items so far: reports when due; -1 with err "TASK: stopped" (kind
 * SS_ERR_STOPPED) when the sink asks to stop. */
int ss_progress_update(ss_progress *p, int64_t done, ss_error *err);

/* ---------------------------------------------------------------- numbers */

/* splitmix64: the next value of the stream *state (which it advances). The
 * same seed gives the same stream on every machine. */
uint64_t ss_splitmix64(uint64_t *state);
/* splitmix64's finaliser: a well-mixed hash of z. */
uint64_t ss_mix64(uint64_t z);
/* Uniform in [0, 1) with 53 bits: of the stream, or of a hash of z. */
double ss_splitmix64_unit(uint64_t *state);
double ss_mix64_unit(uint64_t z);

/* numpy.median of x[n] (sorts x in place): the middle value, or the mean of
 * the two middle values; NaN for n = 0. */
double ss_median(double *x, int64_t n);

/* ---------------------------------------------------------------- files */

/* The whole file, malloc'd and NUL-terminated (*len, when len is not NULL,
 * excludes the NUL). */
int ss_read_file(const char *path, char **buf, size_t *len, ss_error *err);

/* ---------------------------------------------------------------- SHA-256 */

/* Streaming SHA-256 (FIPS 180-4) for the model and data fingerprints that
 * capture, vector and sweep files record. */
typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;      /* message length so far */
    uint8_t block[64];     /* pending partial block */
    size_t n_block;
} ss_sha256;

void ss_sha256_init(ss_sha256 *s);
void ss_sha256_update(ss_sha256 *s, const void *data, size_t len);
/* Writes the digest as 64 lowercase hex digits + NUL into hex[65]. */
void ss_sha256_final_hex(ss_sha256 *s, char hex[65]);
/* Hashes a file in 1 MiB reads (memory stays bounded). */
int ss_sha256_add_file(ss_sha256 *s, const char *path, ss_error *err);
/* The hex digest of a whole file. */
int ss_sha256_file(const char *path, char hex[65], ss_error *err);

#endif
