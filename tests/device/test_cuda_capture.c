/* test_cuda_capture.c - CPU and CUDA engines agree on captured activations
 * and on steered logits (tiny in-memory model and the default model), and
 * the CUDA engine honours the steering contract (strength 0 bit-identical,
 * layers before the steered one untouched, +alpha*v at the steered layer).
 * The CUDA engine computes in bf16, so CPU/CUDA comparisons allow its error
 * budget (device_check.h: worst row of every layer, KL and top token of the
 * logits); within one engine comparisons are exact. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tiny_model.h"
#include "device_check.h"
#include "safesteer/capture.h"
#include "safesteer/engine.h"
#include "safesteer/steer.h"

#define T_TOK 9

typedef struct {
    float *h;  /* [n_layers][T_TOK][d] */
    int d;
} grab;

static void on_cap(void *user, int slot, int site, int layer, int pos, const float *h, int n,
                   int d)
{
    (void)slot;
    (void)site;
    grab *g = user;
    memcpy(g->h + ((size_t)layer * T_TOK + pos) * d, h, (size_t)n * d * sizeof(float));
}

static ss_engine *make(const ss_model *m, int device)
{
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.device = device;
    o.threads = 2;
    o.max_ctx = 64;
    ss_engine *e;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_engine_create(m, &o, &e, &err), 0, "%s", err.msg);
    return e;
}

static void run(ss_engine *e, const ss_steer_plan *p, const int32_t *tok, float *logits, grab *g)
{
    ss_error err = {.msg = ""};
    int n = T_TOK, slot = 0;
    ss_engine_reset_slot(e, 0);
    cr_assert_eq(ss_steer_apply(e, 0, p, n, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_engine_set_capture(e, SS_SITE_RESID_POST, NULL, on_cap, g, &err), 0, "%s",
                 err.msg);
    ss_batch b = {.n_seqs = 1, .slots = &slot, .n_tokens = &n, .tokens = tok};
    cr_assert_eq(ss_engine_forward(e, &b, logits, &err), 0, "%s", err.msg);
    ss_engine_set_capture(e, SS_SITE_RESID_POST, NULL, NULL, NULL, &err);
}

/* Every layer's captured rows, CUDA (g) against CPU (c). */
static void expect_captures_agree(const grab *g, const grab *c, int n_layers, const char *what)
{
    size_t per_layer = (size_t)T_TOK * g->d;
    for (int l = 0; l < n_layers; l++) {
        double e = worst_row_l2(g->h + l * per_layer, c->h + l * per_layer, T_TOK, g->d, what);
        fprintf(stderr, "%s layer %d: worst row relative L2 %.4g\n", what, l, e);
        cr_expect_leq(e, SS_BF16_ROW_TOL, "%s layer %d: CUDA vs CPU worst row %g", what, l, e);
    }
}

static void compare(const ss_model *m, const int32_t *tok, int layer)
{
    int V = m->cfg.vocab_size, d = m->cfg.d_model, L = m->cfg.n_layers;
    ss_engine *cpu = make(m, SS_DEVICE_CPU), *gpu = make(m, SS_DEVICE_CUDA);
    size_t hn = (size_t)L * T_TOK * d;
    grab gc = {calloc(hn, sizeof(float)), d}, gg = {calloc(hn, sizeof(float)), d};
    grab gs = {calloc(hn, sizeof(float)), d}, gcs = {calloc(hn, sizeof(float)), d};
    float *lc = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
    float *lgs = malloc(sizeof(float) * V), *lcs = malloc(sizeof(float) * V);
    float *v = malloc(sizeof(float) * d);
    uint64_t seed = 5;
    for (int j = 0; j < d; j++)
        v[j] = tiny_rand(&seed);

    run(cpu, NULL, tok, lc, &gc);
    run(gpu, NULL, tok, lg, &gg);
    expect_captures_agree(&gg, &gc, L, "capture");
    expect_logits_agree(lg, lc, V, "unsteered logits");

    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, layer, SS_STEER_ADD, 0.0f, v, &err), 0);
    run(gpu, &p, tok, lgs, &gs);
    cr_assert_eq(memcmp(lgs, lg, sizeof(float) * V), 0, "CUDA: strength 0 changed the logits");

    p.entries[0].strength = 3.0f;
    p.positions.rule = SS_POS_FROM;
    p.positions.k = 2;
    run(gpu, &p, tok, lgs, &gs);
    run(cpu, &p, tok, lcs, &gcs);
    cr_assert_eq(memcmp(gs.h, gg.h, sizeof(float) * (size_t)layer * T_TOK * d), 0,
                 "CUDA: layers before the steered one changed");
    for (int t = 0; t < T_TOK; t++)
        for (int j = 0; j < d; j++) {
            size_t k = ((size_t)layer * T_TOK + t) * d + j;
            float want = t >= 2 ? gg.h[k] + 3.0f * v[j] : gg.h[k];
            cr_assert_leq(fabs(gs.h[k] - want), 1e-5 * (1 + fabs(want)),
                          "CUDA: layer %d pos %d dim %d moved by %g, want %g", layer, t, j,
                          (double)(gs.h[k] - gg.h[k]), (double)(want - gg.h[k]));
        }
    expect_logits_agree(lgs, lcs, V, "steered logits");
    expect_captures_agree(&gs, &gcs, L, "steered capture");
    ss_steer_plan_free(&p);
    free(gc.h), free(gg.h), free(gs.h), free(gcs.h);
    free(lc), free(lg), free(lgs), free(lcs), free(v);
    ss_engine_free(cpu);
    ss_engine_free(gpu);
}

Test(cuda_capture, tiny_model_cpu_cuda_agree, .timeout = 120)
{
    skip_without_gpu();
    ss_model *tm = tiny_model_new_dims(21, 128, 64);
    int32_t tok[T_TOK] = {1, 2, 3, 40, 41, 42, 7, 8, 63};
    compare(tm, tok, 2);
    ss_model_free(tm);
}

Test(cuda_capture, default_model_cpu_cuda_agree, .timeout = 300)
{
    skip_without_gpu();
    const char *mp = ss_default_model_path();
    if (access(mp, R_OK) != 0)
        cr_skip_test("default model not found at %s", mp);
    ss_model *m;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_model_load(mp, &m, &err), 0, "%s", err.msg);
    /* the same ids as scripts/reference/llama_numpy.py's budget */
    int32_t tok[T_TOK] = {1, 504, 2683, 314, 253, 1345, 30, 216, 9};
    compare(m, tok, 12);
    ss_model_free(m);
}

/* The same capture file from both engines (pooled means, batch of 3). */
static int enc(void *user, int i, int32_t **ids, int *n_ids, int *n_prompt, ss_error *err)
{
    (void)user;
    int n = 4 + i % 5;
    int32_t *t = ss_malloc((size_t)n * sizeof(int32_t), err);
    if (!t)
        return -1;
    for (int k = 0; k < n; k++)
        t[k] = (int32_t)((i * 13 + k * 5) % 64);
    *ids = t;
    *n_ids = *n_prompt = n;
    return 0;
}

Test(cuda_capture, capture_files_agree, .timeout = 120)
{
    skip_without_gpu();
    ss_model *tm = tiny_model_new_dims(22, 128, 64);
    static const char *txt[6] = {"a", "b", "c", "d", "e", "f"};
    static const int layers[] = {0, 1, 3};
    char dir[] = "/tmp/ss_cuda_cap_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    ss_capture_data out[2];
    for (int dev = 0; dev < 2; dev++) {
        ss_engine_opts eo;
        ss_engine_opts_default(&eo);
        eo.device = dev;
        eo.max_seqs = 3;
        eo.max_ctx = 32;
        ss_engine *e;
        ss_error err = {.msg = ""};
        cr_assert_eq(ss_engine_create(tm, &eo, &e, &err), 0, "%s", err.msg);
        ss_capture_source src = {.n = 6, .text = txt, .id = txt, .category = txt, .label = txt,
                                 .encode = enc};
        ss_capture_opts o;
        ss_capture_opts_default(&o);
        o.n_layers = 3;
        o.layers = layers;
        o.batch = 3;
        char path[300];
        snprintf(path, sizeof path, "%s/%s.h5", dir, dev ? "cuda" : "cpu");
        cr_assert_eq(ss_capture_run(e, &src, &o, path, NULL, &err), 0, "%s", err.msg);
        cr_assert_eq(ss_capture_load(path, 0, &out[dev], &err), 0, "%s", err.msg);
        ss_engine_free(e);
    }
    double e = worst_row_l2(out[1].acts, out[0].acts, 6 * 3, tm->cfg.d_model, "pooled capture");
    cr_assert_leq(e, SS_BF16_ROW_TOL, "pooled capture: CUDA vs CPU worst row %g", e);
    ss_capture_data_free(&out[0]);
    ss_capture_data_free(&out[1]);
    ss_model_free(tm);
}
