/* cpu_ops.c - f32 building blocks of the CPU engine (see cpu_ops.h).
 *
 * Reductions that decide accuracy (norms, dot products for ablation, rotary
 * angles) run in double; the bulk arithmetic stays f32 and goes through
 * OpenBLAS where it is a matrix product. */
#include "engine/cpu_ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

void ss_cpu_rmsnorm(float *out, const float *x, const float *w, int n, int d, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        double ss = 0.0;
        for (int j = 0; j < d; j++)
            ss += (double)xi[j] * xi[j];
        /* scale computed before any write, so out may alias x */
        float scale = (float)(1.0 / sqrt(ss / d + eps));
        for (int j = 0; j < d; j++)
            oi[j] = xi[j] * scale * w[j];
    }
}

/* Threads split the output columns (rows of W) and each calls BLAS on its
 * slice: one OpenMP pool does all the parallel work, and OpenBLAS (set to
 * one thread by the engine) never spins against it for the same cores. */
void ss_cpu_matmul(float *y, const float *x, const float *w, int n, int in, int out)
{
    /* below ~256k multiply-adds a fork/join costs more than it saves */
#pragma omp parallel if ((long)n * in * out >= (1L << 18))
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        /* slices of whole 16-column groups keep the BLAS kernels aligned */
        int groups = (out + 15) / 16;
        int o0 = (int)((long)groups * t / nt) * 16, o1 = (int)((long)groups * (t + 1) / nt) * 16;
        if (o1 > out)
            o1 = out;
        int m = o1 - o0;
        if (m > 0 && n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, m, in, 1.0f, w + (size_t)o0 * in, in, x,
                        1, 0.0f, y + o0, 1);
        else if (m > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, in, 1.0f, x, in,
                        w + (size_t)o0 * in, in, 0.0f, y + o0, out);
    }
}

/* Llama 3.1 frequency remapping: long wavelengths are slowed by `factor`,
 * short ones kept, the band between interpolated smoothly. */
static double llama3_scale(const ss_config *cfg, double freq)
{
    const double pi = 3.14159265358979323846;
    double wavelen = 2.0 * pi / freq;
    double orig = cfg->rope_orig_ctx;
    double low = cfg->rope_low_freq_factor, high = cfg->rope_high_freq_factor;
    if (wavelen < orig / high)
        return freq;
    if (wavelen > orig / low)
        return freq / cfg->rope_factor;
    double smooth = (orig / wavelen - low) / (high - low);
    return (1.0 - smooth) * freq / cfg->rope_factor + smooth * freq;
}

void ss_cpu_rope_inv_freq(const ss_config *cfg, float *inv_freq)
{
    int half = cfg->head_dim / 2;
    for (int j = 0; j < half; j++) {
        double f = pow((double)cfg->rope_theta, -2.0 * j / cfg->head_dim);
        if (cfg->rope_scaling == SS_ROPE_SCALING_LLAMA3)
            f = llama3_scale(cfg, f);
        inv_freq[j] = (float)f;
    }
}

void ss_cpu_rope(float *x, const int *pos, int n, int n_heads, const ss_config *cfg,
                 const float *inv_freq)
{
    int hd = cfg->head_dim, half = hd / 2;
    /* partner of element j is j+1 (interleaved) or j+half (split halves) */
    int stride = cfg->rope_neox ? 1 : 2;
    int partner = cfg->rope_neox ? half : 1;
#pragma omp parallel for schedule(static) if (n > 8)
    for (int i = 0; i < n; i++) {
        float *row = x + (size_t)i * n_heads * hd;
        for (int j = 0; j < half; j++) {
            /* angle in double: pos * freq loses digits in f32 past a few
             * thousand positions */
            double a = (double)pos[i] * inv_freq[j];
            float c = (float)cos(a), s = (float)sin(a);
            for (int h = 0; h < n_heads; h++) {
                float *p = row + (size_t)h * hd + (size_t)j * stride;
                float x0 = p[0], x1 = p[partner];
                p[0] = x0 * c - x1 * s;
                p[partner] = x0 * s + x1 * c;
            }
        }
    }
}

void ss_cpu_swiglu(float *out, const float *gate, const float *up, int n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* Keys are taken in blocks: scores of the block first, then one rescale of
 * the running sums by the block's maximum, then the weighted values, so the
 * exponentials and the rescaling run once per key and once per block
 * rather than branching per key.  The query heads sharing a K/V head take
 * each block in turn (up to SS_ATTN_HEADS at once), so the block is read
 * from memory once for all of them and from L1/L2 after.  Every head's
 * arithmetic is the same whichever heads run beside it.  AVX2 clone where
 * the CPU has it. */
#define SS_ATTN_KBLOCK 64
#define SS_ATTN_HEADS 8

/* Eight floats in one vector register (AVX2) or two (SSE2 clone). */
typedef float ss_v8 __attribute__((vector_size(32)));

/* (vectors go by pointer: by value, the SSE2 clone's ABI would differ) */
static inline __attribute__((always_inline)) void load8(ss_v8 *v, const float *p)
{
    memcpy(v, p, sizeof *v);
}

/* The eight partial sums of a dot product, added pairwise. */
static inline __attribute__((always_inline)) float hsum8(const ss_v8 *a)
{
    const float *p = (const float *)a;
    return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

/* q . k over n values: eight partial sums (no reduction through memory
 * per key), then the tail. */
static inline __attribute__((always_inline)) float dot8(const float *q, const float *k, int n)
{
    ss_v8 a = {0}, qv, kv;
    int d = 0;
    for (; d + 8 <= n; d += 8) {
        load8(&qv, q + d);
        load8(&kv, k + d);
        a += qv * kv;
    }
    float s = hsum8(&a);
    for (; d < n; d++)
        s += q[d] * k[d];
    return s;
}

/* dot8 of q against four keys k0, k0 + stride, ... at once: four
 * independent chains keep four key rows' loads in flight together, and
 * each score is summed exactly as dot8 sums it. */
static inline __attribute__((always_inline)) void dot8x4(float *out, const float *q,
                                                          const float *k0, size_t stride, int n)
{
    const float *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    ss_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, qv, k;
    int d = 0;
    for (; d + 8 <= n; d += 8) {
        load8(&qv, q + d);
        load8(&k, k0 + d);
        a0 += qv * k;
        load8(&k, k1 + d);
        a1 += qv * k;
        load8(&k, k2 + d);
        a2 += qv * k;
        load8(&k, k3 + d);
        a3 += qv * k;
    }
    out[0] = hsum8(&a0);
    out[1] = hsum8(&a1);
    out[2] = hsum8(&a2);
    out[3] = hsum8(&a3);
    for (; d < n; d++) {
        out[0] += q[d] * k0[d];
        out[1] += q[d] * k1[d];
        out[2] += q[d] * k2[d];
        out[3] += q[d] * k3[d];
    }
}

/* One key block [t0, t0 + nk) for one query head: scores, rescale of the
 * running max *m, sum *l and output acc[head_dim], weighted values. */
static inline __attribute__((always_inline)) void
    attend_block(float *acc, float *m, float *l, const float *qi, const float *kp, const float *vp,
                 int nk, size_t kv_stride, int head_dim, float scale)
{
    float p[SS_ATTN_KBLOCK], block_max = -INFINITY;
    int j = 0;
    for (; j + 4 <= nk; j += 4)
        dot8x4(p + j, qi, kp + j * kv_stride, kv_stride, head_dim);
    for (; j < nk; j++)
        p[j] = dot8(qi, kp + j * kv_stride, head_dim);
    for (j = 0; j < nk; j++) {
        p[j] *= scale;
        block_max = p[j] > block_max ? p[j] : block_max;
    }
    if (block_max > *m) { /* the first block scales the zeros by 0 */
        float r = expf(*m - block_max);
        *l *= r;
        for (int d = 0; d < head_dim; d++)
            acc[d] *= r;
        *m = block_max;
    }
    for (j = 0; j < nk; j++) {
        p[j] = expf(p[j] - *m);
        *l += p[j];
    }
    /* four keys per pass over acc: a quarter of its loads and stores */
    for (j = 0; j + 4 <= nk; j += 4) {
        const float *v0 = vp + j * kv_stride, *v1 = v0 + kv_stride;
        const float *v2 = v1 + kv_stride, *v3 = v2 + kv_stride;
#pragma omp simd
        for (int d = 0; d < head_dim; d++)
            acc[d] += p[j] * v0[d] + p[j + 1] * v1[d] + p[j + 2] * v2[d] + p[j + 3] * v3[d];
    }
    for (; j < nk; j++)
#pragma omp simd
        for (int d = 0; d < head_dim; d++)
            acc[d] += p[j] * vp[j * kv_stride + d];
}

/* clang before 15 names the resolver "NAME.ifunc", so other files cannot
 * call a target_clones function (the sanitizer/fuzz build uses clang 14). */
#if defined(__clang__) && __clang_major__ < 15
#define SS_CLONES_AVX2
#else
#define SS_CLONES_AVX2 __attribute__((target_clones("avx2", "default")))
#endif
SS_CLONES_AVX2
void ss_cpu_attention_heads(float *out, const float *q, const float *k, const float *v, int n_q,
                            int q_pos0, int head0, int n_head, int n_heads, int n_kv_heads,
                            int head_dim)
{
    int kv_head = head0 / (n_heads / n_kv_heads), end = head0 + n_head;
    size_t q_stride = (size_t)n_heads * head_dim, kv_stride = (size_t)n_kv_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    const float *kh = k + (size_t)kv_head * head_dim, *vh = v + (size_t)kv_head * head_dim;
    for (int i = 0; i < n_q; i++) {
        int n_keys = q_pos0 + i + 1;
        for (int h0 = head0; h0 < end; h0 += SS_ATTN_HEADS) {
            int nh = end - h0 < SS_ATTN_HEADS ? end - h0 : SS_ATTN_HEADS;
            const float *qi = q + i * q_stride + (size_t)h0 * head_dim;
            float *acc = out + i * q_stride + (size_t)h0 * head_dim; /* [nh][head_dim] */
            /* online softmax per head: running max m and normaliser l, so no
             * score buffer of context length is needed */
            float m[SS_ATTN_HEADS], l[SS_ATTN_HEADS];
            for (int c = 0; c < nh; c++) {
                m[c] = -INFINITY;
                l[c] = 0.0f;
            }
            for (int d = 0; d < nh * head_dim; d++)
                acc[d] = 0.0f;
            for (int t0 = 0; t0 < n_keys; t0 += SS_ATTN_KBLOCK) {
                int nk = n_keys - t0 < SS_ATTN_KBLOCK ? n_keys - t0 : SS_ATTN_KBLOCK;
                for (int c = 0; c < nh; c++)
                    attend_block(acc + (size_t)c * head_dim, &m[c], &l[c],
                                 qi + (size_t)c * head_dim, kh + (size_t)t0 * kv_stride,
                                 vh + (size_t)t0 * kv_stride, nk, kv_stride, head_dim, scale);
            }
            for (int c = 0; c < nh; c++) {
                float inv = 1.0f / l[c];
                for (int d = 0; d < head_dim; d++)
                    acc[(size_t)c * head_dim + d] *= inv;
            }
        }
    }
}

void ss_cpu_attention(float *out, const float *q, const float *k, const float *v, int n_q,
                      int q_pos0, int n_heads, int n_kv_heads, int head_dim)
{
    long work = (long)n_q * (q_pos0 + n_q) * n_heads * head_dim;
    int group = n_heads / n_kv_heads;
#pragma omp parallel for schedule(dynamic, 1) if (work >= (1L << 16))
    for (int g = 0; g < n_kv_heads; g++)
        ss_cpu_attention_heads(out, q, k, v, n_q, q_pos0, g * group, group, n_heads, n_kv_heads,
                               head_dim);
}

void ss_cpu_steer(float *h, int n, int d, int pos0, int op, float alpha, const float *v,
                  int pos_begin, int pos_end)
{
    if (alpha == 0.0f)
        return;
    for (int i = 0; i < n; i++) {
        int p = pos0 + i;
        if (p < pos_begin || (pos_end >= 0 && p >= pos_end))
            continue;
        float *hi = h + (size_t)i * d;
        if (op == SS_STEER_ADD) {
            for (int j = 0; j < d; j++)
                hi[j] += alpha * v[j];
        } else {
            double dot = 0.0;
            for (int j = 0; j < d; j++)
                dot += (double)hi[j] * v[j];
            float c = (float)dot;
            for (int j = 0; j < d; j++)
                hi[j] -= c * v[j];
        }
    }
}
