/* cmd_bench.c - `safesteer bench`: prefill and decode speed, achieved
 * memory bandwidth and steering overhead of an engine, on a model file or
 * on a synthetic shape (random weights; on CUDA drawn on the GPU, so no
 * file is needed).
 *
 * Prefill: one prompt of --prompt-len tokens, tokens/s and TFLOP/s
 * (2 x matmul parameters x tokens + causal attention) against the nominal
 * bf16 peak.  Decode: each batch size B gets B prompts prefilled, then
 * single-token steps; a step's bytes are the weights plus the KV cache read
 * (B x layers x 2 x positions x kv_dim x 2 bytes), GB/s = bytes / step time,
 * shown next to a device-to-device copy measured in the same run (read +
 * write bytes).  Steering overhead: decode with no steering, one steered
 * layer, all layers (ADD at resid_post, alpha 4), taking turns step by
 * step, at batch 1 and the largest batch.  CUDA times come
 * from cudaEvents, CPU times from the wall clock; each figure is the
 * median of its repeats after warm-up. */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/outfile.h"
#include "safesteer/util.h"
#include "cli.h"
#include "safesteer/engine.h"
#include "safesteer/sample.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"
#ifdef SAFESTEER_HAVE_CUDA
#include "../../cuda/kernels.h"
#endif

#define SS_BENCH_MAX_BATCHES 16

typedef struct {
    const char *name;
    ss_config cfg;
} ss_bench_shape;

/* n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab, max_ctx,
 * eps, theta, neox, scaling, factor, low, high, orig ctx, tied */
static const ss_bench_shape ss_bench_shapes[] = {
    {"smollm2-135m", {30, 576, 9, 3, 64, 1536, 49152, 8192, 1e-5f, 100000.0f, 0, 0, 0, 0, 0, 0, 1}},
    {"llama2-7b", {32, 4096, 32, 32, 128, 11008, 32000, 4096, 1e-5f, 10000.0f, 0, 0, 0, 0, 0, 0, 0}},
    {"llama3-8b",
     {32, 4096, 32, 8, 128, 14336, 128256, 8192, 1e-5f, 500000.0f, 0, SS_ROPE_SCALING_LLAMA3,
      8.0f, 1.0f, 4.0f, 8192, 0}},
};
#define SS_BENCH_N_SHAPES (sizeof ss_bench_shapes / sizeof ss_bench_shapes[0])

typedef struct {
    int device, gpu, prompt_len, steps, reps;
    int batches[SS_BENCH_MAX_BATCHES], n_batches;
    const char *shape, *model, *json;
    uint64_t seed;
} ss_bench_opts;

static void ss_bench_usage(FILE *f)
{
    fprintf(f,
            "usage: safesteer bench [--device cuda|cpu] (--shape NAME | --model FILE)\n"
            "                       [--prompt-len 512] [--batches 1,8,32] [--steps 32]\n"
            "                       [--reps 5] [--gpu 0] [--seed 1] [--json FILE]\n\n"
            "  --shape NAME   synthetic random weights: smollm2-135m, llama2-7b, llama3-8b\n"
            "  --model FILE   a GGUF file or Hugging Face folder instead\n"
            "  --prompt-len   prefill prompt tokens (also each decode prompt)\n"
            "  --batches      decode batch sizes, comma separated\n"
            "  --steps        timed decode steps per batch size\n"
            "  --reps         timed prefill repeats\n"
            "  --json FILE    also write the results as JSON\n");
}

/* ---------------------------------------------------------------- synthetic model */

/* host: bf16-exact random weights in host memory (CPU engine), projections
 * scaled by 1/sqrt(fan_in); else shapes only, and the CUDA engine draws the
 * same distributions on the GPU from the path "synthetic:seed=N". */
static int ss_bench_model_new(const ss_config *cfg, const char *name, int host, uint64_t seed,
                              ss_model **out, ss_error *err)
{
    float sd = 1.0f / sqrtf((float)cfg->d_model);
    const ss_random_scales s = {.embd = 1.0f, .output = sd, .norm = 0.1f, .wq = sd, .wk = sd,
                                .wv = sd, .wo = 1.0f / sqrtf((float)cfg->n_heads * cfg->head_dim),
                                .w_gate = sd, .w_up = sd,
                                .w_down = 1.0f / sqrtf((float)cfg->d_ff), .bf16_exact = 1};
    if (ss_model_random(cfg, host ? &s : NULL, seed, out, err))
        return ss_fail_context(err, "synthetic %s", name);
    snprintf((*out)->name, sizeof (*out)->name, "%s (synthetic)", name);
    return 0;
}

/* Bytes of the matrices a CPU decode step reads as stored (the engine keeps
 * the file's encoding): every layer's, and the output head's (the
 * embedding table when tied; of a separate table only one row is read). */
static double ss_bench_cpu_weight_bytes(const ss_model *m)
{
    const ss_tensor *head = m->output.data ? &m->output : &m->tok_embd;
    double bytes = (double)head->nbytes;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ss_layer_weights *w = &m->layers[l];
        const ss_tensor *ts[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up,
                                 &w->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            bytes += (double)ts[i]->nbytes;
    }
    return bytes;
}

/* ---------------------------------------------------------------- timing */

typedef struct {
    int cuda;
    double t0;
#ifdef SAFESTEER_HAVE_CUDA
    ss_cuda_timer *ev;
#endif
} ss_bench_timer;

static int ss_timer_start(ss_bench_timer *t, ss_error *err)
{
#ifdef SAFESTEER_HAVE_CUDA
    if (t->cuda)
        return ss_cuda_timer_start(t->ev, err);
#endif
    (void)err;
    t->t0 = ss_seconds();
    return 0;
}

static int ss_timer_ms(ss_bench_timer *t, double *ms, ss_error *err)
{
#ifdef SAFESTEER_HAVE_CUDA
    if (t->cuda)
        return ss_cuda_timer_stop(t->ev, ms, err);
#endif
    (void)err;
    *ms = (ss_seconds() - t->t0) * 1e3;
    return 0;
}

/* Host copy bandwidth (GB/s, bytes read + written), median of reps copies
 * of `bytes` split over the OpenMP threads the CPU engine uses. */
static int ss_bench_host_copy(size_t bytes, int reps, double *gbps, ss_error *err)
{
    char *a = ss_malloc(bytes, err), *b = a ? ss_malloc(bytes, err) : NULL;
    double *t = b ? ss_malloc((size_t)reps * sizeof *t, err) : NULL;
    if (!t) {
        free(a), free(b);
        return -1;
    }
    memset(a, 1, bytes); /* touch every page before timing */
    memset(b, 0, bytes);
    for (int r = 0; r < reps; r++) {
        double t0 = ss_seconds();
#pragma omp parallel
        {
            size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
            size_t lo = bytes * id / nt, hi = bytes * (id + 1) / nt;
            memcpy(b + lo, a + lo, hi - lo);
        }
        t[r] = ss_seconds() - t0;
    }
    *gbps = 2.0 * (double)bytes / ss_median(t, reps) / 1e9;
    free(a), free(b), free(t);
    return 0;
}

/* ---------------------------------------------------------------- results */

#define SS_BENCH_GEMM 8192   /* measured tensor-core peak: one size^3 GEMM */
#define SS_BENCH_NV 5        /* decode variants (ss_bench_variants) */
#define SS_BENCH_NP 3        /* matmul paths timed alone: v2, v1, cuBLAS */

typedef struct {
    char devname[256];
    double copy_gbps, peak_nominal, peak_measured; /* GB/s (read+write), TFLOP/s */
    double wheld, wread;       /* weight bytes on the GPU, read per decode step */
    double pf_ms, pf_flops;    /* prefill */
    double pf_gemm_ms;         /* its matmuls alone (cuBLAS), 0 if not measured */
    double pf_attn1_ms;        /* prefill with attention v1 (v2 is the default) */
    int n_batches, batches[SS_BENCH_MAX_BATCHES], modes;
    double dec_ms[SS_BENCH_MAX_BATCHES][2];    /* [batch][graphs off, on] */
    double dec_bytes[SS_BENCH_MAX_BATCHES];    /* weights read + KV read per step */
    double var_ms[SS_BENCH_MAX_BATCHES][SS_BENCH_NV]; /* 0: not applicable */
    double mm_ms[SS_BENCH_MAX_BATCHES][SS_BENCH_NP];  /* matmuls alone; 0: n/a */
    double mm_bytes;                                 /* weight bytes of those */
    int n_st, st_batch[2];
    double st_ms[2][3];        /* [batch 1, max batch][none, one layer, all] */
} ss_bench_res;

static double ss_pct(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0; }

/* ---------------------------------------------------------------- runs */

typedef struct {
    ss_engine *e;
    ss_bench_timer tm;
    int32_t *tokens;      /* [max batch * prompt_len] */
    int32_t *next;        /* [max batch] */
    float *logits;        /* [max batch][vocab] */
    int *slots, *lens, *ones;
} ss_bench_ctx;

/* One forward; decode on CUDA returns ids (GPU argmax), else logits. */
static int ss_bench_forward(ss_bench_ctx *c, int n, const int *lens, const int32_t *tok,
                            ss_error *err)
{
    ss_batch b = {n, c->slots, lens, tok, 0};
#ifdef SAFESTEER_HAVE_CUDA
    if (c->tm.cuda)
        return ss_engine_cuda_forward_argmax(c->e, &b, c->next, err);
#endif
    if (ss_engine_forward(c->e, &b, c->logits, err))
        return -1;
    int V = ss_engine_config(c->e)->vocab_size;
    for (int i = 0; i < n; i++)
        c->next[i] = ss_argmax(c->logits + (size_t)i * V, V);
    return 0;
}

static void ss_bench_reset(ss_bench_ctx *c, int n)
{
    for (int i = 0; i < n; i++)
        ss_engine_reset_slot(c->e, i);
}

/* Median ms of a prefill of one prompt_len prompt (slot 0). */
static int ss_bench_prefill(ss_bench_ctx *c, int prompt_len, int reps, double *ms,
                            ss_error *err)
{
    double *t = ss_calloc((size_t)reps, sizeof *t, err);
    if (!t)
        return -1;
    int lens[1] = {prompt_len};
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        ss_bench_reset(c, 1);
        double x;
        if (ss_timer_start(&c->tm, err) || ss_bench_forward(c, 1, lens, c->tokens, err) ||
            ss_timer_ms(&c->tm, &x, err)) {
            free(t);
            return -1;
        }
        if (r >= 0)
            t[r] = x;
    }
    *ms = ss_median(t, reps);
    free(t);
    return 0;
}

/* Empties slots 0..B-1 and prefills a prompt_len prompt into each. */
static int ss_bench_prefill_batch(ss_bench_ctx *c, int B, int prompt_len, ss_error *err)
{
    ss_bench_reset(c, B);
    for (int i = 0; i < B; i++)
        c->lens[i] = prompt_len;
    return ss_bench_forward(c, B, c->lens, c->tokens, err);
}

/* Prefills B prompts, then times `steps` single-token steps: median ms. */
static int ss_bench_decode(ss_bench_ctx *c, int B, int prompt_len, int steps, double *ms,
                           ss_error *err)
{
    double *t = ss_calloc((size_t)steps, sizeof *t, err);
    if (!t)
        return -1;
    int rc = -1;
    if (ss_bench_prefill_batch(c, B, prompt_len, err))
        goto done;
    for (int s = -2; s < steps; s++) { /* two warm-up steps (graph capture) */
        double x;
        if (ss_timer_start(&c->tm, err) || ss_bench_forward(c, B, c->ones, c->next, err) ||
            ss_timer_ms(&c->tm, &x, err))
            goto done;
        if (s >= 0)
            t[s] = x;
    }
    *ms = ss_median(t, steps);
    rc = 0;
done:
    free(t);
    return rc;
}

/* Sets (st) or clears (NULL) the steering of slots 0..B-1. */
static int ss_bench_set_steering(ss_bench_ctx *c, int B, const ss_steer_slot *st, ss_error *err)
{
    for (int s = 0; s < B; s++)
        if (ss_engine_set_steering(c->e, s, st, err))
            return -1;
    return 0;
}

/* Steering overhead at batch B: decode step ms with no steering, the middle
 * layer steered, and every layer steered (ADD at resid_post, alpha 4).
 * After one prefill the three take turns step by step, so a drift in the
 * machine's speed (clock, other load) falls on all three alike; each figure
 * is the median of its `steps` steps after two warm-up rounds. */
static int ss_bench_steering(ss_bench_ctx *c, int B, int prompt_len, int steps, double ms[3],
                             ss_error *err)
{
    const ss_config *g = ss_engine_config(c->e);
    int L = g->n_layers, d = g->d_model, rc = -1;
    ss_steer_compiled st[2] = {{0}}; /* middle layer, all layers */
    float *alpha = ss_calloc(2 * (size_t)L, sizeof *alpha, err); /* [middle | all][L] */
    float *vec = alpha ? ss_malloc((size_t)L * d * sizeof *vec, err) : NULL;
    double *t = vec ? ss_malloc(3 * (size_t)steps * sizeof *t, err) : NULL; /* [3][steps] */
    if (!t)
        goto done;
    for (int l = 0; l < L; l++) {
        alpha[l] = l == L / 2 ? 4.0f : 0.0f;
        alpha[L + l] = 4.0f;
        for (int j = 0; j < d; j++)
            vec[(size_t)l * d + j] = ((l * 131 + j * 7) % 17 - 8) / (8.0f * sqrtf((float)d));
    }
    for (int k = 0; k < 2; k++)
        if (ss_steer_compile_site(L, d, SS_SITE_RESID_POST, SS_STEER_ADD, alpha + k * L, vec, 0,
                                  -1, &st[k], err))
            goto done;
    if (ss_bench_set_steering(c, B, NULL, err) || ss_bench_prefill_batch(c, B, prompt_len, err))
        goto done;
    for (int s = -2; s < steps; s++)
        for (int k = 0; k < 3; k++) {
            double x;
            if (ss_bench_set_steering(c, B, k ? &st[k - 1].slot : NULL, err) ||
                ss_timer_start(&c->tm, err) || ss_bench_forward(c, B, c->ones, c->next, err) ||
                ss_timer_ms(&c->tm, &x, err))
                goto done;
            if (s >= 0)
                t[(size_t)k * steps + s] = x;
        }
    for (int k = 0; k < 3; k++)
        ms[k] = ss_median(t + (size_t)k * steps, steps);
    rc = ss_bench_set_steering(c, B, NULL, err);
done:
    ss_steer_compiled_free(&st[0]);
    ss_steer_compiled_free(&st[1]);
    free(alpha);
    free(vec);
    free(t);
    return rc;
}

#ifdef SAFESTEER_HAVE_CUDA
/* ---------------------------------------------------------------- kernel-level timing */

/* Decode variants timed side by side (graphs on). */
typedef struct {
    const char *name;
    int matvec, max_rows, residual, rope, max_batch;
} ss_bench_variant;

/* first: the engine's defaults; each other changes one kernel */
static const ss_bench_variant ss_bench_variants[] = {
    {"default", SS_CUDA_DEFAULT_MM_PATH, SS_CUDA_DEFAULT_MM_MAX_ROWS, 2, 2, 1 << 20},
    {"matvec-v2", SS_CUDA_MM_V2, SS_CUDA_MMA_MAX_ROWS, 2, 2, 1 << 20},
    {"matvec-v1", SS_CUDA_MM_V1, SS_CUDA_MATVEC_MAX_ROWS, 2, 2, SS_CUDA_MATVEC_MAX_ROWS},
    {"cublas", SS_CUDA_MM_CUBLAS, 0, 2, 2, 1 << 20},
    {"residual-v1", SS_CUDA_DEFAULT_MM_PATH, SS_CUDA_DEFAULT_MM_MAX_ROWS, 1, 2, 1 << 20},
    {"rope-v1", SS_CUDA_DEFAULT_MM_PATH, SS_CUDA_DEFAULT_MM_MAX_ROWS, 2, 1, 1 << 20},
};
#define SS_BENCH_N_VARIANTS (sizeof ss_bench_variants / sizeof ss_bench_variants[0])

/* The matmuls of one step alone: per layer qkv, wo, gate/up, down, then
 * (lm_head) the output head, each weight taken from a 1.5 GiB pool in turn
 * so nothing is served from L2.  Median ms of reps; *bytes = weight bytes
 * read per step. */
typedef struct {
    ss_cuda_ctx *cx;
    uint16_t *pool, *x;   /* [pool_elems], [max rows][max in] */
    float *y;             /* [max rows][max out] */
    size_t pool_elems;
    ss_cuda_timer *tm;
} ss_bench_mm;

static int ss_bench_mm_step(ss_bench_mm *b, const ss_config *g, int n, int path, int lm_head,
                            int reps, double *ms, double *bytes, ss_error *err)
{
    int d = g->d_model, qd = g->n_heads * g->head_dim, kvd = g->n_kv_heads * g->head_dim;
    const int dims[4][2] = {{d, qd + 2 * kvd}, {qd, d}, {d, 2 * g->d_ff}, {g->d_ff, d}};
    double t[16];
    size_t off = 0;
    if (reps > 16)
        reps = 16;
    *bytes = 0;
    for (int r = -1; r < reps; r++) {
        double wb = 0;
        if (ss_cuda_timer_start(b->tm, err))
            return -1;
        for (int l = 0; l <= g->n_layers; l++)
            for (int k = 0; k < 4; k++) {
                int in = l < g->n_layers ? dims[k][0] : d;
                int out = l < g->n_layers ? dims[k][1] : g->vocab_size;
                if (l == g->n_layers && (k > 0 || !lm_head))
                    break;
                size_t elems = (size_t)in * out;
                if (off + elems > b->pool_elems)
                    off = 0;
                if (ss_cuda_matmul_bf16(b->cx, b->y, b->x, b->pool + off, n, in, out, path, err))
                    return -1;
                off += elems;
                wb += 2.0 * (double)elems;
            }
        double x;
        if (ss_cuda_timer_stop(b->tm, &x, err))
            return -1;
        if (r >= 0)
            t[r] = x;
        *bytes = wb;
    }
    *ms = ss_median(t, reps);
    return 0;
}

static const char *const ss_bench_path_names[SS_BENCH_NP] = {"matvec-v2", "matvec-v1", "cublas"};
static const int ss_bench_paths[SS_BENCH_NP] = {SS_CUDA_MM_V2, SS_CUDA_MM_V1, SS_CUDA_MM_CUBLAS};
static const int ss_bench_path_max[SS_BENCH_NP] = {SS_CUDA_MMA_MAX_ROWS, SS_CUDA_MATVEC_MAX_ROWS,
                                                   1 << 20};

/* Decode variants (whole steps, graphs on) and the matmuls of a step alone,
 * per batch size; prefill matmuls alone (cuBLAS at prompt_len rows). */
static int ss_bench_cuda_kernels(ss_bench_ctx *c, const ss_bench_opts *o, const ss_config *g,
                                 ss_bench_res *R, ss_error *err)
{
    fprintf(stderr, "bench: decode variants...\n");
    ss_engine_cuda_set_graphs(c->e, 1);
    for (int i = 0; i < o->n_batches; i++)
        for (size_t v = 0; v < SS_BENCH_NV; v++) {
            const ss_bench_variant *var = &ss_bench_variants[v];
            if (o->batches[i] > var->max_batch)
                continue;
            ss_engine_cuda_set_variants(c->e, var->matvec, var->max_rows, var->residual, 2,
                                        var->rope);
            if (ss_bench_decode(c, o->batches[i], o->prompt_len, o->steps, &R->var_ms[i][v], err))
                return -1;
        }
    const ss_bench_variant *def = &ss_bench_variants[0];
    fprintf(stderr, "bench: prefill with attention v1...\n");
    ss_engine_cuda_set_variants(c->e, def->matvec, def->max_rows, def->residual, 1, def->rope);
    if (ss_bench_prefill(c, o->prompt_len, o->reps, &R->pf_attn1_ms, err))
        return -1;
    ss_engine_cuda_set_variants(c->e, def->matvec, def->max_rows, def->residual, 2, def->rope);

    fprintf(stderr, "bench: matmuls alone...\n");
    ss_bench_mm b;
    memset(&b, 0, sizeof b);
    int rc = -1, d = g->d_model, maxin = d > g->d_ff ? d : g->d_ff;
    int rows = o->prompt_len > SS_CUDA_MMA_MAX_ROWS ? o->prompt_len : SS_CUDA_MMA_MAX_ROWS;
    size_t maxout = (size_t)g->vocab_size > 2 * (size_t)g->d_ff ? (size_t)g->vocab_size
                                                                : 2 * (size_t)g->d_ff;
    size_t head = (size_t)g->vocab_size * d;
    b.pool_elems = (size_t)3 << 29; /* 1.5 Gi elements: 3 GiB, well past L2 */
    if (b.pool_elems < 2 * head)
        b.pool_elems = 2 * head;
    if (ss_cuda_ctx_create(o->gpu, &b.cx, err) || ss_cuda_timer_create(&b.tm, err) ||
        !(b.pool = ss_cuda_malloc(b.pool_elems * 2, err)) ||
        !(b.x = ss_cuda_malloc((size_t)rows * maxin * 2, err)) ||
        !(b.y = ss_cuda_malloc((size_t)rows * maxout * 4, err)) ||
        ss_cuda_fill_random_bf16(b.cx, b.pool, b.pool_elems, 77, 0.0f, 0.02f, err) ||
        ss_cuda_fill_random_bf16(b.cx, b.x, (size_t)rows * maxin, 78, 0.0f, 1.0f, err))
        goto done;
    for (int i = 0; i < o->n_batches; i++)
        for (int p = 0; p < SS_BENCH_NP; p++)
            if (o->batches[i] <= ss_bench_path_max[p] &&
                ss_bench_mm_step(&b, g, o->batches[i], ss_bench_paths[p], 1, 5, &R->mm_ms[i][p],
                                 &R->mm_bytes, err))
                goto done;
    double unused;
    if (ss_bench_mm_step(&b, g, o->prompt_len, SS_CUDA_MM_CUBLAS, 0, 3, &R->pf_gemm_ms, &unused,
                         err))
        goto done;
    rc = 0;
done:
    ss_cuda_timer_free(b.tm);
    ss_cuda_free(b.pool);
    ss_cuda_free(b.x);
    ss_cuda_free(b.y);
    ss_cuda_ctx_free(b.cx);
    return rc;
}

static const char *ss_bench_variant_name(int v) { return ss_bench_variants[v].name; }
static const char *ss_bench_path_name(int p) { return ss_bench_path_names[p]; }
#else
static const char *ss_bench_variant_name(int v) { (void)v; return "-"; }
static const char *ss_bench_path_name(int p) { (void)p; return "-"; }
#endif


static double ss_gbps(double bytes, double ms) { return ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0; }

static void ss_bench_print(const ss_bench_res *R, const ss_bench_opts *o, const char *name,
                           int cuda, int L)
{
    double pf_tf = R->pf_flops / (R->pf_ms * 1e-3) / 1e12;
    printf("safesteer bench: %s on %s (%s)\n", name, R->devname,
           cuda ? "cudaEvent timing" : "wall-clock timing");
    printf("  weights %.2f GB held, %.2f GB read per decode step (%s); copy bandwidth %.0f GB/s "
           "(%s, read+write)\n",
           R->wheld / 1e9, R->wread / 1e9, cuda ? "bf16" : "as stored", R->copy_gbps,
           cuda ? "D2D" : "host memcpy");
    if (cuda) {
        printf("  bf16 tensor peak: %.0f TFLOP/s measured (cuBLAS %d^3), %.0f nominal\n",
               R->peak_measured, SS_BENCH_GEMM, R->peak_nominal);
        printf("  prefill %d tokens: %.2f ms  %.0f tok/s  %.1f TFLOP/s (%.0f%% of measured, "
               "%.0f%% of nominal peak)\n",
               o->prompt_len, R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf,
               ss_pct(pf_tf, R->peak_measured), ss_pct(pf_tf, R->peak_nominal));
    } else {
        printf("  prefill %d tokens: %.2f ms  %.0f tok/s  %.1f GFLOP/s\n", o->prompt_len,
               R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf * 1e3);
    }
    if (R->pf_gemm_ms > 0)
        printf("    of which matmuls alone (cuBLAS): %.2f ms; attention and the rest: %.2f ms\n",
               R->pf_gemm_ms, R->pf_ms - R->pf_gemm_ms);
    if (R->pf_attn1_ms > 0)
        printf("    prefill with attention v1 (previous kernel): %.2f ms\n", R->pf_attn1_ms);
    printf("  decode (bytes/step = weights read + KV read; %% of copy bandwidth):\n");
    printf("  %-6s %-7s %10s %10s %9s %8s\n", "batch", "graphs", "step ms", "tok/s", "GB/s",
           "of copy");
    for (int i = 0; i < R->n_batches; i++)
        for (int mode = 0; mode < R->modes; mode++) {
            double ms = R->dec_ms[i][mode], gb = ss_gbps(R->dec_bytes[i], ms);
            printf("  %-6d %-7s %10.3f %10.1f %9.0f %7.0f%%\n", R->batches[i], mode ? "on" : "off",
                   ms, R->batches[i] / (ms * 1e-3), gb, ss_pct(gb, R->copy_gbps));
        }
    if (cuda) {
        printf("  decode variants (graphs on), step ms (%% of copy):\n  %-6s", "batch");
        for (int v = 0; v < SS_BENCH_NV; v++)
            printf(" %20s", ss_bench_variant_name(v));
        printf("\n");
        for (int i = 0; i < R->n_batches; i++) {
            printf("  %-6d", R->batches[i]);
            for (int v = 0; v < SS_BENCH_NV; v++) {
                double ms = R->var_ms[i][v];
                if (ms > 0)
                    printf("      %7.3f (%4.0f%%)", ms,
                           ss_pct(ss_gbps(R->dec_bytes[i], ms), R->copy_gbps));
                else
                    printf(" %20s", "-");
            }
            printf("\n");
        }
        printf("  matmuls of one decode step alone (%.2f GB of weights), ms (GB/s):\n  %-6s",
               R->mm_bytes / 1e9, "batch");
        for (int p = 0; p < SS_BENCH_NP; p++)
            printf(" %18s", ss_bench_path_name(p));
        printf("\n");
        for (int i = 0; i < R->n_batches; i++) {
            printf("  %-6d", R->batches[i]);
            for (int p = 0; p < SS_BENCH_NP; p++) {
                double ms = R->mm_ms[i][p];
                if (ms > 0)
                    printf("     %6.3f (%5.0f)", ms, ss_gbps(R->mm_bytes, ms));
                else
                    printf(" %18s", "-");
            }
            printf("\n");
        }
    }
    for (int k = 0; k < R->n_st; k++) {
        const double *s = R->st_ms[k];
        printf("  steering (batch %d, resid_post ADD, alpha 4): none %.3f ms, one layer %.3f ms "
               "(%+.1f%%), all %d layers %.3f ms (%+.1f%%)\n",
               R->st_batch[k], s[0], s[1], ss_pct(s[1] - s[0], s[0]), L, s[2],
               ss_pct(s[2] - s[0], s[0]));
    }
    if (!cuda) /* the targets below are the CUDA engine's */
        return;
    /* the three targets, last */
    int b1 = -1;
    for (int i = 0; i < R->n_batches; i++)
        if (R->batches[i] == 1)
            b1 = i;
    printf("  targets:\n");
    if (b1 >= 0) {
        double ms = R->dec_ms[b1][R->modes - 1];
        printf("    decode batch 1: %.3f ms/step, %.0f GB/s = %.0f%% of copy bandwidth "
               "(target >= 70%%)\n",
               ms, ss_gbps(R->dec_bytes[b1], ms), ss_pct(ss_gbps(R->dec_bytes[b1], ms),
                                                          R->copy_gbps));
    }
    for (int k = 0; k < R->n_st; k++)
        printf("    steering all layers, batch %d: %+.1f%% step time (target <= 2%%)\n",
               R->st_batch[k], ss_pct(R->st_ms[k][2] - R->st_ms[k][0], R->st_ms[k][0]));
    printf("    prefill %d: %.0f%% of measured, %.0f%% of nominal bf16 peak (target >= 30%%)\n",
           o->prompt_len, ss_pct(pf_tf, R->peak_measured), ss_pct(pf_tf, R->peak_nominal));
}

static int ss_bench_json(const ss_bench_res *R, const ss_bench_opts *o, const char *name,
                         int cuda, ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, o->json, err);
    if (!f)
        return -1;
    double pf_tf = R->pf_flops / (R->pf_ms * 1e-3) / 1e12;
    fprintf(f, "{\n  \"model\": \"%s\", \"device\": \"%s\", \"timing\": \"%s\",\n", name,
            R->devname, cuda ? "cudaEvent" : "wall-clock");
    fprintf(f, "  \"weight_bytes\": %.0f, \"weight_bytes_read\": %.0f, \"copy_gbps\": %.1f,\n",
            R->wheld, R->wread, R->copy_gbps);
    fprintf(f, "  \"bf16_peak_tflops\": %.1f, \"bf16_peak_tflops_measured\": %.1f, "
               "\"gemm_size\": %d,\n",
            R->peak_nominal, R->peak_measured, SS_BENCH_GEMM);
    fprintf(f, "  \"prefill\": {\"tokens\": %d, \"ms\": %.4f, \"tokens_per_s\": %.1f, "
               "\"tflops\": %.2f, \"matmul_only_ms\": %.4f, \"attention_v1_ms\": %.4f},\n",
            o->prompt_len, R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf, R->pf_gemm_ms,
            R->pf_attn1_ms);
    fprintf(f, "  \"decode\": [");
    for (int i = 0, first = 1; i < R->n_batches; i++)
        for (int mode = 0; mode < R->modes; mode++) {
            double ms = R->dec_ms[i][mode];
            fprintf(f, "%s\n    {\"batch\": %d, \"graphs\": %s, \"step_ms\": %.4f, "
                       "\"tokens_per_s\": %.1f, \"bytes_per_step\": %.0f, \"gbps\": %.1f}",
                    first ? "" : ",", R->batches[i], mode ? "true" : "false", ms,
                    R->batches[i] / (ms * 1e-3), R->dec_bytes[i], ss_gbps(R->dec_bytes[i], ms));
            first = 0;
        }
    fprintf(f, "\n  ],\n  \"variants\": [");
    for (int i = 0, first = 1; i < R->n_batches; i++)
        for (int v = 0; v < SS_BENCH_NV; v++)
            if (R->var_ms[i][v] > 0) {
                fprintf(f, "%s\n    {\"batch\": %d, \"variant\": \"%s\", \"step_ms\": %.4f}",
                        first ? "" : ",", R->batches[i], ss_bench_variant_name(v),
                        R->var_ms[i][v]);
                first = 0;
            }
    fprintf(f, "\n  ],\n  \"matmul_only\": {\"weight_bytes\": %.0f, \"runs\": [", R->mm_bytes);
    for (int i = 0, first = 1; i < R->n_batches; i++)
        for (int p = 0; p < SS_BENCH_NP; p++)
            if (R->mm_ms[i][p] > 0) {
                fprintf(f, "%s\n    {\"batch\": %d, \"path\": \"%s\", \"ms\": %.4f}",
                        first ? "" : ",", R->batches[i], ss_bench_path_name(p), R->mm_ms[i][p]);
                first = 0;
            }
    fprintf(f, "\n  ]},\n  \"steering\": [");
    for (int k = 0; k < R->n_st; k++)
        fprintf(f, "%s\n    {\"batch\": %d, \"graphs\": %s, \"none_ms\": %.4f, "
                   "\"one_layer_ms\": %.4f, \"all_layers_ms\": %.4f}",
                k ? "," : "", R->st_batch[k], cuda ? "true" : "false", R->st_ms[k][0],
                R->st_ms[k][1], R->st_ms[k][2]);
    fprintf(f, "\n  ]\n}\n");
    return ss_outfile_fclose(&out, f, 0, err);
}

/* ---------------------------------------------------------------- main */

static int ss_bench_parse(int argc, char **argv, ss_bench_opts *o, ss_error *err)
{
    static const struct option longopts[] = {
        {"device", required_argument, 0, 'd'},  {"shape", required_argument, 0, 's'},
        {"model", required_argument, 0, 'm'},   {"prompt-len", required_argument, 0, 'p'},
        {"batches", required_argument, 0, 'b'}, {"steps", required_argument, 0, 'n'},
        {"reps", required_argument, 0, 'r'},    {"gpu", required_argument, 0, 'g'},
        {"seed", required_argument, 0, 'S'},    {"json", required_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->device = SS_DEVICE_CUDA;
    o->prompt_len = 512;
    o->steps = 32;
    o->reps = 5;
    o->seed = 1;
    o->batches[0] = 1, o->batches[1] = 8, o->batches[2] = 32;
    o->n_batches = 3;
    optind = 1;
    int ch;
    long v;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'd':
            if (ss_device_parse(optarg, &o->device, err) && ss_cli_flag(err, "--device"))
                return -1;
            break;
        case 's': o->shape = optarg; break;
        case 'm': o->model = optarg; break;
        case 'j': o->json = optarg; break;
        case 'p':
            if (ss_cli_int("--prompt-len", optarg, 1, 1 << 20, &v, err)) return -1;
            o->prompt_len = (int)v;
            break;
        case 'n':
            if (ss_cli_int("--steps", optarg, 1, 1 << 20, &v, err)) return -1;
            o->steps = (int)v;
            break;
        case 'r':
            if (ss_cli_int("--reps", optarg, 1, 1000, &v, err)) return -1;
            o->reps = (int)v;
            break;
        case 'g':
            if (ss_cli_int("--gpu", optarg, 0, 64, &v, err)) return -1;
            o->gpu = (int)v;
            break;
        case 'S':
            if (ss_cli_int("--seed", optarg, 0, 0x7fffffffL, &v, err)) return -1;
            o->seed = (uint64_t)v;
            break;
        case 'b': {
            o->n_batches = 0;
            char *copy = strdup(optarg), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (o->n_batches == SS_BENCH_MAX_BATCHES ||
                    ss_cli_int("--batches", tok, 1, 4096, &v, err)) {
                    free(copy);
                    return o->n_batches == SS_BENCH_MAX_BATCHES
                               ? ss_fail(err, "--batches: at most %d sizes", SS_BENCH_MAX_BATCHES)
                               : -1;
                }
                o->batches[o->n_batches++] = (int)v;
            }
            free(copy);
            if (o->n_batches == 0)
                return ss_fail(err, "--batches: no sizes in '%s'", optarg);
            break;
        }
        case 'h': return 1;
        default: return ss_fail(err, "unknown option (see safesteer bench --help)");
        }
    }
    if (optind < argc)
        return ss_fail(err, "unexpected argument '%s'", argv[optind]);
    if (!o->shape == !o->model)
        return ss_fail(err, "give exactly one of --shape NAME or --model FILE");
    return 0;
}

int ss_cmd_bench(int argc, char **argv)
{
    ss_bench_opts o;
    ss_error err;
    int prc = ss_bench_parse(argc, argv, &o, &err);
    if (prc == 1) {
        ss_bench_usage(stdout);
        return SS_EXIT_OK;
    }
    if (prc)
        return ss_cli_fail("bench", SS_EXIT_USAGE, &err);
    const ss_config *cfg = NULL;
    ss_model *file_model = NULL;
    ss_model *syn = NULL;
    if (o.shape) {
        for (size_t i = 0; i < SS_BENCH_N_SHAPES; i++)
            if (!strcmp(o.shape, ss_bench_shapes[i].name))
                cfg = &ss_bench_shapes[i].cfg;
        if (!cfg)
            return ss_cli_error("bench", SS_EXIT_USAGE,
                                "--shape must be smollm2-135m, llama2-7b or llama3-8b");
    }
#ifndef SAFESTEER_HAVE_CUDA
    if (o.device == SS_DEVICE_CUDA)
        return ss_cli_error("bench", SS_EXIT_FAIL,
                            "--device cuda: this safesteer was built without CUDA");
#endif
    int maxb = 1;
    for (int i = 0; i < o.n_batches; i++)
        maxb = o.batches[i] > maxb ? o.batches[i] : maxb;

    int code = SS_EXIT_FAIL;
    ss_bench_ctx c;
    memset(&c, 0, sizeof c);
    const ss_model *m;
    if (o.shape) {
        if (ss_bench_model_new(cfg, o.shape, o.device == SS_DEVICE_CPU, o.seed, &syn, &err))
            goto fail;
        m = syn;
    } else {
        if (ss_model_load(o.model, &file_model, &err))
            goto fail;
        m = file_model;
    }
    const ss_config *g = &m->cfg;
    ss_engine_opts eo;
    ss_engine_opts_default(&eo);
    eo.device = o.device;
    eo.gpu = o.gpu;
    eo.max_seqs = maxb;
    eo.max_ctx = o.prompt_len + 3 * (o.steps + 2); /* the steering run's three turns */
    fprintf(stderr, "bench: creating %s engine for %s (%d slots x %d positions)...\n",
            o.device == SS_DEVICE_CUDA ? "cuda" : "cpu", m->name, eo.max_seqs, eo.max_ctx);
    if (ss_engine_create(m, &eo, &c.e, &err))
        goto fail;
    int V = g->vocab_size, L = g->n_layers;
    size_t tok_n = (size_t)maxb * o.prompt_len;
    c.tokens = ss_malloc(tok_n * sizeof *c.tokens, &err);
    c.next = ss_calloc((size_t)maxb, sizeof *c.next, &err);
    c.logits = ss_malloc((size_t)maxb * V * sizeof *c.logits, &err);
    c.slots = ss_malloc((size_t)maxb * sizeof(int), &err);
    c.lens = ss_malloc((size_t)maxb * sizeof(int), &err);
    c.ones = ss_malloc((size_t)maxb * sizeof(int), &err);
    if (!c.tokens || !c.next || !c.logits || !c.slots || !c.lens || !c.ones)
        goto fail;
    for (size_t i = 0; i < tok_n; i++)
        c.tokens[i] = (int32_t)((i * 2654435761u + 12345u) % (unsigned)V);
    for (int i = 0; i < maxb; i++)
        c.slots[i] = i, c.ones[i] = 1;
    c.tm.cuda = o.device == SS_DEVICE_CUDA;

    ss_bench_res R;
    memset(&R, 0, sizeof R);
    snprintf(R.devname, sizeof R.devname, "cpu");
    R.n_batches = o.n_batches;
    memcpy(R.batches, o.batches, sizeof R.batches);
#ifdef SAFESTEER_HAVE_CUDA
    if (c.tm.cuda) {
        double mem_gib;
        fprintf(stderr, "bench: copy bandwidth and a %d^3 cuBLAS GEMM...\n", SS_BENCH_GEMM);
        if (ss_cuda_timer_create(&c.tm.ev, &err) ||
            ss_cuda_device_info(o.gpu, R.devname, sizeof R.devname, &mem_gib, &err) ||
            ss_cuda_copy_bandwidth((size_t)1 << 30, 20, &R.copy_gbps, &err) ||
            ss_cuda_gemm_tflops(SS_BENCH_GEMM, 10, &R.peak_measured, &err))
            goto fail;
        R.peak_nominal = ss_cuda_bf16_peak_tflops(o.gpu);
        R.wheld = (double)ss_engine_cuda_weight_bytes(c.e);
        R.wread = (double)ss_engine_cuda_weight_bytes_read(c.e);
    }
#endif
    int64_t d = g->d_model, qd = (int64_t)g->n_heads * g->head_dim;
    int64_t kvd = (int64_t)g->n_kv_heads * g->head_dim, ff = g->d_ff;
    double mat_params = (double)L * (d * (qd + 2 * kvd) + qd * d + 3 * ff * d) + (double)V * d;
    if (!c.tm.cuda) {
        R.wheld = R.wread = ss_bench_cpu_weight_bytes(m);
        if (ss_bench_host_copy((size_t)256 << 20, 5, &R.copy_gbps, &err))
            goto fail;
    }

    /* prefill */
    fprintf(stderr, "bench: prefill...\n");
    if (ss_bench_prefill(&c, o.prompt_len, o.reps, &R.pf_ms, &err))
        goto fail;
    double P = o.prompt_len;
    R.pf_flops = 2.0 * (mat_params - (double)V * d) * P + 2.0 * d * V /* one logits row */
                 + 4.0 * L * (double)qd * P * (P + 1) / 2;

    /* decode at each batch size (CUDA: plain, then graph replay) */
    fprintf(stderr, "bench: decode...\n");
    R.modes = c.tm.cuda ? 2 : 1;
    double kv_pos = o.prompt_len + o.steps / 2.0; /* mean positions read per step */
    for (int mode = 0; mode < R.modes; mode++) {
#ifdef SAFESTEER_HAVE_CUDA
        if (c.tm.cuda)
            ss_engine_cuda_set_graphs(c.e, mode);
#endif
        for (int i = 0; i < o.n_batches; i++) {
            /* K and V of every position read: bf16 on the GPU, f32 on the CPU */
            R.dec_bytes[i] = R.wread + (double)o.batches[i] * L * 2 * kv_pos * kvd *
                                           (c.tm.cuda ? 2 : 4);
            if (ss_bench_decode(&c, o.batches[i], o.prompt_len, o.steps, &R.dec_ms[i][mode],
                                &err))
                goto fail;
        }
    }

#ifdef SAFESTEER_HAVE_CUDA
    if (c.tm.cuda && ss_bench_cuda_kernels(&c, &o, g, &R, &err))
        goto fail;
#endif

    /* steering overhead at batch 1 and at the largest batch */
    fprintf(stderr, "bench: steering...\n");
    R.st_batch[R.n_st++] = 1;
    if (maxb > 1)
        R.st_batch[R.n_st++] = maxb;
    for (int k = 0; k < R.n_st; k++)
        if (ss_bench_steering(&c, R.st_batch[k], o.prompt_len, o.steps, R.st_ms[k], &err))
            goto fail;

    ss_bench_print(&R, &o, m->name, c.tm.cuda, L);
    if (o.json && ss_bench_json(&R, &o, m->name, c.tm.cuda, &err))
        goto fail;
    code = SS_EXIT_OK;
    goto done;
fail:
    ss_cli_fail("bench", SS_EXIT_FAIL, &err);
done:
#ifdef SAFESTEER_HAVE_CUDA
    ss_cuda_timer_free(c.tm.ev);
#endif
    ss_engine_free(c.e);
    free(c.tokens), free(c.next), free(c.logits), free(c.slots), free(c.lens), free(c.ones);
    ss_model_free(syn);
    ss_model_free(file_model);
    return code;
}
