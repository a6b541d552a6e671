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
 * write bytes).  Steering overhead: batch-1 decode with no steering, one
 * steered layer, all layers (ADD at resid_post, alpha 4).  CUDA times come
 * from cudaEvents, CPU times from the wall clock; each figure is the
 * median of its repeats after warm-up. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "safesteer/engine.h"
#include "safesteer/model.h"
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

typedef struct {
    ss_model m;
    void **blobs;       /* host weight buffers (CPU device only) */
    int n_blobs;
} ss_bench_model;

static int ss_bench_tensor(ss_bench_model *b, int host, ss_tensor *t, const char *name,
                           int64_t in, int64_t out, float offset, float scale, uint64_t *rng,
                           ss_error *err)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = SS_TYPE_BF16;
    t->n_dims = out > 1 ? 2 : 1;
    t->dims[0] = in;
    t->dims[1] = out;
    t->dims[2] = t->dims[3] = 1;
    t->nbytes = (size_t)(in * out) * 2;
    if (!host)
        return 0; /* the CUDA engine draws synthetic weights on the GPU */
    uint16_t *p = ss_malloc(t->nbytes, err);
    if (!p)
        return ss_fail_context(err, "synthetic tensor %s", name);
    for (int64_t i = 0; i < in * out; i++) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        float u = (float)(*rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
        p[i] = ss_f32_to_bf16(offset + scale * u);
    }
    b->blobs[b->n_blobs++] = p;
    t->data = p;
    return 0;
}

static void ss_bench_model_free(ss_bench_model *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->n_blobs; i++)
        free(b->blobs[i]);
    free(b->blobs);
    free(b->m.layers);
    free(b);
}

/* host: weights in host memory (CPU engine); else shapes only, path
 * "synthetic:seed=N" tells the CUDA engine to draw them. */
static int ss_bench_model_new(const ss_config *cfg, const char *name, int host, uint64_t seed,
                              ss_bench_model **out, ss_error *err)
{
    ss_bench_model *b = ss_calloc(1, sizeof *b, err);
    if (!b)
        return -1;
    b->m.cfg = *cfg;
    snprintf(b->m.path, sizeof b->m.path, "synthetic:seed=%llu", (unsigned long long)seed);
    snprintf(b->m.name, sizeof b->m.name, "%s (synthetic)", name);
    int L = cfg->n_layers;
    b->blobs = ss_calloc((size_t)L * 9 + 4, sizeof *b->blobs, err);
    b->m.layers = ss_calloc((size_t)L, sizeof *b->m.layers, err);
    if (!b->blobs || !b->m.layers) {
        ss_bench_model_free(b);
        return -1;
    }
    int64_t d = cfg->d_model, qd = (int64_t)cfg->n_heads * cfg->head_dim;
    int64_t kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim, ff = cfg->d_ff, V = cfg->vocab_size;
    float sd = 1.0f / sqrtf((float)d);
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
    int rc = ss_bench_tensor(b, host, &b->m.tok_embd, "token_embd", d, V, 0, 1, &rng, err) ||
             ss_bench_tensor(b, host, &b->m.output_norm, "output_norm", d, 1, 1, 0.1f, &rng, err);
    if (!rc && !cfg->tied_embeddings)
        rc = ss_bench_tensor(b, host, &b->m.output, "output", d, V, 0, sd, &rng, err);
    else
        b->m.output = b->m.tok_embd;
    for (int l = 0; !rc && l < L; l++) {
        ss_layer_weights *w = &b->m.layers[l];
        rc = ss_bench_tensor(b, host, &w->attn_norm, "attn_norm", d, 1, 1, 0.1f, &rng, err) ||
             ss_bench_tensor(b, host, &w->wq, "attn_q", d, qd, 0, sd, &rng, err) ||
             ss_bench_tensor(b, host, &w->wk, "attn_k", d, kvd, 0, sd, &rng, err) ||
             ss_bench_tensor(b, host, &w->wv, "attn_v", d, kvd, 0, sd, &rng, err) ||
             ss_bench_tensor(b, host, &w->wo, "attn_output", qd, d, 0, 1.0f / sqrtf((float)qd),
                             &rng, err) ||
             ss_bench_tensor(b, host, &w->ffn_norm, "ffn_norm", d, 1, 1, 0.1f, &rng, err) ||
             ss_bench_tensor(b, host, &w->w_gate, "ffn_gate", d, ff, 0, sd, &rng, err) ||
             ss_bench_tensor(b, host, &w->w_up, "ffn_up", d, ff, 0, sd, &rng, err) ||
             ss_bench_tensor(b, host, &w->w_down, "ffn_down", ff, d, 0, 1.0f / sqrtf((float)ff),
                             &rng, err);
    }
    if (rc) {
        ss_bench_model_free(b);
        return -1;
    }
    *out = b;
    return 0;
}

/* ---------------------------------------------------------------- timing */

typedef struct {
    int cuda;
    double t0;
#ifdef SAFESTEER_HAVE_CUDA
    ss_cuda_timer *ev;
#endif
} ss_bench_timer;

static double ss_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ss_timer_start(ss_bench_timer *t, ss_error *err)
{
#ifdef SAFESTEER_HAVE_CUDA
    if (t->cuda)
        return ss_cuda_timer_start(t->ev, err);
#endif
    (void)err;
    t->t0 = ss_now();
    return 0;
}

static int ss_timer_ms(ss_bench_timer *t, double *ms, ss_error *err)
{
#ifdef SAFESTEER_HAVE_CUDA
    if (t->cuda)
        return ss_cuda_timer_stop(t->ev, ms, err);
#endif
    (void)err;
    *ms = (ss_now() - t->t0) * 1e3;
    return 0;
}

static int ss_cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double ss_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, ss_cmp_dbl);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

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

/* Prefills B prompts, then times `steps` single-token steps: median ms. */
static int ss_bench_decode(ss_bench_ctx *c, int B, int prompt_len, int steps, double *ms,
                           ss_error *err)
{
    double *t = ss_calloc((size_t)steps, sizeof *t, err);
    if (!t)
        return -1;
    int rc = -1;
    ss_bench_reset(c, B);
    for (int i = 0; i < B; i++)
        c->lens[i] = prompt_len;
    if (ss_bench_forward(c, B, c->lens, c->tokens, err))
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

static int ss_bench_steer(ss_bench_ctx *c, int layers, ss_error *err)
{
    const ss_config *g = ss_engine_config(c->e);
    if (layers == 0)
        return ss_engine_set_steering(c->e, 0, NULL, err);
    int L = g->n_layers, d = g->d_model;
    float *alpha = ss_calloc((size_t)L, sizeof *alpha, err);
    float *vec = alpha ? ss_malloc((size_t)L * d * sizeof *vec, err) : NULL;
    if (!vec) {
        free(alpha);
        return -1;
    }
    for (int l = 0; l < L; l++) {
        alpha[l] = (layers == 1 ? l == L / 2 : 1) ? 4.0f : 0.0f;
        for (int j = 0; j < d; j++)
            vec[(size_t)l * d + j] = ((l * 131 + j * 7) % 17 - 8) / (8.0f * sqrtf((float)d));
    }
    ss_steer_slot s = {SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 0, -1};
    int rc = ss_engine_set_steering(c->e, 0, &s, err);
    free(alpha);
    free(vec);
    return rc;
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
            if (ss_device_parse(optarg, &o->device, err))
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
        return ss_cli_error("bench", SS_EXIT_USAGE, err.msg);
    const ss_config *cfg = NULL;
    ss_model *file_model = NULL;
    ss_bench_model *syn = NULL;
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
        m = &syn->m;
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
    eo.max_ctx = o.prompt_len + o.steps + 8;
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

    char devname[256] = "cpu";
    double copy_gbps = 0, peak = 0, mem_gib = 0;
    double wbytes = 0;
#ifdef SAFESTEER_HAVE_CUDA
    if (c.tm.cuda) {
        if (ss_cuda_timer_create(&c.tm.ev, &err) ||
            ss_cuda_device_info(o.gpu, devname, sizeof devname, &mem_gib, &err) ||
            ss_cuda_copy_bandwidth((size_t)1 << 30, 20, &copy_gbps, &err))
            goto fail;
        peak = ss_cuda_bf16_peak_tflops(o.gpu);
        wbytes = (double)ss_engine_cuda_weight_bytes(c.e);
    }
#endif
    int64_t d = g->d_model, qd = (int64_t)g->n_heads * g->head_dim;
    int64_t kvd = (int64_t)g->n_kv_heads * g->head_dim, ff = g->d_ff;
    double mat_params = (double)L * (d * (qd + 2 * kvd) + qd * d + 3 * ff * d) + (double)V * d;
    if (wbytes == 0)
        wbytes = 2.0 * mat_params; /* CPU: count the bf16-equivalent bytes */

    /* prefill */
    double pf_ms;
    if (ss_bench_prefill(&c, o.prompt_len, o.reps, &pf_ms, &err))
        goto fail;
    double P = o.prompt_len;
    double flops = 2.0 * (mat_params - (double)V * d) * P + 2.0 * d * V /* one logits row */
                   + 4.0 * L * (double)qd * P * (P + 1) / 2;
    double pf_tflops = flops / (pf_ms * 1e-3) / 1e12;

    /* decode at each batch size (CUDA: plain, then graph replay) */
    double dec_ms[SS_BENCH_MAX_BATCHES][2] = {{0}};
    int modes = c.tm.cuda ? 2 : 1;
    for (int mode = 0; mode < modes; mode++) {
#ifdef SAFESTEER_HAVE_CUDA
        if (c.tm.cuda)
            ss_engine_cuda_set_graphs(c.e, mode);
#endif
        for (int i = 0; i < o.n_batches; i++)
            if (ss_bench_decode(&c, o.batches[i], o.prompt_len, o.steps, &dec_ms[i][mode], &err))
                goto fail;
    }
    int best = modes - 1; /* steering runs in the last mode */

    /* steering overhead at batch 1: none, one layer, all layers */
    double st_ms[3];
    for (int k = 0; k < 3; k++)
        if (ss_bench_steer(&c, k == 0 ? 0 : k == 1 ? 1 : L, &err) ||
            ss_bench_decode(&c, 1, o.prompt_len, o.steps, &st_ms[k], &err))
            goto fail;
    if (ss_bench_steer(&c, 0, &err))
        goto fail;

    /* report */
    printf("safesteer bench: %s on %s (%s)\n", m->name, devname,
           c.tm.cuda ? "cudaEvent timing" : "wall-clock timing");
    printf("  weights %.2f GB (bf16), copy bandwidth %.0f GB/s (D2D, read+write), "
           "bf16 peak %.0f TFLOP/s (nominal)\n",
           wbytes / 1e9, copy_gbps, peak);
    printf("  prefill %d tokens: %.2f ms  %.0f tok/s  %.1f TFLOP/s", o.prompt_len, pf_ms,
           P / (pf_ms * 1e-3), pf_tflops);
    if (peak > 0)
        printf(" (%.0f%% of peak)", 100.0 * pf_tflops / peak);
    printf("\n  %-6s %-7s %10s %10s %9s %8s\n", "batch", "graphs", "step ms", "tok/s", "GB/s",
           "of copy");
    double kv_pos = o.prompt_len + o.steps / 2.0; /* mean positions read per step */
    for (int i = 0; i < o.n_batches; i++)
        for (int mode = 0; mode < modes; mode++) {
            int B = o.batches[i];
            double kvb = (double)B * L * 2 * kv_pos * kvd * 2;
            double gbps = (wbytes + kvb) / (dec_ms[i][mode] * 1e-3) / 1e9;
            printf("  %-6d %-7s %10.3f %10.1f %9.0f %7.0f%%\n", B, mode ? "on" : "off",
                   dec_ms[i][mode], B / (dec_ms[i][mode] * 1e-3), gbps,
                   copy_gbps > 0 ? 100.0 * gbps / copy_gbps : 0.0);
        }
    printf("  steering (batch 1, resid_post ADD, alpha 4): none %.3f ms, one layer %.3f ms "
           "(%+.1f%%), all %d layers %.3f ms (%+.1f%%)\n",
           st_ms[0], st_ms[1], 100.0 * (st_ms[1] / st_ms[0] - 1), L, st_ms[2],
           100.0 * (st_ms[2] / st_ms[0] - 1));

    if (o.json) {
        FILE *f = fopen(o.json, "w");
        if (!f) {
            ss_fail(&err, "cannot write %s", o.json);
            goto fail;
        }
        fprintf(f, "{\n  \"model\": \"%s\", \"device\": \"%s\", \"timing\": \"%s\",\n", m->name,
                devname, c.tm.cuda ? "cudaEvent" : "wall-clock");
        fprintf(f, "  \"weight_bytes\": %.0f, \"copy_gbps\": %.1f, \"bf16_peak_tflops\": %.1f,\n",
                wbytes, copy_gbps, peak);
        fprintf(f, "  \"prefill\": {\"tokens\": %d, \"ms\": %.4f, \"tokens_per_s\": %.1f, "
                   "\"tflops\": %.2f},\n",
                o.prompt_len, pf_ms, P / (pf_ms * 1e-3), pf_tflops);
        fprintf(f, "  \"decode\": [");
        for (int i = 0, first = 1; i < o.n_batches; i++)
            for (int mode = 0; mode < modes; mode++) {
                int B = o.batches[i];
                double kvb = (double)B * L * 2 * kv_pos * kvd * 2;
                fprintf(f, "%s\n    {\"batch\": %d, \"graphs\": %s, \"step_ms\": %.4f, "
                           "\"tokens_per_s\": %.1f, \"bytes_per_step\": %.0f, \"gbps\": %.1f}",
                        first ? "" : ",", B, mode ? "true" : "false", dec_ms[i][mode],
                        B / (dec_ms[i][mode] * 1e-3), wbytes + kvb,
                        (wbytes + kvb) / (dec_ms[i][mode] * 1e-3) / 1e9);
                first = 0;
            }
        fprintf(f, "\n  ],\n  \"steering\": {\"batch\": 1, \"graphs\": %s, \"none_ms\": %.4f, "
                   "\"one_layer_ms\": %.4f, \"all_layers_ms\": %.4f}\n}\n",
                best ? "true" : "false", st_ms[0], st_ms[1], st_ms[2]);
        fclose(f);
    }
    code = SS_EXIT_OK;
    goto done;
fail:
    ss_cli_error("bench", SS_EXIT_FAIL, err.msg);
done:
#ifdef SAFESTEER_HAVE_CUDA
    ss_cuda_timer_free(c.tm.ev);
#endif
    ss_engine_free(c.e);
    free(c.tokens), free(c.next), free(c.logits), free(c.slots), free(c.lens), free(c.ones);
    ss_bench_model_free(syn);
    ss_model_free(file_model);
    return code;
}
