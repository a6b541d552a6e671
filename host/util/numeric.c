/* numeric.c - the seeded random stream and medians (see util.h). */
#include "safesteer/util.h"

#include <math.h>
#include <stdlib.h>

uint64_t ss_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t ss_splitmix64(uint64_t *state) { return ss_mix64(*state += 0x9e3779b97f4a7c15ULL); }

double ss_mix64_unit(uint64_t z) { return (double)(ss_mix64(z) >> 11) * 0x1.0p-53; }

double ss_splitmix64_unit(uint64_t *state)
{
    return (double)(ss_splitmix64(state) >> 11) * 0x1.0p-53;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double ss_median(double *x, int64_t n)
{
    if (n <= 0)
        return NAN;
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}
