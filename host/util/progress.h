/* progress.h - the monotonic clock every timing in the library reads, and
 * one-line progress reports on stderr for long loops (capture, vector
 * passes, clustering):
 *   "WHAT: DONE/TOTAL UNIT, R UNIT/s, elapsed E s, ETA T s"
 * at most once a second, and once more when the loop ends. */
#ifndef SAFESTEER_PROGRESS_H
#define SAFESTEER_PROGRESS_H

#include <stdint.h>

/* Seconds on a monotonic clock (differences only). */
double ss_seconds(void);

typedef struct {
    char what[96];
    const char *unit;
    int64_t start, total;  /* items done before this run (a resume), items in all */
    double t0, last;
    int printed;
    int only_if_slow;      /* 1: nothing at all for loops that end within a second */
} ss_progress;

void ss_progress_begin(ss_progress *p, const char *what, const char *unit, int64_t start,
                       int64_t total, int only_if_slow);
void ss_progress_update(ss_progress *p, int64_t done);

#endif
