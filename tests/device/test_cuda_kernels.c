/* test_cuda_kernels.c - every CUDA kernel against its host/engine/cpu_ops.h
 * reference on fresh random inputs, at the shapes of Llama-3 8B (d_model
 * 4096, 32 heads, 8 kv heads, head_dim 128) and SmolLM2-135M (576, 9, 3, 64).
 * Outputs are poisoned with NaN before each run; checks: no NaN, relative
 * L2 error < 1e-2 on bf16 paths (tighter where the path is f32).
 * Without a CUDA device each test prints "SKIP: no CUDA device (...)". */
#include <criterion/criterion.h>
#include "safesteer/sample.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu_ops.h"
#include "device_check.h"

/* ---------------------------------------------------------------- helpers */

static ss_cuda_ctx *ctx_or_skip(void)
{
    skip_without_gpu();
    ss_error err;
    ss_cuda_ctx *c = NULL;
    cr_assert_eq(ss_cuda_ctx_create(0, &c, &err), 0, "%s", err.msg);
    return c;
}

static uint64_t rng_state = 0x243f6a8885a308d3ull;

static float frand(void) /* uniform [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(rng_state >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static float *rand_f32(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    cr_assert(p);
    for (size_t i = 0; i < n; i++)
        p[i] = scale * frand();
    return p;
}

/* Rounds x to bf16 in place and returns the bf16 copy. */
static uint16_t *round_bf16(float *x, size_t n)
{
    uint16_t *b = malloc(n * sizeof *b);
    cr_assert(b);
    ss_cuda_host_f32_to_bf16(b, x, n);
    ss_cuda_host_bf16_to_f32(x, b, n);
    return b;
}

static void *dev_from(const void *h, size_t bytes)
{
    ss_error err;
    void *d = ss_cuda_malloc(bytes, &err);
    cr_assert(d, "%s", err.msg);
    if (h)
        cr_assert_eq(ss_cuda_upload(d, h, bytes, &err), 0, "%s", err.msg);
    return d;
}

static void *dev_poisoned(size_t bytes)
{
    ss_error err;
    void *d = dev_from(NULL, bytes);
    cr_assert_eq(ss_cuda_poison(d, bytes, &err), 0, "%s", err.msg);
    return d;
}

static float *host_f32(const float *d, size_t n)
{
    ss_error err;
    float *h = malloc(n * sizeof *h);
    cr_assert(h);
    cr_assert_eq(ss_cuda_download(h, d, n * sizeof *h, &err), 0, "%s", err.msg);
    return h;
}

static float *host_bf16(const uint16_t *d, size_t n)
{
    ss_error err;
    uint16_t *b = malloc(n * sizeof *b);
    float *h = malloc(n * sizeof *h);
    cr_assert(b && h);
    cr_assert_eq(ss_cuda_download(b, d, n * sizeof *b, &err), 0, "%s", err.msg);
    ss_cuda_host_bf16_to_f32(h, b, n);
    free(b);
    return h;
}

static void check(ss_cuda_ctx *c, int rc, ss_error *err)
{
    cr_assert_eq(rc, 0, "%s", err->msg);
    cr_assert_eq(ss_cuda_sync(c, err), 0, "%s", err->msg);
}

typedef struct {
    const char *name;
    int d, n_heads, n_kv, hd, d_ff;
} shape;

static const shape shapes[] = {
    {"llama3-8b", 4096, 32, 8, 128, 14336},
    {"smollm2-135m", 576, 9, 3, 64, 1536},
};

/* ---------------------------------------------------------------- tests */

Test(cuda_kernels, rmsnorm_and_gather)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_error err;
    for (int si = 0; si < 2; si++) {
        int n = 7, d = shapes[si].d;
        float *x = rand_f32((size_t)n * d, 3.0f), *w = rand_f32((size_t)d, 1.0f);
        float *ref = malloc((size_t)n * d * sizeof *ref);
        ss_cpu_rmsnorm(ref, x, w, n, d, 1e-5f);
        float *dx = dev_from(x, (size_t)n * d * 4), *dw = dev_from(w, (size_t)d * 4);
        uint16_t *dout = dev_poisoned((size_t)n * d * 2);
        check(c, ss_cuda_rmsnorm(c, dout, dx, NULL, dw, n, d, 1e-5f, &err), &err);
        float *out = host_bf16(dout, (size_t)n * d);
        double e = rel_l2(out, ref, (size_t)n * d, "rmsnorm");
        cr_expect_lt(e, 1e-2, "%s rmsnorm rel err %g", shapes[si].name, e);
        /* gather rows 6, 0, 3 */
        int rows[3] = {6, 0, 3};
        int *drows = dev_from(rows, sizeof rows);
        cr_assert_eq(ss_cuda_poison(dout, (size_t)n * d * 2, &err), 0);
        check(c, ss_cuda_rmsnorm(c, dout, dx, drows, dw, 3, d, 1e-5f, &err), &err);
        free(out);
        out = host_bf16(dout, (size_t)3 * d);
        for (int i = 0; i < 3; i++) {
            e = rel_l2(out + (size_t)i * d, ref + (size_t)rows[i] * d, (size_t)d, "gather");
            cr_expect_lt(e, 1e-2, "gathered row %d rel err %g", rows[i], e);
        }
        free(x), free(w), free(ref), free(out);
        ss_cuda_free(dx), ss_cuda_free(dw), ss_cuda_free(dout), ss_cuda_free(drows);
    }
    ss_cuda_ctx_free(c);
}

Test(cuda_kernels, embed_exact)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_error err;
    int V = 1000, d = 576, n = 5;
    float *tab = rand_f32((size_t)V * d, 1.0f);
    uint16_t *tb = round_bf16(tab, (size_t)V * d);
    int32_t ids[5] = {0, 999, 17, 17, 500};
    uint16_t *dt = dev_from(tb, (size_t)V * d * 2);
    int32_t *di = dev_from(ids, sizeof ids);
    float *dx = dev_poisoned((size_t)n * d * 4);
    check(c, ss_cuda_embed(c, dx, dt, di, n, d, &err), &err);
    float *x = host_f32(dx, (size_t)n * d);
    for (int i = 0; i < n; i++)
        cr_expect_eq(memcmp(x + (size_t)i * d, tab + (size_t)ids[i] * d, (size_t)d * 4), 0,
                     "row %d differs", i);
    free(tab), free(tb), free(x);
    ss_cuda_free(dt), ss_cuda_free(di), ss_cuda_free(dx);
    ss_cuda_ctx_free(c);
}

static void rope_case(ss_cuda_ctx *c, const ss_config *cfg, int n_heads)
{
    ss_error err;
    int n = 9, hd = cfg->head_dim, row = n_heads * hd;
    float *x = rand_f32((size_t)n * row, 2.0f);
    float *ref = malloc((size_t)n * row * sizeof *ref);
    memcpy(ref, x, (size_t)n * row * sizeof *ref);
    int pos[9];
    for (int i = 0; i < n; i++)
        pos[i] = (int)((frand() + 1.0f) * 2000.0f);
    pos[0] = 0;
    float *inv = malloc((size_t)hd / 2 * sizeof *inv);
    ss_cpu_rope_inv_freq(cfg, inv);
    ss_cpu_rope(ref, pos, n, n_heads, cfg, inv);
    float *dx = dev_from(x, (size_t)n * row * 4), *dinv = dev_from(inv, (size_t)hd / 2 * 4);
    int *dpos = dev_from(pos, sizeof pos);
    check(c, ss_cuda_rope(c, dx, row, dpos, n, n_heads, hd, cfg->rope_neox, dinv, &err), &err);
    float *out = host_f32(dx, (size_t)n * row);
    double e = rel_l2(out, ref, (size_t)n * row, "rope");
    cr_expect_lt(e, 1e-3, "rope (neox %d, scaling %d, hd %d) rel err %g", cfg->rope_neox,
                 cfg->rope_scaling, hd, e);
    free(x), free(ref), free(inv), free(out);
    ss_cuda_free(dx), ss_cuda_free(dinv), ss_cuda_free(dpos);
}

Test(cuda_kernels, rope_pairings_and_llama3_scaling)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.head_dim = 64;
    cfg.rope_theta = 100000.0f;
    for (int neox = 0; neox < 2; neox++) {
        cfg.rope_neox = neox;
        rope_case(c, &cfg, 12); /* SmolLM2: 9 q + 3 k heads in one row */
    }
    cfg.head_dim = 128;
    cfg.rope_theta = 500000.0f;
    cfg.rope_scaling = SS_ROPE_SCALING_LLAMA3;
    cfg.rope_factor = 8.0f;
    cfg.rope_low_freq_factor = 1.0f;
    cfg.rope_high_freq_factor = 4.0f;
    cfg.rope_orig_ctx = 8192;
    for (int neox = 0; neox < 2; neox++) {
        cfg.rope_neox = neox;
        rope_case(c, &cfg, 40); /* Llama-3: 32 q + 8 k heads */
    }
    ss_cuda_ctx_free(c);
}

/* Fused rope + KV store (the engine's default) against ss_cpu_rope on the
 * q and k heads of qkv rows; the caches must hold bf16 of rotated k and v
 * at (slot, layer, position), and nothing may stay poisoned there. */
static void rope_kv_case(ss_cuda_ctx *c, const ss_config *cfg, int n_heads, int n_kv)
{
    ss_error err;
    const int n = 9, L = 2, layer = 1, max_ctx = 4096, S = 3;
    int hd = cfg->head_dim, qd = n_heads * hd, kvd = n_kv * hd, stride = qd + 2 * kvd;
    float *x = rand_f32((size_t)n * stride, 2.0f);
    float *ref = malloc((size_t)n * stride * sizeof *ref);
    memcpy(ref, x, (size_t)n * stride * sizeof *ref);
    int pos[9], slot[9];
    for (int i = 0; i < n; i++) {
        pos[i] = i == 0 ? 0 : (int)((frand() + 1.0f) * 2000.0f);
        slot[i] = i % S;
    }
    pos[1] = pos[0] + 1; /* distinct (slot, position) pairs */
    float *inv = malloc((size_t)hd / 2 * sizeof *inv);
    ss_cpu_rope_inv_freq(cfg, inv);
    for (int i = 0; i < n; i++)
        ss_cpu_rope(ref + (size_t)i * stride, &pos[i], 1, n_heads + n_kv, cfg, inv);
    size_t cache = (size_t)S * L * max_ctx * kvd;
    float *dx = dev_from(x, (size_t)n * stride * 4), *dinv = dev_from(inv, (size_t)hd / 2 * 4);
    int *dpos = dev_from(pos, sizeof pos), *dslot = dev_from(slot, sizeof slot);
    uint16_t *dk = dev_poisoned(cache * 2), *dv = dev_poisoned(cache * 2);
    check(c, ss_cuda_rope_kv_store(c, dx, stride, dslot, dpos, n, n_heads, n_kv, hd,
                                   cfg->rope_neox, dinv, dk, dv, layer, L, max_ctx, &err), &err);
    float *out = host_f32(dx, (size_t)n * stride);
    for (int i = 0; i < n; i++) {
        const float *o = out + (size_t)i * stride, *r = ref + (size_t)i * stride;
        double e = rel_l2(o, r, (size_t)qd, "rope_kv q");
        cr_expect_lt(e, 1e-3, "rope_kv (neox %d, hd %d) row %d q rel err %g", cfg->rope_neox, hd,
                     i, e);
        size_t off = (((size_t)slot[i] * L + layer) * max_ctx + pos[i]) * kvd;
        float *kr = host_bf16(dk + off, (size_t)kvd), *vr = host_bf16(dv + off, (size_t)kvd);
        e = rel_l2(kr, r + qd, (size_t)kvd, "rope_kv k cache");
        cr_expect_lt(e, 1e-2, "rope_kv (neox %d, hd %d) row %d k cache rel err %g",
                     cfg->rope_neox, hd, i, e);
        e = rel_l2(vr, r + qd + kvd, (size_t)kvd, "rope_kv v cache");
        cr_expect_lt(e, 1e-2, "rope_kv row %d v cache rel err %g", i, e);
        free(kr), free(vr);
    }
    free(x), free(ref), free(inv), free(out);
    ss_cuda_free(dx), ss_cuda_free(dinv), ss_cuda_free(dpos), ss_cuda_free(dslot);
    ss_cuda_free(dk), ss_cuda_free(dv);
}

Test(cuda_kernels, rope_kv_store_fused)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.head_dim = 64;
    cfg.rope_theta = 100000.0f;
    for (int neox = 0; neox < 2; neox++) {
        cfg.rope_neox = neox;
        rope_kv_case(c, &cfg, 9, 3); /* SmolLM2 */
    }
    cfg.head_dim = 128;
    cfg.rope_theta = 500000.0f;
    cfg.rope_scaling = SS_ROPE_SCALING_LLAMA3;
    cfg.rope_factor = 8.0f;
    cfg.rope_low_freq_factor = 1.0f;
    cfg.rope_high_freq_factor = 4.0f;
    cfg.rope_orig_ctx = 8192;
    for (int neox = 0; neox < 2; neox++) {
        cfg.rope_neox = neox;
        rope_kv_case(c, &cfg, 32, 8); /* Llama-3 */
    }
    ss_cuda_ctx_free(c);
}

Test(cuda_kernels, swiglu)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_error err;
    for (int si = 0; si < 2; si++) {
        int n = 3, ff = shapes[si].d_ff;
        float *gu = rand_f32((size_t)n * 2 * ff, 4.0f);
        float *ref = malloc((size_t)n * ff * sizeof *ref);
        for (int i = 0; i < n; i++)
            ss_cpu_swiglu(ref + (size_t)i * ff, gu + (size_t)i * 2 * ff,
                          gu + (size_t)i * 2 * ff + ff, ff);
        float *dgu = dev_from(gu, (size_t)n * 2 * ff * 4);
        uint16_t *dout = dev_poisoned((size_t)n * ff * 2);
        check(c, ss_cuda_swiglu(c, dout, dgu, n, ff, &err), &err);
        float *out = host_bf16(dout, (size_t)n * ff);
        double e = rel_l2(out, ref, (size_t)n * ff, "swiglu");
        cr_expect_lt(e, 1e-2, "%s swiglu rel err %g", shapes[si].name, e);
        free(gu), free(ref), free(out);
        ss_cuda_free(dgu), ss_cuda_free(dout);
    }
    ss_cuda_ctx_free(c);
}

/* path: an SS_CUDA_MM_* of ss_cuda_matmul_bf16, or MM_MMA for the
 * tensor-core matvec of the variants library. */
#define MM_MMA (-1)

static void matmul_case(ss_cuda_ctx *c, int n, int in, int out, int path)
{
    ss_error err;
    float *x = rand_f32((size_t)n * in, 1.0f), *w = rand_f32((size_t)out * in, 0.05f);
    uint16_t *xb = round_bf16(x, (size_t)n * in), *wb = round_bf16(w, (size_t)out * in);
    float *ref = malloc((size_t)n * out * sizeof *ref);
    ss_cpu_matmul(ref, x, w, n, in, out);
    uint16_t *dx = dev_from(xb, (size_t)n * in * 2), *dw = dev_from(wb, (size_t)out * in * 2);
    float *dy = dev_poisoned((size_t)n * out * 4);
    check(c, path == MM_MMA ? ss_cuda_matvec_mma_bf16(c, dy, dx, dw, n, in, out, &err)
                            : ss_cuda_matmul_bf16(c, dy, dx, dw, n, in, out, path, &err),
          &err);
    float *y = host_f32(dy, (size_t)n * out);
    double e = rel_l2(y, ref, (size_t)n * out, "matmul");
    /* inputs are exactly bf16 on both sides: only f32 summation order differs */
    cr_expect_lt(e, 1e-3, "matmul n %d in %d out %d path %d rel err %g", n, in, out, path, e);
    free(x), free(w), free(xb), free(wb), free(ref), free(y);
    ss_cuda_free(dx), ss_cuda_free(dw), ss_cuda_free(dy);
}

Test(cuda_kernels, matmul_matvec_and_cublas)
{
    ss_cuda_ctx *c = ctx_or_skip();
    const int dims[][2] = {{4096, 6144}, {4096, 1000}, {576, 1536}, {1536, 576}, {14336, 256}};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++) {
        int in = dims[k][0], out = dims[k][1];
        for (int n = 1; n <= 8; n++)
            matmul_case(c, n, in, out, SS_CUDA_MM_V1);
        matmul_case(c, 9, in, out, SS_CUDA_MM_CUBLAS);
        matmul_case(c, 64, in, out, SS_CUDA_MM_AUTO);
        matmul_case(c, 2, in, out, SS_CUDA_MM_CUBLAS);
    }
    ss_cuda_ctx_free(c);
}

/* The tensor-core matvec (v2, a variant): every n-tile count, partial
 * n-tiles, row counts that are not multiples of 16 and k not a multiple of
 * 32 (or of its 8 warps x 4 chunks x 32), at the decode shapes of both
 * models. */
Test(cuda_kernels, matmul_mma_matvec_v2)
{
    ss_cuda_ctx *c = ctx_or_skip();
    const int dims[][2] = {{4096, 6144}, {4096, 1024}, {4096, 4096}, {4096, 1000},
                           {576, 1536}, {576, 192}, {1536, 576}, {520, 100}, {14336, 256}};
    const int ns[] = {1, 2, 3, 5, 8, 9, 16, 17, 24, 31, 32};
    for (size_t k = 0; k < sizeof dims / sizeof dims[0]; k++)
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            matmul_case(c, ns[i], dims[k][0], dims[k][1], MM_MMA);
    /* w_down of Llama-3 (14336 x 4096), batch 1 and 32 */
    matmul_case(c, 1, 14336, 4096, MM_MMA);
    matmul_case(c, 32, 14336, 4096, MM_MMA);
    /* AUTO: v1 for one row, cuBLAS above */
    matmul_case(c, 1, 576, 1536, SS_CUDA_MM_AUTO);
    matmul_case(c, 32, 576, 1536, SS_CUDA_MM_AUTO);
    ss_error err;
    cr_expect_neq(ss_cuda_matvec_mma_bf16(c, NULL, NULL, NULL, 33, 576, 1536, &err), 0,
                  "v2 accepted 33 rows");
    cr_expect_neq(ss_cuda_matvec_mma_bf16(c, NULL, NULL, NULL, 1, 572, 1536, &err), 0,
                  "v2 accepted in %% 8 != 0");
    ss_cuda_ctx_free(c);
}

/* swiglu fused into the v2 matvec (a variant of the decode down
 * projection) against ss_cpu_swiglu, rounded to bf16 as the GPU's separate
 * swiglu kernel would, then ss_cpu_matmul. */
static void matmul_swiglu_case(ss_cuda_ctx *c, int n, int ff, int out)
{
    ss_error err;
    float *gu = rand_f32((size_t)n * 2 * ff, 4.0f), *w = rand_f32((size_t)out * ff, 0.05f);
    uint16_t *wb = round_bf16(w, (size_t)out * ff);
    float *act = malloc((size_t)n * ff * sizeof *act), *ref = malloc((size_t)n * out * sizeof *ref);
    for (int i = 0; i < n; i++)
        ss_cpu_swiglu(act + (size_t)i * ff, gu + (size_t)i * 2 * ff, gu + (size_t)i * 2 * ff + ff,
                      ff);
    free(round_bf16(act, (size_t)n * ff));
    ss_cpu_matmul(ref, act, w, n, ff, out);
    float *dgu = dev_from(gu, (size_t)n * 2 * ff * 4), *dy = dev_poisoned((size_t)n * out * 4);
    uint16_t *dw = dev_from(wb, (size_t)out * ff * 2);
    check(c, ss_cuda_matvec_mma_swiglu_bf16(c, dy, dgu, dw, n, ff, out, &err), &err);
    float *y = host_f32(dy, (size_t)n * out);
    double e = rel_l2(y, ref, (size_t)n * out, "matmul_swiglu");
    cr_expect_lt(e, 1e-3, "matmul_swiglu n %d d_ff %d out %d rel err %g", n, ff, out, e);
    free(gu), free(w), free(wb), free(act), free(ref), free(y);
    ss_cuda_free(dgu), ss_cuda_free(dy), ss_cuda_free(dw);
}

Test(cuda_kernels, matmul_swiglu_fused)
{
    ss_cuda_ctx *c = ctx_or_skip();
    const int ns[] = {1, 5, 8, 17, 32};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        matmul_swiglu_case(c, ns[i], 14336, 4096); /* Llama-3 w_down */
        matmul_swiglu_case(c, ns[i], 1536, 576);   /* SmolLM2 w_down */
        matmul_swiglu_case(c, ns[i], 520, 100);    /* k not a multiple of 32 */
    }
    ss_error err;
    cr_expect_neq(ss_cuda_matvec_mma_swiglu_bf16(c, NULL, NULL, NULL, 33, 1536, 576, &err), 0,
                  "fused swiglu accepted 33 rows");
    ss_cuda_ctx_free(c);
}

Test(cuda_kernels, argmax_lowest_index_on_ties)
{
    ss_cuda_ctx *c = ctx_or_skip();
    ss_error err;
    int n = 3, V = 128256;
    float *l = rand_f32((size_t)n * V, 10.0f);
    l[0 * (size_t)V + 77777] = 50.0f;
    l[1 * (size_t)V + V - 1] = 50.0f;
    l[2 * (size_t)V + 5000] = 60.0f;
    l[2 * (size_t)V + 100] = 60.0f;
    float *dl = dev_from(l, (size_t)n * V * 4);
    int *di = dev_poisoned((size_t)n * 4);
    check(c, ss_cuda_argmax(c, di, dl, n, V, &err), &err);
    int ids[3];
    cr_assert_eq(ss_cuda_download(ids, di, sizeof ids, &err), 0);
    for (int i = 0; i < n; i++)
        cr_expect_eq(ids[i], ss_argmax(l + (size_t)i * V, V), "row %d: %d", i, ids[i]);
    cr_expect_eq(ids[2], 100);
    free(l);
    ss_cuda_free(dl), ss_cuda_free(di);
    ss_cuda_ctx_free(c);
}

/* ---------------------------------------------------------------- attention */

/* Three slots with different histories; layer 1 of 2. */
/* version 2: the engine's prefill kernel; 1: the variant. */
static void attention_case(ss_cuda_ctx *c, const shape *s, int version)
{
    ss_error err;
    const int n_layers = 2, layer = 1, max_ctx = 700, max_seqs = 3;
    const int hd = s->hd, kvd = s->n_kv * hd, qd = s->n_heads * hd;
    /* sequence: slot, cache length after this step, queries appended */
    const int seq_slot[3] = {0, 2, 1}, seq_len[3] = {300, 1, 520}, seq_nq[3] = {37, 1, 20};
    /* K/V rows of every cached position, written with ss_cuda_kv_store */
    float *kv[3][2];
    for (int q = 0; q < 3; q++)
        for (int t = 0; t < 2; t++) {
            kv[q][t] = rand_f32((size_t)seq_len[q] * kvd, 1.0f);
            free(round_bf16(kv[q][t], (size_t)seq_len[q] * kvd));
        }
    size_t cache_elems = (size_t)max_seqs * n_layers * max_ctx * kvd;
    uint16_t *dk = dev_poisoned(cache_elems * 2), *dv = dev_poisoned(cache_elems * 2);
    for (int q = 0; q < 3; q++) {
        int npos = seq_len[q], stride = 2 * kvd;
        float *rows = malloc((size_t)npos * stride * sizeof *rows);
        int *slots = malloc((size_t)npos * sizeof(int)), *pos = malloc((size_t)npos * sizeof(int));
        for (int p = 0; p < npos; p++) {
            memcpy(rows + (size_t)p * stride, kv[q][0] + (size_t)p * kvd, (size_t)kvd * 4);
            memcpy(rows + (size_t)p * stride + kvd, kv[q][1] + (size_t)p * kvd, (size_t)kvd * 4);
            slots[p] = seq_slot[q];
            pos[p] = p;
        }
        float *drows = dev_from(rows, (size_t)npos * stride * 4);
        int *ds = dev_from(slots, (size_t)npos * 4), *dp = dev_from(pos, (size_t)npos * 4);
        check(c, ss_cuda_kv_store(c, dk, dv, drows, stride, 0, kvd, ds, dp, npos, layer, n_layers,
                                  max_ctx, &err), &err);
        free(rows), free(slots), free(pos);
        ss_cuda_free(drows), ss_cuda_free(ds), ss_cuda_free(dp);
    }
    /* query rows, sequence after sequence */
    int n = seq_nq[0] + seq_nq[1] + seq_nq[2];
    float *q = rand_f32((size_t)n * qd, 1.0f);
    float *ref = malloc((size_t)n * qd * sizeof *ref);
    int *rslot = malloc((size_t)n * sizeof(int)), *rpos = malloc((size_t)n * sizeof(int));
    int tiles[2 * 64], n_tiles = 0;
    for (int sq = 0, r = 0; sq < 3; sq++) {
        int pos0 = seq_len[sq] - seq_nq[sq];
        ss_cpu_attention(ref + (size_t)r * qd, q + (size_t)r * qd, kv[sq][0], kv[sq][1],
                         seq_nq[sq], pos0, s->n_heads, s->n_kv, hd);
        for (int i = 0; i < seq_nq[sq]; i++) {
            rslot[r + i] = seq_slot[sq];
            rpos[r + i] = pos0 + i;
            if (i % 16 == 0) {
                tiles[2 * n_tiles] = r + i;
                tiles[2 * n_tiles + 1] = seq_nq[sq] - i < 16 ? seq_nq[sq] - i : 16;
                n_tiles++;
            }
        }
        r += seq_nq[sq];
    }
    float *dq = dev_from(q, (size_t)n * qd * 4);
    int *ds = dev_from(rslot, (size_t)n * 4), *dp = dev_from(rpos, (size_t)n * 4);
    int *dt = dev_from(tiles, (size_t)n_tiles * 2 * 4);
    uint16_t *dout = dev_poisoned((size_t)n * qd * 2);
    ss_cuda_attn_shape as = {s->n_heads, s->n_kv, hd, n_layers, max_ctx, layer, qd};
    check(c, version == 2
                 ? ss_cuda_attention_prefill(c, dout, dq, dk, dv, ds, dp, dt, n_tiles, &as, &err)
                 : ss_cuda_attention_prefill_v1(c, dout, dq, dk, dv, ds, dp, dt, n_tiles, &as,
                                                &err),
          &err);
    float *out = host_bf16(dout, (size_t)n * qd);
    double e = rel_l2(out, ref, (size_t)n * qd, "attention prefill");
    cr_expect_lt(e, 1e-2, "%s prefill attention rel err %g", s->name, e);

    /* decode kernel on every row (it takes any rows), two split counts */
    int splits = ss_cuda_attention_splits(520);
    int max_splits = ss_cuda_attention_splits(max_ctx) + 1;
    float *dpart = dev_poisoned(ss_cuda_attention_partial_floats(n, s->n_heads, hd, max_splits) * 4);
    uint16_t *dout2 = dev_poisoned((size_t)n * qd * 2);
    check(c, ss_cuda_attention_decode(c, dout2, dq, dk, dv, ds, dp, n, splits, dpart, &as, &err),
          &err);
    float *out2 = host_bf16(dout2, (size_t)n * qd);
    e = rel_l2(out2, ref, (size_t)n * qd, "attention decode");
    cr_expect_lt(e, 1e-2, "%s decode attention rel err %g", s->name, e);
    cr_assert_eq(ss_cuda_poison(dout2, (size_t)n * qd * 2, &err), 0);
    check(c, ss_cuda_attention_decode(c, dout2, dq, dk, dv, ds, dp, n, max_splits, dpart, &as,
                                      &err), &err);
    float *out3 = host_bf16(dout2, (size_t)n * qd);
    cr_expect_eq(memcmp(out2, out3, (size_t)n * qd * 4), 0,
                 "decode attention depends on the number of (empty) splits");

    for (int a = 0; a < 3; a++)
        free(kv[a][0]), free(kv[a][1]);
    free(q), free(ref), free(rslot), free(rpos), free(out), free(out2), free(out3);
    ss_cuda_free(dk), ss_cuda_free(dv), ss_cuda_free(dq), ss_cuda_free(ds), ss_cuda_free(dp);
    ss_cuda_free(dt), ss_cuda_free(dout), ss_cuda_free(dout2), ss_cuda_free(dpart);
}

/* Both prefill kernels: v2 (default) and v1. */
Test(cuda_kernels, attention_prefill_and_decode)
{
    ss_cuda_ctx *c = ctx_or_skip();
    for (int version = 2; version >= 1; version--)
        for (int si = 0; si < 2; si++)
            attention_case(c, &shapes[si], version);
    ss_cuda_ctx_free(c);
}

/* ---------------------------------------------------------------- residual + steering */

/* version 2: ss_cuda_residual_steer (v2 where the row fits); 1: the
 * general kernel. */
static void residual_case(ss_cuda_ctx *c, int d, int block, int version)
{
    ss_error err;
    enum { N = 6, S = 4, L = 3, NS = SS_SITE_COUNT };
    const int layer = 2;
    /* rows: slot, position */
    const int slot[N] = {0, 0, 1, 1, 2, 3}, pos[N] = {3, 4, 10, 11, 0, 7};
    /* slot 0: ADD at the `block` site; slot 1: ABLATE at RESID_POST from
     * position 11 (ATTN_OUT when block == ATTN_OUT); slot 2: off; slot 3:
     * ABLATE at the `block` site and ADD at RESID_POST, two vectors on one
     * row after the MLP */
    int info[S][3] = {{1, 0, -1}, {1, 11, 20}, {0, 0, -1}, {1, 0, -1}};
    float alpha[S][NS][L] = {{{0}}};
    int ops[S][NS][L] = {{{0}}};
    int abl1 = block == SS_SITE_MLP_OUT ? SS_SITE_RESID_POST : SS_SITE_ATTN_OUT;
    alpha[0][block][0] = 0.5f, alpha[0][block][2] = 2.5f;
    alpha[1][abl1][layer] = 1.0f, ops[1][abl1][layer] = SS_STEER_ABLATE;
    alpha[3][block][layer] = 1.0f, ops[3][block][layer] = SS_STEER_ABLATE;
    alpha[3][SS_SITE_RESID_POST][layer] = -1.25f;
    size_t nvec = (size_t)S * NS * L;
    float *vec = rand_f32(nvec * d, 1.0f);
    for (size_t k = 0; k < nvec; k++) { /* unit norm (ablation needs it) */
        float *v = vec + k * d;
        double nn = 0;
        for (int j = 0; j < d; j++)
            nn += (double)v[j] * v[j];
        for (int j = 0; j < d; j++)
            v[j] = (float)(v[j] / sqrt(nn));
    }
    float *x = rand_f32((size_t)N * d, 2.0f), *delta = rand_f32((size_t)N * d, 1.0f);
    float *w = rand_f32((size_t)d, 1.0f);
    /* reference: the block output's steering, the residual add, then
     * resid_post's after the MLP */
    float *rx = malloc((size_t)N * d * 4), *rt = malloc((size_t)N * d * 4);
    float *rn = malloc((size_t)N * d * 4);
    memcpy(rx, x, (size_t)N * d * 4);
    memcpy(rt, delta, (size_t)N * d * 4);
    for (int i = 0; i < N; i++) {
        const int *in = info[slot[i]];
        float *t = rt + (size_t)i * d, *h = rx + (size_t)i * d;
        const float *v_t = vec + (((size_t)slot[i] * NS + block) * L + layer) * d;
        const float *v_x = vec + (((size_t)slot[i] * NS + SS_SITE_RESID_POST) * L + layer) * d;
        float a_t = alpha[slot[i]][block][layer], a_x = alpha[slot[i]][SS_SITE_RESID_POST][layer];
        if (in[0] && a_t != 0.0f)
            ss_cpu_steer(t, 1, d, pos[i], ops[slot[i]][block][layer], a_t, v_t, in[1], in[2]);
        for (int j = 0; j < d; j++)
            h[j] += t[j];
        if (in[0] && block == SS_SITE_MLP_OUT && a_x != 0.0f)
            ss_cpu_steer(h, 1, d, pos[i], ops[slot[i]][SS_SITE_RESID_POST][layer], a_x, v_x,
                         in[1], in[2]);
    }
    ss_cpu_rmsnorm(rn, rx, w, N, d, 1e-5f);

    float *dx = dev_from(x, (size_t)N * d * 4), *ddel = dev_from(delta, (size_t)N * d * 4);
    float *dw = dev_from(w, (size_t)d * 4), *dvec = dev_from(vec, nvec * d * 4);
    float *dalpha = dev_from(alpha, sizeof alpha);
    int *dops = dev_from(ops, sizeof ops);
    int *dinfo = dev_from(info, sizeof info), *dslot = dev_from(slot, sizeof slot);
    int *dpos = dev_from(pos, sizeof pos);
    uint16_t *dxb = dev_poisoned((size_t)N * d * 2);
    ss_cuda_steer_params sp = {dinfo, dalpha, dops, dvec, L};
    check(c, (version == 2 ? ss_cuda_residual_steer : ss_cuda_residual_steer_general)(
                 c, dx, ddel, dxb, dw, 1e-5f, dslot, dpos, N, d, block, layer, &sp, &err),
          &err);
    float *ox = host_f32(dx, (size_t)N * d), *ot = host_f32(ddel, (size_t)N * d);
    float *on = host_bf16(dxb, (size_t)N * d);
    double ex = rel_l2(ox, rx, (size_t)N * d, "x"), et = rel_l2(ot, rt, (size_t)N * d, "t");
    double en = rel_l2(on, rn, (size_t)N * d, "norm");
    cr_expect_lt(ex, 1e-5, "d %d block %d: x rel err %g", d, block, ex);
    cr_expect_lt(et, 1e-5, "d %d block %d: steered delta rel err %g", d, block, et);
    cr_expect_lt(en, 1e-2, "d %d block %d: fused norm rel err %g", d, block, en);
    /* the two-vector row on its own (a whole-array error would hide it) */
    double e5 = rel_l2(ox + 5 * (size_t)d, rx + 5 * (size_t)d, (size_t)d, "x row 5");
    cr_expect_lt(e5, 1e-5, "d %d block %d: row steered at two sites, x rel err %g", d, block,
                 e5);
    /* the unsteered slot-2 row is exactly x + delta */
    for (int j = 0; j < d; j++)
        cr_assert_eq(ox[4 * (size_t)d + j], x[4 * (size_t)d + j] + delta[4 * (size_t)d + j]);
    free(vec), free(x), free(delta), free(w), free(rx), free(rt), free(rn);
    free(ox), free(ot), free(on);
    ss_cuda_free(dx), ss_cuda_free(ddel), ss_cuda_free(dw), ss_cuda_free(dvec);
    ss_cuda_free(dalpha), ss_cuda_free(dops), ss_cuda_free(dinfo), ss_cuda_free(dslot);
    ss_cuda_free(dpos), ss_cuda_free(dxb);
}

/* Both kernel versions (v2, the default, holds the row in registers; v1
 * walks memory), at both model widths and the widest v2 row. */
Test(cuda_kernels, residual_steer_fused)
{
    ss_cuda_ctx *c = ctx_or_skip();
    for (int version = 2; version >= 1; version--) {
        for (int si = 0; si < 2; si++) {
            residual_case(c, shapes[si].d, SS_SITE_ATTN_OUT, version);
            residual_case(c, shapes[si].d, SS_SITE_MLP_OUT, version);
        }
        residual_case(c, 8192, SS_SITE_MLP_OUT, version);
    }
    ss_cuda_ctx_free(c);
}
