/* stats.c - the statistics behind a sweep's tables (95% Wilson intervals,
 * the exact McNemar test of a steered cell against its baseline) and the
 * per-generation repetition flag (see eval.h). */
#include "safesteer/eval.h"

#include <math.h>

/* Standard normal quantile at 0.975: the two-sided 95% interval. */
#define Z_95 1.959963984540054

void ss_eval_wilson(long k, long n, double *lo, double *hi)
{
    if (n <= 0 || k < 0 || k > n) {
        *lo = *hi = NAN;
        return;
    }
    double p = (double)k / n, z2n = Z_95 * Z_95 / n;
    double centre = (p + z2n / 2) / (1 + z2n);
    double half = Z_95 / (1 + z2n) * sqrt(p * (1 - p) / n + z2n / (4.0 * n));
    /* the bounds are exactly 0 and 1 at k = 0 and k = n; rounding would
     * leave them a few ulps off */
    *lo = k == 0 ? 0 : centre - half;
    *hi = k == n ? 1 : centre + half;
}

double ss_eval_mcnemar_exact(long b, long c)
{
    if (b < 0 || c < 0)
        return NAN;
    long n = b + c, m = b < c ? b : c;
    if (n == 0)
        return 1;
    /* two-sided: twice the Binomial(n, 1/2) tail at the smaller count */
    double tail = 0, log_all = lgamma(n + 1.0) - n * log(2.0);
    for (long i = 0; i <= m; i++)
        tail += exp(log_all - lgamma(i + 1.0) - lgamma(n - i + 1.0));
    return 2 * tail < 1 ? 2 * tail : 1;
}

int ss_eval_degenerate(const int32_t *ids, int n)
{
    for (int period = 1; period <= SS_DEGENERATE_MAX_PERIOD; period++) {
        int run = 0;   /* positions i with ids[i] == ids[i - period], consecutively */
        for (int i = period; i < n; i++) {
            run = ids[i] == ids[i - period] ? run + 1 : 0;
            int span = run + period;   /* tokens of the repeated stretch */
            if (span >= SS_DEGENERATE_MIN_REPEATS * period && 2 * span >= n)
                return 1;
        }
    }
    return 0;
}
