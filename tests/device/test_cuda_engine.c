/* test_cuda_engine.c - the CUDA engine end to end against the CPU engine.
 *
 * A small random Llama model built in memory (weights already bf16-exact,
 * stored as F32, so both engines hold identical weights) runs batched
 * prefill + greedy decode on both devices: each sequence's prefill logits
 * must agree within the bf16 budget (device_check.h), greedy tokens must be equal or diverge only where the
 * CPU's top-2 logits are within SS_MARGIN.  Steering: strength 0 is
 * bit-identical to none on the GPU; ADD and ABLATE steering match the CPU;
 * capture rows match; the CUDA-graph decode path is bit-identical to the
 * plain one, also at 130 sequences (past the 64-row decode width it
 * once had).  With the default model present, 5 chat prompts x 32 greedy
 * tokens are compared the same way.  The memory footprint the sweep sizes
 * its batch by covers what the engine allocates, within 40%.
 * Without a CUDA device each test prints "SKIP: no CUDA device (...)". */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device_check.h"
#include "safesteer/engine.h"
#include "safesteer/sample.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"
#include "safesteer/tokenizer.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)(rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* ---------------------------------------------------------------- random model */

/* 4 layers, d 256, head_dim 64; weights bf16-exact so both engines hold
 * identical values; projections scaled by 1/sqrt(fan_in) (Q and K twice
 * that, for peaked attention).  Free with ss_model_free. */
static ss_model *rand_model_new(int tied)
{
    ss_config c = {0};
    c.n_layers = 4;
    c.d_model = 256;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 64;
    c.d_ff = 512;
    c.vocab_size = 600;
    c.max_ctx = 512;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = tied;
    float sd = 1.0f / sqrtf((float)c.d_model);
    const ss_random_scales s = {.embd = 1.0f, .output = 0.1f, .norm = 0.1f, .wq = 2.0f * sd,
                                .wk = 2.0f * sd, .wv = sd, .wo = sd, .w_gate = sd, .w_up = sd,
                                .w_down = 1.0f / sqrtf((float)c.d_ff), .bf16_exact = 1};
    ss_model *m = NULL;
    ss_error err;
    cr_assert_eq(ss_model_random(&c, &s, 1, &m, &err), 0, "random model: %s", err.msg);
    return m;
}

static ss_engine *engine_on(const ss_model *m, int device, int max_seqs)
{
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.device = device;
    o.max_seqs = max_seqs;
    o.max_ctx = 256;
    ss_engine *e = NULL;
    ss_error err;
    cr_assert_eq(ss_engine_create(m, &o, &e, &err), 0, "engine (%d): %s", device, err.msg);
    return e;
}

/* Prefills n prompts (slots 0..n-1) on both engines, then greedy-decodes
 * steps tokens batched, each engine feeding back its own choice.  Returns
 * the number of sequences that diverged (all at near-ties). */
static int compare_greedy(ss_engine *gpu, ss_engine *cpu, int n, int32_t *const *prompts,
                          const int *lens, int steps)
{
    const ss_config *c = ss_engine_config(cpu);
    int V = c->vocab_size, total = 0;
    for (int i = 0; i < n; i++)
        total += lens[i];
    int32_t *all = malloc((size_t)total * sizeof *all);
    int slots[16], ones[16], done[16] = {0};
    for (int i = 0, r = 0; i < n; i++) {
        memcpy(all + r, prompts[i], (size_t)lens[i] * sizeof *all);
        r += lens[i];
        slots[i] = i;
        ones[i] = 1;
    }
    float *lg = malloc((size_t)n * V * sizeof *lg), *lc = malloc((size_t)n * V * sizeof *lc);
    ss_error err;
    for (int i = 0; i < n; i++) {
        ss_engine_reset_slot(gpu, i);
        ss_engine_reset_slot(cpu, i);
    }
    ss_batch b = {n, slots, lens, all, 0};
    cr_assert_eq(ss_engine_forward(gpu, &b, lg, &err), 0, "gpu prefill: %s", err.msg);
    cr_assert_eq(ss_engine_forward(cpu, &b, lc, &err), 0, "cpu prefill: %s", err.msg);
    for (int i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "prefill logits of sequence %d", i);
        expect_logits_agree(lg + (size_t)i * V, lc + (size_t)i * V, V, what);
    }
    int diverged = 0;
    int32_t tg[16], tc[16];
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < n; i++) {
            tg[i] = ss_argmax(lg + (size_t)i * V, V);
            tc[i] = ss_argmax(lc + (size_t)i * V, V);
            if (!done[i] && tg[i] != tc[i]) {
                float gap = top2_gap(lc + (size_t)i * V, V);
                cr_expect_lt(gap, SS_MARGIN,
                             "seq %d step %d: GPU chose %d, CPU %d with top-2 gap %g >= %g", i,
                             s, tg[i], tc[i], gap, SS_MARGIN);
                printf("seq %d diverged at step %d (CPU top-2 gap %.4f)\n", i, s, gap);
                done[i] = 1;
                diverged++;
            }
        }
        if (s + 1 == steps)
            break;
        ss_batch bg = {n, slots, ones, tg, 0}, bc = {n, slots, ones, tc, 0};
        cr_assert_eq(ss_engine_forward(gpu, &bg, lg, &err), 0, "gpu decode: %s", err.msg);
        cr_assert_eq(ss_engine_forward(cpu, &bc, lc, &err), 0, "cpu decode: %s", err.msg);
    }
    free(all), free(lg), free(lc);
    return diverged;
}

/* ---------------------------------------------------------------- tests */

Test(cuda_engine, random_model_greedy_matches_cpu)
{
    skip_without_gpu();
    for (int tied = 0; tied < 2; tied++) {
        ss_model *r = rand_model_new(tied);
        ss_engine *gpu = engine_on(r, SS_DEVICE_CUDA, 5), *cpu = engine_on(r, SS_DEVICE_CPU, 5);
        int lens[5] = {7, 40, 1, 23, 130};
        int32_t *prompts[5];
        for (int i = 0; i < 5; i++) {
            prompts[i] = malloc((size_t)lens[i] * sizeof(int32_t));
            for (int t = 0; t < lens[i]; t++)
                prompts[i][t] = (int32_t)((frand() + 1.0f) * 299.0f);
        }
        int div = compare_greedy(gpu, cpu, 5, prompts, lens, 32);
        printf("random model (tied %d): %d of 5 sequences diverged at near-ties\n", tied, div);
        for (int i = 0; i < 5; i++)
            free(prompts[i]);
        ss_engine_free(gpu);
        ss_engine_free(cpu);
        ss_model_free(r);
    }
}

Test(cuda_engine, all_logits_and_chunked_prefill_match_cpu)
{
    skip_without_gpu();
    ss_model *r = rand_model_new(1);
    ss_engine *gpu = engine_on(r, SS_DEVICE_CUDA, 3), *cpu = engine_on(r, SS_DEVICE_CPU, 3);
    /* 700 rows: more than one GPU chunk (512) and more than one lm-head piece */
    int lens[3] = {250, 200, 250}, slots[3] = {2, 0, 1}, total = 700;
    int32_t *tok = malloc((size_t)total * sizeof *tok);
    for (int i = 0; i < total; i++)
        tok[i] = (int32_t)((frand() + 1.0f) * 299.0f);
    int V = r->cfg.vocab_size;
    float *lg = malloc((size_t)total * V * 4), *lc = malloc((size_t)total * V * 4);
    ss_error err;
    ss_batch b = {3, slots, lens, tok, 1};
    cr_assert_eq(ss_engine_forward(gpu, &b, lg, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_engine_forward(cpu, &b, lc, &err), 0, "%s", err.msg);
    for (int row = 0; row < total; row += 50) {
        double e = rel_l2(lg + (size_t)row * V, lc + (size_t)row * V, (size_t)V, "logits");
        cr_expect_lt(e, 3e-2, "row %d logits rel err %g", row, e);
    }
    free(tok), free(lg), free(lc);
    ss_engine_free(gpu);
    ss_engine_free(cpu);
    ss_model_free(r);
}

static void set_steer(ss_engine *e, int slot, int site, int op, const float *alpha,
                      const float *vec, int pb, int pe)
{
    const ss_config *c = ss_engine_config(e);
    ss_steer_compiled s;
    ss_error err;
    cr_assert_eq(ss_steer_compile_site(c->n_layers, c->d_model, site, op, alpha, vec, pb, pe,
                                       &s, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_engine_set_steering(e, slot, &s.slot, &err), 0, "%s", err.msg);
    ss_steer_compiled_free(&s);
}

/* Prompt of n tokens into slot 0 after a reset; logits of the last token. */
static void run_prompt(ss_engine *e, const int32_t *tok, int n, float *logits)
{
    ss_error err;
    int slot = 0;
    ss_engine_reset_slot(e, 0);
    ss_batch b = {1, &slot, &n, tok, 0};
    cr_assert_eq(ss_engine_forward(e, &b, logits, &err), 0, "%s", err.msg);
}

Test(cuda_engine, steering_zero_identical_and_steered_matches_cpu)
{
    skip_without_gpu();
    ss_model *r = rand_model_new(1);
    const ss_config *c = &r->cfg;
    int L = c->n_layers, d = c->d_model, V = c->vocab_size, n = 30;
    ss_engine *gpu = engine_on(r, SS_DEVICE_CUDA, 2), *cpu = engine_on(r, SS_DEVICE_CPU, 2);
    int32_t tok[30];
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((frand() + 1.0f) * 299.0f);
    float *alpha = calloc((size_t)L, 4), *vec = malloc((size_t)L * d * 4);
    for (int l = 0; l < L; l++) {
        double nn = 0;
        for (int j = 0; j < d; j++) {
            vec[(size_t)l * d + j] = frand();
            nn += (double)vec[(size_t)l * d + j] * vec[(size_t)l * d + j];
        }
        for (int j = 0; j < d; j++)
            vec[(size_t)l * d + j] = (float)(vec[(size_t)l * d + j] / sqrt(nn));
    }
    float *none = malloc((size_t)V * 4), *zero = malloc((size_t)V * 4);
    float *sg = malloc((size_t)V * 4), *sc = malloc((size_t)V * 4);
    run_prompt(gpu, tok, n, none);
    for (int site = 0; site < SS_SITE_COUNT; site++) {
        set_steer(gpu, 0, site, SS_STEER_ADD, alpha, vec, 0, -1);
        run_prompt(gpu, tok, n, zero);
        cr_expect_eq(memcmp(none, zero, (size_t)V * 4), 0,
                     "site %d: strength 0 is not bit-identical to no steering", site);
    }
    /* ADD at each site, then ABLATE, layer 1 and all layers, position range */
    for (int op = 0; op < 2; op++)
        for (int site = 0; site < SS_SITE_COUNT; site++)
            for (int all = 0; all < 2; all++) {
                for (int l = 0; l < L; l++)
                    alpha[l] = (all || l == 1) ? (op == SS_STEER_ADD ? 4.0f : 1.0f) : 0.0f;
                set_steer(gpu, 0, site, op, alpha, vec, 5, all ? -1 : 25);
                set_steer(cpu, 0, site, op, alpha, vec, 5, all ? -1 : 25);
                run_prompt(gpu, tok, n, sg);
                run_prompt(cpu, tok, n, sc);
                double e = rel_l2(sg, sc, (size_t)V, "steered logits");
                double moved = rel_l2(sg, none, (size_t)V, "steered logits");
                cr_expect_lt(e, 3e-2, "op %d site %d all %d: steered GPU vs CPU rel err %g", op,
                             site, all, e);
                cr_expect_gt(moved, 1e-3, "op %d site %d all %d: steering had no effect", op,
                             site, all);
            }
    /* one plan over three sites and both ops: attn_out ablate at layer 0,
     * resid_post add and mlp_out add at the last layer */
    ss_error err;
    ss_steer_plan p;
    ss_steer_plan_init(&p, L, d);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_ATTN_OUT, 0, SS_STEER_ABLATE, 1.0f, vec, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_RESID_POST, L - 1, SS_STEER_ADD, 4.0f,
                                   vec + (size_t)(L - 1) * d, &err), 0);
    cr_assert_eq(ss_steer_plan_add(&p, SS_SITE_MLP_OUT, L - 1, SS_STEER_ADD, -3.0f, vec, &err), 0);
    cr_assert_eq(ss_steer_apply(gpu, 0, &p, n, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_steer_apply(cpu, 0, &p, n, &err), 0, "%s", err.msg);
    run_prompt(gpu, tok, n, sg);
    run_prompt(cpu, tok, n, sc);
    double e_mix = rel_l2(sg, sc, (size_t)V, "mixed-plan logits");
    cr_expect_lt(e_mix, 3e-2, "plan mixing sites and ops: GPU vs CPU rel err %g", e_mix);
    cr_expect_gt(rel_l2(sg, none, (size_t)V, "mixed-plan logits"), 1e-3,
                 "plan mixing sites and ops had no effect");
    ss_steer_plan_free(&p);

    cr_assert_eq(ss_engine_set_steering(gpu, 0, NULL, &err), 0);
    run_prompt(gpu, tok, n, zero);
    cr_expect_eq(memcmp(none, zero, (size_t)V * 4), 0, "cleared steering differs from none");
    free(alpha), free(vec), free(none), free(zero), free(sg), free(sc);
    ss_engine_free(gpu);
    ss_engine_free(cpu);
    ss_model_free(r);
}

typedef struct {
    float *rows;  /* [n_layers][n][d] */
    int n, d, calls;
} cap_buf;

static void cap_fn(void *user, int slot, int site, int layer, int pos, const float *h, int n_tok,
                   int d)
{
    (void)slot, (void)site, (void)pos;
    cap_buf *c = user;
    memcpy(c->rows + ((size_t)layer * c->n) * d, h, (size_t)n_tok * d * 4);
    c->calls++;
}

Test(cuda_engine, capture_matches_cpu)
{
    skip_without_gpu();
    ss_model *r = rand_model_new(1);
    int L = r->cfg.n_layers, d = r->cfg.d_model, V = r->cfg.vocab_size, n = 12;
    ss_engine *gpu = engine_on(r, SS_DEVICE_CUDA, 1), *cpu = engine_on(r, SS_DEVICE_CPU, 1);
    int32_t tok[12];
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)((frand() + 1.0f) * 299.0f);
    float *lg = malloc((size_t)V * 4);
    ss_error err;
    for (int site = 0; site < SS_SITE_COUNT; site++) {
        cap_buf cg = {calloc((size_t)L * n * d, 4), n, d, 0};
        cap_buf cc = {calloc((size_t)L * n * d, 4), n, d, 0};
        cr_assert_eq(ss_engine_set_capture(gpu, site, NULL, cap_fn, &cg, &err), 0);
        cr_assert_eq(ss_engine_set_capture(cpu, site, NULL, cap_fn, &cc, &err), 0);
        run_prompt(gpu, tok, n, lg);
        run_prompt(cpu, tok, n, lg);
        cr_expect_eq(cg.calls, L);
        double e = rel_l2(cg.rows, cc.rows, (size_t)L * n * d, "capture");
        cr_expect_lt(e, 3e-2, "site %d: captured rows GPU vs CPU rel err %g", site, e);
        ss_engine_set_capture(gpu, site, NULL, NULL, NULL, &err);
        ss_engine_set_capture(cpu, site, NULL, NULL, NULL, &err);
        free(cg.rows), free(cc.rows);
    }
    free(lg);
    ss_engine_free(gpu);
    ss_engine_free(cpu);
    ss_model_free(r);
}

Test(cuda_engine, graph_decode_bit_identical)
{
    skip_without_gpu();
    ss_model *r = rand_model_new(0);
    int V = r->cfg.vocab_size, L = r->cfg.n_layers, d = r->cfg.d_model;
    ss_engine *e = engine_on(r, SS_DEVICE_CUDA, 3);
    int lens[3] = {5, 17, 9}, slots[3] = {0, 1, 2}, ones[3] = {1, 1, 1};
    int32_t tok[31];
    for (int i = 0; i < 31; i++)
        tok[i] = (int32_t)((frand() + 1.0f) * 299.0f);
    float *ref = malloc((size_t)3 * V * 4 * 6), *got = malloc((size_t)3 * V * 4 * 6);
    /* steer slot 1 so the graph also carries the steering mirror */
    float *alpha = malloc((size_t)L * 4), *vec = malloc((size_t)L * d * 4);
    for (int l = 0; l < L; l++)
        alpha[l] = 2.0f;
    for (size_t j = 0; j < (size_t)L * d; j++)
        vec[j] = frand();
    set_steer(e, 1, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 0, -1);
    ss_error err;
    for (int graphs = 0; graphs < 2; graphs++) {
        cr_assert_eq(ss_engine_set_decode_graphs(e, graphs, &err), 0, "%s", err.msg);
        float *out = graphs ? got : ref;
        for (int i = 0; i < 3; i++)
            ss_engine_reset_slot(e, i);
        ss_batch b = {3, slots, lens, tok, 0};
        cr_assert_eq(ss_engine_forward(e, &b, out, &err), 0, "%s", err.msg);
        for (int s = 1; s < 6; s++) {
            int32_t next[3];
            for (int i = 0; i < 3; i++)
                next[i] = ss_argmax(out + ((size_t)(s - 1) * 3 + i) * V, V);
            ss_batch db = {3, slots, ones, next, 0};
            cr_assert_eq(ss_engine_forward(e, &db, out + (size_t)s * 3 * V, &err), 0, "%s",
                         err.msg);
        }
    }
    cr_expect_eq(memcmp(ref, got, (size_t)3 * V * 4 * 6), 0, "graph decode differs from plain");
    /* GPU argmax agrees with the host argmax of the same logits */
    int32_t ids[3], next[3];
    for (int i = 0; i < 3; i++)
        next[i] = ss_argmax(got + ((size_t)5 * 3 + i) * V, V);
    int pos_before[3];
    for (int i = 0; i < 3; i++)
        pos_before[i] = ss_engine_slot_pos(e, i);
    ss_batch db = {3, slots, ones, next, 0};
    cr_assert_eq(ss_engine_forward_argmax(e, &db, ids, &err), 0, "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(ss_engine_slot_pos(e, i), pos_before[i] + 1);
        cr_expect_lt(ids[i], V);
    }
    /* the same step through ss_engine_forward: host argmax == GPU argmax */
    float *lg = malloc((size_t)3 * V * 4);
    for (int i = 0; i < 3; i++)
        ss_engine_reset_slot(e, i);
    ss_batch pb = {3, slots, lens, tok, 0};
    cr_assert_eq(ss_engine_forward(e, &pb, lg, &err), 0, "%s", err.msg);
    for (int s = 1; s < 6; s++) {
        int32_t nx[3];
        for (int i = 0; i < 3; i++)
            nx[i] = ss_argmax(got + ((size_t)(s - 1) * 3 + i) * V, V);
        ss_batch sb = {3, slots, ones, nx, 0};
        cr_assert_eq(ss_engine_forward(e, &sb, lg, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(ss_engine_forward(e, &db, lg, &err), 0, "%s", err.msg);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ss_argmax(lg + (size_t)i * V, V), ids[i],
                     "slot %d: host argmax %d vs GPU argmax %d", i, ss_argmax(lg + (size_t)i * V, V),
                     ids[i]);
    free(lg);
    free(ref), free(got), free(alpha), free(vec);
    ss_engine_free(e);
    ss_model_free(r);
}

/* Decode batches past 64 rows (sweeps run up to 256): 130 sequences'
 * logits agree with the CPU's at every step (both fed the CPU's greedy
 * tokens), and the graph replay is bit-identical to the plain path at that
 * width. */
Test(cuda_engine, wide_batch_decode_matches_cpu, .timeout = 120)
{
    skip_without_gpu();
    enum { N = 130, STEPS = 3 };
    ss_model *r = rand_model_new(0);
    int V = r->cfg.vocab_size;
    ss_engine *gpu = engine_on(r, SS_DEVICE_CUDA, N), *cpu = engine_on(r, SS_DEVICE_CPU, N);
    int slots[N], lens[N], ones[N], total = 0;
    int32_t tok[N * 8], next[STEPS][N];
    for (int i = 0; i < N; i++) {
        slots[i] = i, ones[i] = 1, lens[i] = 1 + i % 8;
        for (int t = 0; t < lens[i]; t++)
            tok[total++] = (int32_t)((frand() + 1.0f) * 299.0f);
    }
    float *lg = malloc((size_t)N * V * 4), *lc = malloc((size_t)N * V * 4);
    float *graphed = malloc((size_t)STEPS * N * V * 4);
    ss_error err;
    for (int plain = 0; plain < 2; plain++) {
        cr_assert_eq(ss_engine_set_decode_graphs(gpu, !plain, &err), 0, "%s", err.msg);
        for (int i = 0; i < N; i++)
            ss_engine_reset_slot(gpu, i), ss_engine_reset_slot(cpu, i);
        ss_batch b = {N, slots, lens, tok, 0};
        cr_assert_eq(ss_engine_forward(gpu, &b, lg, &err), 0, "gpu prefill: %s", err.msg);
        if (!plain)
            cr_assert_eq(ss_engine_forward(cpu, &b, lc, &err), 0, "cpu prefill: %s", err.msg);
        for (int s = 0; s < STEPS; s++) {
            if (!plain) {
                for (int i = 0; i < N; i++) {
                    char what[64];
                    snprintf(what, sizeof what, "width %d, step %d, sequence %d", N, s, i);
                    expect_logits_agree(lg + (size_t)i * V, lc + (size_t)i * V, V, what);
                    next[s][i] = ss_argmax(lc + (size_t)i * V, V);
                }
            }
            ss_batch db = {N, slots, ones, next[s], 0};
            cr_assert_eq(ss_engine_forward(gpu, &db, lg, &err), 0, "gpu decode: %s", err.msg);
            if (!plain) {
                cr_assert_eq(ss_engine_forward(cpu, &db, lc, &err), 0, "cpu decode: %s", err.msg);
                memcpy(graphed + (size_t)s * N * V, lg, (size_t)N * V * 4);
            } else {
                cr_expect_eq(memcmp(graphed + (size_t)s * N * V, lg, (size_t)N * V * 4), 0,
                             "step %d at width %d: graph replay differs from the plain path", s,
                             N);
            }
        }
    }
    free(lg), free(lc), free(graphed);
    ss_engine_free(gpu);
    ss_engine_free(cpu);
    ss_model_free(r);
}

Test(cuda_engine, default_model_greedy_matches_cpu)
{
    skip_without_gpu();
    const char *path = ss_default_model_path();
    if (access(path, R_OK) != 0) {
        printf("SKIP: default model %s absent\n", path);
        cr_skip_test("default model %s absent", path);
    }
    ss_error err;
    ss_model *m = NULL;
    ss_tokenizer *tk = NULL;
    cr_assert_eq(ss_model_load(path, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_load(m, &tk, &err), 0, "%s", err.msg);
    static const char *const texts[5] = {
        "The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
        "Water boils at a temperature of", "The three primary colors are"};
    int32_t *prompts[5];
    int lens[5];
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ss_tokenize(tk, texts[i], strlen(texts[i]), 1, &prompts[i], &lens[i], &err),
                     0, "%s", err.msg);
    ss_engine *gpu = engine_on(m, SS_DEVICE_CUDA, 5), *cpu = engine_on(m, SS_DEVICE_CPU, 5);
    int div = compare_greedy(gpu, cpu, 5, prompts, lens, 32);
    printf("default model: %d of 5 sequences diverged at near-ties\n", div);
    for (int i = 0; i < 5; i++)
        free(prompts[i]);
    ss_engine_free(gpu);
    ss_engine_free(cpu);
    ss_tokenizer_free(tk);
    ss_model_free(m);
}

/* The sweep sizes its batch from ss_engine_footprint_of: what it promises
 * must cover what the engine then takes (weights, KV cache, scratch, and
 * the steering vectors a first steered slot allocates for every slot), and
 * not by much, or batches come out smaller than what fits. */
Test(cuda_engine, footprint_covers_what_the_engine_allocates)
{
    skip_without_gpu();
    ss_model *m = NULL;
    ss_error err;
    cr_assert_eq(ss_model_synthetic("smollm2-135m,weights=device", &m, &err), 0, "%s", err.msg);
    ss_engine_opts o;
    ss_engine_opts_default(&o);
    o.device = SS_DEVICE_CUDA;
    o.max_seqs = 64;
    o.max_ctx = 600;
    ss_engine_footprint before, after;
    cr_assert_eq(ss_engine_footprint_of(m, &o, &before, &err), 0, "%s", err.msg);
    ss_engine *e = NULL;
    cr_assert_eq(ss_engine_create(m, &o, &e, &err), 0, "%s", err.msg);
    const ss_config *c = &m->cfg;
    float *alpha = calloc((size_t)c->n_layers, 4), *vec = calloc((size_t)c->n_layers * c->d_model, 4);
    alpha[3] = 2.0f;
    vec[5] = 1.0f;
    set_steer(e, 0, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 0, -1);
    int32_t tok[40];
    float *logits = malloc((size_t)c->vocab_size * 4);
    for (int i = 0; i < 40; i++)
        tok[i] = i + 100;
    run_prompt(e, tok, 40, logits);
    cr_assert_eq(ss_engine_footprint_of(m, &o, &after, &err), 0, "%s", err.msg);
    double used = (double)before.device_free - (double)after.device_free;
    double promised = (double)before.fixed + (double)before.per_slot * o.max_seqs;
    printf("footprint: promised %.1f MiB (fixed %.1f + %d x %.2f per slot), allocated %.1f MiB\n",
           promised / (1 << 20), (double)before.fixed / (1 << 20), o.max_seqs,
           (double)before.per_slot / (1 << 20), used / (1 << 20));
    cr_expect_leq(used, promised, "the engine took %.1f MiB, more than the %.1f promised",
                  used / (1 << 20), promised / (1 << 20));
    cr_expect_geq(used, 0.6 * promised, "the engine took %.1f MiB of the %.1f promised",
                  used / (1 << 20), promised / (1 << 20));
    free(alpha), free(vec), free(logits);
    ss_engine_free(e);
    ss_model_free(m);
}
