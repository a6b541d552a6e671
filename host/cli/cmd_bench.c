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
 * step, at batch 1 and the largest batch.  Times come from the engine's
 * timer (cudaEvents on CUDA, the wall clock on the CPU); each figure is the
 * median of its repeats after warm-up.  Everything goes through engine.h;
 * kernel variants are timed side by side by bench_cuda_variants
 * (tests/device/variants/bench_variants.c). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/engine.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"
#include "safesteer/util.h"
#include "util/outfile.h"

#define SS_BENCH_MAX_BATCHES 16

typedef struct {
    int device, gpu, prompt_len, steps, reps;
    int batches[SS_BENCH_MAX_BATCHES], n_batches;
    int grid[SS_BENCH_MAX_BATCHES], n_grid; /* batches run as grids of distinct plans */
    const char *shape, *model, *json;
    uint64_t seed;
} ss_bench_opts;

static void ss_bench_usage(FILE *f)
{
    fprintf(f,
            "usage: safesteer bench [--device cuda|cpu] (--shape NAME | --model FILE)\n"
            "                       [--prompt-len 512] [--batches 1,8,32] [--steps 32]\n"
            "                       [--reps 5] [--gpu 0] [--seed 1] [--grid 64,256] [--json FILE]\n\n"
            "  --shape NAME   synthetic random weights: smollm2-135m, llama2-7b, llama3-8b\n"
            "  --model FILE   a GGUF file or Hugging Face folder instead\n"
            "  --prompt-len   prefill prompt tokens (also each decode prompt)\n"
            "  --batches      decode batch sizes, comma separated\n"
            "  --steps        timed decode steps per batch size\n"
            "  --reps         timed prefill repeats\n"
            "  --grid         batch sizes at which every sequence gets its own plan (layer,\n"
            "                 strength, vector; resid_post add), timed against unsteered\n"
            "  --json FILE    also write the results as JSON\n");
}

/* ---------------------------------------------------------------- results */

typedef struct {
    ss_engine_stats st;        /* device name, weight bytes held and read per step */
    ss_engine_device dev;      /* copy bandwidth, bf16 GEMM peak */
    double pf_ms, pf_flops;    /* prefill */
    int n_batches, batches[SS_BENCH_MAX_BATCHES], modes;
    double dec_ms[SS_BENCH_MAX_BATCHES][2];    /* [batch][graphs off, on] */
    double dec_bytes[SS_BENCH_MAX_BATCHES];    /* weights read + KV read per step */
    double dec_flops[SS_BENCH_MAX_BATCHES];    /* matmul + attention FLOPs per step */
    double dec_roof_ms[SS_BENCH_MAX_BATCHES];  /* max(bytes / copy, FLOPs / GEMM peak) */
    int n_grid, grid_batch[SS_BENCH_MAX_BATCHES];
    double grid_ms[SS_BENCH_MAX_BATCHES][2];   /* [batch][unsteered, grid] */
    int n_st, st_batch[2];
    double st_ms[2][3];        /* [batch 1, max batch][none, one layer, all] */
} ss_bench_res;

static double ss_pct(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0; }

/* ---------------------------------------------------------------- runs */

typedef struct {
    ss_engine *e;
    int32_t *tokens;      /* [max batch * prompt_len] */
    int32_t *next;        /* [max batch] */
    int *slots, *lens, *ones;
} ss_bench_ctx;

/* One forward to each sequence's greedy next token (on the GPU the logits
 * stay there). */
static int ss_bench_forward(ss_bench_ctx *c, int n, const int *lens, const int32_t *tok,
                            ss_error *err)
{
    ss_batch b = {n, c->slots, lens, tok, 0};
    return ss_engine_forward_argmax(c->e, &b, c->next, err);
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
        if (ss_engine_timer_begin(c->e, err) || ss_bench_forward(c, 1, lens, c->tokens, err) ||
            ss_engine_timer_end(c->e, &x, err)) {
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
        if (ss_engine_timer_begin(c->e, err) || ss_bench_forward(c, B, c->ones, c->next, err) ||
            ss_engine_timer_end(c->e, &x, err))
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

/* Decode with configurations taking turns: after one prefill of B prompts,
 * every step installs configuration k's steering (cfg[k][slot], NULL:
 * none) and times one step, k = 0..n-1 in turn, so a drift in the
 * machine's speed (clock, other load) falls on all alike; ms[k] is the
 * median of `steps` steps after two warm-up rounds. */
static int ss_bench_turns(ss_bench_ctx *c, int B, int prompt_len, int steps, int n,
                          const ss_steer_slot *const *const *cfg, double *ms, ss_error *err)
{
    double *t = ss_malloc((size_t)n * steps * sizeof *t, err); /* [n][steps] */
    if (!t)
        return -1;
    int rc = -1;
    for (int s = 0; s < B; s++)
        if (ss_engine_set_steering(c->e, s, NULL, err))
            goto done;
    if (ss_bench_prefill_batch(c, B, prompt_len, err))
        goto done;
    for (int step = -2; step < steps; step++)
        for (int k = 0; k < n; k++) {
            double x;
            for (int s = 0; s < B; s++)
                if (ss_engine_set_steering(c->e, s, cfg[k] ? cfg[k][s] : NULL, err))
                    goto done;
            if (ss_engine_timer_begin(c->e, err) || ss_bench_forward(c, B, c->ones, c->next, err) ||
                ss_engine_timer_end(c->e, &x, err))
                goto done;
            if (step >= 0)
                t[(size_t)k * steps + step] = x;
        }
    for (int k = 0; k < n; k++)
        ms[k] = ss_median(t + (size_t)k * steps, steps);
    rc = 0;
    for (int s = 0; s < B && !rc; s++)
        rc = ss_engine_set_steering(c->e, s, NULL, err);
done:
    free(t);
    return rc;
}

/* A deterministic [d] direction of norm 1 for slot or layer k. */
static void ss_bench_direction(float *v, int d, int k)
{
    for (int j = 0; j < d; j++)
        v[j] = ((k * 131 + j * 7) % 17 - 8) / (8.0f * sqrtf((float)d));
}

/* Steering overhead at batch B: no steering, the middle layer steered, and
 * every layer steered (ADD at resid_post, alpha 4), the same on every slot. */
static int ss_bench_steering(ss_bench_ctx *c, int B, int prompt_len, int steps, double ms[3],
                             ss_error *err)
{
    const ss_config *g = ss_engine_config(c->e);
    int L = g->n_layers, d = g->d_model, rc = -1;
    ss_steer_compiled st[2] = {{0}}; /* middle layer, all layers */
    float *alpha = ss_calloc(2 * (size_t)L, sizeof *alpha, err); /* [middle | all][L] */
    float *vec = alpha ? ss_malloc((size_t)L * d * sizeof *vec, err) : NULL;
    const ss_steer_slot **same = vec ? ss_malloc(2 * (size_t)B * sizeof *same, err) : NULL;
    if (!same)
        goto done;
    for (int l = 0; l < L; l++) {
        alpha[l] = l == L / 2 ? 4.0f : 0.0f;
        alpha[L + l] = 4.0f;
        ss_bench_direction(vec + (size_t)l * d, d, l);
    }
    for (int k = 0; k < 2; k++) {
        if (ss_steer_compile_site(L, d, SS_SITE_RESID_POST, SS_STEER_ADD, alpha + k * L, vec, 0,
                                  -1, &st[k], err))
            goto done;
        for (int s = 0; s < B; s++)
            same[(size_t)k * B + s] = &st[k].slot;
    }
    const ss_steer_slot *const *cfg[3] = {NULL, same, same + B};
    rc = ss_bench_turns(c, B, prompt_len, steps, 3, cfg, ms, err);
done:
    ss_steer_compiled_free(&st[0]);
    ss_steer_compiled_free(&st[1]);
    free(alpha);
    free(vec);
    free(same);
    return rc;
}

/* A grid at batch B: every sequence its own plan (resid_post ADD at layer
 * i mod L, strength 1 + (i mod 8) / 2, its own vector), against the same
 * batch unsteered: ms[0] unsteered, ms[1] the grid. */
static int ss_bench_grid(ss_bench_ctx *c, int B, int prompt_len, int steps, double ms[2],
                         ss_error *err)
{
    const ss_config *g = ss_engine_config(c->e);
    int L = g->n_layers, d = g->d_model, rc = -1, made = 0;
    ss_steer_compiled *st = ss_calloc((size_t)B, sizeof *st, err);
    const ss_steer_slot **grid = st ? ss_malloc((size_t)B * sizeof *grid, err) : NULL;
    float *alpha = grid ? ss_calloc((size_t)L, sizeof *alpha, err) : NULL;
    float *vec = alpha ? ss_calloc((size_t)L * d, sizeof *vec, err) : NULL;
    if (!vec)
        goto done;
    for (; made < B; made++) {
        int l = made % L;
        memset(alpha, 0, (size_t)L * sizeof *alpha);
        alpha[l] = 1.0f + (float)(made % 8) / 2;
        ss_bench_direction(vec + (size_t)l * d, d, made);
        if (ss_steer_compile_site(L, d, SS_SITE_RESID_POST, SS_STEER_ADD, alpha, vec, 0, -1,
                                  &st[made], err))
            goto done;
        grid[made] = &st[made].slot;
    }
    const ss_steer_slot *const *cfg[2] = {NULL, grid};
    rc = ss_bench_turns(c, B, prompt_len, steps, 2, cfg, ms, err);
done:
    for (int i = 0; i < made; i++)
        ss_steer_compiled_free(&st[i]);
    free(st), free(grid), free(alpha), free(vec);
    return rc;
}

static double ss_gbps(double bytes, double ms) { return ms > 0 ? bytes / (ms * 1e-3) / 1e9 : 0; }

static void ss_bench_print(const ss_bench_res *R, const ss_bench_opts *o, const char *name, int L)
{
    int gpu = R->st.device_timer;
    double pf_tf = R->pf_flops / (R->pf_ms * 1e-3) / 1e12;
    printf("safesteer bench: %s on %s (%s)\n", name, R->st.device,
           gpu ? "cudaEvent timing" : "wall-clock timing");
    printf("  weights %.2f GB held, %.2f GB read per decode step (%s); copy bandwidth %.0f GB/s "
           "(%s, read+write)\n",
           R->st.weight_bytes / 1e9, R->st.weight_bytes_read / 1e9, gpu ? "bf16" : "as stored",
           R->dev.copy_gbps, gpu ? "D2D" : "host memcpy");
    if (R->dev.matmul_tflops > 0) {
        printf("  bf16 tensor peak: %.0f TFLOP/s measured (cuBLAS %d^3), %.0f nominal\n",
               R->dev.matmul_tflops, R->dev.matmul_size, R->dev.matmul_tflops_nominal);
        printf("  prefill %d tokens: %.2f ms  %.0f tok/s  %.1f TFLOP/s (%.0f%% of measured, "
               "%.0f%% of nominal peak)\n",
               o->prompt_len, R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf,
               ss_pct(pf_tf, R->dev.matmul_tflops), ss_pct(pf_tf, R->dev.matmul_tflops_nominal));
    } else {
        printf("  prefill %d tokens: %.2f ms  %.0f tok/s  %.1f GFLOP/s\n", o->prompt_len,
               R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf * 1e3);
    }
    printf("  decode (bytes/step = weights read + KV read; roofline = max(bytes / copy "
           "bandwidth, FLOPs / measured GEMM peak)):\n");
    printf("  %-6s %-7s %10s %10s %9s %8s %12s %9s\n", "batch", "graphs", "step ms", "tok/s",
           "GB/s", "of copy", "roofline ms", "of roof");
    for (int i = 0; i < R->n_batches; i++)
        for (int mode = 0; mode < R->modes; mode++) {
            double ms = R->dec_ms[i][mode], gb = ss_gbps(R->dec_bytes[i], ms);
            printf("  %-6d %-7s %10.3f %10.1f %9.0f %7.0f%% %12.3f %8.0f%%\n", R->batches[i],
                   R->st.decode_graphs ? (mode ? "on" : "off") : "-", ms,
                   R->batches[i] / (ms * 1e-3), gb, ss_pct(gb, R->dev.copy_gbps),
                   R->dec_roof_ms[i], ss_pct(R->dec_roof_ms[i], ms));
        }
    for (int k = 0; k < R->n_grid; k++) {
        const double *g = R->grid_ms[k];
        printf("  grid of %d distinct plans (resid_post ADD, own layer, strength, vector): "
               "%.3f ms vs %.3f ms unsteered = %.1f%% of unsteered throughput, %.0f tok/s\n",
               R->grid_batch[k], g[1], g[0], ss_pct(g[0], g[1]), R->grid_batch[k] / (g[1] * 1e-3));
    }
    for (int k = 0; k < R->n_st; k++) {
        const double *s = R->st_ms[k];
        printf("  steering (batch %d, resid_post ADD, alpha 4): none %.3f ms, one layer %.3f ms "
               "(%+.1f%%), all %d layers %.3f ms (%+.1f%%)\n",
               R->st_batch[k], s[0], s[1], ss_pct(s[1] - s[0], s[0]), L, s[2],
               ss_pct(s[2] - s[0], s[0]));
    }
    if (!gpu) /* the targets below are the CUDA engine's */
        return;
    /* the targets of docs/cuda.md (issue 16), last */
    printf("  targets:\n");
    for (int i = 0; i < R->n_batches; i++) {
        int B = R->batches[i];
        double ms = R->dec_ms[i][R->modes - 1], gb = ss_gbps(R->dec_bytes[i], ms);
        if (B == 1)
            printf("    decode batch 1: %.3f ms/step, %.0f GB/s = %.0f%% of copy bandwidth "
                   "(target >= 85%%)\n", ms, gb, ss_pct(gb, R->dev.copy_gbps));
        else if (B >= 8)
            printf("    decode batch %d: %.0f%% of its roofline (target >= 70%%)%s\n", B,
                   ss_pct(R->dec_roof_ms[i], ms),
                   B == 256 ? "; tok/s target >= 25,000" : "");
    }
    for (int k = 0; k < R->n_grid; k++)
        printf("    grid of %d plans: %.1f%% of unsteered throughput (target >= 95%%)\n",
               R->grid_batch[k], ss_pct(R->grid_ms[k][0], R->grid_ms[k][1]));
    for (int k = 0; k < R->n_st; k++)
        printf("    steering all layers, batch %d: %+.1f%% step time (target <= 2%%)\n",
               R->st_batch[k], ss_pct(R->st_ms[k][2] - R->st_ms[k][0], R->st_ms[k][0]));
    printf("    prefill %d: %.0f%% of measured, %.0f%% of nominal bf16 peak (target toward "
           "70%% of measured)\n", o->prompt_len, ss_pct(pf_tf, R->dev.matmul_tflops),
           ss_pct(pf_tf, R->dev.matmul_tflops_nominal));
}

static int ss_bench_json(const ss_bench_res *R, const ss_bench_opts *o, const char *name,
                         ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, o->json, err);
    if (!f)
        return -1;
    double pf_tf = R->pf_flops / (R->pf_ms * 1e-3) / 1e12;
    fprintf(f, "{\n  \"model\": \"%s\", \"device\": \"%s\", \"timing\": \"%s\",\n", name,
            R->st.device, R->st.device_timer ? "cudaEvent" : "wall-clock");
    fprintf(f, "  \"weight_bytes\": %.0f, \"weight_bytes_read\": %.0f, \"copy_gbps\": %.1f,\n",
            R->st.weight_bytes, R->st.weight_bytes_read, R->dev.copy_gbps);
    fprintf(f, "  \"bf16_peak_tflops\": %.1f, \"bf16_peak_tflops_measured\": %.1f, "
               "\"gemm_size\": %d,\n",
            R->dev.matmul_tflops_nominal, R->dev.matmul_tflops, R->dev.matmul_size);
    fprintf(f, "  \"prefill\": {\"tokens\": %d, \"ms\": %.4f, \"tokens_per_s\": %.1f, "
               "\"tflops\": %.2f},\n",
            o->prompt_len, R->pf_ms, o->prompt_len / (R->pf_ms * 1e-3), pf_tf);
    fprintf(f, "  \"decode\": [");
    for (int i = 0, first = 1; i < R->n_batches; i++)
        for (int mode = 0; mode < R->modes; mode++) {
            double ms = R->dec_ms[i][mode];
            fprintf(f, "%s\n    {\"batch\": %d, \"graphs\": %s, \"step_ms\": %.4f, "
                       "\"tokens_per_s\": %.1f, \"bytes_per_step\": %.0f, \"gbps\": %.1f, "
                       "\"flops_per_step\": %.0f, \"roofline_ms\": %.4f}",
                    first ? "" : ",", R->batches[i], mode ? "true" : "false", ms,
                    R->batches[i] / (ms * 1e-3), R->dec_bytes[i], ss_gbps(R->dec_bytes[i], ms),
                    R->dec_flops[i], R->dec_roof_ms[i]);
            first = 0;
        }
    fprintf(f, "\n  ],\n  \"grid\": [");
    for (int k = 0; k < R->n_grid; k++)
        fprintf(f, "%s\n    {\"batch\": %d, \"unsteered_ms\": %.4f, \"grid_ms\": %.4f}",
                k ? "," : "", R->grid_batch[k], R->grid_ms[k][0], R->grid_ms[k][1]);
    fprintf(f, "\n  ],\n  \"steering\": [");
    for (int k = 0; k < R->n_st; k++)
        fprintf(f, "%s\n    {\"batch\": %d, \"graphs\": %s, \"none_ms\": %.4f, "
                   "\"one_layer_ms\": %.4f, \"all_layers_ms\": %.4f}",
                k ? "," : "", R->st_batch[k], R->st.decode_graphs ? "true" : "false",
                R->st_ms[k][0], R->st_ms[k][1], R->st_ms[k][2]);
    fprintf(f, "\n  ]\n}\n");
    return ss_outfile_fclose(&out, f, 0, err);
}

/* ---------------------------------------------------------------- main */

/* "1,8,32": batch sizes (1..4096, at most SS_BENCH_MAX_BATCHES). */
static int ss_bench_sizes(const char *flag, const char *arg, int *sizes, int *n, ss_error *err)
{
    *n = 0;
    char copy[256], *save = NULL;
    snprintf(copy, sizeof copy, "%s", arg);
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == SS_BENCH_MAX_BATCHES)
            return ss_fail(err, "%s: at most %d sizes", flag, SS_BENCH_MAX_BATCHES);
        if (ss_cli_int_to(flag, tok, 1, 4096, &sizes[(*n)++], err))
            return -1;
    }
    return *n ? 0 : ss_fail(err, "%s: no sizes in '%s'", flag, arg);
}

static int ss_bench_parse(int argc, char **argv, ss_bench_opts *o, ss_error *err)
{
    static const struct option longopts[] = {
        SS_ARG("device", 'd'), SS_ARG("shape", 's'), SS_ARG("model", 'm'),
        SS_ARG("prompt-len", 'p'), SS_ARG("batches", 'b'), SS_ARG("grid", 'G'), SS_ARG("steps", 'n'),
        SS_ARG("reps", 'r'), SS_ARG("gpu", 'g'), SS_ARG("seed", 'S'), SS_ARG("json", 'j'),
        SS_FLAG("help", 'h'), SS_END_OPTIONS};
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
            if (ss_cli_int_to("--prompt-len", optarg, 1, 1 << 20, &o->prompt_len, err)) return -1;
            break;
        case 'n':
            if (ss_cli_int_to("--steps", optarg, 1, 1 << 20, &o->steps, err)) return -1;
            break;
        case 'r':
            if (ss_cli_int_to("--reps", optarg, 1, 1000, &o->reps, err)) return -1;
            break;
        case 'g':
            if (ss_cli_int_to("--gpu", optarg, 0, 64, &o->gpu, err)) return -1;
            break;
        case 'S':
            if (ss_cli_seed("--seed", optarg, &o->seed, err)) return -1;
            break;
        case 'b':
            if (ss_bench_sizes("--batches", optarg, o->batches, &o->n_batches, err)) return -1;
            break;
        case 'G':
            if (ss_bench_sizes("--grid", optarg, o->grid, &o->n_grid, err)) return -1;
            break;
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
    ss_config shape_cfg;
    if (o.shape && ss_model_shape(o.shape, &shape_cfg, &err) < 0)
        return ss_cli_flag(&err, "--shape"), ss_cli_fail("bench", SS_EXIT_USAGE, &err);
    int maxb = 1;
    for (int i = 0; i < o.n_batches; i++)
        maxb = o.batches[i] > maxb ? o.batches[i] : maxb;
    for (int i = 0; i < o.n_grid; i++)
        maxb = o.grid[i] > maxb ? o.grid[i] : maxb;

    int code = SS_EXIT_FAIL;
    ss_bench_ctx c;
    memset(&c, 0, sizeof c);
    ss_model *m = NULL;
    /* a shape: random weights, drawn on the GPU for the CUDA engine */
    char spec[256];
    snprintf(spec, sizeof spec, "synthetic:%s,seed=%llu,weights=%s", o.shape ? o.shape : "",
             (unsigned long long)o.seed, o.device == SS_DEVICE_CPU ? "host" : "device");
    if (ss_model_load(o.shape ? spec : o.model, &m, &err))
        goto fail;
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
    c.slots = ss_malloc((size_t)maxb * sizeof(int), &err);
    c.lens = ss_malloc((size_t)maxb * sizeof(int), &err);
    c.ones = ss_malloc((size_t)maxb * sizeof(int), &err);
    if (!c.tokens || !c.next || !c.slots || !c.lens || !c.ones)
        goto fail;
    for (size_t i = 0; i < tok_n; i++)
        c.tokens[i] = (int32_t)((i * 2654435761u + 12345u) % (unsigned)V);
    for (int i = 0; i < maxb; i++)
        c.slots[i] = i, c.ones[i] = 1;

    ss_bench_res R;
    memset(&R, 0, sizeof R);
    R.n_batches = o.n_batches;
    memcpy(R.batches, o.batches, sizeof R.batches);
    ss_engine_get_stats(c.e, &R.st);
    fprintf(stderr, "bench: copy bandwidth%s...\n",
            R.st.device_timer ? " and a cuBLAS GEMM" : "");
    if (ss_engine_measure_device(c.e, &R.dev, &err))
        goto fail;
    int64_t d = g->d_model, qd = (int64_t)g->n_heads * g->head_dim;
    int64_t kvd = (int64_t)g->n_kv_heads * g->head_dim, ff = g->d_ff;
    double mat_params = (double)L * (d * (qd + 2 * kvd) + qd * d + 3 * ff * d) + (double)V * d;

    /* prefill */
    fprintf(stderr, "bench: prefill...\n");
    if (ss_bench_prefill(&c, o.prompt_len, o.reps, &R.pf_ms, &err))
        goto fail;
    double P = o.prompt_len;
    R.pf_flops = 2.0 * (mat_params - (double)V * d) * P + 2.0 * d * V /* one logits row */
                 + 4.0 * L * (double)qd * P * (P + 1) / 2;

    /* decode at each batch size (with decode graphs: plain, then graph replay) */
    fprintf(stderr, "bench: decode...\n");
    R.modes = R.st.decode_graphs ? 2 : 1;
    double kv_pos = o.prompt_len + o.steps / 2.0; /* mean positions read per step */
    for (int mode = 0; mode < R.modes; mode++) {
        if (R.st.decode_graphs && ss_engine_set_decode_graphs(c.e, mode, &err))
            goto fail;
        for (int i = 0; i < o.n_batches; i++) {
            /* K and V of every position read */
            double B = o.batches[i];
            R.dec_bytes[i] = R.st.weight_bytes_read + B * L * 2 * kv_pos * kvd *
                                                          R.st.kv_bytes_per_value;
            R.dec_flops[i] = 2.0 * mat_params * B + 4.0 * L * (double)qd * kv_pos * B;
            double t_bytes = R.dec_bytes[i] / (R.dev.copy_gbps * 1e9);
            double t_flops = R.dev.matmul_tflops > 0 ? R.dec_flops[i] / (R.dev.matmul_tflops * 1e12)
                                                     : 0;
            R.dec_roof_ms[i] = 1e3 * (t_bytes > t_flops ? t_bytes : t_flops);
            if (ss_bench_decode(&c, o.batches[i], o.prompt_len, o.steps, &R.dec_ms[i][mode],
                                &err))
                goto fail;
        }
    }

    /* steering overhead at batch 1 and at the largest batch */
    fprintf(stderr, "bench: steering...\n");
    R.st_batch[R.n_st++] = 1;
    if (maxb > 1)
        R.st_batch[R.n_st++] = maxb;
    for (int k = 0; k < R.n_st; k++)
        if (ss_bench_steering(&c, R.st_batch[k], o.prompt_len, o.steps, R.st_ms[k], &err))
            goto fail;

    /* grids of distinct plans */
    if (o.n_grid)
        fprintf(stderr, "bench: grids of distinct plans...\n");
    for (int k = 0; k < o.n_grid; k++) {
        R.grid_batch[R.n_grid] = o.grid[k];
        if (ss_bench_grid(&c, o.grid[k], o.prompt_len, o.steps, R.grid_ms[R.n_grid++], &err))
            goto fail;
    }

    ss_bench_print(&R, &o, m->name, L);
    if (o.json && ss_bench_json(&R, &o, m->name, &err))
        goto fail;
    code = SS_EXIT_OK;
    goto done;
fail:
    ss_cli_fail("bench", SS_EXIT_FAIL, &err);
done:
    ss_engine_free(c.e);
    free(c.tokens), free(c.next), free(c.slots), free(c.lens), free(c.ones);
    ss_model_free(m);
    return code;
}
