/* progress.c - see progress.h. */
#include "util/progress.h"

#include <stdio.h>
#include <time.h>

double ss_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void ss_progress_begin(ss_progress *p, const char *what, const char *unit, int64_t start,
                       int64_t total, int only_if_slow)
{
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->start = start;
    p->total = total;
    p->t0 = p->last = ss_seconds();
    p->printed = 0;
    p->only_if_slow = only_if_slow;
}

void ss_progress_update(ss_progress *p, int64_t done)
{
    double t = ss_seconds();
    int end = done >= p->total;
    if (t - p->last < 1.0 && !(end && (p->printed || !p->only_if_slow)))
        return;
    double el = t - p->t0, rate = el > 0 ? (double)(done - p->start) / el : 0;
    double eta = rate > 0 ? (double)(p->total - done) / rate : 0;
    fprintf(stderr, "%s: %lld/%lld %s, %.2f %s/s, elapsed %.0f s, ETA %.0f s\n", p->what,
            (long long)done, (long long)p->total, p->unit, rate, p->unit, el, eta);
    p->last = t;
    p->printed = 1;
}
