/* device_check.h - what the device tests share: the SKIP line without a GPU
 * and the measures of CPU/CUDA agreement, with tolerances taken from the
 * error budget of bf16 arithmetic.
 *
 * The budget (scripts/reference/llama_numpy.py, docs/cuda.md): running
 * SmolLM2-135M with the CUDA engine's bf16 rounding instead of f32 moves
 * each token's hidden state by up to 1.7-2.4% (relative L2 of the worst
 * row), the last-token KL divergence to 2e-4-2.8e-3 and, at a top-2 gap of
 * 0.16, can change the greedy token.  Two correct bf16 engines differ from
 * each other by as much (summation order alone, a 1e-7 relative jitter,
 * carries that far through 30 layers), so no CPU reference gives a tighter
 * end-to-end bound; individual kernels are held to 1e-2 in
 * test_cuda_kernels.c instead.  Header-only: each test binary gets its own
 * copy. */
#ifndef SS_TESTS_DEVICE_CHECK_H
#define SS_TESTS_DEVICE_CHECK_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>

#include "kernels.h"
#include "variants.h"
#include "safesteer/engine.h"
#include "safesteer/sample.h"

/* worst row of a capture, relative L2 (budget 2.4%) */
#define SS_BF16_ROW_TOL 6e-2
/* KL(CPU || CUDA) of one token's next-token distribution (budget 2.8e-3) */
#define SS_BF16_KL_MAX 2e-2
/* CPU top-2 logit gap under which CUDA may pick the other token */
#define SS_MARGIN 0.5f

static inline void skip_without_gpu(void)
{
    char why[256];
    if (ss_cuda_device_count(why, sizeof why) == 0) {
        printf("SKIP: no CUDA device (%s)\n", why);
        fflush(stdout);
        cr_skip_test("no CUDA device (%s)", why);
    }
}

/* ||out - ref|| / ||ref|| over n values; fails on any NaN in out. */
static inline double rel_l2(const float *out, const float *ref, size_t n, const char *what)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(!isnan(out[i]), "%s: NaN (unwritten?) at %zu", what, i);
        double dd = (double)out[i] - ref[i];
        num += dd * dd;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Largest rel_l2 of one row of d values among n rows: a whole-array error
 * would let rows of large norm (the first token's, in most Llamas) hide
 * the others. */
static inline double worst_row_l2(const float *out, const float *ref, int n, int d,
                                  const char *what)
{
    double worst = 0.0;
    for (int i = 0; i < n; i++) {
        double e = rel_l2(out + (size_t)i * d, ref + (size_t)i * d, (size_t)d, what);
        worst = e > worst ? e : worst;
    }
    return worst;
}

/* Gap between the largest and second largest logit. */
static inline float top2_gap(const float *l, int n)
{
    int ids[2];
    float vals[2];
    ss_top_k(l, n, 2, ids, vals);
    return vals[0] - vals[1];
}

/* KL(softmax(ref) || softmax(x)) in nats, in double. */
static inline double logits_kl(const float *ref, const float *x, int n)
{
    double mr = ref[0], mx = x[0], sr = 0.0, sx = 0.0, kl = 0.0;
    for (int i = 1; i < n; i++) {
        mr = ref[i] > mr ? ref[i] : mr;
        mx = x[i] > mx ? x[i] : mx;
    }
    for (int i = 0; i < n; i++) {
        sr += exp(ref[i] - mr);
        sx += exp(x[i] - mx);
    }
    double lr0 = mr + log(sr), lx0 = mx + log(sx);
    for (int i = 0; i < n; i++) {
        double lr = ref[i] - lr0;
        kl += exp(lr) * (lr - (x[i] - lx0));
    }
    return kl;
}

/* CUDA logits agree with the CPU's within the bf16 budget: KL below
 * SS_BF16_KL_MAX and the same top token unless the CPU's top two are
 * within SS_MARGIN.  Prints the measures. */
static inline void expect_logits_agree(const float *gpu, const float *cpu, int n,
                                       const char *what)
{
    for (int i = 0; i < n; i++)
        cr_assert(isfinite(gpu[i]), "%s: logit %d is %g", what, i, (double)gpu[i]);
    double kl = logits_kl(cpu, gpu, n);
    int tg = ss_argmax(gpu, n), tc = ss_argmax(cpu, n);
    float gap = top2_gap(cpu, n);
    fprintf(stderr, "%s: KL(CPU || CUDA) %.3g, top token CUDA %d CPU %d (CPU top-2 gap %.3f)\n",
            what, kl, tg, tc, gap);
    cr_expect_leq(kl, SS_BF16_KL_MAX, "%s: KL(CPU || CUDA) %g > %g", what, kl, SS_BF16_KL_MAX);
    cr_expect(tg == tc || gap < SS_MARGIN,
              "%s: CUDA's top token %d, CPU's %d with top-2 gap %g >= %g", what, tg, tc, gap,
              SS_MARGIN);
}

#endif
