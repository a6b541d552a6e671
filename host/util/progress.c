/* progress.c - the monotonic clock and progress reports (see util.h). */
#include "safesteer/util.h"

#include <stdio.h>
#include <time.h>

double ss_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void ss_progress_begin(ss_progress *p, const ss_progress_sink *sink, const char *task,
                       const char *unit, int64_t start, int64_t total, int only_if_slow)
{
    p->sink = sink ? *sink : (ss_progress_sink){0};
    snprintf(p->task, sizeof p->task, "%s", task);
    p->unit = unit;
    p->start = start;
    p->total = total;
    p->t0 = p->last = ss_seconds();
    p->reported = 0;
    p->only_if_slow = only_if_slow;
}

int ss_progress_update(ss_progress *p, int64_t done, ss_error *err)
{
    if (!p->sink.fn)
        return 0;
    double t = ss_seconds();
    int end = done >= p->total;
    if (t - p->last < 1.0 && !(end && (p->reported || !p->only_if_slow)))
        return 0;
    double el = t - p->t0, rate = el > 0 ? (double)(done - p->start) / el : 0;
    ss_progress_report r = {.task = p->task, .unit = p->unit, .done = done, .total = p->total,
                            .elapsed = el, .rate = rate,
                            .eta = rate > 0 ? (double)(p->total - done) / rate : 0,
                            .final = end};
    p->last = t;
    p->reported = 1;
    if (p->sink.fn(p->sink.user, &r))
        return ss_fail_kind(err, SS_ERR_STOPPED, "%s: stopped at %lld of %lld %s", p->task,
                            (long long)done, (long long)p->total, p->unit);
    return 0;
}
