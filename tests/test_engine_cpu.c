/* test_engine_cpu.c - the CPU engine on tiny random models built in memory:
 * KV-cache consistency, batching, a naive double-precision reference,
 * steering and capture semantics, and error messages. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/engine.h"
#include "safesteer/sample.h"
#include "safesteer/steer.h"

/* ---------------------------------------------------------------- model */

#define TL 3    /* layers */
#define TD 64   /* d_model */
#define TH 4    /* heads */
#define TKV 2   /* kv heads */
#define THD 16  /* head_dim */
#define TFF 96  /* d_ff */
#define TV 300  /* vocab */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Linear weights scaled by 1.7/sqrt(in) so activations stay O(1).  Free
 * with ss_model_free. */
static ss_model *tmodel_new(int tied, int neox, int llama3)
{
    ss_config c = {0};
    c.n_layers = TL;
    c.d_model = TD;
    c.n_heads = TH;
    c.n_kv_heads = TKV;
    c.head_dim = THD;
    c.d_ff = TFF;
    c.vocab_size = TV;
    c.max_ctx = 256;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_neox = neox;
    c.tied_embeddings = tied;
    if (llama3) {
        /* small original context so the band of interpolated frequencies
         * falls inside head_dim 16 */
        c.rope_scaling = SS_ROPE_SCALING_LLAMA3;
        c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f;
        c.rope_high_freq_factor = 4.0f;
        c.rope_orig_ctx = 64;
    }
    float sd = 1.7f / sqrtf(TD), sq = 1.7f / sqrtf(TH * THD);
    const ss_random_scales s = {.embd = 1.0f, .output = 1.0f, .norm = 0.2f, .wq = sd, .wk = sd,
                                .wv = sd, .wo = sq, .w_gate = sd, .w_up = sd,
                                .w_down = 1.7f / sqrtf(TFF)};
    ss_model *m = NULL;
    ss_error err = {.msg = ""};
    cr_assert(ss_model_random(&c, &s, 2, &m, &err) == 0, "random model: %s", err.msg);
    return m;
}

/* A tensor's F32 values, for the reference. */
#define W(t) ((const float *)(t).data)

static ss_engine *engine_new(const ss_model *t, int max_seqs, int max_ctx)
{
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.max_seqs = max_seqs;
    o.max_ctx = max_ctx;
    ss_engine *e = NULL;
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_create(t, &o, &e, &err) == 0, "create: %s", err.msg);
    return e;
}

static void random_tokens(int32_t *tok, int n)
{
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((frand() + 1.0f) * 0.5f * TV) % TV;
}

/* One sequence appended to one slot; logits of all tokens or the last. */
static void fwd1(ss_engine *e, int slot, const int32_t *tok, int n, int all, float *logits)
{
    ss_batch b = {.n_seqs = 1, .slots = &slot, .n_tokens = &n, .tokens = tok, .all_logits = all};
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_forward(e, &b, logits, &err) == 0, "forward: %s", err.msg);
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i]));
    return m;
}

/* |got - want| <= tol * max|want| over the row: relative to the logit scale */
static void assert_rows_close(const float *got, const float *want, size_t n, double tol,
                              const char *what)
{
    double scale = fmax(max_abs(want, n), 1e-6);
    for (size_t i = 0; i < n; i++)
        cr_assert(fabs(got[i] - want[i]) <= tol * scale, "%s[%zu]: %.8g vs %.8g (scale %g)",
                  what, i, (double)got[i], (double)want[i], scale);
}

/* ---------------------------------------------------------------- reference */

static void ref_rmsnorm(double *o, const double *x, const float *w, int d, double eps)
{
    double ss = 0;
    for (int j = 0; j < d; j++)
        ss += x[j] * x[j];
    double r = 1.0 / sqrt(ss / d + eps);
    for (int j = 0; j < d; j++)
        o[j] = x[j] * r * w[j];
}

static void ref_linear(double *y, const double *x, const float *w, int in, int out)
{
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int k = 0; k < in; k++)
            s += x[k] * w[(size_t)o * in + k];
        y[o] = s;
    }
}

static double ref_freq(const ss_config *c, int j)
{
    double f = pow(c->rope_theta, -2.0 * j / c->head_dim);
    if (c->rope_scaling != SS_ROPE_SCALING_LLAMA3)
        return f;
    double wl = 2.0 * M_PI / f, orig = c->rope_orig_ctx;
    double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    if (wl < orig / hi)
        return f;
    if (wl > orig / lo)
        return f / c->rope_factor;
    double s = (orig / wl - lo) / (hi - lo);
    return (1 - s) * f / c->rope_factor + s * f;
}

static void ref_rope(double *x, int n_heads, int pos, const ss_config *c)
{
    int hd = c->head_dim;
    for (int h = 0; h < n_heads; h++)
        for (int j = 0; j < hd / 2; j++) {
            int a = c->rope_neox ? j : 2 * j, b = c->rope_neox ? j + hd / 2 : 2 * j + 1;
            double ang = pos * ref_freq(c, j), *p = x + h * hd;
            double x0 = p[a], x1 = p[b];
            p[a] = x0 * cos(ang) - x1 * sin(ang);
            p[b] = x0 * sin(ang) + x1 * cos(ang);
        }
}

/* Full forward without a cache, in double: logits[n][TV] for every token. */
static void ref_forward(const ss_model *t, const int32_t *tok, int n, double *logits)
{
    const ss_config *c = &t->cfg;
    int qd = TH * THD, kvd = TKV * THD;
    size_t f = sizeof(double);
    double *h = calloc((size_t)n * TD, f), *xn = malloc(TD * f), *att = malloc(qd * f);
    double *q = malloc((size_t)n * qd * f), *k = malloc((size_t)n * kvd * f);
    double *v = malloc((size_t)n * kvd * f), *o = malloc(TD * f), *s = malloc((size_t)n * f);
    double *g = malloc(TFF * f), *u = malloc(TFF * f);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < TD; j++)
            h[i * TD + j] = W(t->tok_embd)[(size_t)tok[i] * TD + j];
    for (int l = 0; l < TL; l++) {
        for (int i = 0; i < n; i++) {
            ref_rmsnorm(xn, h + i * TD, W(t->layers[l].attn_norm), TD, c->rms_eps);
            ref_linear(q + i * qd, xn, W(t->layers[l].wq), TD, qd);
            ref_linear(k + i * kvd, xn, W(t->layers[l].wk), TD, kvd);
            ref_linear(v + i * kvd, xn, W(t->layers[l].wv), TD, kvd);
            ref_rope(q + i * qd, TH, i, c);
            ref_rope(k + i * kvd, TKV, i, c);
        }
        for (int i = 0; i < n; i++) { /* causal attention, then the MLP */
            for (int hh = 0; hh < TH; hh++) {
                int kh = hh / (TH / TKV);
                double mx = -INFINITY, sum = 0;
                for (int p = 0; p <= i; p++) {
                    double d = 0;
                    for (int j = 0; j < THD; j++)
                        d += q[i * qd + hh * THD + j] * k[p * kvd + kh * THD + j];
                    s[p] = d / sqrt(THD);
                    mx = fmax(mx, s[p]);
                }
                for (int p = 0; p <= i; p++)
                    sum += (s[p] = exp(s[p] - mx));
                for (int j = 0; j < THD; j++) {
                    double a = 0;
                    for (int p = 0; p <= i; p++)
                        a += s[p] * v[p * kvd + kh * THD + j];
                    att[hh * THD + j] = a / sum;
                }
            }
            ref_linear(o, att, W(t->layers[l].wo), qd, TD);
            for (int j = 0; j < TD; j++)
                h[i * TD + j] += o[j];
            ref_rmsnorm(xn, h + i * TD, W(t->layers[l].ffn_norm), TD, c->rms_eps);
            ref_linear(g, xn, W(t->layers[l].w_gate), TD, TFF);
            ref_linear(u, xn, W(t->layers[l].w_up), TD, TFF);
            for (int j = 0; j < TFF; j++)
                g[j] = g[j] / (1 + exp(-g[j])) * u[j];
            ref_linear(o, g, W(t->layers[l].w_down), TFF, TD);
            for (int j = 0; j < TD; j++)
                h[i * TD + j] += o[j];
        }
    }
    for (int i = 0; i < n; i++) {
        ref_rmsnorm(xn, h + i * TD, W(t->output_norm), TD, c->rms_eps);
        ref_linear(logits + (size_t)i * TV, xn, W(t->output), TD, TV);
    }
    free(h), free(xn), free(q), free(k), free(v), free(att), free(o), free(g), free(u), free(s);
}

static void check_reference(int tied, int neox, int llama3)
{
    ss_model *t = tmodel_new(tied, neox, llama3);
    ss_engine *e = engine_new(t, 1, 0);
    cr_assert_eq(ss_engine_max_ctx(e), 256, "max_ctx 0 takes the model context (256)");
    enum { N = 20 };
    int32_t tok[N];
    random_tokens(tok, N);
    float *got = malloc((size_t)N * TV * sizeof(float));
    double *want = malloc((size_t)N * TV * sizeof(double));
    float *wantf = malloc((size_t)N * TV * sizeof(float));
    fwd1(e, 0, tok, N, 1, got);
    ref_forward(t, tok, N, want);
    for (size_t i = 0; i < (size_t)N * TV; i++)
        wantf[i] = (float)want[i];
    for (int i = 0; i < N; i++)
        assert_rows_close(got + (size_t)i * TV, wantf + (size_t)i * TV, TV, 1e-4, "logits");
    free(got);
    free(want);
    free(wantf);
    ss_engine_free(e);
    ss_model_free(t);
}

Test(engine_cpu, matches_naive_reference)
{
    check_reference(1, 0, 0);
}

Test(engine_cpu, matches_reference_untied_neox_llama3)
{
    check_reference(0, 1, 1);
}

/* ---------------------------------------------------------------- cache */

/* Prefill 40 tokens then decode one at a time to 90: crosses the cache's
 * growth from 64 positions.  Every step's logits equal the matching row of
 * one all_logits prefill, and the last equals a plain prefill. */
Test(engine_cpu, incremental_decode_matches_prefill)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 3, 0);
    enum { N = 90, P = 40 };
    int32_t tok[N];
    random_tokens(tok, N);
    float *all = malloc((size_t)N * TV * sizeof(float)), step[TV], last[TV];
    fwd1(e, 1, tok, N, 1, all);
    fwd1(e, 2, tok, N, 0, last);
    cr_assert_eq(ss_engine_slot_pos(e, 1), N);
    assert_rows_close(last, all + (size_t)(N - 1) * TV, TV, 1e-5, "all_logits last row");

    fwd1(e, 0, tok, P, 0, step);
    assert_rows_close(step, all + (size_t)(P - 1) * TV, TV, 1e-4, "prefill");
    for (int i = P; i < N; i++) {
        fwd1(e, 0, tok + i, 1, 0, step);
        cr_assert_eq(ss_engine_slot_pos(e, 0), i + 1);
        assert_rows_close(step, all + (size_t)i * TV, TV, 1e-4, "decode step");
    }
    assert_rows_close(step, last, TV, 1e-4, "incremental vs prefill");

    /* reset forgets the slot: the same prefill gives the same logits */
    ss_engine_reset_slot(e, 0);
    cr_assert_eq(ss_engine_slot_pos(e, 0), 0);
    fwd1(e, 0, tok, N, 0, step);
    cr_assert(memcmp(step, last, sizeof step) == 0, "after reset");
    free(all);
    ss_engine_free(e);
    ss_model_free(t);
}

/* Three sequences of different lengths (one continuing a cached prefix)
 * in one call equal each run alone. */
Test(engine_cpu, batch_matches_single)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *eb = engine_new(t, 4, 0), *e1 = engine_new(t, 1, 0);
    int32_t a[5], b[37], c[1], pre[9];
    random_tokens(a, 5);
    random_tokens(b, 37);
    random_tokens(c, 1);
    random_tokens(pre, 9);
    fwd1(eb, 0, pre, 9, 0, (float[TV]){0}); /* slot 0 already holds 9 tokens */

    int slots[3] = {3, 0, 1}, n[3] = {5, 37, 1};
    int32_t tok[43];
    memcpy(tok, a, sizeof a);
    memcpy(tok + 5, b, sizeof b);
    memcpy(tok + 42, c, sizeof c);
    float last[3][TV], all[43][TV], want[TV];
    ss_batch bt = {.n_seqs = 3, .slots = slots, .n_tokens = n, .tokens = tok, .all_logits = 0};
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_forward(eb, &bt, &last[0][0], &err) == 0, "%s", err.msg);
    cr_assert_eq(ss_engine_slot_pos(eb, 0), 9 + 37);
    cr_assert_eq(ss_engine_slot_pos(eb, 3), 5);

    fwd1(e1, 0, a, 5, 0, want);
    assert_rows_close(last[0], want, TV, 1e-5, "seq a");
    ss_engine_reset_slot(e1, 0);
    fwd1(e1, 0, pre, 9, 0, want);
    fwd1(e1, 0, b, 37, 0, want);
    assert_rows_close(last[1], want, TV, 1e-5, "seq b after prefix");
    ss_engine_reset_slot(e1, 0);
    fwd1(e1, 0, c, 1, 0, want);
    assert_rows_close(last[2], want, TV, 1e-5, "seq c");

    /* all_logits over the batch: rows are in token order, last rows match */
    for (int s = 0; s < 4; s++)
        ss_engine_reset_slot(eb, s);
    fwd1(eb, 0, pre, 9, 0, want);
    bt.all_logits = 1;
    cr_assert(ss_engine_forward(eb, &bt, &all[0][0], &err) == 0, "%s", err.msg);
    assert_rows_close(all[4], last[0], TV, 1e-5, "all_logits row 4");
    assert_rows_close(all[41], last[1], TV, 1e-5, "all_logits row 41");
    assert_rows_close(all[42], last[2], TV, 1e-5, "all_logits row 42");
    ss_engine_free(eb);
    ss_engine_free(e1);
    ss_model_free(t);
}

/* ---------------------------------------------------------------- capture */

#define CAP_POS 32

/* Stores captured rows by (slot, layer, position). */
typedef struct {
    float h[2][TL][CAP_POS][TD];
    int calls;
    int bad; /* a call with arguments the engine should never send */
} capture_buf;

static void capture_fn(void *user, int slot, int site, int layer, int pos, const float *h,
                       int n_tok, int d_model)
{
    capture_buf *c = user;
    (void)site;
    c->calls++;
    if (slot < 0 || slot > 1 || layer < 0 || layer >= TL || d_model != TD || pos < 0 ||
        pos + n_tok > CAP_POS) {
        c->bad++;
        return;
    }
    memcpy(c->h[slot][layer][pos], h, (size_t)n_tok * TD * sizeof(float));
}

static void capture_on(ss_engine *e, int site, capture_buf *c)
{
    ss_error err = {.msg = ""};
    memset(c, 0, sizeof *c);
    cr_assert(ss_engine_set_capture(e, site, NULL, capture_fn, c, &err) == 0, "%s", err.msg);
}

static void set_steer(ss_engine *e, int slot, int site, int op, const float *alpha,
                      const float *vec, int pb, int pe)
{
    ss_steer_compiled s;
    ss_error err = {.msg = ""};
    cr_assert(ss_steer_compile_site(TL, TD, site, op, alpha, vec, pb, pe, &s, &err) == 0);
    cr_assert(ss_engine_set_steering(e, slot, &s.slot, &err) == 0, "steering: %s", err.msg);
    ss_steer_compiled_free(&s);
}

static void unit_vectors(float *v) /* [TL][TD], each unit norm */
{
    for (int l = 0; l < TL; l++) {
        double nn = 0;
        for (int j = 0; j < TD; j++) {
            v[l * TD + j] = frand();
            nn += (double)v[l * TD + j] * v[l * TD + j];
        }
        for (int j = 0; j < TD; j++)
            v[l * TD + j] = (float)(v[l * TD + j] / sqrt(nn));
    }
}

Test(engine_cpu, capture_layers_mask_and_positions)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 0);
    capture_buf *c = calloc(1, sizeof *c);
    uint8_t mask[TL] = {0, 1, 0};
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_set_capture(e, SS_SITE_MLP_OUT, mask, capture_fn, c, &err) == 0);
    int32_t tok[7];
    random_tokens(tok, 7);
    fwd1(e, 1, tok, 4, 0, (float[TV]){0});
    fwd1(e, 1, tok + 4, 3, 0, (float[TV]){0});
    cr_assert_eq(c->calls, 2, "one call per forward for the one selected layer");
    cr_assert_eq(c->bad, 0);
    /* the hook saw positions 0..6 of slot 1 at layer 1 only */
    float zero[TD] = {0};
    for (int p = 0; p < 7; p++)
        cr_assert(memcmp(c->h[1][1][p], zero, sizeof zero) != 0, "position %d missing", p);
    cr_assert(memcmp(c->h[1][0][0], zero, sizeof zero) == 0, "layer 0 not selected");
    /* clearing the hook stops the calls */
    cr_assert(ss_engine_set_capture(e, SS_SITE_MLP_OUT, NULL, NULL, NULL, &err) == 0);
    fwd1(e, 0, tok, 2, 0, (float[TV]){0});
    cr_assert_eq(c->calls, 2);
    free(c);
    ss_engine_free(e);
    ss_model_free(t);
}

/* ---------------------------------------------------------------- steering */

Test(engine_cpu, strength_zero_is_bit_identical)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 0);
    int32_t tok[12];
    random_tokens(tok, 12);
    float base[12][TV], got[12][TV], alpha[TL] = {0}, vec[TL * TD];
    unit_vectors(vec);
    fwd1(e, 0, tok, 12, 1, &base[0][0]);
    for (int site = 0; site < SS_SITE_COUNT; site++)
        for (int op = 0; op <= 1; op++) {
            set_steer(e, 1, site, op, alpha, vec, 0, -1);
            ss_engine_reset_slot(e, 1);
            fwd1(e, 1, tok, 12, 1, &got[0][0]);
            cr_assert(memcmp(got, base, sizeof got) == 0, "site %d op %d changed logits",
                      site, op);
        }
    ss_engine_free(e);
    ss_model_free(t);
}

/* Runs tok through slot 0 capturing `site`, optionally steered. */
static void run_captured(ss_engine *e, int site, capture_buf *c, const int32_t *tok, int n,
                         float *logits)
{
    ss_engine_reset_slot(e, 0);
    capture_on(e, site, c);
    fwd1(e, 0, tok, n, 1, logits);
    cr_assert_eq(c->bad, 0);
}

Test(engine_cpu, add_moves_resid_post_by_alpha_v)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 1, 0);
    enum { N = 8, L = 1 };
    int32_t tok[N];
    random_tokens(tok, N);
    capture_buf *base = malloc(sizeof *base), *st = malloc(sizeof *st);
    float lb[N][TV], ls[N][TV], alpha[TL] = {0}, vec[TL * TD];
    unit_vectors(vec);
    alpha[L] = 3.0f;
    run_captured(e, SS_SITE_RESID_POST, base, tok, N, &lb[0][0]);
    set_steer(e, 0, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 2, 5);
    run_captured(e, SS_SITE_RESID_POST, st, tok, N, &ls[0][0]);

    for (int l = 0; l < L; l++)
        cr_assert(memcmp(st->h[0][l], base->h[0][l], sizeof st->h[0][l]) == 0,
                  "layer %d before the steered layer changed", l);
    for (int p = 0; p < N; p++) {
        int in = p >= 2 && p < 5;
        for (int j = 0; j < TD; j++) {
            double diff = st->h[0][L][p][j] - base->h[0][L][p][j];
            double want = in ? alpha[L] * vec[L * TD + j] : 0.0;
            cr_assert(fabs(diff - want) < 1e-5, "pos %d dim %d: moved %g, want %g", p, j, diff,
                      want);
        }
    }
    /* positions before the range are causally untouched all the way out */
    cr_assert(memcmp(ls[0], lb[0], 2 * sizeof ls[0]) == 0, "logits before the range");
    cr_assert(memcmp(ls[2], lb[2], sizeof ls[2]) != 0, "steered position's logits");
    free(base);
    free(st);
    ss_engine_free(e);
    ss_model_free(t);
}

/* ADD at the block outputs: the captured block output and the layer's
 * resid_post both move by alpha * v. */
Test(engine_cpu, add_at_attn_and_mlp_out)
{
    ss_model *t = tmodel_new(1, 0, 0);
    enum { N = 6, L = 2 };
    int32_t tok[N];
    random_tokens(tok, N);
    float alpha[TL] = {0}, vec[TL * TD], lg[N][TV];
    unit_vectors(vec);
    alpha[L] = -2.0f;
    int sites[2] = {SS_SITE_ATTN_OUT, SS_SITE_MLP_OUT};
    for (int si = 0; si < 2; si++) {
        ss_engine *e = engine_new(t, 1, 0);
        capture_buf *b0 = malloc(sizeof *b0), *b1 = malloc(sizeof *b1);
        capture_buf *r0 = malloc(sizeof *r0), *r1 = malloc(sizeof *r1);
        ss_error err = {.msg = ""};
        /* block output and resid_post hooks at once */
        cr_assert(!ss_engine_set_capture(e, SS_SITE_RESID_POST, NULL, capture_fn, r0, &err));
        memset(r0, 0, sizeof *r0);
        run_captured(e, sites[si], b0, tok, N, &lg[0][0]);
        set_steer(e, 0, sites[si], SS_STEER_ADD, alpha, vec, 0, -1);
        cr_assert(!ss_engine_set_capture(e, SS_SITE_RESID_POST, NULL, capture_fn, r1, &err));
        memset(r1, 0, sizeof *r1);
        run_captured(e, sites[si], b1, tok, N, &lg[0][0]);
        for (int p = 0; p < N; p++)
            for (int j = 0; j < TD; j++) {
                double want = alpha[L] * vec[L * TD + j];
                double db = b1->h[0][L][p][j] - b0->h[0][L][p][j];
                double dr = r1->h[0][L][p][j] - r0->h[0][L][p][j];
                cr_assert(fabs(db - want) < 1e-5, "site %s pos %d: block moved %g want %g",
                          ss_site_name(sites[si]), p, db, want);
                if (sites[si] == SS_SITE_MLP_OUT) /* nothing between it and resid_post */
                    cr_assert(fabs(dr - want) < 1e-5, "resid_post moved %g want %g", dr, want);
            }
        free(b0), free(b1), free(r0), free(r1);
        ss_engine_free(e);
    }
    ss_model_free(t);
}

Test(engine_cpu, ablate_leaves_resid_orthogonal)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 1, 0);
    enum { N = 10 };
    int32_t tok[N];
    random_tokens(tok, N);
    capture_buf *c = malloc(sizeof *c);
    float alpha[TL] = {1.0f, 0.0f, 1.0f}, vec[TL * TD], lg[N][TV];
    unit_vectors(vec);
    set_steer(e, 0, SS_SITE_RESID_POST, SS_STEER_ABLATE, alpha, vec, 0, -1);
    run_captured(e, SS_SITE_RESID_POST, c, tok, N, &lg[0][0]);
    for (int l = 0; l < TL; l++)
        for (int p = 0; p < N; p++) {
            double dot = 0, nn = 0;
            for (int j = 0; j < TD; j++) {
                dot += (double)c->h[0][l][p][j] * vec[l * TD + j];
                nn += (double)c->h[0][l][p][j] * c->h[0][l][p][j];
            }
            if (alpha[l] != 0.0f)
                cr_assert(fabs(dot) < 1e-5 * sqrt(nn), "layer %d pos %d: h.v = %g", l, p, dot);
            else
                cr_assert(fabs(dot) > 1e-3 * sqrt(nn), "unsteered layer %d looks ablated (pos %d: %g vs %g)", l, p, dot, sqrt(nn));
        }
    free(c);
    ss_engine_free(e);
    ss_model_free(t);
}

/* A range starting at position 6: the 6-token prefill is untouched, the
 * decoded token at position 6 is steered. */
Test(engine_cpu, steering_positions_follow_the_cache)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 0);
    int32_t tok[7];
    random_tokens(tok, 7);
    float alpha[TL] = {0, 4.0f, 0}, vec[TL * TD], a[TV], b[TV];
    unit_vectors(vec);
    fwd1(e, 0, tok, 6, 0, a);
    set_steer(e, 1, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 6, 7);
    fwd1(e, 1, tok, 6, 0, b);
    cr_assert(memcmp(a, b, sizeof a) == 0, "prefill before the range must be untouched");
    fwd1(e, 0, tok + 6, 1, 0, a);
    fwd1(e, 1, tok + 6, 1, 0, b);
    cr_assert(memcmp(a, b, sizeof a) != 0, "position 6 must be steered");
    /* clearing restores the unsteered computation */
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_set_steering(e, 1, NULL, &err) == 0);
    ss_engine_reset_slot(e, 1);
    fwd1(e, 1, tok, 7, 0, b);
    assert_rows_close(b, a, TV, 1e-5, "after clearing");
    ss_engine_free(e);
    ss_model_free(t);
}

Test(engine_cpu, steering_one_sequence_leaves_others)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 0);
    int32_t tok[11];
    random_tokens(tok, 11);
    int slots[2] = {0, 1}, n[2] = {5, 6};
    ss_batch b = {.n_seqs = 2, .slots = slots, .n_tokens = n, .tokens = tok, .all_logits = 1};
    float base[11][TV], st[11][TV], alpha[TL] = {2.0f, 2.0f, 2.0f}, vec[TL * TD];
    unit_vectors(vec);
    ss_error err = {.msg = ""};
    cr_assert(ss_engine_forward(e, &b, &base[0][0], &err) == 0, "%s", err.msg);
    ss_engine_reset_slot(e, 0);
    ss_engine_reset_slot(e, 1);
    set_steer(e, 0, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 0, -1);
    cr_assert(ss_engine_forward(e, &b, &st[0][0], &err) == 0, "%s", err.msg);
    cr_assert(memcmp(st[0], base[0], 5 * sizeof st[0]) != 0, "slot 0 is steered");
    cr_assert(memcmp(st[5], base[5], 6 * sizeof st[0]) == 0, "slot 1 must be untouched");
    ss_engine_free(e);
    ss_model_free(t);
}

/* Compiles one site's steering and returns what set_steering says. */
static int try_steer(ss_engine *e, int slot, int site, int op, const float *alpha,
                     const float *vec, int pb, int pe, ss_error *err)
{
    ss_steer_compiled s;
    if (ss_steer_compile_site(TL, TD, site, op, alpha, vec, pb, pe, &s, err))
        return -1;
    int rc = ss_engine_set_steering(e, slot, &s.slot, err);
    ss_steer_compiled_free(&s);
    return rc;
}

Test(engine_cpu, steering_validation)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 0);
    float alpha[TL] = {1, 0, 0}, vec[TL * TD];
    unit_vectors(vec);
    const int R = SS_SITE_RESID_POST, ADD = SS_STEER_ADD;
    ss_error err = {.msg = ""};
    cr_assert(try_steer(e, 2, R, ADD, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "slot 2 out of range"), "%s", err.msg);
    alpha[1] = NAN;
    cr_assert(try_steer(e, 0, SS_SITE_MLP_OUT, ADD, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "alpha of mlp_out layer 1 is nan"), "%s", err.msg);
    alpha[1] = 0;
    vec[5] = INFINITY;
    cr_assert(try_steer(e, 0, R, ADD, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "vector of resid_post layer 0 has inf at index 5"), "%s", err.msg);
    unit_vectors(vec);
    vec[0] += 1.0f;
    cr_assert(try_steer(e, 0, SS_SITE_ATTN_OUT, SS_STEER_ABLATE, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "ablation vector of attn_out layer 0"), "%s", err.msg);
    cr_assert(strstr(err.msg, "must be unit norm"), "%s", err.msg);
    cr_assert(try_steer(e, 0, R, 7, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "op 7"), "%s", err.msg);
    cr_assert(try_steer(e, 0, SS_SITE_COUNT, ADD, alpha, vec, 0, -1, &err) == -1);
    cr_assert(strstr(err.msg, "site 3 out of range"), "%s", err.msg);
    cr_assert(try_steer(e, 0, SS_SITE_MLP_OUT, ADD, alpha, vec, 5, 3, &err) == -1);
    cr_assert(strstr(err.msg, "[5, 3) is invalid"), "%s", err.msg);
    cr_assert(ss_engine_set_capture(e, -1, NULL, capture_fn, NULL, &err) == -1);
    cr_assert(strstr(err.msg, "site -1 out of range"), "%s", err.msg);
    ss_engine_free(e);
    ss_model_free(t);
}

/* ---------------------------------------------------------------- errors */

Test(engine_cpu, batch_errors)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine *e = engine_new(t, 2, 16);
    cr_assert_eq(ss_engine_max_ctx(e), 16);
    cr_assert_str_eq(ss_engine_device_name(e), "cpu");
    int32_t tok[17];
    random_tokens(tok, 17);
    float lg[17 * TV];
    fwd1(e, 0, tok, 10, 0, lg);
    ss_error err = {.msg = ""};
    int slot = 0, n = 7;
    ss_batch b = {.n_seqs = 1, .slots = &slot, .n_tokens = &n, .tokens = tok};
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert_str_eq(err.msg, "sequence in slot 0: 7 tokens at position 10 exceed the "
                              "context of 16");
    cr_assert_eq(ss_engine_slot_pos(e, 0), 10, "a failed forward must not advance");
    n = 6; /* exactly fills the context */
    cr_assert(ss_engine_forward(e, &b, lg, &err) == 0, "%s", err.msg);

    slot = 2;
    n = 1;
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert(strstr(err.msg, "slot 2 out of range"), "%s", err.msg);
    slot = -1;
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert(strstr(err.msg, "slot -1 out of range"), "%s", err.msg);

    slot = 1;
    n = 3;
    int32_t bad[3] = {1, TV, 2};
    b.tokens = bad;
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert_str_eq(err.msg, "sequence in slot 1: token id 300 at index 1 is outside the "
                              "vocabulary of 300");
    bad[1] = -4;
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert(strstr(err.msg, "token id -4"), "%s", err.msg);

    b.n_seqs = 0;
    cr_assert(ss_engine_forward(e, &b, lg, &err) == -1);
    cr_assert(strstr(err.msg, "empty batch"), "%s", err.msg);
    int slots2[2] = {1, 1}, n2[2] = {1, 1};
    ss_batch dup = {.n_seqs = 2, .slots = slots2, .n_tokens = n2, .tokens = tok};
    cr_assert(ss_engine_forward(e, &dup, lg, &err) == -1);
    cr_assert(strstr(err.msg, "both use slot 1"), "%s", err.msg);
    n2[0] = 0;
    slots2[0] = 0;
    cr_assert(ss_engine_forward(e, &dup, lg, &err) == -1);
    cr_assert(strstr(err.msg, "0 tokens"), "%s", err.msg);
    ss_engine_free(e);
    ss_model_free(t);
}

Test(engine_cpu, create_errors)
{
    ss_model *t = tmodel_new(1, 0, 0);
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    ss_engine *e = NULL;
    ss_error err = {.msg = ""};
    o.max_seqs = 0;
    cr_assert(ss_engine_create(t, &o, &e, &err) == -1);
    cr_assert(strstr(err.msg, "max_seqs must be >= 1"), "%s", err.msg);
    o.max_seqs = 1;
    t->layers[1].wk.dims[1] = 16; /* wrong shape on one tensor */
    cr_assert(ss_engine_create(t, &o, &e, &err) == -1);
    cr_assert(strstr(err.msg, "layer 1") && strstr(err.msg, "attn_k") &&
                  strstr(err.msg, "expected {64, 32}"),
              "%s", err.msg);
    t->layers[1].wk.dims[1] = TKV * THD;
    t->cfg.n_kv_heads = 3;
    cr_assert(ss_engine_create(t, &o, &e, &err) == -1);
    cr_assert(strstr(err.msg, "n_heads 4 is not a multiple of n_kv_heads 3"), "%s", err.msg);
    t->cfg.n_kv_heads = TKV;
    /* a corrupt weight: NaN at row 3, column 5 of layer 1's down projection */
    float *wd = (float *)t->layers[1].w_down.data, keep = wd[3 * TFF + 5];
    wd[3 * TFF + 5] = NAN;
    cr_assert(ss_engine_create(t, &o, &e, &err) == -1);
    cr_assert(strstr(err.msg, "layer 1") && strstr(err.msg, "synthetic:seed=2: tensor ffn_down") &&
                  strstr(err.msg, "nan at row 3, column 5"),
              "%s", err.msg);
    wd[3 * TFF + 5] = keep;
    /* the same through a quantised tensor: layer 2's down projection as
     * Q8_0 blocks {f16 scale, 32 x int8}, one scale NaN (row 40, block 1) */
    ss_tensor saved = t->layers[2].w_down;
    size_t bb = 34, n_blk = (size_t)TD * (TFF / 32);
    uint8_t *q = calloc(n_blk, bb);
    for (size_t k = 0; k < n_blk; k++) {
        uint16_t scale = k == 40 * (TFF / 32) + 1 ? 0x7e00 /* NaN */ : 0x211f /* ~0.01 */;
        memcpy(q + k * bb, &scale, 2);
        memset(q + k * bb + 2, 1, 32);
    }
    t->layers[2].w_down.type = SS_TYPE_Q8_0;
    t->layers[2].w_down.data = q;
    t->layers[2].w_down.nbytes = n_blk * bb;
    cr_assert(ss_engine_create(t, &o, &e, &err) == -1);
    cr_assert(strstr(err.msg, "layer 2") && strstr(err.msg, "nan at row 40, column 32"), "%s",
              err.msg);
    uint16_t fine = 0x211f;
    memcpy(q + (40 * (TFF / 32) + 1) * bb, &fine, 2);
    cr_assert(ss_engine_create(t, &o, &e, &err) == 0, "%s", err.msg);
    ss_engine_free(e);
    t->layers[2].w_down = saved;
    free(q);
    o.device = SS_DEVICE_CPU;
    cr_assert(ss_engine_create(t, &o, &e, &err) == 0, "%s", err.msg);
    ss_engine_free(e);
    ss_model_free(t);
}

Test(engine_cpu, names)
{
    int v = -1;
    ss_error err = {.msg = ""};
    cr_assert(ss_site_parse("mlp_out", &v, &err) == 0 && v == SS_SITE_MLP_OUT);
    cr_assert(ss_site_parse("RESID_POST", &v, &err) == 0 && v == SS_SITE_RESID_POST);
    cr_assert_str_eq(ss_site_name(SS_SITE_ATTN_OUT), "attn_out");
    cr_assert(ss_site_parse("resid_pre", &v, &err) == -1);
    cr_assert(strstr(err.msg, "unknown site 'resid_pre'"), "%s", err.msg);
    cr_assert(ss_device_parse("cuda", &v, &err) == 0 && v == SS_DEVICE_CUDA);
    cr_assert(ss_device_parse("cpu", &v, &err) == 0 && v == SS_DEVICE_CPU);
    cr_assert(ss_device_parse("tpu", &v, &err) == -1);
    cr_assert(strstr(err.msg, "unknown device 'tpu'"), "%s", err.msg);
}

/* ---------------------------------------------------------------- real model */

/* Id of a vocabulary string in the GGUF tokenizer list, -1 if absent. */
static int vocab_id(const ss_gguf_str *v, uint64_t n, const char *s)
{
    for (uint64_t i = 0; i < n; i++)
        if (v[i].len == strlen(s) && !memcmp(v[i].ptr, s, v[i].len))
            return (int)i;
    return -1;
}

/* The default SmolLM2 model: finite logits, " Paris" after "The capital of
 * France is", and batch == single on real weights.  Token ids are looked up
 * by their strings in the file's own vocabulary. */
Test(engine_cpu, smollm2_smoke, .timeout = 600)
{
    const char *path = ss_default_model_path();
    FILE *f = fopen(path, "rb");
    if (!f)
        cr_skip_test("default model %s not found", path);
    fclose(f);
    ss_model *m = NULL;
    ss_error err = {.msg = ""};
    cr_assert(ss_model_load(path, &m, &err) == 0, "load: %s", err.msg);
    cr_assert(m->gguf, "the default model is a GGUF file");
    const ss_gguf_kv *kv = ss_gguf_find(m->gguf, "tokenizer.ggml.tokens");
    cr_assert(kv);
    ss_gguf_str *voc = NULL;
    cr_assert(ss_gguf_arr_strs(kv, &voc, &err) == 0, "%s", err.msg);
    /* byte-level BPE: "\xc4\xa0" (U+0120) marks a leading space */
    const char *words[6] = {"The", "\xc4\xa0" "capital", "\xc4\xa0" "of", "\xc4\xa0" "France",
                            "\xc4\xa0" "is", "Hello"};
    int32_t tok[6];
    for (int i = 0; i < 6; i++) {
        tok[i] = vocab_id(voc, kv->arr_len, words[i]);
        cr_assert(tok[i] >= 0, "token %s not in the vocabulary", words[i]);
    }
    int paris = vocab_id(voc, kv->arr_len, "\xc4\xa0" "Paris");
    free(voc);

    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.max_seqs = 2;
    ss_engine *e = NULL;
    cr_assert(ss_engine_create(m, &o, &e, &err) == 0, "%s", err.msg);
    int V = m->cfg.vocab_size;
    float *a = malloc((size_t)V * sizeof(float)), *h = malloc((size_t)V * sizeof(float));
    float *both = malloc(2 * (size_t)V * sizeof(float));
    fwd1(e, 0, tok, 5, 0, a);
    fwd1(e, 1, tok + 5, 1, 0, h);
    for (int i = 0; i < V; i++)
        cr_assert(isfinite(a[i]) && isfinite(h[i]), "logit %d not finite", i);
    cr_assert_eq(ss_argmax(a, V), paris, "argmax after 'The capital of France is' is %d",
                 ss_argmax(a, V));

    ss_engine_reset_slot(e, 0);
    ss_engine_reset_slot(e, 1);
    int slots[2] = {1, 0}, n[2] = {5, 1};
    ss_batch b = {.n_seqs = 2, .slots = slots, .n_tokens = n, .tokens = tok};
    cr_assert(ss_engine_forward(e, &b, both, &err) == 0, "%s", err.msg);
    assert_rows_close(both, a, V, 1e-4, "batched prompt");
    assert_rows_close(both + V, h, V, 1e-4, "batched Hello");
    free(a);
    free(h);
    free(both);
    ss_engine_free(e);
    ss_model_free(m);
}
