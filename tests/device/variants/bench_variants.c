/* bench_variants.c - `bench_cuda_variants`: every CUDA kernel variant
 * timed beside the engine's kernel for the same work, on the decode and
 * prefill shapes of a model (Llama-3-8B by default), so a variant is
 * measured here before the engine takes it (docs/cuda.md).
 *
 *   matmuls of one decode step alone (qkv, wo, gate/up, down of every
 *     layer + the output head, each weight from a pool past L2): matvec v1,
 *     the tensor-core matvec and cuBLAS, ms and GB/s of weights read;
 *   the down projection: swiglu then matmul (engine) vs swiglu fused into
 *     the tensor-core matvec;
 *   prefill matmuls alone at --prompt-len rows (cuBLAS), TFLOP/s;
 *   prefill attention v2 (engine) vs v1, --prompt-len tokens, all layers;
 *   rope + KV store fused (engine) vs rope then store;
 *   residual + steering: the register-row kernel (engine) vs the general one.
 * Times are cudaEvent medians of --reps runs after one warm-up; inputs are
 * random (their values do not change the time).  Prints "-" where a
 * variant does not apply (the matvecs' row limits). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/model.h"
#include "safesteer/util.h"
#include "variants.h"

#define MAX_BATCHES 8
#define POOL_BYTES ((size_t)3 << 30) /* weights cycled through: well past L2 */

typedef struct {
    const char *name;
    int n_layers, d, n_heads, n_kv, head_dim, d_ff, vocab;
} shape;

static const shape shapes[] = {
    {"llama3-8b", 32, 4096, 32, 8, 128, 14336, 128256},
    {"smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152},
};

typedef struct {
    const shape *s;
    int batches[MAX_BATCHES], n_batches, prompt_len, reps, gpu;
} opts;

typedef struct {
    ss_cuda_ctx *c;
    ss_cuda_timer *t;
    uint16_t *pool;        /* [pool_elems] bf16 weights */
    size_t pool_elems, off;
    uint16_t *xb;          /* [rows][max in] bf16 activations */
    float *y, *f32;        /* [rows][max out], [rows][max(2 d_ff, qkv)] */
    int rows;              /* activation rows allocated */
} bench;

static int fail(const char *what, const ss_error *err)
{
    fprintf(stderr, "bench_cuda_variants: %s: %s\n", what, err->msg);
    return 1;
}

/* The next weight of elems values from the pool (wrapping). */
static const uint16_t *next_weight(bench *b, size_t elems)
{
    if (b->off + elems > b->pool_elems)
        b->off = 0;
    const uint16_t *w = b->pool + b->off;
    b->off += elems;
    return w;
}

/* ---------------------------------------------------------------- matmuls */

enum { P_V1, P_MMA, P_CUBLAS, N_PATHS };
static const char *const path_names[N_PATHS] = {"matvec-v1", "matvec-mma", "cublas"};

static int path_ok(int p, int n)
{
    return p == P_V1 ? n <= SS_CUDA_MATVEC_MAX_ROWS : p == P_MMA ? n <= SS_CUDA_MMA_MAX_ROWS : 1;
}

static int matmul(bench *b, int p, int n, int in, int out, ss_error *err)
{
    const uint16_t *w = next_weight(b, (size_t)in * out);
    if (p == P_MMA)
        return ss_cuda_matvec_mma_bf16(b->c, b->y, b->xb, w, n, in, out, err);
    return ss_cuda_matmul_bf16(b->c, b->y, b->xb, w, n, in, out,
                               p == P_V1 ? SS_CUDA_MM_V1 : SS_CUDA_MM_CUBLAS, err);
}

/* The matmuls of one step at n rows (lm_head: and the output head): median
 * ms; *bytes = weight bytes read. */
static int step_matmuls(bench *b, const shape *s, int p, int n, int lm_head, int reps,
                        double *ms, double *bytes, ss_error *err)
{
    int qkv = (s->n_heads + 2 * s->n_kv) * s->head_dim, q = s->n_heads * s->head_dim;
    const int dims[4][2] = {{s->d, qkv}, {q, s->d}, {s->d, 2 * s->d_ff}, {s->d_ff, s->d}};
    double *t = ss_malloc((size_t)reps * sizeof *t, err);
    if (!t)
        return -1;
    for (int r = -1; r < reps; r++) {
        double wb = 0, x;
        if (ss_cuda_timer_start(b->t, err))
            goto fail;
        for (int l = 0; l < s->n_layers; l++)
            for (int k = 0; k < 4; k++) {
                if (matmul(b, p, n, dims[k][0], dims[k][1], err))
                    goto fail;
                wb += 2.0 * dims[k][0] * dims[k][1];
            }
        if (lm_head) {
            if (matmul(b, p, n, s->d, s->vocab, err))
                goto fail;
            wb += 2.0 * s->d * s->vocab;
        }
        if (ss_cuda_timer_stop(b->t, &x, err))
            goto fail;
        if (r >= 0)
            t[r] = x;
        *bytes = wb;
    }
    *ms = ss_median(t, reps);
    free(t);
    return 0;
fail:
    free(t);
    return -1;
}

/* Median ms of reps runs of fn(b, arg) (one warm-up). */
typedef int (*work_fn)(bench *b, const void *arg, ss_error *err);

static int time_work(bench *b, work_fn fn, const void *arg, int reps, double *ms, ss_error *err)
{
    double *t = ss_malloc((size_t)reps * sizeof *t, err);
    if (!t)
        return -1;
    int rc = 0;
    for (int r = -1; r < reps && !rc; r++) {
        double x = 0;
        rc = ss_cuda_timer_start(b->t, err) || fn(b, arg, err) || ss_cuda_timer_stop(b->t, &x, err);
        if (r >= 0)
            t[r] = x;
    }
    if (!rc)
        *ms = ss_median(t, reps);
    free(t);
    return rc ? -1 : 0;
}

typedef struct {
    const shape *s;
    int n, fused;
} down_arg;

/* The down projection of every layer: swiglu then the engine's matmul, or
 * the swiglu fused into the tensor-core matvec. */
static int down_proj(bench *b, const void *arg, ss_error *err)
{
    const down_arg *a = arg;
    const shape *s = a->s;
    for (int l = 0; l < s->n_layers; l++) {
        const uint16_t *w = next_weight(b, (size_t)s->d_ff * s->d);
        int rc = a->fused ? ss_cuda_matvec_mma_swiglu_bf16(b->c, b->y, b->f32, w, a->n, s->d_ff,
                                                           s->d, err)
                          : ss_cuda_swiglu(b->c, b->xb, b->f32, a->n, s->d_ff, err) ||
                                ss_cuda_matmul_bf16(b->c, b->y, b->xb, w, a->n, s->d_ff, s->d,
                                                    SS_CUDA_MM_AUTO, err);
        if (rc)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- attention, rope, residual */

typedef struct {
    const shape *s;
    int n;                  /* rows (prefill: tokens of one sequence) */
    int version;            /* attention: 2 engine, 1 variant; rope/residual: 2 fused/v2, 1 */
    uint16_t *kc, *vc;      /* [1][n_layers][max_ctx][kv] */
    int *slot, *pos, *tiles;
    int n_tiles, max_ctx;
    float *inv_freq;
} row_arg;

static int attention(bench *b, const void *arg, ss_error *err)
{
    const row_arg *a = arg;
    const shape *s = a->s;
    int qkv = (s->n_heads + 2 * s->n_kv) * s->head_dim;
    for (int l = 0; l < s->n_layers; l++) {
        ss_cuda_attn_shape as = {s->n_heads, s->n_kv, s->head_dim, s->n_layers, a->max_ctx, l,
                                 qkv};
        int rc = a->version == 2
                     ? ss_cuda_attention_prefill(b->c, b->xb, b->f32, a->kc, a->vc, a->slot,
                                                 a->pos, a->tiles, a->n_tiles, &as, err)
                     : ss_cuda_attention_prefill_v1(b->c, b->xb, b->f32, a->kc, a->vc, a->slot,
                                                    a->pos, a->tiles, a->n_tiles, &as, err);
        if (rc)
            return -1;
    }
    return 0;
}

static int rope(bench *b, const void *arg, ss_error *err)
{
    const row_arg *a = arg;
    const shape *s = a->s;
    int q = s->n_heads * s->head_dim, kv = s->n_kv * s->head_dim, qkv = q + 2 * kv;
    for (int l = 0; l < s->n_layers; l++) {
        int rc = a->version == 2
                     ? ss_cuda_rope_kv_store(b->c, b->f32, qkv, a->slot, a->pos, a->n, s->n_heads,
                                             s->n_kv, s->head_dim, 0, a->inv_freq, a->kc, a->vc,
                                             l, s->n_layers, a->max_ctx, err)
                     : ss_cuda_rope(b->c, b->f32, qkv, a->pos, a->n, s->n_heads + s->n_kv,
                                    s->head_dim, 0, a->inv_freq, err) ||
                           ss_cuda_kv_store(b->c, a->kc, a->vc, b->f32, qkv, q, kv, a->slot,
                                            a->pos, a->n, l, s->n_layers, a->max_ctx, err);
        if (rc)
            return -1;
    }
    return 0;
}

/* Both residual adds of every layer (attention and MLP block), unsteered. */
static int residual(bench *b, const void *arg, ss_error *err)
{
    const row_arg *a = arg;
    const shape *s = a->s;
    float *x = b->f32, *delta = b->y;
    for (int l = 0; l < s->n_layers; l++)
        for (int blk = SS_SITE_ATTN_OUT; blk <= SS_SITE_MLP_OUT; blk++) {
            int rc = (a->version == 2 ? ss_cuda_residual_steer : ss_cuda_residual_steer_general)(
                b->c, x, delta, b->xb, a->inv_freq /* any d floats: the norm weight */, 1e-5f,
                a->slot, a->pos, a->n, s->d, blk, l, NULL, err);
            if (rc)
                return -1;
        }
    return 0;
}

/* ---------------------------------------------------------------- setup */

static int parse(int argc, char **argv, opts *o)
{
    static const struct option longopts[] = {
        {"shape", required_argument, 0, 's'},  {"batches", required_argument, 0, 'b'},
        {"prompt-len", required_argument, 0, 'p'}, {"reps", required_argument, 0, 'r'},
        {"gpu", required_argument, 0, 'g'},    {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    *o = (opts){.s = &shapes[0], .batches = {1, 8, 32}, .n_batches = 3, .prompt_len = 512,
                .reps = 10};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            o->s = NULL;
            for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
                if (!strcmp(optarg, shapes[i].name))
                    o->s = &shapes[i];
            if (!o->s) {
                fprintf(stderr, "bench_cuda_variants: --shape is llama3-8b or smollm2-135m\n");
                return 2;
            }
            break;
        case 'b': {
            o->n_batches = 0;
            for (char *t = strtok(optarg, ","); t && o->n_batches < MAX_BATCHES; t = strtok(NULL, ","))
                o->batches[o->n_batches++] = atoi(t);
            break;
        }
        case 'p': o->prompt_len = atoi(optarg); break;
        case 'r': o->reps = atoi(optarg); break;
        case 'g': o->gpu = atoi(optarg); break;
        case 'h':
            printf("usage: bench_cuda_variants [--shape llama3-8b|smollm2-135m] "
                   "[--batches 1,8,32] [--prompt-len 512] [--reps 10] [--gpu 0]\n");
            return 1;
        default: return 2;
        }
    }
    for (int i = 0; i < o->n_batches; i++)
        if (o->batches[i] < 1 || o->batches[i] > 4096) {
            fprintf(stderr, "bench_cuda_variants: batch %d outside 1..4096\n", o->batches[i]);
            return 2;
        }
    if (o->prompt_len < 16 || o->reps < 1) {
        fprintf(stderr, "bench_cuda_variants: need --prompt-len >= 16 and --reps >= 1\n");
        return 2;
    }
    return 0;
}

/* Device buffers for rows activation rows of shape s, and the weight pool. */
static int bench_init(bench *b, const opts *o, ss_error *err)
{
    const shape *s = o->s;
    memset(b, 0, sizeof *b);
    b->rows = o->prompt_len;
    for (int i = 0; i < o->n_batches; i++)
        b->rows = o->batches[i] > b->rows ? o->batches[i] : b->rows;
    size_t in = (size_t)(s->d > s->d_ff ? s->d : s->d_ff);
    size_t qkv = (size_t)(s->n_heads + 2 * s->n_kv) * s->head_dim;
    size_t wide = 2 * (size_t)s->d_ff > qkv ? 2 * (size_t)s->d_ff : qkv;
    size_t out = (size_t)s->vocab > wide ? (size_t)s->vocab : wide;
    b->pool_elems = POOL_BYTES / 2;
    if (ss_cuda_ctx_create(o->gpu, &b->c, err) || ss_cuda_timer_create(&b->t, err) ||
        !(b->pool = ss_cuda_malloc(b->pool_elems * 2, err)) ||
        !(b->xb = ss_cuda_malloc((size_t)b->rows * (in > wide ? in : wide) * 2, err)) ||
        !(b->y = ss_cuda_malloc((size_t)b->rows * out * 4, err)) ||
        !(b->f32 = ss_cuda_malloc((size_t)b->rows * wide * 4, err)))
        return -1;
    return ss_cuda_fill_random_bf16(b->c, b->pool, b->pool_elems, 77, 0.0f, 0.02f, err) ||
                   ss_cuda_fill_random_bf16(b->c, b->xb, (size_t)b->rows * in, 78, 0.0f, 1.0f,
                                            err) ||
                   ss_cuda_fill_random_f32(b->c, b->f32, (size_t)b->rows * wide, 79, 0.0f, 1.0f,
                                           err) ||
                   ss_cuda_fill_random_f32(b->c, b->y, (size_t)b->rows * out, 80, 0.0f, 1.0f, err)
               ? -1
               : 0;
}

static void bench_free(bench *b)
{
    ss_cuda_timer_free(b->t);
    ss_cuda_free(b->pool), ss_cuda_free(b->xb), ss_cuda_free(b->y), ss_cuda_free(b->f32);
    ss_cuda_ctx_free(b->c);
}

/* One sequence of n rows at positions 0..n-1 in slot 0 (prefill), or n
 * sequences at position ctx-1 (decode): slots, positions, tiles, a random
 * cache and inverse frequencies, on the device. */
static int rows_init(row_arg *a, const shape *s, int n, int prefill, int max_ctx, ss_error *err)
{
    memset(a, 0, sizeof *a);
    a->s = s;
    a->n = n;
    a->max_ctx = max_ctx;
    int seqs = prefill ? 1 : n;
    size_t cache = (size_t)seqs * s->n_layers * max_ctx * s->n_kv * s->head_dim;
    int *h = ss_malloc((size_t)(2 * n + 2 * ((n + 15) / 16)) * sizeof(int), err);
    float *inv = ss_malloc((size_t)(s->d > s->head_dim ? s->d : s->head_dim) * sizeof(float), err);
    if (!h || !inv)
        goto fail;
    for (int i = 0; i < n; i++) {
        h[i] = prefill ? 0 : i;                   /* slot */
        h[n + i] = prefill ? i : max_ctx - 1;     /* position */
    }
    for (int t = 0; t * 16 < n; t++) {
        h[2 * n + 2 * t] = 16 * t;
        h[2 * n + 2 * t + 1] = n - 16 * t < 16 ? n - 16 * t : 16;
        a->n_tiles = t + 1;
    }
    for (int j = 0; j < (s->d > s->head_dim ? s->d : s->head_dim); j++)
        inv[j] = j < s->head_dim / 2 ? 1.0f / (float)(j + 1) : 1.0f;
    if (!(a->slot = ss_cuda_malloc((size_t)(2 * n + 2 * a->n_tiles) * sizeof(int), err)) ||
        ss_cuda_upload(a->slot, h, (size_t)(2 * n + 2 * a->n_tiles) * sizeof(int), err) ||
        !(a->inv_freq = ss_cuda_malloc((size_t)(s->d > s->head_dim ? s->d : s->head_dim) * 4,
                                       err)) ||
        ss_cuda_upload(a->inv_freq, inv, (size_t)(s->d > s->head_dim ? s->d : s->head_dim) * 4,
                       err) ||
        !(a->kc = ss_cuda_malloc(cache * 2, err)) || !(a->vc = ss_cuda_malloc(cache * 2, err)))
        goto fail;
    a->pos = a->slot + n;
    a->tiles = a->slot + 2 * n;
    free(h);
    free(inv);
    return 0;
fail:
    free(h);
    free(inv);
    return -1;
}

static void rows_free(row_arg *a)
{
    ss_cuda_free(a->slot), ss_cuda_free(a->inv_freq), ss_cuda_free(a->kc), ss_cuda_free(a->vc);
}

/* Times fn at versions 2 (the engine's) and 1, printing both and the ratio. */
static int compare(bench *b, const char *what, work_fn fn, row_arg *a, int reps, ss_error *err)
{
    double ms[2];
    for (int v = 2; v >= 1; v--) {
        a->version = v;
        if (time_work(b, fn, a, reps, &ms[2 - v], err))
            return -1;
    }
    printf("  %-34s %5d rows  engine %8.3f ms  variant %8.3f ms  (variant %.2fx)\n", what, a->n,
           ms[0], ms[1], ms[1] / ms[0]);
    return 0;
}

int main(int argc, char **argv)
{
    opts o;
    int prc = parse(argc, argv, &o);
    if (prc)
        return prc == 1 ? 0 : prc;
    char why[256];
    if (ss_cuda_device_count(why, sizeof why) == 0) {
        fprintf(stderr, "bench_cuda_variants: no CUDA device (%s)\n", why);
        return 1;
    }
    const shape *s = o.s;
    ss_error err = {.msg = ""};
    bench b;
    double gbps;
    char name[256];
    double mem;
    if (bench_init(&b, &o, &err) || ss_cuda_device_info(o.gpu, name, sizeof name, &mem, &err) ||
        ss_cuda_copy_bandwidth((size_t)1 << 30, 20, &gbps, &err))
        return fail("setup", &err);
    printf("bench_cuda_variants: %s shape on %s, copy bandwidth %.0f GB/s (D2D, read+write)\n",
           s->name, name, gbps);

    printf("  matmuls of one decode step alone, ms (GB/s of weights; %% of copy):\n  %-6s",
           "batch");
    for (int p = 0; p < N_PATHS; p++)
        printf(" %24s", path_names[p]);
    printf("\n");
    for (int i = 0; i < o.n_batches; i++) {
        int n = o.batches[i];
        printf("  %-6d", n);
        for (int p = 0; p < N_PATHS; p++) {
            double ms, bytes;
            if (!path_ok(p, n)) {
                printf(" %24s", "-");
                continue;
            }
            if (step_matmuls(&b, s, p, n, 1, o.reps, &ms, &bytes, &err))
                return fail(path_names[p], &err);
            double g = bytes / (ms * 1e-3) / 1e9;
            printf("   %8.3f (%5.0f; %3.0f%%)", ms, g, 100.0 * g / gbps);
        }
        printf("   engine: %s\n", n <= SS_CUDA_MATVEC_AUTO_ROWS ? "matvec-v1" : "cublas");
    }

    printf("  down projection of every layer (swiglu + matmul), ms:\n");
    for (int i = 0; i < o.n_batches; i++) {
        int n = o.batches[i];
        if (n > SS_CUDA_MMA_MAX_ROWS)
            continue;
        double ms[2];
        for (int fused = 0; fused < 2; fused++) {
            down_arg a = {s, n, fused};
            if (time_work(&b, down_proj, &a, o.reps, &ms[fused], &err))
                return fail("down projection", &err);
        }
        printf("  %-6d engine (swiglu, matmul) %8.3f ms  fused into matvec-mma %8.3f ms  "
               "(variant %.2fx)\n", n, ms[0], ms[1], ms[1] / ms[0]);
    }

    double pf_ms, pf_bytes;
    if (step_matmuls(&b, s, P_CUBLAS, o.prompt_len, 0, o.reps, &pf_ms, &pf_bytes, &err))
        return fail("prefill matmuls", &err);
    double flops = pf_bytes / 2.0 * 2.0 * o.prompt_len; /* 2 flops per weight per row */
    printf("  prefill matmuls alone (cuBLAS, %d rows, all layers): %.3f ms, %.1f TFLOP/s\n",
           o.prompt_len, pf_ms, flops / (pf_ms * 1e-3) / 1e12);

    row_arg a;
    if (rows_init(&a, s, o.prompt_len, 1, o.prompt_len, &err) ||
        compare(&b, "prefill attention (all layers)", attention, &a, o.reps, &err) ||
        compare(&b, "prefill rope + KV store", rope, &a, o.reps, &err) ||
        compare(&b, "prefill residual adds", residual, &a, o.reps, &err))
        return fail("prefill kernels", &err);
    rows_free(&a);
    for (int i = 0; i < o.n_batches; i++) {
        int n = o.batches[i];
        if (rows_init(&a, s, n, 0, o.prompt_len, &err) ||
            compare(&b, "decode rope + KV store", rope, &a, o.reps, &err) ||
            compare(&b, "decode residual adds", residual, &a, o.reps, &err))
            return fail("decode kernels", &err);
        rows_free(&a);
    }
    bench_free(&b);
    return 0;
}
