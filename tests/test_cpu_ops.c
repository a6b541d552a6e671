/* test_cpu_ops.c - every CPU op against a naive double-precision version
 * written here, on random inputs and several shapes (including SmolLM2's
 * 9/3 heads x 64 and Llama-8B's 32/8 heads x 128). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/cpu_ops.h"
#include "engine/cpu_weights.h"
#include "model/quant_avx2.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x1234567887654321ULL;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_array(size_t n)
{
    float *a = malloc(n * sizeof *a);
    cr_assert(a);
    for (size_t i = 0; i < n; i++)
        a[i] = frand();
    return a;
}

static void assert_close(const float *got, const double *want, size_t n, double tol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                  "%s[%zu]: got %.9g, want %.9g (tol %g)", what, i, (double)got[i], want[i],
                  tol);
}

static ss_config rope_cfg(int head_dim, float theta, int neox)
{
    ss_config c;
    memset(&c, 0, sizeof c);
    c.head_dim = head_dim;
    c.rope_theta = theta;
    c.rope_neox = neox;
    return c;
}

/* ---------------------------------------------------------------- rmsnorm */

static void check_rmsnorm(int n, int d, int in_place)
{
    float *x = rand_array((size_t)n * d), *w = rand_array(d);
    float *out = in_place ? x : malloc((size_t)n * d * sizeof(float));
    double *ref = malloc((size_t)n * d * sizeof(double));
    float eps = 1e-5f;
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int j = 0; j < d; j++)
            ss += (double)x[i * d + j] * x[i * d + j];
        double r = 1.0 / sqrt(ss / d + eps);
        for (int j = 0; j < d; j++)
            ref[i * d + j] = x[i * d + j] * r * w[j];
    }
    ss_cpu_rmsnorm(out, x, w, n, d, eps);
    assert_close(out, ref, (size_t)n * d, 1e-6, "rmsnorm");
    if (!in_place)
        free(out);
    free(x);
    free(w);
    free(ref);
}

Test(cpu_ops, rmsnorm)
{
    check_rmsnorm(1, 64, 0);
    check_rmsnorm(5, 576, 0);
    check_rmsnorm(3, 7, 0);
    check_rmsnorm(4, 576, 1);
}

/* ---------------------------------------------------------------- matmul */

static void check_matmul(int n, int in, int out)
{
    float *x = rand_array((size_t)n * in), *w = rand_array((size_t)out * in);
    float *y = malloc((size_t)n * out * sizeof(float));
    ss_cpu_matmul(y, x, w, n, in, out);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = 0, mag = 0;
            for (int k = 0; k < in; k++) {
                s += (double)x[i * in + k] * w[o * in + k];
                mag += fabs((double)x[i * in + k] * w[o * in + k]);
            }
            cr_assert(fabs(y[i * out + o] - s) <= 1e-6 * mag + 1e-7,
                      "matmul %dx%dx%d [%d][%d]: got %g want %g", n, in, out, i, o,
                      (double)y[i * out + o], s);
        }
    free(x);
    free(w);
    free(y);
}

Test(cpu_ops, matmul)
{
    check_matmul(1, 64, 300);   /* sgemv path */
    check_matmul(7, 576, 192);
    check_matmul(33, 100, 17);
    check_matmul(2, 1536, 576);
    check_matmul(1, 576, 1536);  /* sgemv split across threads */
    check_matmul(3, 1000, 1001); /* threaded, ragged last slice */
}

/* ---------------------------------------------------------------- stored weights */

static const int stored_types[] = {SS_TYPE_F32, SS_TYPE_F16, SS_TYPE_BF16, SS_TYPE_Q8_0,
                                   SS_TYPE_Q4_0, SS_TYPE_Q4_1};

static void put_f16(uint8_t *p, float f)
{
    uint16_t h = ss_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* out rows of `in` random values encoded as `type` (scales from f32, quants
 * random bits, so every code appears); a tensor {in, out} over them. */
static ss_tensor rand_tensor(int type, int in, int out)
{
    ss_tensor t;
    memset(&t, 0, sizeof t);
    t.type = type;
    t.n_dims = 2;
    t.dims[0] = in;
    t.dims[1] = out;
    t.dims[2] = t.dims[3] = 1;
    t.nbytes = ss_type_row_bytes(type, in) * (size_t)out;
    uint8_t *p = malloc(t.nbytes);
    cr_assert(p);
    size_t n = (size_t)in * out;
    if (type == SS_TYPE_F32 || type == SS_TYPE_F16 || type == SS_TYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            float f = frand();
            if (type == SS_TYPE_F32)
                memcpy(p + 4 * i, &f, 4);
            else if (type == SS_TYPE_F16)
                put_f16(p + 2 * i, f);
            else {
                uint16_t h = ss_f32_to_bf16(f);
                memcpy(p + 2 * i, &h, 2);
            }
        }
    } else {
        size_t bb = ss_type_row_bytes(type, 32);
        for (size_t b = 0; b < n / 32; b++) {
            uint8_t *blk = p + b * bb;
            int scales = type == SS_TYPE_Q4_1 ? 2 : 1;
            for (int k = 0; k < scales; k++)
                put_f16(blk + 2 * k, 0.05f * frand());
            for (size_t i = 2 * (size_t)scales; i < bb; i++)
                blk[i] = (uint8_t)((frand() + 1.0f) * 127.99f); /* any byte */
        }
    }
    t.data = p;
    return t;
}

/* ss_dequantize (AVX2 where the CPU has it) matches the portable decoder
 * bit for bit, for every type. */
Test(cpu_ops, stored_weights_decode_exactly)
{
    for (size_t k = 0; k < sizeof stored_types / sizeof stored_types[0]; k++) {
        int type = stored_types[k], in = 96, out = 7; /* float types also take a ragged 20 */
        ss_tensor t = rand_tensor(type, in, out);
        float *a = malloc(sizeof(float) * in * out), *b = malloc(sizeof(float) * in * out);
        ss_dequantize_portable(type, t.data, a, (int64_t)in * out);
        ss_dequantize(type, t.data, b, (int64_t)in * out);
        cr_assert(memcmp(a, b, sizeof(float) * in * out) == 0, "%s: decode differs (%s)",
                  ss_type_name(type), ss_cpu_weights_isa());
        if (type == SS_TYPE_F32 || type == SS_TYPE_F16 || type == SS_TYPE_BF16) {
            ss_dequantize(type, t.data, b, 20);
            cr_assert(memcmp(a, b, sizeof(float) * 20) == 0, "%s: 20 values", ss_type_name(type));
        }
        free(a), free(b), free((void *)t.data);
    }
}

/* ss_cpu_matmul_w against a double-precision product with the decoded
 * weights: the fused rows (n <= 4), the decoded-block sgemm (n > 4), the
 * threaded split and a row length that is not a multiple of 32 (float
 * types). */
Test(cpu_ops, stored_weights_matmul)
{
    static const int shapes[][3] = {{1, 576, 192}, {2, 64, 300}, {3, 1536, 77}, {4, 96, 129},
                                    {5, 576, 200}, {17, 128, 65}, {1, 20, 9}, {6, 52, 33}};
    ss_cpu_scratch scr;
    ss_error err;
    cr_assert_eq(ss_cpu_scratch_init(&scr, 2, 1536, &err), 0, "%s", err.msg);
    for (size_t k = 0; k < sizeof stored_types / sizeof stored_types[0]; k++)
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
            int type = stored_types[k], n = shapes[sh][0], in = shapes[sh][1];
            int out = shapes[sh][2];
            if (in % 32 && type != SS_TYPE_F32 && type != SS_TYPE_F16 && type != SS_TYPE_BF16)
                continue;
            ss_tensor t = rand_tensor(type, in, out);
            float *w = malloc(sizeof(float) * in * out), *x = rand_array((size_t)n * in);
            float *y = malloc(sizeof(float) * n * out);
            ss_dequantize(type, t.data, w, (int64_t)in * out);
            ss_cpu_matmul_w(y, x, &t, n, in, out, &scr);
            for (int i = 0; i < n; i++)
                for (int o = 0; o < out; o++) {
                    double want = 0, mag = 0;
                    for (int j = 0; j < in; j++) {
                        want += (double)x[i * in + j] * w[o * in + j];
                        mag += fabs((double)x[i * in + j] * w[o * in + j]);
                    }
                    cr_assert(fabs(y[i * out + o] - want) <= 1e-6 * mag + 1e-7,
                              "%s %dx%dx%d [%d][%d]: got %g want %g", ss_type_name(type), n, in,
                              out, i, o, (double)y[i * out + o], want);
                }
            free(w), free(x), free(y), free((void *)t.data);
        }
    ss_cpu_scratch_free(&scr);
}

/* ---------------------------------------------------------------- rope */

Test(cpu_ops, rope_inv_freq_plain)
{
    ss_config c = rope_cfg(64, 10000.0f, 0);
    float f[32];
    ss_cpu_rope_inv_freq(&c, f);
    /* 10000^(-2j/64) */
    cr_assert(fabs(f[0] - 1.0) < 1e-7);
    cr_assert(fabs(f[1] - 0.7498942093324559) < 1e-6 * 0.75, "got %.9g", (double)f[1]);
    cr_assert(fabs(f[16] - 0.01) < 1e-6 * 0.01, "got %.9g", (double)f[16]);
    cr_assert(fabs(f[31] - 1.333521432163324e-4) < 1e-6 * 1.4e-4, "got %.9g", (double)f[31]);
    /* SmolLM2 theta, every entry */
    c.rope_theta = 100000.0f;
    ss_cpu_rope_inv_freq(&c, f);
    for (int j = 0; j < 32; j++) {
        double want = pow(100000.0, -2.0 * j / 64);
        cr_assert(fabs(f[j] - want) <= 1e-6 * want, "inv_freq[%d] %g vs %g", j, (double)f[j],
                  want);
    }
}

Test(cpu_ops, rope_inv_freq_llama3)
{
    /* Llama 3.1 8B: theta 5e5, factor 8, low 1, high 4, original ctx 8192 */
    ss_config c = rope_cfg(128, 500000.0f, 1);
    c.rope_scaling = SS_ROPE_SCALING_LLAMA3;
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_orig_ctx = 8192;
    float f[64];
    ss_cpu_rope_inv_freq(&c, f);
    struct { int j; double want; } cases[] = {
        {0, 1.0},                      /* wavelength 2pi < 2048: kept */
        {20, 0.016560440080994446},    /* wavelength 379: kept */
        /* unscaled 2.1311e-3, wavelength 2948: smooth = (8192/2948 - 1)/3 */
        {30, 0.0013718935677611381},
        {32, 0.0005248461609929547},   /* smooth band near its low end */
        {63, 3.068925988914511e-07},   /* wavelength 2.6e6 > 8192: divided by 8 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double w = cases[i].want;
        cr_assert(fabs(f[cases[i].j] - w) <= 2e-6 * w, "inv_freq[%d]: got %.9g want %.9g",
                  cases[i].j, (double)f[cases[i].j], w);
    }
}

static void check_rope(int n, int n_heads, int hd, int neox)
{
    ss_config c = rope_cfg(hd, 100000.0f, neox);
    float *inv = malloc((size_t)hd / 2 * sizeof(float));
    ss_cpu_rope_inv_freq(&c, inv);
    size_t len = (size_t)n * n_heads * hd;
    float *x = rand_array(len);
    double *ref = malloc(len * sizeof(double));
    int *pos = malloc((size_t)n * sizeof(int));
    for (int i = 0; i < n; i++)
        pos[i] = i == 0 ? 0 : i == 1 ? 4095 : (int)(fabs(frand()) * 3000); /* up to thousands */
    for (int i = 0; i < n; i++)
        for (int h = 0; h < n_heads; h++) {
            const float *r = x + ((size_t)i * n_heads + h) * hd;
            double *o = ref + ((size_t)i * n_heads + h) * hd;
            for (int j = 0; j < hd / 2; j++) {
                int a = neox ? j : 2 * j, b = neox ? j + hd / 2 : 2 * j + 1;
                double ang = (double)pos[i] * inv[j];
                o[a] = r[a] * cos(ang) - r[b] * sin(ang);
                o[b] = r[a] * sin(ang) + r[b] * cos(ang);
            }
        }
    ss_cpu_rope(x, pos, n, n_heads, &c, inv);
    assert_close(x, ref, len, 1e-6, neox ? "rope neox" : "rope interleaved");
    free(inv);
    free(x);
    free(ref);
    free(pos);
}

Test(cpu_ops, rope_both_pairings)
{
    for (int neox = 0; neox <= 1; neox++) {
        check_rope(5, 9, 64, neox);
        check_rope(3, 3, 64, neox);
        check_rope(4, 32, 128, neox);
        check_rope(20, 8, 128, neox); /* > 8 rows: threaded path */
    }
}

Test(cpu_ops, rope_pairings_differ_and_position_zero_is_identity)
{
    ss_config c0 = rope_cfg(8, 10000.0f, 0), c1 = rope_cfg(8, 10000.0f, 1);
    float inv[4];
    ss_cpu_rope_inv_freq(&c0, inv);
    float a[8], b[8], z[8];
    for (int i = 0; i < 8; i++)
        a[i] = b[i] = z[i] = (float)(i + 1);
    int p = 3, p0 = 0;
    ss_cpu_rope(a, &p, 1, 1, &c0, inv);
    ss_cpu_rope(b, &p, 1, 1, &c1, inv);
    cr_assert(memcmp(a, b, sizeof a) != 0, "the two pairings must rotate different pairs");
    float zc[8];
    memcpy(zc, z, sizeof z);
    ss_cpu_rope(z, &p0, 1, 1, &c0, inv);
    cr_assert(memcmp(z, zc, sizeof z) == 0, "position 0 must leave x unchanged");
}

/* ---------------------------------------------------------------- swiglu */

Test(cpu_ops, swiglu)
{
    int n = 3 * 1536;
    float *g = rand_array(n), *u = rand_array(n), *o = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    for (int i = 0; i < n; i++)
        g[i] *= 8.0f; /* reach the saturated ends of silu */
    for (int i = 0; i < n; i++)
        ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    ss_cpu_swiglu(o, g, u, n);
    assert_close(o, ref, n, 1e-6, "swiglu");
    ss_cpu_swiglu(g, g, u, n); /* in place on gate, as the engine does */
    assert_close(g, ref, n, 1e-6, "swiglu in place");
    free(g);
    free(u);
    free(o);
    free(ref);
}

/* ---------------------------------------------------------------- attention */

static void naive_attention(double *out, const float *q, const float *k, const float *v,
                            int n_q, int q_pos0, int nh, int nkv, int hd)
{
    int group = nh / nkv;
    double *s = malloc((size_t)(q_pos0 + n_q) * sizeof(double));
    for (int i = 0; i < n_q; i++)
        for (int h = 0; h < nh; h++) {
            int kh = h / group, nk = q_pos0 + i + 1;
            const float *qi = q + ((size_t)i * nh + h) * hd;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t < nk; t++) {
                const float *kt = k + ((size_t)t * nkv + kh) * hd;
                double d = 0;
                for (int j = 0; j < hd; j++)
                    d += (double)qi[j] * kt[j];
                s[t] = d / sqrt((double)hd);
                mx = fmax(mx, s[t]);
            }
            for (int t = 0; t < nk; t++)
                sum += (s[t] = exp(s[t] - mx));
            double *o = out + ((size_t)i * nh + h) * hd;
            for (int j = 0; j < hd; j++) {
                double a = 0;
                for (int t = 0; t < nk; t++)
                    a += s[t] * v[((size_t)t * nkv + kh) * hd + j];
                o[j] = a / sum;
            }
        }
    free(s);
}

static void check_attention(int n_q, int q_pos0, int nh, int nkv, int hd, float qscale)
{
    int n_kv = q_pos0 + n_q;
    float *q = rand_array((size_t)n_q * nh * hd);
    float *k = rand_array((size_t)n_kv * nkv * hd), *v = rand_array((size_t)n_kv * nkv * hd);
    for (size_t i = 0; i < (size_t)n_q * nh * hd; i++)
        q[i] *= qscale; /* sharpen the softmax */
    size_t len = (size_t)n_q * nh * hd;
    float *out = malloc(len * sizeof(float)), *out_h = calloc(len, sizeof(float));
    double *ref = malloc(len * sizeof(double));
    naive_attention(ref, q, k, v, n_q, q_pos0, nh, nkv, hd);
    ss_cpu_attention(out, q, k, v, n_q, q_pos0, nh, nkv, hd);
    assert_close(out, ref, len, 1e-5, "attention");
    /* the per-heads entry point writes exactly those heads' slices, bit for
     * bit what the whole call wrote: here the last K/V head's heads from its
     * second one on (all of a one-head group) */
    int group = nh / nkv, h0 = (nkv - 1) * group + (group > 1), n_head = nh - h0;
    ss_cpu_attention_heads(out_h, q, k, v, n_q, q_pos0, h0, n_head, nh, nkv, hd);
    for (int i = 0; i < n_q; i++)
        for (int hh = 0; hh < nh; hh++)
            for (int j = 0; j < hd; j++) {
                size_t at = ((size_t)i * nh + hh) * hd + j;
                cr_assert(hh >= h0 ? out_h[at] == out[at] : out_h[at] == 0.0f,
                          "attention_heads: row %d head %d", i, hh);
            }
    free(q);
    free(k);
    free(v);
    free(out);
    free(out_h);
    free(ref);
}

Test(cpu_ops, attention_gqa_shapes)
{
    check_attention(7, 0, 9, 3, 64, 1.0f);    /* prefill, SmolLM2 heads */
    check_attention(1, 40, 9, 3, 64, 1.0f);   /* decode against a cache */
    check_attention(5, 11, 32, 8, 128, 1.0f); /* Llama-8B heads */
    check_attention(3, 2, 4, 4, 16, 6.0f);    /* MHA, peaked softmax */
    check_attention(2, 300, 4, 2, 32, 10.0f); /* long cache, max moves often */
    check_attention(3, 70, 20, 1, 20, 1.0f);  /* MQA: a group of 20 heads (3 passes of 8), head_dim not a multiple of 8 */
}

Test(cpu_ops, attention_is_causal)
{
    int n_q = 6, q_pos0 = 4, nh = 4, nkv = 2, hd = 16, n_kv = q_pos0 + n_q;
    size_t ql = (size_t)n_q * nh * hd, kl = (size_t)n_kv * nkv * hd;
    float *q = rand_array(ql), *k = rand_array(kl), *v = rand_array(kl);
    float *a = malloc(ql * sizeof(float)), *b = malloc(ql * sizeof(float));
    ss_cpu_attention(a, q, k, v, n_q, q_pos0, nh, nkv, hd);
    /* scramble keys and values of the last 3 positions: queries 0..2 (at
     * positions 4..6) must not see them, queries 3..5 must */
    for (size_t i = (size_t)(n_kv - 3) * nkv * hd; i < kl; i++) {
        k[i] = 5.0f * frand();
        v[i] = 5.0f * frand();
    }
    ss_cpu_attention(b, q, k, v, n_q, q_pos0, nh, nkv, hd);
    size_t row = (size_t)nh * hd;
    cr_assert(memcmp(a, b, 3 * row * sizeof(float)) == 0, "future positions leaked");
    for (int i = 3; i < n_q; i++)
        cr_assert(memcmp(a + i * row, b + i * row, row * sizeof(float)) != 0,
                  "query %d should see the changed positions", i);
    free(q);
    free(k);
    free(v);
    free(a);
    free(b);
}

/* ---------------------------------------------------------------- steer */

Test(cpu_ops, steer_add_respects_positions)
{
    int n = 6, d = 64, pos0 = 10;
    float *h = rand_array((size_t)n * d), *v = rand_array(d);
    float *h0 = malloc((size_t)n * d * sizeof(float));
    memcpy(h0, h, (size_t)n * d * sizeof(float));
    float alpha = 2.5f;
    ss_cpu_steer(h, n, d, pos0, SS_STEER_ADD, alpha, v, 12, 14); /* rows 2, 3 */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            float want = (i == 2 || i == 3) ? h0[i * d + j] + alpha * v[j] : h0[i * d + j];
            cr_assert(h[i * d + j] == want, "row %d col %d: %g vs %g", i, j,
                      (double)h[i * d + j], (double)want);
        }
    /* pos_end < 0: every position from pos_begin on */
    memcpy(h, h0, (size_t)n * d * sizeof(float));
    ss_cpu_steer(h, n, d, pos0, SS_STEER_ADD, alpha, v, 13, -1);
    for (int i = 0; i < n; i++)
        cr_assert((memcmp(h + i * d, h0 + i * d, d * sizeof(float)) == 0) == (i < 3),
                  "row %d (position %d) with range [13, end)", i, pos0 + i);
    free(h);
    free(h0);
    free(v);
}

Test(cpu_ops, steer_ablate_orthogonal)
{
    int n = 5, d = 576;
    float *h = rand_array((size_t)n * d), *v = rand_array(d);
    double nn = 0;
    for (int j = 0; j < d; j++)
        nn += (double)v[j] * v[j];
    for (int j = 0; j < d; j++)
        v[j] = (float)(v[j] / sqrt(nn));
    for (int j = 0; j < d; j++) /* give h a large component along v */
        h[d + j] += 30.0f * v[j];
    float *h0 = malloc((size_t)n * d * sizeof(float));
    memcpy(h0, h, (size_t)n * d * sizeof(float));
    ss_cpu_steer(h, n, d, 0, SS_STEER_ABLATE, 1.0f, v, 1, 4);
    for (int i = 0; i < n; i++) {
        double dot = 0, dot0 = 0;
        for (int j = 0; j < d; j++) {
            dot += (double)h[i * d + j] * v[j];
            dot0 += (double)h0[i * d + j] * v[j];
        }
        if (i >= 1 && i < 4) {
            cr_assert(fabs(dot) < 1e-5, "row %d: h.v = %g after ablation", i, dot);
            for (int j = 0; j < d; j++) /* only the v component is removed */
                cr_assert(fabs(h[i * d + j] - (h0[i * d + j] - dot0 * v[j])) < 1e-5);
        } else {
            cr_assert(memcmp(h + i * d, h0 + i * d, d * sizeof(float)) == 0);
        }
    }
    free(h);
    free(h0);
    free(v);
}

Test(cpu_ops, steer_alpha_zero_bit_identical)
{
    int n = 4, d = 64;
    float *h = rand_array((size_t)n * d), *v = rand_array(d);
    float *h0 = malloc((size_t)n * d * sizeof(float));
    memcpy(h0, h, (size_t)n * d * sizeof(float));
    ss_cpu_steer(h, n, d, 0, SS_STEER_ADD, 0.0f, v, 0, -1);
    cr_assert(memcmp(h, h0, (size_t)n * d * sizeof(float)) == 0);
    ss_cpu_steer(h, n, d, 0, SS_STEER_ABLATE, 0.0f, v, 0, -1);
    cr_assert(memcmp(h, h0, (size_t)n * d * sizeof(float)) == 0);
    free(h);
    free(h0);
    free(v);
}
