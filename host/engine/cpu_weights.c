/* cpu_weights.c - see cpu_weights.h.
 *
 * Few rows (decode, up to SS_CPU_FUSED_ROWS): each 32-value block of a
 * weight row is decoded into four AVX2 registers and multiplied into four x
 * rows at once, so the weights are read once, in their stored size.  Many rows (prefill): blocks
 * of 64 weight rows are decoded into per-thread scratch and handed to
 * sgemm, where the decoding is a small part of the multiply-adds.  Both
 * decode with quant_avx2.h / ss_dequantize, so every weight is the value
 * gguf-py gives. */
#include "engine/cpu_weights.h"

#include "engine/cpu_ops.h"
#include "model/quant_avx2.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

#define SS_BLOCK 32 /* values per quantisation block (and per decode step) */
#define SS_CPU_DOT_ROWS 4 /* x rows per pass over a weight row: 8 accumulators */

/* Bytes of 32 values of a type. */
static size_t block_bytes(int type)
{
    return ss_type_row_bytes(type, SS_BLOCK);
}

const char *ss_cpu_weights_isa(void)
{
    return ss_have_avx2() ? "avx2" : "portable";
}

#ifdef SS_X86
SS_AVX2 static float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* y[r * ldy] = x[r][:] . row for r < n (n <= SS_CPU_DOT_ROWS).  Inlined
 * with constant type and n (dot_rows below), so the accumulators live in
 * registers and the block decoding has no branches. */
SS_AVX2 static inline __attribute__((always_inline)) void dot_rows_tn(float *y, size_t ldy,
                                                                      const float *x, int n,
                                                                      const uint8_t *row,
                                                                      int type, int in)
{
    __m256 acc[SS_CPU_DOT_ROWS][2];
    for (int r = 0; r < n; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    size_t bb = block_bytes(type);
    int nb = in / SS_BLOCK;
    for (int b = 0; b < nb; b++) {
        __m256 w[4];
        ss_avx2_decode_block(type, row + (size_t)b * bb, w);
#pragma GCC unroll 4
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * in + b * SS_BLOCK;
            acc[r][0] = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(xr), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(xr + 8), acc[r][1]);
            acc[r][0] = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(xr + 16), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(xr + 24), acc[r][1]);
        }
    }
    int rest = in - nb * SS_BLOCK;
    float tail[SS_BLOCK];
    if (rest)
        ss_dequantize(type, row + (size_t)nb * bb, tail, rest);
    for (int r = 0; r < n; r++) {
        float s = hsum(_mm256_add_ps(acc[r][0], acc[r][1]));
        for (int j = 0; j < rest; j++)
            s += tail[j] * x[(size_t)r * in + nb * SS_BLOCK + j];
        y[(size_t)r * ldy] = s;
    }
}

#define SS_DOT_N(T)                                                                          \
    switch (n) {                                                                             \
    case 1: dot_rows_tn(y, ldy, x, 1, row, T, in); break;                                    \
    case 2: dot_rows_tn(y, ldy, x, 2, row, T, in); break;                                    \
    case 3: dot_rows_tn(y, ldy, x, 3, row, T, in); break;                                    \
    default: dot_rows_tn(y, ldy, x, 4, row, T, in); break;                                   \
    }

SS_AVX2 static void dot_rows(float *y, size_t ldy, const float *x, int n, const uint8_t *row,
                             int type, int in)
{
    switch (type) {
    case SS_TYPE_F16: SS_DOT_N(SS_TYPE_F16); break;
    case SS_TYPE_BF16: SS_DOT_N(SS_TYPE_BF16); break;
    case SS_TYPE_Q8_0: SS_DOT_N(SS_TYPE_Q8_0); break;
    case SS_TYPE_Q4_0: SS_DOT_N(SS_TYPE_Q4_0); break;
    case SS_TYPE_Q4_1: SS_DOT_N(SS_TYPE_Q4_1); break;
    default: SS_DOT_N(SS_TYPE_F32); break;
    }
}
#undef SS_DOT_N
#endif

int ss_cpu_scratch_init(ss_cpu_scratch *s, int threads, int64_t max_in, ss_error *err)
{
    s->threads = threads;
    s->max_in = max_in;
    s->buf = ss_malloc((size_t)threads * SS_CPU_ROW_BLOCK * (size_t)max_in * sizeof(float), err);
    return s->buf ? 0 : ss_fail_context(err, "CPU engine: weight decoding scratch");
}

void ss_cpu_scratch_free(ss_cpu_scratch *s)
{
    free(s->buf);
    s->buf = NULL;
}

/* Few rows: every thread takes a range of weight rows and dots each with
 * all n rows of x, four at a time (the row stays in L1 after the first
 * four, so later groups pay only its decoding). */
static void matmul_fused(float *y, const float *x, const ss_tensor *t, int n, int in, int out,
                         int threads)
{
#ifdef SS_X86
    const uint8_t *w = t->data;
    size_t rb = ss_type_row_bytes(t->type, in);
#pragma omp parallel for schedule(static) num_threads(threads) if ((long)in * out >= (1L << 16))
    for (int o = 0; o < out; o++)
        for (int r0 = 0; r0 < n; r0 += SS_CPU_DOT_ROWS)
            dot_rows(y + (size_t)r0 * out + o, (size_t)out, x + (size_t)r0 * in,
                     n - r0 < SS_CPU_DOT_ROWS ? n - r0 : SS_CPU_DOT_ROWS,
                     w + (size_t)o * rb, t->type, in);
#else
    (void)y, (void)x, (void)t, (void)n, (void)in, (void)out, (void)threads;
#endif
}

/* Many rows (or no AVX2): blocks of weight rows decoded, then sgemm. */
static void matmul_decoded(float *y, const float *x, const ss_tensor *t, int n, int in, int out,
                           const ss_cpu_scratch *s)
{
    const uint8_t *w = t->data;
    size_t rb = ss_type_row_bytes(t->type, in);
    int n_blocks = (out + SS_CPU_ROW_BLOCK - 1) / SS_CPU_ROW_BLOCK;
#pragma omp parallel num_threads(s->threads) if ((long)n * in * out >= (1L << 18))
    {
        float *buf = s->buf + (size_t)omp_get_thread_num() * SS_CPU_ROW_BLOCK * s->max_in;
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < n_blocks; b++) {
            int o0 = b * SS_CPU_ROW_BLOCK;
            int m = out - o0 < SS_CPU_ROW_BLOCK ? out - o0 : SS_CPU_ROW_BLOCK;
            ss_dequantize(t->type, w + (size_t)o0 * rb, buf, (int64_t)m * in);
            if (n == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, m, in, 1.0f, buf, in, x, 1, 0.0f,
                            y + o0, 1);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, in, 1.0f, x, in, buf,
                            in, 0.0f, y + o0, out);
        }
    }
}

void ss_cpu_matmul_w(float *y, const float *x, const ss_tensor *t, int n, int in, int out,
                     const ss_cpu_scratch *s)
{
    if (t->type == SS_TYPE_F32)
        ss_cpu_matmul(y, x, t->data, n, in, out);
    else if (n <= SS_CPU_FUSED_ROWS && ss_have_avx2())
        matmul_fused(y, x, t, n, in, out, s->threads);
    else
        matmul_decoded(y, x, t, n, in, out, s);
}
