/* test_steer.c - steering plans through the engine on a tiny in-memory
 * model (and the default model when present): strength 0 is a no-op bit for
 * bit, an added vector moves exactly the steered layer and positions,
 * ablation leaves activations orthogonal; plan compilation and llama.cpp
 * control-vector files. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/engine.h"
#include "safesteer/steer.h"
#include "tiny_model.h"

#define T_TOK 7

/* resid_post of every layer for the one sequence: [n_layers][T_TOK][d] */
typedef struct {
    float *h;
    int d, n_layers;
} grab;

static void on_cap(void *user, int slot, int site, int layer, int pos, const float *h, int n,
                   int d)
{
    (void)slot;
    (void)site;
    grab *g = user;
    for (int t = 0; t < n; t++)
        memcpy(g->h + ((size_t)layer * T_TOK + pos + t) * d, h + (size_t)t * d,
               (size_t)d * sizeof(float));
}

static ss_engine *make_engine(const ss_model *m)
{
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.threads = 1;
    o.max_ctx = 64;
    ss_engine *e;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_engine_create(m, &o, &e, &err), 0, "%s", err.msg);
    return e;
}

/* Runs the prompt with plan p (or none); fills logits[vocab] and, for
 * each site with g[site] set, that site's activations. */
static void run_sites(ss_engine *e, const ss_steer_plan *p, const int32_t *tok, int n,
                      float *logits, grab *g[SS_SITE_COUNT])
{
    ss_error err = {.msg = ""};
    ss_engine_reset_slot(e, 0);
    cr_assert_eq(ss_steer_apply(e, 0, p, n, &err), 0, "%s", err.msg);
    for (int s = 0; s < SS_SITE_COUNT; s++)
        if (g[s])
            cr_assert_eq(ss_engine_set_capture(e, s, NULL, on_cap, g[s], &err), 0);
    int slot = 0;
    ss_batch b = {.n_seqs = 1, .slots = &slot, .n_tokens = &n, .tokens = tok};
    cr_assert_eq(ss_engine_forward(e, &b, logits, &err), 0, "%s", err.msg);
    for (int s = 0; s < SS_SITE_COUNT; s++)
        ss_engine_set_capture(e, s, NULL, NULL, NULL, &err);
}

/* run_sites capturing resid_post only (g may be NULL). */
static void run(ss_engine *e, const ss_steer_plan *p, const int32_t *tok, int n, float *logits,
                grab *g)
{
    grab *by_site[SS_SITE_COUNT] = {[SS_SITE_RESID_POST] = g};
    run_sites(e, p, tok, n, logits, by_site);
}

static void random_vec(float *v, int d, uint64_t seed)
{
    for (int j = 0; j < d; j++)
        v[j] = tiny_rand(&seed);
}

Test(steer, strength_zero_is_bit_identical)
{
    ss_model *tm = tiny_model_new(1);
    ss_engine *e = make_engine(tm);
    int V = tm->cfg.vocab_size, d = tm->cfg.d_model, L = tm->cfg.n_layers;
    int32_t tok[T_TOK] = {1, 5, 9, 33, 2, 60, 7};
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V), v[64];
    run(e, NULL, tok, T_TOK, a, NULL);
    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    random_vec(v, d, 3);
    ss_error err = {.msg = ""};
    for (int l = 0; l < L; l++)
        cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, l, SS_STEER_ADD, 0.0f, v, &err), 0);
    run(e, &p, tok, T_TOK, b, NULL);
    cr_assert_eq(memcmp(a, b, sizeof(float) * V), 0, "strength 0 changed the logits");
    ss_steer_plan_free(&p);
    free(a);
    free(b);
    ss_engine_free(e);
    ss_model_free(tm);
}

Test(steer, add_moves_exactly_the_steered_layer_and_positions)
{
    ss_model *tm = tiny_model_new(2);
    ss_engine *e = make_engine(tm);
    int V = tm->cfg.vocab_size, d = tm->cfg.d_model, L = tm->cfg.n_layers;
    int32_t tok[T_TOK] = {4, 8, 15, 16, 23, 42, 3};
    float *logits = malloc(sizeof(float) * V), v[64];
    grab base = {calloc((size_t)L * T_TOK * d, sizeof(float)), d, L};
    grab st = {calloc((size_t)L * T_TOK * d, sizeof(float)), d, L};
    run(e, NULL, tok, T_TOK, logits, &base);
    const int layer = 2, from = 3;
    const float alpha = 2.5f;
    random_vec(v, d, 11);
    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, layer, SS_STEER_ADD, alpha, v, &err), 0);
    cr_assert_eq(ss_positions_parse("from:3", &p.positions, &err), 0);
    run(e, &p, tok, T_TOK, logits, &st);
    for (int l = 0; l < layer; l++)
        cr_assert_eq(memcmp(base.h + (size_t)l * T_TOK * d, st.h + (size_t)l * T_TOK * d,
                            sizeof(float) * T_TOK * d), 0, "layer %d changed", l);
    for (int t = 0; t < T_TOK; t++) {
        const float *hb = base.h + ((size_t)layer * T_TOK + t) * d;
        const float *hs = st.h + ((size_t)layer * T_TOK + t) * d;
        for (int j = 0; j < d; j++) {
            /* the same float operation the contract defines: h + alpha * v */
            float want = t >= from ? hb[j] + alpha * v[j] : hb[j];
            cr_assert_eq(hs[j], want, "layer %d pos %d dim %d: %.9g != %.9g", layer, t, j,
                         (double)hs[j], (double)want);
        }
    }
    /* later layers do see the change */
    cr_assert_neq(memcmp(base.h + (size_t)(layer + 1) * T_TOK * d + (size_t)from * d,
                         st.h + (size_t)(layer + 1) * T_TOK * d + (size_t)from * d,
                         sizeof(float) * d), 0);
    ss_steer_plan_free(&p);
    free(base.h);
    free(st.h);
    free(logits);
    ss_engine_free(e);
    ss_model_free(tm);
}

Test(steer, ablation_leaves_activation_orthogonal)
{
    ss_model *tm = tiny_model_new(3);
    ss_engine *e = make_engine(tm);
    int V = tm->cfg.vocab_size, d = tm->cfg.d_model, L = tm->cfg.n_layers;
    int32_t tok[T_TOK] = {9, 9, 1, 2, 3, 50, 51};
    float *logits = malloc(sizeof(float) * V), v[64];
    grab st = {calloc((size_t)L * T_TOK * d, sizeof(float)), d, L};
    random_vec(v, d, 5);
    for (int j = 0; j < d; j++)
        v[j] *= 7.0f; /* the plan normalises ablation directions */
    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    ss_error err = {.msg = ""};
    for (int l = 1; l < L; l++)
        cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, l, SS_STEER_ABLATE, 1.0f, v, &err),
                     0, "%s", err.msg);
    run(e, &p, tok, T_TOK, logits, &st);
    double vn = 0;
    for (int j = 0; j < d; j++)
        vn += (double)v[j] * v[j];
    vn = sqrt(vn);
    for (int l = 1; l < L; l++)
        for (int t = 0; t < T_TOK; t++) {
            const float *h = st.h + ((size_t)l * T_TOK + t) * d;
            double dot = 0, hn = 0;
            for (int j = 0; j < d; j++) {
                dot += h[j] * (v[j] / vn);
                hn += (double)h[j] * h[j];
            }
            /* tolerance: 1e-5 of the activation norm (float rounding of the projection) */
            cr_assert_leq(fabs(dot), 1e-5 * sqrt(hn) + 1e-6, "layer %d pos %d: h.v = %g", l, t,
                          dot);
        }
    ss_steer_plan_free(&p);
    free(st.h);
    free(logits);
    ss_engine_free(e);
    ss_model_free(tm);
}

/* One plan steering three sites: resid_post add at layer 1, attn_out
 * ablate and mlp_out add at layer 2.  Each site's captured activation is
 * checked against its own contract, and layer 2's output against the
 * residual sums of the steered blocks (order attn_out, mlp_out). */
Test(steer, mixed_sites_and_ops_in_one_plan)
{
    ss_model *tm = tiny_model_new(5);
    ss_engine *e = make_engine(tm);
    int V = tm->cfg.vocab_size, d = tm->cfg.d_model, L = tm->cfg.n_layers;
    int32_t tok[T_TOK] = {3, 14, 15, 62, 53, 35, 8};
    float *logits = malloc(sizeof(float) * V), v1[64], u[64], v2[64];
    size_t sz = (size_t)L * T_TOK * d;
    grab base = {calloc(sz, sizeof(float)), d, L};
    grab mix[SS_SITE_COUNT], part_mlp = {calloc(sz, sizeof(float)), d, L};
    for (int s = 0; s < SS_SITE_COUNT; s++)
        mix[s] = (grab){calloc(sz, sizeof(float)), d, L};
    random_vec(v1, d, 21);
    random_vec(u, d, 22);
    random_vec(v2, d, 23);
    run(e, NULL, tok, T_TOK, logits, &base);

    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 1, SS_STEER_ADD, 0.75f, v1, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_ATTN_OUT, 2, SS_STEER_ABLATE, 1.0f, u, &err), 0);
    /* the same plan without the mlp_out entry: layer 2's MLP output before it is steered */
    grab *only_mlp[SS_SITE_COUNT] = {[SS_SITE_MLP_OUT] = &part_mlp};
    run_sites(e, &p, tok, T_TOK, logits, only_mlp);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_MLP_OUT, 2, SS_STEER_ADD, -1.5f, v2, &err), 0);
    grab *all[SS_SITE_COUNT] = {&mix[0], &mix[1], &mix[2]};
    run_sites(e, &p, tok, T_TOK, logits, all);

    const float *unit = p.entries[1].vector; /* the plan normalised the ablation direction */
    for (int t = 0; t < T_TOK; t++) {
        size_t r0 = ((size_t)0 * T_TOK + t) * d, r1 = ((size_t)1 * T_TOK + t) * d;
        size_t r2 = ((size_t)2 * T_TOK + t) * d;
        const float *res = mix[SS_SITE_RESID_POST].h, *att = mix[SS_SITE_ATTN_OUT].h;
        const float *mlp = mix[SS_SITE_MLP_OUT].h;
        cr_assert_eq(memcmp(res + r0, base.h + r0, sizeof(float) * d), 0, "layer 0 changed");
        double dot = 0, an = 0;
        for (int j = 0; j < d; j++) {
            cr_assert_eq(res[r1 + j], base.h[r1 + j] + 0.75f * v1[j], "resid_post 1 pos %d", t);
            cr_assert_eq(mlp[r2 + j], part_mlp.h[r2 + j] + -1.5f * v2[j], "mlp_out 2 pos %d", t);
            cr_assert_eq(res[r2 + j], (res[r1 + j] + att[r2 + j]) + mlp[r2 + j],
                         "resid_post 2 pos %d dim %d: not h + attn_out + mlp_out", t, j);
            dot += (double)att[r2 + j] * unit[j];
            an += (double)att[r2 + j] * att[r2 + j];
        }
        cr_assert_leq(fabs(dot), 1e-5 * sqrt(an) + 1e-6, "attn_out 2 pos %d: h.u = %g", t, dot);
    }
    ss_steer_plan_free(&p);
    for (int s = 0; s < SS_SITE_COUNT; s++)
        free(mix[s].h);
    free(part_mlp.h);
    free(base.h);
    free(logits);
    ss_engine_free(e);
    ss_model_free(tm);
}

Test(steer, plan_compile_rules)
{
    ss_steer_plan p;
    ss_steer_plan_init(&p, 4, 3);
    ss_error err = {.msg = ""};
    float a[3] = {1, 0, 0}, b[3] = {0, 2, 0};
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 1, SS_STEER_ADD, 2.0f, a, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 1, SS_STEER_ADD, 0.5f, b, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 3, SS_STEER_ADD, -1.0f, b, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 4, SS_STEER_ADD, 1.0f, b, &err), -1);
    ss_steer_compiled c;
    p.positions.rule = SS_POS_PROMPT;
    cr_assert_eq(ss_steer_compile(&p, 10, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(c.alpha[0], 0.0f);
    cr_assert_eq(c.alpha[1], 1.0f); /* two entries summed into one vector */
    cr_assert_eq(c.vectors[3 + 0], 2.0f);
    cr_assert_eq(c.vectors[3 + 1], 1.0f);
    cr_assert_eq(c.alpha[3], -1.0f);
    cr_assert_eq(c.vectors[9 + 1], 2.0f);
    cr_assert_eq(c.slot.pos_begin, 0);
    cr_assert_eq(c.slot.pos_end, 10);
    ss_steer_compiled_free(&c);
    /* sites and ops mix: each (site, layer) keeps its own op and vector */
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_MLP_OUT, 2, SS_STEER_ADD, 1.0f, a, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_ATTN_OUT, 2, SS_STEER_ABLATE, 1.0f, b, &err), 0);
    cr_assert_eq(ss_steer_compile(&p, 10, &c, &err), 0, "%s", err.msg);
    size_t mlp2 = SS_SITE_MLP_OUT * 4 + 2, attn2 = SS_SITE_ATTN_OUT * 4 + 2;
    cr_assert(c.alpha[mlp2] == 1.0f && c.ops[mlp2] == SS_STEER_ADD);
    cr_assert(c.vectors[mlp2 * 3 + 0] == 1.0f);
    cr_assert(c.alpha[attn2] == 1.0f && c.ops[attn2] == SS_STEER_ABLATE);
    cr_assert(c.vectors[attn2 * 3 + 1] == 1.0f); /* unit length */
    cr_assert(c.alpha[1] == 1.0f && c.ops[1] == SS_STEER_ADD); /* resid_post unchanged */
    ss_steer_compiled_free(&c);
    /* an ablation must be alone at its (site, layer) */
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 3, SS_STEER_ABLATE, 1.0f, a, &err), 0);
    cr_assert_eq(ss_steer_compile(&p, 10, &c, &err), -1);
    cr_assert(strstr(err.msg, "entries 2 and 5 both steer resid_post at layer 3, and entry 5 "
                              "ablates"), "%s", err.msg);
    ss_steer_plan_free(&p);

    ss_positions pos;
    int lo, hi;
    cr_assert_eq(ss_positions_parse("generated", &pos, &err), 0);
    ss_positions_range(&pos, 12, &lo, &hi);
    cr_assert(lo == 12 && hi == -1);
    cr_assert_eq(ss_positions_parse("from:x", &pos, &err), -1);
    cr_assert_eq(ss_positions_parse("sometimes", &pos, &err), -1);
}

/* ---------------------------------------------------------------- GGUF */

static void put(FILE *f, const void *p, size_t n) { fwrite(p, 1, n, f); }
static void put_u32(FILE *f, uint32_t v) { put(f, &v, 4); }
static void put_u64(FILE *f, uint64_t v) { put(f, &v, 8); }
static void put_str(FILE *f, const char *s)
{
    put_u64(f, strlen(s));
    put(f, s, strlen(s));
}

/* A control vector as llama.cpp's cvector generator / repeng write it. */
static void write_cvec(const char *path, int d, const int *layers, int n, uint32_t layer_count)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    put(f, "GGUF", 4);
    put_u32(f, 3);
    put_u64(f, (uint64_t)n);
    put_u64(f, 3);
    put_str(f, "general.architecture");
    put_u32(f, 8);
    put_str(f, "controlvector");
    put_str(f, "controlvector.model_hint");
    put_u32(f, 8);
    put_str(f, "llama");
    put_str(f, "controlvector.layer_count");
    put_u32(f, 4);
    put_u32(f, layer_count);
    for (int i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "direction.%d", layers[i]);
        put_str(f, name);
        put_u32(f, 1);
        put_u64(f, (uint64_t)d);
        put_u32(f, 0); /* F32 */
        put_u64(f, (uint64_t)i * d * 4);
    }
    long at = ftell(f);
    for (long k = at; k % 32; k++)
        fputc(0, f);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            float x = (float)(layers[i] * 100 + j);
            put(f, &x, 4);
        }
    fclose(f);
}

Test(steer, gguf_control_vector_layers)
{
    char path[] = "/tmp/ss_test_cvec_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    int layers[] = {5, 1, 3};
    write_cvec(path, 16, layers, 3, 3);
    ss_vector_set v;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_vectors_load(path, &v, &err), 0, "%s", err.msg);
    cr_assert_eq(v.n_categories, 1);
    cr_assert_eq(v.n_layers, 3);
    cr_assert_eq(v.d_model, 16);
    cr_assert_str_eq(v.model_hint, "llama");
    cr_assert_eq(v.site, SS_SITE_RESID_POST);
    /* direction.N steers the output of block N (0-based), rows sorted */
    cr_assert(v.layers[0] == 1 && v.layers[1] == 3 && v.layers[2] == 5);
    cr_assert_eq(v.vectors[1 * 16 + 2], 302.0f);
    int row = ss_vectors_layer_row(&v, 5, NULL), ci;
    cr_assert_eq(row, 2);
    ss_error lerr = {.msg = ""};
    cr_assert_eq(ss_vectors_layer_row(&v, 0, &lerr), -1);
    cr_assert(strstr(lerr.msg, "no vector for layer 0 (it has layers 1, 3, 5)"), "%s", lerr.msg);
    cr_assert_eq(ss_vectors_category(&v, NULL, &ci, &err), 0);
    cr_assert_eq(ss_vectors_category(&v, "nope", &ci, &err), -1);
    ss_vectors_free(&v);

    int bad[] = {0};
    write_cvec(path, 16, bad, 1, 1);
    cr_assert_eq(ss_vectors_load(path, &v, &err), -1);
    cr_assert(strstr(err.msg, "direction.0"), "%s", err.msg);
    write_cvec(path, 16, layers, 3, 7);
    cr_assert_eq(ss_vectors_load(path, &v, &err), -1);
    cr_assert(strstr(err.msg, "layer_count"), "%s", err.msg);
    unlink(path);
}

/* ---------------------------------------------------------------- default model */

Test(steer, default_model_strength_zero_and_exact_add, .timeout = 300)
{
    const char *mp = ss_default_model_path();
    if (access(mp, R_OK) != 0)
        cr_skip_test("default model not found at %s", mp);
    ss_model *m;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_model_load(mp, &m, &err), 0, "%s", err.msg);
    ss_engine *e = make_engine(m);
    int V = m->cfg.vocab_size, d = m->cfg.d_model, L = m->cfg.n_layers;
    int32_t tok[T_TOK] = {1, 504, 2683, 314, 253, 1345, 30};
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    float *v = malloc(sizeof(float) * d);
    grab base = {calloc((size_t)L * T_TOK * d, sizeof(float)), d, L};
    grab st = {calloc((size_t)L * T_TOK * d, sizeof(float)), d, L};
    run(e, NULL, tok, T_TOK, a, &base);
    random_vec(v, d, 9);
    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, 10, SS_STEER_ADD, 0.0f, v, &err), 0);
    run(e, &p, tok, T_TOK, b, NULL);
    cr_assert_eq(memcmp(a, b, sizeof(float) * V), 0, "strength 0 changed the logits");
    p.entries[0].strength = 4.0f;
    run(e, &p, tok, T_TOK, b, &st);
    cr_assert_eq(memcmp(base.h, st.h, sizeof(float) * 10 * T_TOK * d), 0);
    for (int t = 0; t < T_TOK; t++)
        for (int j = 0; j < d; j++) {
            size_t k = ((size_t)10 * T_TOK + t) * d + j;
            cr_assert_eq(st.h[k], base.h[k] + 4.0f * v[j]);
        }
    cr_assert_neq(memcmp(a, b, sizeof(float) * V), 0);
    ss_steer_plan_free(&p);
    free(a);
    free(b);
    free(v);
    free(base.h);
    free(st.h);
    ss_engine_free(e);
    ss_model_free(m);
}
