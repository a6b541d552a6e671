/* engine_cuda.cu - the CUDA backend of ss_engine (host/engine/backend.h).
 *
 * Weights live on the GPU in bf16 (Q/K/V fused into one [q+2kv][d] matrix
 * and gate/up into one [2 d_ff][d] matrix, so each is one matmul), norm
 * weights in f32, the KV cache in bf16 [max_seqs][n_layers][max_ctx][kv].
 * The residual stream is f32; matmul inputs are bf16.  A forward runs its
 * rows in chunks of up to SS_CU_ROWS tokens (sequence order, so a chunk's
 * attention finds every earlier position of its sequence already cached):
 *   embed -> rmsnorm -> per layer { qkv matmul, rope + kv store, attention,
 *   wo matmul, residual+steer+norm, gate/up matmul, swiglu, down matmul,
 *   residual+steer+norm } -> final norm of the output rows -> lm head.
 * The kernels are the winners of the variants timed side by side
 * (tests/device/variants/, docs/cuda.md): matvec v1 for one row and cuBLAS
 * above, fused rope + KV store, prefill attention v2, the register-row
 * residual kernel where the row fits.
 * Steering happens inside the residual kernels (device mirror of
 * e->steer, uploaded by sync_hooks); capture hooks copy rows to the host.
 * Decode steps of a shape seen twice in a row replay a captured CUDA graph
 * (ss_engine_set_decode_graphs turns them off);
 * ss_engine_forward_argmax picks greedy tokens on the GPU.
 * Checked end to end by tests/device/test_cuda_engine.c against the CPU
 * engine (greedy tokens, logits, steering, graph vs no graph).  The device
 * plumbing (context, memory, timers) is in device.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "engine/backend.h"
extern "C" {
#include "engine/cpu_ops.h"
#include "safesteer/model.h"
}

#define SS_CU_ROWS 512        /* token rows per forward chunk */
/* Decode steps of up to 256 sequences (a sweep's batch) take the split-KV
 * decode path, one lm-head matmul and the graph replay; at 64, wider steps
 * fell back to prefill attention in 1-query tiles, no graph, and read the
 * 1 GB Llama-3 head once per 64 rows.  Costs: partials of 256 rows x heads
 * x splits, logits of 256 rows (131 MB at a 128k vocabulary). */
#define SS_CU_DEC_ROWS 256    /* rows the split-KV decode path takes */
#define SS_CU_LOGIT_ROWS 256  /* lm-head rows per matmul */
#define SS_CU_STAGE_FLOATS (8u << 20) /* host staging for weight upload */

/* ================================================================ engine state */

typedef struct {
    uint16_t *wqkv;     /* [q_dim + 2 kv_dim][d_model] */
    uint16_t *wo;       /* [d_model][q_dim] */
    uint16_t *wgu;      /* [2 d_ff][d_model]: gate rows, then up rows */
    uint16_t *wdown;    /* [d_model][d_ff] */
    float *attn_norm;   /* [d_model] */
    float *ffn_norm;    /* [d_model] */
} ss_cu_layer;

/* Per-chunk metadata, one int array on the host (pinned) and the device. */
typedef struct {
    int tokens, slot, pos, out_rows, tiles, ids, total; /* offsets, in ints */
} ss_cu_meta_layout;

typedef struct {
    ss_cuda_ctx *ctx;
    int q_dim, kv_dim, qkv_dim;
    ss_cu_layer *layers;         /* [n_layers] */
    uint16_t *tok_embd;          /* [vocab][d_model] */
    uint16_t *output;            /* [vocab][d_model]; == tok_embd when tied */
    float *output_norm;          /* [d_model] */
    float *inv_freq;             /* [head_dim/2] */
    uint16_t *kc, *vc;           /* [max_seqs][n_layers][max_ctx][kv_dim] */
    size_t weight_bytes, kv_bytes;
    /* scratch for SS_CU_ROWS rows */
    float *x, *delta;            /* [R][d_model] */
    float *qkv;                  /* [R][qkv_dim] */
    float *gu;                   /* [R][2 d_ff] */
    float *logits;               /* [SS_CU_LOGIT_ROWS][vocab] */
    uint16_t *xb;                /* [R][max(d_model, d_ff)] bf16 matmul input */
    uint16_t *att;               /* [R][q_dim] */
    float *partial;              /* decode split partials */
    int max_splits;              /* ceil(max_ctx / split) */
    ss_cu_meta_layout ml;
    int *h_meta, *d_meta;        /* [ml.total] */
    float *h_capture;            /* [R][d_model] pinned */
    /* steering mirror (S = SS_SITE_COUNT sites) */
    int *d_info;                 /* [max_seqs][3] */
    float *d_alpha;              /* [max_seqs][S][n_layers] */
    int *d_ops;                  /* [max_seqs][S][n_layers] */
    float *d_vec;                /* [max_seqs][S][n_layers][d_model], lazily */
    int *h_info, *h_ops;
    float *h_alpha;
    ss_cuda_timer *timer;        /* ss_engine_timer_* */
    /* decode graph */
    int graphs_on;
    cudaGraphExec_t gexec;
    int g_rows, g_out, g_argmax, g_valid;
    int prev_rows, prev_out, prev_argmax; /* shape of the last decode chunk */
} ss_cu_impl;

static ss_cu_impl *ss_cu(const ss_engine *e) { return (ss_cu_impl *)e->impl; }

static void ss_cu_drop_graph(ss_cu_impl *c)
{
    if (c->gexec)
        cudaGraphExecDestroy(c->gexec);
    c->gexec = NULL;
    c->g_valid = 0;
}

static void ss_cu_destroy(ss_engine *e)
{
    ss_cu_impl *c = ss_cu(e);
    if (!c)
        return;
    if (c->ctx)
        cudaStreamSynchronize(c->ctx->stream);
    ss_cu_drop_graph(c);
    ss_cuda_timer_free(c->timer);
    if (c->layers) {
        for (int l = 0; l < e->cfg.n_layers; l++) {
            ss_cu_layer *w = &c->layers[l];
            cudaFree(w->wqkv);
            cudaFree(w->wo);
            cudaFree(w->wgu);
            cudaFree(w->wdown);
            cudaFree(w->attn_norm);
            cudaFree(w->ffn_norm);
        }
        free(c->layers);
    }
    if (c->output != c->tok_embd)
        cudaFree(c->output);
    cudaFree(c->tok_embd);
    cudaFree(c->output_norm);
    cudaFree(c->inv_freq);
    cudaFree(c->kc);
    cudaFree(c->vc);
    cudaFree(c->x);
    cudaFree(c->delta);
    cudaFree(c->qkv);
    cudaFree(c->gu);
    cudaFree(c->logits);
    cudaFree(c->xb);
    cudaFree(c->att);
    cudaFree(c->partial);
    cudaFree(c->d_meta);
    cudaFree(c->d_info);
    cudaFree(c->d_alpha);
    cudaFree(c->d_ops);
    cudaFree(c->d_vec);
    cudaFreeHost(c->h_meta);
    cudaFreeHost(c->h_capture);
    free(c->h_info);
    free(c->h_alpha);
    free(c->h_ops);
    ss_cuda_ctx_free(c->ctx);
    free(c);
    e->impl = NULL;
}

static int ss_cu_alloc(void **p, size_t bytes, const char *what, ss_error *err)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess)
        return ss_fail(err, "CUDA engine: allocating %s (%.2f GiB) failed: %s", what,
                       (double)bytes / (1 << 30), cudaGetErrorString(e));
    return 0;
}

/* ================================================================ weights */

/* Synthetic models made with weights on the device (bench shapes,
 * "synthetic:...,weights=device") carry no tensor data: the weights are
 * drawn on the GPU from their seed. */
static int ss_cu_synthetic_seed(const ss_model *m, uint64_t *seed)
{
    *seed = m->synthetic_seed;
    return m->weights_on_device;
}

typedef struct {
    float *h_stage;   /* pinned [SS_CU_STAGE_FLOATS] */
    float *d_stage;   /* [SS_CU_STAGE_FLOATS] */
    int synthetic;
    uint64_t seed;
    uint64_t n_filled; /* tensors drawn so far (seeds each one differently) */
} ss_cu_loader;

/* Decodes t ({in, out}) in row blocks and writes bf16 rows at dst
 * ([out][in]); synthetic: uniform(-scale, scale). */
static int ss_cu_put_matrix(ss_engine *e, ss_cu_loader *ld, const ss_tensor *t, const char *what,
                            int64_t in, int64_t out, float scale, uint16_t *dst, ss_error *err)
{
    ss_cuda_ctx *cx = ss_cu(e)->ctx;
    if (ld->synthetic)
        return ss_cuda_fill_random_bf16(cx, dst, (size_t)(in * out), ld->seed * 1000003ull +
                                        ld->n_filled++, 0.0f, scale, err);
    if (ss_model_tensor_check(e->model, t, what, in, out, err))
        return -1;
    int64_t rows_per = (int64_t)SS_CU_STAGE_FLOATS / in;
    if (rows_per < 1)
        return ss_fail(err, "%s: tensor %s rows of %lld values exceed the staging buffer",
                       e->model->path, t->name, (long long)in);
    for (int64_t r0 = 0; r0 < out; r0 += rows_per) {
        int64_t nr = out - r0 < rows_per ? out - r0 : rows_per;
        if (ss_model_tensor_rows(e->model, t, r0, nr, ld->h_stage, err))
            return -1;
        SS_CU(cudaMemcpyAsync(ld->d_stage, ld->h_stage, (size_t)(nr * in) * sizeof(float),
                              cudaMemcpyHostToDevice, cx->stream), err);
        if (ss_cuda_f32_to_bf16(cx, dst + r0 * in, ld->d_stage, (size_t)(nr * in), err))
            return -1;
        SS_CU(cudaStreamSynchronize(cx->stream), err); /* h_stage is reused */
    }
    return 0;
}

/* Norm weight [d] in f32; synthetic: 1 + uniform(-0.1, 0.1). */
static int ss_cu_put_vector(ss_engine *e, ss_cu_loader *ld, const ss_tensor *t, const char *what,
                            int64_t d, float *dst, ss_error *err)
{
    ss_cuda_ctx *cx = ss_cu(e)->ctx;
    if (ld->synthetic)
        return ss_cuda_fill_random_f32(cx, dst, (size_t)d, ld->seed * 1000003ull + ld->n_filled++,
                                       1.0f, 0.1f, err);
    if (ss_model_tensor_check(e->model, t, what, d, 1, err))
        return -1;
    if (ss_model_tensor_rows(e->model, t, 0, 1, ld->h_stage, err))
        return -1;
    SS_CU(cudaMemcpy(dst, ld->h_stage, (size_t)d * sizeof(float), cudaMemcpyHostToDevice), err);
    return 0;
}

static int ss_cu_load_layer(ss_engine *e, ss_cu_loader *ld, int l, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    const ss_config *g = &e->cfg;
    const ss_layer_weights *t = &e->model->layers[l];
    ss_cu_layer *w = &c->layers[l];
    int64_t d = g->d_model, qd = c->q_dim, kvd = c->kv_dim, ff = g->d_ff;
    if (ss_cu_alloc((void **)&w->wqkv, (size_t)(c->qkv_dim * d) * 2, "wqkv", err) ||
        ss_cu_alloc((void **)&w->wo, (size_t)(d * qd) * 2, "wo", err) ||
        ss_cu_alloc((void **)&w->wgu, (size_t)(2 * ff * d) * 2, "w_gate/w_up", err) ||
        ss_cu_alloc((void **)&w->wdown, (size_t)(d * ff) * 2, "w_down", err) ||
        ss_cu_alloc((void **)&w->attn_norm, (size_t)d * 4, "attn_norm", err) ||
        ss_cu_alloc((void **)&w->ffn_norm, (size_t)d * 4, "ffn_norm", err))
        return -1;
    float sd = 1.0f / sqrtf((float)d), sqd = 1.0f / sqrtf((float)qd), sff = 1.0f / sqrtf((float)ff);
    if (ss_cu_put_vector(e, ld, &t->attn_norm, "attn_norm", d, w->attn_norm, err) ||
        ss_cu_put_matrix(e, ld, &t->wq, "wq", d, qd, sd, w->wqkv, err) ||
        ss_cu_put_matrix(e, ld, &t->wk, "wk", d, kvd, sd, w->wqkv + qd * d, err) ||
        ss_cu_put_matrix(e, ld, &t->wv, "wv", d, kvd, sd, w->wqkv + (qd + kvd) * d, err) ||
        ss_cu_put_matrix(e, ld, &t->wo, "wo", qd, d, sqd, w->wo, err) ||
        ss_cu_put_vector(e, ld, &t->ffn_norm, "ffn_norm", d, w->ffn_norm, err) ||
        ss_cu_put_matrix(e, ld, &t->w_gate, "w_gate", d, ff, sd, w->wgu, err) ||
        ss_cu_put_matrix(e, ld, &t->w_up, "w_up", d, ff, sd, w->wgu + ff * d, err) ||
        ss_cu_put_matrix(e, ld, &t->w_down, "w_down", ff, d, sff, w->wdown, err))
        return ss_fail_context(err, "layer %d", l);
    return 0;
}

/* One bf16 table serves as embedding and output head. */
static int ss_cu_tied_model(const ss_model *m)
{
    return m->cfg.tied_embeddings ||
           (m->tok_embd.data && (!m->output.data || m->output.data == m->tok_embd.data));
}

static int ss_cu_tied(const ss_engine *e) { return ss_cu_tied_model(e->model); }

static int ss_cu_load_weights(ss_engine *e, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    const ss_config *g = &e->cfg;
    ss_cu_loader ld;
    memset(&ld, 0, sizeof ld);
    ld.synthetic = ss_cu_synthetic_seed(e->model, &ld.seed);
    int rc = -1;
    int64_t d = g->d_model, V = g->vocab_size;
    if (!ld.synthetic) {
        if (cudaMallocHost((void **)&ld.h_stage, SS_CU_STAGE_FLOATS * sizeof(float)) !=
            cudaSuccess) {
            ld.h_stage = NULL;
            ss_fail(err, "CUDA engine: cudaMallocHost of the upload staging buffer failed");
            goto done;
        }
        if (ss_cu_alloc((void **)&ld.d_stage, SS_CU_STAGE_FLOATS * sizeof(float), "staging", err))
            goto done;
    }
    if (ss_cu_alloc((void **)&c->tok_embd, (size_t)(V * d) * 2, "tok_embd", err) ||
        ss_cu_alloc((void **)&c->output_norm, (size_t)d * 4, "output_norm", err) ||
        ss_cu_put_matrix(e, &ld, &e->model->tok_embd, "tok_embd", d, V, 1.0f, c->tok_embd, err) ||
        ss_cu_put_vector(e, &ld, &e->model->output_norm, "output_norm", d, c->output_norm, err))
        goto done;
    if (ss_cu_tied(e)) {
        c->output = c->tok_embd;
    } else if (ss_cu_alloc((void **)&c->output, (size_t)(V * d) * 2, "output", err) ||
               ss_cu_put_matrix(e, &ld, &e->model->output, "output", d, V, 1.0f / sqrtf((float)d),
                                c->output, err)) {
        goto done;
    }
    c->layers = (ss_cu_layer *)ss_calloc((size_t)g->n_layers, sizeof *c->layers, err);
    if (!c->layers)
        goto done;
    for (int l = 0; l < g->n_layers; l++)
        if (ss_cu_load_layer(e, &ld, l, err))
            goto done;
    if (cudaStreamSynchronize(c->ctx->stream) != cudaSuccess) {
        ss_fail(err, "CUDA engine: weight upload failed: %s",
                cudaGetErrorString(cudaGetLastError()));
        goto done;
    }
    rc = 0;
done:
    if (ld.h_stage)
        cudaFreeHost(ld.h_stage);
    cudaFree(ld.d_stage);
    return rc;
}

/* Bytes the GPU must hold for m at max_ctx positions per slot: weights,
 * scratch, and per slot the KV cache and the steering state. */
static void ss_cu_sizes(const ss_model *m, int max_ctx, size_t *weights, size_t *scratch,
                        size_t *per_slot)
{
    const ss_config *g = &m->cfg;
    size_t d = g->d_model, qd = (size_t)g->n_heads * g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * g->head_dim, ff = g->d_ff, V = g->vocab_size;
    size_t per_layer = 2 * (d * (qd + 2 * kvd) + qd * d + 3 * ff * d) + 4 * 2 * d;
    size_t n_sl = (size_t)SS_SITE_COUNT * g->n_layers;
    *weights = g->n_layers * per_layer + 2 * V * d * (ss_cu_tied_model(m) ? 1 : 2) + 4 * d;
    size_t R = SS_CU_ROWS, xw = d > ff ? d : ff;
    int splits = ss_cuda_attention_splits(max_ctx);
    *scratch = R * (4 * (2 * d + qd + 2 * kvd + 2 * ff) + 2 * (xw + qd)) +
               (size_t)SS_CU_LOGIT_ROWS * V * 4 +
               4 * ss_cuda_attention_partial_floats(SS_CU_DEC_ROWS, g->n_heads, g->head_dim,
                                                    splits) +
               ((size_t)64 << 20); /* cuBLAS workspace and slack */
    /* K and V in bf16; alpha, op, vector per (site, layer) once a slot steers */
    *per_slot = 2 * 2 * (size_t)g->n_layers * (size_t)max_ctx * kvd + n_sl * (4 + 4 + 4 * d) + 12;
}

extern "C" int ss_engine_cuda_footprint(const ss_model *m, const ss_engine_opts *o,
                                        ss_engine_footprint *f, ss_error *err)
{
    size_t free_b = 0, total_b = 0;
    if (ss_cuda_select_device(o->gpu, err))
        return -1;
    SS_CU(cudaMemGetInfo(&free_b, &total_b), err);
    size_t w, sc, per;
    ss_cu_sizes(m, o->max_ctx, &w, &sc, &per);
    *f = (ss_engine_footprint){.fixed = w + sc, .per_slot = per, .device_free = free_b,
                               .device_total = total_b};
    return 0;
}

static int ss_cu_alloc_state(ss_engine *e, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    const ss_config *g = &e->cfg;
    size_t R = SS_CU_ROWS, d = g->d_model, ff = g->d_ff, xw = d > ff ? d : ff;
    size_t kv_elems = (size_t)e->max_seqs * g->n_layers * (size_t)e->max_ctx * c->kv_dim;
    size_t n_sl = (size_t)SS_SITE_COUNT * g->n_layers; /* steered (site, layer) pairs */
    c->max_splits = ss_cuda_attention_splits(e->max_ctx);
    c->kv_bytes = 2 * 2 * kv_elems;
    ss_cu_meta_layout *m = &c->ml;
    m->tokens = 0;
    m->slot = (int)R;
    m->pos = 2 * (int)R;
    m->out_rows = 3 * (int)R;
    m->tiles = 4 * (int)R;
    m->ids = 6 * (int)R;
    m->total = 7 * (int)R;
    if (ss_cu_alloc((void **)&c->kc, kv_elems * 2, "K cache", err) ||
        ss_cu_alloc((void **)&c->vc, kv_elems * 2, "V cache", err) ||
        ss_cu_alloc((void **)&c->x, R * d * 4, "activations", err) ||
        ss_cu_alloc((void **)&c->delta, R * d * 4, "activations", err) ||
        ss_cu_alloc((void **)&c->qkv, R * c->qkv_dim * 4, "qkv scratch", err) ||
        ss_cu_alloc((void **)&c->gu, R * 2 * ff * 4, "mlp scratch", err) ||
        ss_cu_alloc((void **)&c->logits, (size_t)SS_CU_LOGIT_ROWS * g->vocab_size * 4, "logits",
                    err) ||
        ss_cu_alloc((void **)&c->xb, R * xw * 2, "bf16 scratch", err) ||
        ss_cu_alloc((void **)&c->att, R * c->q_dim * 2, "attention scratch", err) ||
        ss_cu_alloc((void **)&c->partial,
                    4 * ss_cuda_attention_partial_floats(SS_CU_DEC_ROWS, g->n_heads, g->head_dim,
                                                         c->max_splits),
                    "attention partials", err) ||
        ss_cu_alloc((void **)&c->d_meta, (size_t)m->total * 4, "batch metadata", err) ||
        ss_cu_alloc((void **)&c->d_info, (size_t)e->max_seqs * 3 * 4, "steering", err) ||
        ss_cu_alloc((void **)&c->d_alpha, (size_t)e->max_seqs * n_sl * 4, "steering", err) ||
        ss_cu_alloc((void **)&c->d_ops, (size_t)e->max_seqs * n_sl * 4, "steering", err) ||
        ss_cu_alloc((void **)&c->inv_freq, (size_t)g->head_dim / 2 * 4, "rope table", err))
        return -1;
    if (cudaMallocHost((void **)&c->h_meta, (size_t)m->total * 4) != cudaSuccess ||
        cudaMallocHost((void **)&c->h_capture, R * d * 4) != cudaSuccess)
        return ss_fail(err, "CUDA engine: cudaMallocHost of %zu bytes failed",
                       (size_t)m->total * 4 + R * d * 4);
    c->h_info = (int *)ss_calloc((size_t)e->max_seqs * 3, sizeof(int), err);
    c->h_alpha = (float *)ss_calloc((size_t)e->max_seqs * n_sl, sizeof(float), err);
    c->h_ops = (int *)ss_calloc((size_t)e->max_seqs * n_sl, sizeof(int), err);
    if (!c->h_info || !c->h_alpha || !c->h_ops)
        return -1;
    SS_CU(cudaMemset(c->d_info, 0, (size_t)e->max_seqs * 3 * 4), err);
    SS_CU(cudaMemset(c->d_alpha, 0, (size_t)e->max_seqs * n_sl * 4), err);
    SS_CU(cudaMemset(c->d_ops, 0, (size_t)e->max_seqs * n_sl * 4), err);
    float *inv = (float *)ss_malloc((size_t)g->head_dim / 2 * sizeof(float), err);
    if (!inv)
        return -1;
    ss_cpu_rope_inv_freq(g, inv);
    cudaError_t ce = cudaMemcpy(c->inv_freq, inv, (size_t)g->head_dim / 2 * 4,
                                cudaMemcpyHostToDevice);
    free(inv);
    SS_CU(ce, err);
    return 0;
}

/* ================================================================ hooks */

static int ss_cu_sync_hooks(ss_engine *e, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    int L = e->cfg.n_layers, d = e->cfg.d_model, any = 0;
    size_t n_sl = (size_t)SS_SITE_COUNT * L; /* (site, layer) pairs per slot */
    for (int s = 0; s < e->max_seqs; s++) {
        int *in = c->h_info + s * 3;
        in[0] = e->steer[s].active;
        in[1] = e->steer[s].pos_begin;
        in[2] = e->steer[s].pos_end;
        for (size_t k = 0; k < n_sl; k++) {
            c->h_alpha[s * n_sl + k] = e->steer[s].active ? e->steer[s].alpha[k] : 0.0f;
            c->h_ops[s * n_sl + k] = e->steer[s].active ? e->steer[s].ops[k] : 0;
        }
        any |= e->steer[s].active;
    }
    SS_CU(cudaStreamSynchronize(c->ctx->stream), err); /* no forward reads the mirror now */
    if (any && !c->d_vec) {
        if (ss_cu_alloc((void **)&c->d_vec, (size_t)e->max_seqs * n_sl * d * 4,
                        "steering vectors", err))
            return -1;
        ss_cu_drop_graph(c); /* a captured graph holds the old (NULL) pointer */
    }
    /* only the slots set since the last sync: a batch steered slot by slot
     * would otherwise copy every active slot's vectors once per slot */
    for (int s = 0; s < e->max_seqs; s++)
        if (e->steer[s].active && e->steer[s].dirty) {
            SS_CU(cudaMemcpy(c->d_vec + s * n_sl * d, e->steer[s].vectors, n_sl * d * 4,
                             cudaMemcpyHostToDevice), err);
            e->steer[s].dirty = 0;
        }
    SS_CU(cudaMemcpy(c->d_info, c->h_info, (size_t)e->max_seqs * 3 * 4, cudaMemcpyHostToDevice),
          err);
    SS_CU(cudaMemcpy(c->d_alpha, c->h_alpha, e->max_seqs * n_sl * 4, cudaMemcpyHostToDevice),
          err);
    SS_CU(cudaMemcpy(c->d_ops, c->h_ops, e->max_seqs * n_sl * 4, cudaMemcpyHostToDevice), err);
    return 0;
}

static int ss_cu_any_capture(const ss_engine *e)
{
    for (int s = 0; s < SS_SITE_COUNT; s++)
        if (e->capture[s].fn)
            return 1;
    return 0;
}

/* ================================================================ forward */

/* One chunk of rows, as laid out in h_meta. */
typedef struct {
    int n_rows, n_out, n_tiles;
    int decode;          /* split-KV decode attention (one row per sequence) */
    int n_splits;
    int argmax;          /* argmax ids instead of logits */
    /* host-side bookkeeping for capture: groups of rows of one sequence */
    int n_groups;
    int group_row[SS_CU_ROWS], group_len[SS_CU_ROWS];
} ss_cu_chunk;

static int ss_cu_capture(ss_engine *e, const ss_cu_chunk *ch, int site, int layer,
                         const float *d_rows, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    if (!e->capture[site].fn || !e->capture[site].layers[layer])
        return 0;
    int d = e->cfg.d_model;
    SS_CU(cudaMemcpyAsync(c->h_capture, d_rows, (size_t)ch->n_rows * d * 4,
                          cudaMemcpyDeviceToHost, c->ctx->stream), err);
    SS_CU(cudaStreamSynchronize(c->ctx->stream), err);
    const int *slot = c->h_meta + c->ml.slot, *pos = c->h_meta + c->ml.pos;
    for (int g = 0; g < ch->n_groups; g++) {
        int r = ch->group_row[g];
        e->capture[site].fn(e->capture[site].user, slot[r], site, layer, pos[r],
                            c->h_capture + (size_t)r * d, ch->group_len[g], d);
    }
    return 0;
}

/* Queues the whole chunk (everything after the metadata upload, up to the
 * logits or ids in device memory).  hooks: run capture callbacks. */
static int ss_cu_run_chunk(ss_engine *e, const ss_cu_chunk *ch, int hooks, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    ss_cuda_ctx *cx = c->ctx;
    const ss_config *g = &e->cfg;
    int n = ch->n_rows, d = g->d_model, ff = g->d_ff, L = g->n_layers;
    const int *tok = c->d_meta + c->ml.tokens, *slot = c->d_meta + c->ml.slot;
    const int *pos = c->d_meta + c->ml.pos;
    ss_cuda_steer_params sp = {c->d_info, c->d_alpha, c->d_ops, c->d_vec, L};
    ss_cuda_attn_shape as = {g->n_heads, g->n_kv_heads, g->head_dim, L, e->max_ctx, 0,
                             c->qkv_dim};

    if (ss_cuda_embed(cx, c->x, c->tok_embd, tok, n, d, err) ||
        ss_cuda_rmsnorm(cx, c->xb, c->x, NULL, c->layers[0].attn_norm, n, d, g->rms_eps, err))
        return -1;
    for (int l = 0; l < L; l++) {
        const ss_cu_layer *w = &c->layers[l];
        as.layer = l;
        if (ss_cuda_matmul_bf16(cx, c->qkv, c->xb, w->wqkv, n, d, c->qkv_dim, 0, err))
            return -1;
        if (ss_cuda_rope_kv_store(cx, c->qkv, c->qkv_dim, slot, pos, n, g->n_heads, g->n_kv_heads,
                                  g->head_dim, g->rope_neox, c->inv_freq, c->kc, c->vc, l, L,
                                  e->max_ctx, err))
            return -1;
        int rc = ch->decode ? ss_cuda_attention_decode(cx, c->att, c->qkv, c->kc, c->vc, slot, pos,
                                                       n, ch->n_splits, c->partial, &as, err)
                            : ss_cuda_attention_prefill(cx, c->att, c->qkv, c->kc, c->vc, slot,
                                                        pos, c->d_meta + c->ml.tiles, ch->n_tiles,
                                                        &as, err);
        if (rc ||
            ss_cuda_matmul_bf16(cx, c->delta, c->att, w->wo, n, c->q_dim, d, 0, err) ||
            ss_cuda_residual_steer(cx, c->x, c->delta, c->xb, w->ffn_norm, g->rms_eps, slot, pos,
                                   n, d, SS_SITE_ATTN_OUT, l, &sp, err))
            return -1;
        if (hooks && ss_cu_capture(e, ch, SS_SITE_ATTN_OUT, l, c->delta, err))
            return -1;
        const float *next_norm = l + 1 < L ? c->layers[l + 1].attn_norm : NULL;
        if (ss_cuda_matmul_bf16(cx, c->gu, c->xb, w->wgu, n, d, 2 * ff, 0, err))
            return -1;
        if (ss_cuda_swiglu(cx, c->xb, c->gu, n, ff, err) ||
            ss_cuda_matmul_bf16(cx, c->delta, c->xb, w->wdown, n, ff, d, 0, err))
            return -1;
        if (ss_cuda_residual_steer(cx, c->x, c->delta, c->xb, next_norm, g->rms_eps, slot, pos,
                                   n, d, SS_SITE_MLP_OUT, l, &sp, err))
            return -1;
        if (hooks && (ss_cu_capture(e, ch, SS_SITE_MLP_OUT, l, c->delta, err) ||
                      ss_cu_capture(e, ch, SS_SITE_RESID_POST, l, c->x, err)))
            return -1;
    }
    /* final norm of the output rows only */
    if (ss_cuda_rmsnorm(cx, c->xb, c->x, c->d_meta + c->ml.out_rows, c->output_norm, ch->n_out, d,
                        g->rms_eps, err))
        return -1;
    if (ch->n_out <= SS_CU_LOGIT_ROWS) {
        if (ss_cuda_matmul_bf16(cx, c->logits, c->xb, c->output, ch->n_out, d, g->vocab_size, 0,
                                err))
            return -1;
        if (ch->argmax && ss_cuda_argmax(cx, c->d_meta + c->ml.ids, c->logits, ch->n_out,
                                         g->vocab_size, err))
            return -1;
    }
    return 0;
}

/* Runs (or replays) the decode graph for this chunk shape. */
static int ss_cu_run_graph(ss_engine *e, const ss_cu_chunk *ch, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    ss_cuda_ctx *cx = c->ctx;
    if (!c->g_valid || c->g_rows != ch->n_rows || c->g_out != ch->n_out ||
        c->g_argmax != ch->argmax) {
        ss_cu_drop_graph(c);
        cudaGraph_t graph;
        SS_CU(cudaStreamBeginCapture(cx->stream, cudaStreamCaptureModeThreadLocal), err);
        cx->capturing = 1;
        int rc = ss_cu_run_chunk(e, ch, 0, err);
        cx->capturing = 0;
        cudaError_t ce = cudaStreamEndCapture(cx->stream, &graph);
        if (rc)
            return ss_fail_context(err, "capturing the decode graph");
        if (ce != cudaSuccess)
            return ss_fail(err, "cudaStreamEndCapture: %s", cudaGetErrorString(ce));
        ce = cudaGraphInstantiate(&c->gexec, graph, 0);
        cudaGraphDestroy(graph);
        if (ce != cudaSuccess) {
            c->gexec = NULL;
            return ss_fail(err, "cudaGraphInstantiate: %s", cudaGetErrorString(ce));
        }
        c->g_rows = ch->n_rows;
        c->g_out = ch->n_out;
        c->g_argmax = ch->argmax;
        c->g_valid = 1;
    }
    SS_CU(cudaGraphLaunch(c->gexec, cx->stream), err);
    return 0;
}

/* Fills h_meta for rows [r0, r0 + n) of the batch (global row numbering),
 * row_seq[] giving each global row's sequence. */
static void ss_cu_build_chunk(ss_engine *e, const ss_batch *b, const int *row_seq,
                              const int *seq_off, int r0, int n, ss_cu_chunk *ch)
{
    ss_cu_impl *c = ss_cu(e);
    int *tok = c->h_meta + c->ml.tokens, *slot = c->h_meta + c->ml.slot;
    int *pos = c->h_meta + c->ml.pos, *outr = c->h_meta + c->ml.out_rows;
    int *tiles = c->h_meta + c->ml.tiles;
    ch->n_rows = n;
    ch->n_out = 0;
    ch->n_tiles = 0;
    ch->n_groups = 0;
    int max_pos = 0;
    for (int i = 0; i < n; i++) {
        int r = r0 + i, s = row_seq[r], t = r - seq_off[s];
        tok[i] = b->tokens[r];
        slot[i] = b->slots[s];
        pos[i] = e->slot_pos[b->slots[s]] + t;
        if (pos[i] > max_pos)
            max_pos = pos[i];
        if (b->all_logits || t == b->n_tokens[s] - 1)
            outr[ch->n_out++] = i;
        int new_group = i == 0 || row_seq[r - 1] != s;
        if (new_group) {
            ch->group_row[ch->n_groups] = i;
            ch->group_len[ch->n_groups++] = 0;
        }
        ch->group_len[ch->n_groups - 1]++;
        if (new_group || tiles[2 * (ch->n_tiles - 1) + 1] == 16) {
            tiles[2 * ch->n_tiles] = i;
            tiles[2 * ch->n_tiles + 1] = 0;
            ch->n_tiles++;
        }
        tiles[2 * (ch->n_tiles - 1) + 1]++;
    }
    ch->decode = ch->n_tiles == n && n <= SS_CU_DEC_ROWS;
    ch->n_splits = ss_cuda_attention_splits(max_pos + 1);
}

/* logits (host, rows as ss_engine_forward) or ids[n_seqs]; one is NULL. */
static int ss_cu_forward_impl(ss_engine *e, const ss_batch *b, float *logits, int32_t *ids,
                              ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    ss_cuda_ctx *cx = c->ctx;
    int V = e->cfg.vocab_size, total = 0, rc = -1;
    for (int i = 0; i < b->n_seqs; i++)
        total += b->n_tokens[i];
    int *row_seq = (int *)ss_malloc((size_t)total * sizeof(int), err);
    int *seq_off = (int *)ss_malloc((size_t)b->n_seqs * sizeof(int), err);
    ss_cu_chunk *ch = (ss_cu_chunk *)ss_malloc(sizeof *ch, err);
    if (!row_seq || !seq_off || !ch)
        goto done;
    for (int i = 0, r = 0; i < b->n_seqs; i++) {
        seq_off[i] = r;
        for (int t = 0; t < b->n_tokens[i]; t++)
            row_seq[r++] = i;
    }
    {
        int hooks = ss_cu_any_capture(e);
        long out_done = 0; /* host output rows written so far */
        for (int r0 = 0; r0 < total; r0 += SS_CU_ROWS) {
            int n = total - r0 < SS_CU_ROWS ? total - r0 : SS_CU_ROWS;
            ss_cu_build_chunk(e, b, row_seq, seq_off, r0, n, ch);
            ch->argmax = ids != NULL;
            /* a graph is captured for a shape seen twice in a row: as sequences
             * finish, a batch shrinks step by step and a shape used once would
             * pay a capture (~350 launches) for one replay */
            int same_graph = c->g_valid && c->g_rows == ch->n_rows && c->g_out == ch->n_out &&
                             c->g_argmax == ch->argmax;
            int repeated = c->prev_rows == ch->n_rows && c->prev_out == ch->n_out &&
                           c->prev_argmax == ch->argmax;
            int use_graph = c->graphs_on && ch->decode && !hooks &&
                            ch->n_out <= SS_CU_LOGIT_ROWS && (same_graph || repeated);
            c->prev_rows = ch->decode ? ch->n_rows : 0;
            c->prev_out = ch->n_out;
            c->prev_argmax = ch->argmax;
            if (use_graph)
                ch->n_splits = c->max_splits; /* fixed grid: empty splits add nothing */
            if (cudaMemcpyAsync(c->d_meta, c->h_meta, (size_t)c->ml.total * 4,
                                cudaMemcpyHostToDevice, cx->stream) != cudaSuccess) {
                ss_fail(err, "CUDA engine: metadata upload failed: %s",
                        cudaGetErrorString(cudaGetLastError()));
                goto done;
            }
            if (use_graph ? ss_cu_run_graph(e, ch, err) : ss_cu_run_chunk(e, ch, hooks, err))
                goto done;
            /* logits rows beyond one matmul (all_logits prefill) go in pieces */
            for (int o0 = 0; o0 < ch->n_out; o0 += SS_CU_LOGIT_ROWS) {
                int no = ch->n_out - o0 < SS_CU_LOGIT_ROWS ? ch->n_out - o0 : SS_CU_LOGIT_ROWS;
                if (ch->n_out > SS_CU_LOGIT_ROWS &&
                    (ss_cuda_matmul_bf16(cx, c->logits, c->xb + (size_t)o0 * e->cfg.d_model,
                                         c->output, no, e->cfg.d_model, V, 0, err) ||
                     (ids && ss_cuda_argmax(cx, c->d_meta + c->ml.ids + o0, c->logits, no, V,
                                            err))))
                    goto done;
                if (logits && cudaMemcpyAsync(logits + (size_t)(out_done + o0) * V, c->logits,
                                              (size_t)no * V * 4, cudaMemcpyDeviceToHost,
                                              cx->stream) != cudaSuccess) {
                    ss_fail(err, "CUDA engine: logits download failed: %s",
                            cudaGetErrorString(cudaGetLastError()));
                    goto done;
                }
                if (logits && cudaStreamSynchronize(cx->stream) != cudaSuccess) {
                    ss_fail(err, "CUDA engine: forward failed: %s",
                            cudaGetErrorString(cudaGetLastError()));
                    goto done;
                }
            }
            if (ids && cudaMemcpyAsync(ids + out_done, c->d_meta + c->ml.ids,
                                       (size_t)ch->n_out * 4, cudaMemcpyDeviceToHost,
                                       cx->stream) != cudaSuccess) {
                ss_fail(err, "CUDA engine: ids download failed");
                goto done;
            }
            /* h_meta is rewritten by the next chunk: wait for this one */
            cudaError_t ce = cudaStreamSynchronize(cx->stream);
            if (ce != cudaSuccess) {
                ss_fail(err, "CUDA engine: forward failed: %s", cudaGetErrorString(ce));
                goto done;
            }
            out_done += ch->n_out;
        }
    }
    rc = 0;
done:
    free(row_seq);
    free(seq_off);
    free(ch);
    return rc;
}

static int ss_cu_forward(ss_engine *e, const ss_batch *b, float *logits, ss_error *err)
{
    return ss_cu_forward_impl(e, b, logits, NULL, err);
}

static int ss_cu_forward_argmax(ss_engine *e, const ss_batch *b, int32_t *ids, ss_error *err)
{
    return ss_cu_forward_impl(e, b, NULL, ids, err);
}

/* ================================================================ measurement */

/* A decode step reads every weight but the embedding table, of which it
 * gathers one row, unless the table is also the output head. */
static void ss_cu_stats(const ss_engine *e, ss_engine_stats *s)
{
    const ss_cu_impl *c = ss_cu(e);
    size_t table = (size_t)e->cfg.vocab_size * e->cfg.d_model * 2;
    double mem_gib;
    if (ss_cuda_device_info(c->ctx->gpu, s->device, sizeof s->device, &mem_gib, NULL))
        snprintf(s->device, sizeof s->device, "cuda:%d", c->ctx->gpu);
    s->weight_bytes = (double)c->weight_bytes;
    s->weight_bytes_read = (double)(c->weight_bytes - (ss_cu_tied(e) ? 0 : table));
    s->kv_bytes_per_value = 2;
    s->device_timer = 1;
    s->decode_graphs = 1;
}

#define SS_CU_PEAK_GEMM 8192 /* the measured tensor-core peak: one size^3 GEMM */

static int ss_cu_measure_device(ss_engine *e, ss_engine_device *d, ss_error *err)
{
    int gpu = ss_cu(e)->ctx->gpu;
    char name[256];
    d->matmul_size = SS_CU_PEAK_GEMM;
    d->matmul_tflops_nominal = ss_cuda_bf16_peak_tflops(gpu);
    return ss_cuda_device_info(gpu, name, sizeof name, &d->memory_gib, err) ||
                   ss_cuda_copy_bandwidth((size_t)1 << 30, 20, &d->copy_gbps, err) ||
                   ss_cuda_gemm_tflops(SS_CU_PEAK_GEMM, 10, &d->matmul_tflops, err)
               ? -1
               : 0;
}

static int ss_cu_timer_begin(ss_engine *e, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    if (!c->timer && ss_cuda_timer_create(&c->timer, err))
        return -1;
    return ss_cuda_timer_start(c->timer, err);
}

static int ss_cu_timer_end(ss_engine *e, double *ms, ss_error *err)
{
    ss_cu_impl *c = ss_cu(e);
    if (!c->timer)
        return ss_fail(err, "CUDA engine: timer ended before it began");
    return ss_cuda_timer_stop(c->timer, ms, err);
}

static int ss_cu_set_decode_graphs(ss_engine *e, int on)
{
    ss_cu_impl *c = ss_cu(e);
    if (!on)
        ss_cu_drop_graph(c);
    c->graphs_on = on;
    return 0;
}

static const ss_engine_ops ss_cuda_ops = {
    .name = "cuda",
    .destroy = ss_cu_destroy,
    .forward = ss_cu_forward,
    .forward_argmax = ss_cu_forward_argmax,
    .sync_hooks = ss_cu_sync_hooks,
    .reset_slot = NULL, /* slot_pos alone marks the valid cache rows */
    .stats = ss_cu_stats,
    .measure_device = ss_cu_measure_device,
    .timer_begin = ss_cu_timer_begin,
    .timer_end = ss_cu_timer_end,
    .set_decode_graphs = ss_cu_set_decode_graphs,
};

/* ================================================================ public */

extern "C" int ss_engine_cuda_create(ss_engine *e, const ss_engine_opts *o, ss_error *err)
{
    const ss_config *g = &e->cfg;
    if (g->head_dim != 64 && g->head_dim != 96 && g->head_dim != 128)
        return ss_fail(err, "CUDA engine: head_dim %d not supported (64, 96 or 128)",
                       g->head_dim);
    if (g->d_model % 8 || g->d_ff % 8)
        return ss_fail(err, "CUDA engine: d_model %d and d_ff %d must be multiples of 8",
                       g->d_model, g->d_ff);
    ss_cu_impl *c = (ss_cu_impl *)ss_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    e->impl = c;
    e->ops = &ss_cuda_ops; /* from here destroy undoes partial state */
    if (ss_cuda_ctx_create(o->gpu, &c->ctx, err))
        return -1;
    c->q_dim = g->n_heads * g->head_dim;
    c->kv_dim = g->n_kv_heads * g->head_dim;
    c->qkv_dim = c->q_dim + 2 * c->kv_dim;
    const char *gr = getenv("SAFESTEER_CUDA_GRAPHS");
    c->graphs_on = !(gr && gr[0] == '0'); /* confirmed bit-identical on an H200 */

    size_t wb, sb, per, free_b = 0, total_b = 0;
    ss_cu_sizes(e->model, e->max_ctx, &wb, &sb, &per);
    SS_CU(cudaMemGetInfo(&free_b, &total_b), err);
    size_t slots = per * (size_t)e->max_seqs;
    if (wb + sb + slots > free_b)
        return ss_fail(err,
                       "CUDA engine: model needs %.2f GiB (weights %.2f + KV cache and steering "
                       "%.2f for %d slots x %d positions + scratch %.2f), GPU %d has %.2f GiB free",
                       (double)(wb + sb + slots) / (1 << 30), (double)wb / (1 << 30),
                       (double)slots / (1 << 30), e->max_seqs, e->max_ctx,
                       (double)sb / (1 << 30), o->gpu, (double)free_b / (1 << 30));
    c->weight_bytes = wb;
    if (ss_cu_alloc_state(e, err) || ss_cu_load_weights(e, err))
        return -1;
    return 0;
}
