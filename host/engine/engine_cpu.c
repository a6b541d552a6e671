/* engine_cpu.c - the CPU backend: weights used as the file stores them
 * (cpu_weights.c: decoded on the fly, values exactly as dequantised), f32
 * activations, OpenBLAS matrix products, OpenMP attention.
 *
 * All tokens of a batch are stacked into one [T][d_model] activation, so
 * every linear layer is one matrix product over all T rows (decode of many
 * sequences becomes a small GEMM); only attention and the steering/capture
 * hooks run per sequence.  See docs/cpu-engine.md. */
#include "engine/cpu_ops.h"
#include "engine/cpu_weights.h"
#include "engine/backend.h"

#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* queries per attention work item: small enough to balance a long prefill
 * across threads, large enough to amortise the scheduling */
#define SS_ATTN_QBLOCK 32

/* Matrices point into the model (file mapping or its memory): the model
 * must outlive the engine.  Norm weights are small f32 copies. */
typedef struct {
    float *attn_norm;               /* [d_model] */
    const ss_tensor *wq;            /* [n_heads*head_dim][d_model] */
    const ss_tensor *wk, *wv;       /* [n_kv_heads*head_dim][d_model] */
    const ss_tensor *wo;            /* [d_model][n_heads*head_dim] */
    float *ffn_norm;                /* [d_model] */
    const ss_tensor *w_gate, *w_up; /* [d_ff][d_model] */
    const ss_tensor *w_down;        /* [d_model][d_ff] */
} cpu_layer;

typedef struct {
    float *k, *v;               /* [n_layers][cap][n_kv_heads*head_dim] */
    int cap;                    /* positions allocated; grows up to max_ctx */
} cpu_kv;

typedef struct {
    int seq, head0, n_head;     /* query heads head0.. of one K/V head */
    int i0, n;                  /* queries i0..i0+n-1 of sequence seq */
} attn_item;

typedef struct {
    const ss_tensor *tok_embd;  /* [vocab][d_model] */
    const ss_tensor *output;    /* [vocab][d_model]; == tok_embd when tied */
    float *output_norm;         /* [d_model] */
    ss_cpu_scratch wscratch;    /* decoded weight rows, per thread */
    cpu_layer *layers;          /* [n_layers] */
    float *inv_freq;            /* [head_dim/2] */
    cpu_kv *kv;                 /* [max_seqs] */
    /* per-forward scratch, grown to the largest batch seen */
    int cap_t;
    float *h, *xn, *tmp;        /* [cap_t][d_model] */
    float *q, *att;             /* [cap_t][n_heads*head_dim] */
    float *k, *v;               /* [cap_t][n_kv_heads*head_dim] */
    float *gate, *up;           /* [cap_t][d_ff] */
    int *pos;                   /* [cap_t] */
    int *off;                   /* [max_seqs+1] first row of each sequence */
    attn_item *items;           /* [n_heads*(cap_t/QBLOCK + max_seqs)] */
} cpu_impl;

/* ---------------------------------------------------------------- weights */

/* A matrix used in place: checked (ss_model_tensor_check) and decoded once,
 * block by block in the per-thread scratch, to refuse NaN or infinity. */
static int use_matrix(const ss_model *m, const ss_tensor *t, const char *what, int64_t in,
                      int64_t out, const ss_cpu_scratch *scr, const ss_tensor **dst,
                      ss_error *err)
{
    if (ss_model_tensor_check(m, t, what, in, out, err))
        return -1;
    int64_t n_blocks = (out + SS_CPU_ROW_BLOCK - 1) / SS_CPU_ROW_BLOCK, first_bad = n_blocks;
#pragma omp parallel num_threads(scr->threads)
    {
        float *buf = scr->buf + (size_t)omp_get_thread_num() * SS_CPU_ROW_BLOCK * scr->max_in;
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < n_blocks; b++) {
            int64_t r0 = b * SS_CPU_ROW_BLOCK;
            int64_t nr = out - r0 < SS_CPU_ROW_BLOCK ? out - r0 : SS_CPU_ROW_BLOCK;
            ss_error block_err;
            if (ss_model_tensor_rows(m, t, r0, nr, buf, &block_err)) {
#pragma omp critical
                if (b < first_bad) { /* the first bad row, whatever the thread order */
                    first_bad = b;
                    *err = block_err;
                }
            }
        }
    }
    if (first_bad < n_blocks)
        return -1;
    *dst = t;
    return 0;
}

/* A norm weight [d], decoded to f32. */
static int load_vector(const ss_model *m, const ss_tensor *t, const char *what, int64_t d,
                       float **dst, ss_error *err)
{
    if (ss_model_tensor_check(m, t, what, d, 1, err) ||
        !(*dst = ss_malloc((size_t)d * sizeof(float), err)))
        return -1;
    return ss_model_tensor_rows(m, t, 0, 1, *dst, err);
}

static int load_layer(const ss_model *m, int l, const ss_cpu_scratch *scr, cpu_layer *w,
                      ss_error *err)
{
    const ss_config *c = &m->cfg;
    const ss_layer_weights *t = &m->layers[l];
    int64_t d = c->d_model, qd = (int64_t)c->n_heads * c->head_dim;
    int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim, ff = c->d_ff;
    if (load_vector(m, &t->attn_norm, "attn_norm", d, &w->attn_norm, err) ||
        use_matrix(m, &t->wq, "wq", d, qd, scr, &w->wq, err) ||
        use_matrix(m, &t->wk, "wk", d, kvd, scr, &w->wk, err) ||
        use_matrix(m, &t->wv, "wv", d, kvd, scr, &w->wv, err) ||
        use_matrix(m, &t->wo, "wo", qd, d, scr, &w->wo, err) ||
        load_vector(m, &t->ffn_norm, "ffn_norm", d, &w->ffn_norm, err) ||
        use_matrix(m, &t->w_gate, "w_gate", d, ff, scr, &w->w_gate, err) ||
        use_matrix(m, &t->w_up, "w_up", d, ff, scr, &w->w_up, err) ||
        use_matrix(m, &t->w_down, "w_down", ff, d, scr, &w->w_down, err))
        return ss_fail_context(err, "layer %d", l);
    return 0;
}

static int load_weights(const ss_model *m, cpu_impl *c, ss_error *err)
{
    const ss_config *cfg = &m->cfg;
    int64_t d = cfg->d_model, V = cfg->vocab_size;
    const ss_cpu_scratch *scr = &c->wscratch;
    if (use_matrix(m, &m->tok_embd, "tok_embd", d, V, scr, &c->tok_embd, err) ||
        load_vector(m, &m->output_norm, "output_norm", d, &c->output_norm, err))
        return -1;
    int tied = cfg->tied_embeddings || !m->output.data || m->output.data == m->tok_embd.data;
    if (tied)
        c->output = c->tok_embd;
    else if (use_matrix(m, &m->output, "output", d, V, scr, &c->output, err))
        return -1;
    c->layers = ss_calloc((size_t)cfg->n_layers, sizeof *c->layers, err);
    if (!c->layers)
        return -1;
    for (int l = 0; l < cfg->n_layers; l++)
        if (load_layer(m, l, scr, &c->layers[l], err))
            return -1;
    return 0;
}

/* ---------------------------------------------------------------- buffers */

static void free_scratch(cpu_impl *c)
{
    free(c->h);
    free(c->xn);
    free(c->tmp);
    free(c->q);
    free(c->att);
    free(c->k);
    free(c->v);
    free(c->gate);
    free(c->up);
    free(c->pos);
    free(c->items);
    c->h = c->xn = c->tmp = c->q = c->att = c->k = c->v = c->gate = c->up = NULL;
    c->pos = NULL;
    c->items = NULL;
    c->cap_t = 0;
}

static int ensure_scratch(const ss_engine *e, cpu_impl *c, int T, ss_error *err)
{
    if (T <= c->cap_t)
        return 0;
    free_scratch(c);
    const ss_config *g = &e->cfg;
    size_t t = (size_t)T, qd = (size_t)g->n_heads * g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * g->head_dim, f = sizeof(float);
    size_t n_items = (size_t)g->n_heads * (t / SS_ATTN_QBLOCK + (size_t)e->max_seqs);
    if (!(c->h = ss_malloc(t * g->d_model * f, err)) ||
        !(c->xn = ss_malloc(t * g->d_model * f, err)) ||
        !(c->tmp = ss_malloc(t * g->d_model * f, err)) ||
        !(c->q = ss_malloc(t * qd * f, err)) || !(c->att = ss_malloc(t * qd * f, err)) ||
        !(c->k = ss_malloc(t * kvd * f, err)) || !(c->v = ss_malloc(t * kvd * f, err)) ||
        !(c->gate = ss_malloc(t * g->d_ff * f, err)) ||
        !(c->up = ss_malloc(t * g->d_ff * f, err)) ||
        !(c->pos = ss_malloc(t * sizeof(int), err)) ||
        !(c->items = ss_malloc(n_items * sizeof(attn_item), err))) {
        free_scratch(c);
        return ss_fail_context(err, "CPU engine: scratch for a batch of %d tokens", T);
    }
    c->cap_t = T;
    return 0;
}

/* Grows a slot's cache to hold `need` positions (doubling, at most
 * max_ctx), keeping the positions already written. */
static int ensure_kv(const ss_engine *e, cpu_kv *kv, int slot, int need, ss_error *err)
{
    if (need <= kv->cap)
        return 0;
    int cap = kv->cap ? kv->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > e->max_ctx)
        cap = e->max_ctx;
    size_t L = (size_t)e->cfg.n_layers, kvd = (size_t)e->cfg.n_kv_heads * e->cfg.head_dim;
    size_t bytes = L * (size_t)cap * kvd * sizeof(float);
    float *k = ss_malloc(bytes, err), *v = k ? ss_malloc(bytes, err) : NULL;
    if (!v) {
        free(k);
        return ss_fail_context(err, "KV cache of slot %d (%d positions)", slot, cap);
    }
    size_t used = (size_t)e->slot_pos[slot] * kvd * sizeof(float);
    for (size_t l = 0; l < L && used; l++) {
        memcpy(k + l * cap * kvd, kv->k + l * kv->cap * kvd, used);
        memcpy(v + l * cap * kvd, kv->v + l * kv->cap * kvd, used);
    }
    free(kv->k);
    free(kv->v);
    kv->k = k;
    kv->v = v;
    kv->cap = cap;
    return 0;
}

static void cpu_destroy(ss_engine *e)
{
    cpu_impl *c = e->impl;
    if (!c)
        return;
    if (c->layers) {
        for (int l = 0; l < e->cfg.n_layers; l++) {
            free(c->layers[l].attn_norm);
            free(c->layers[l].ffn_norm);
        }
        free(c->layers);
    }
    free(c->output_norm);
    ss_cpu_scratch_free(&c->wscratch);
    free(c->inv_freq);
    if (c->kv) {
        for (int s = 0; s < e->max_seqs; s++) {
            free(c->kv[s].k);
            free(c->kv[s].v);
        }
        free(c->kv);
    }
    free_scratch(c);
    free(c->off);
    free(c);
    e->impl = NULL;
}

/* ---------------------------------------------------------------- forward */

/* Steering, then capture, of one site's activation x[T][d_model] at
 * layer l, sequence by sequence. */
static void run_hooks(ss_engine *e, const ss_batch *b, const int *off, int site, int l,
                      float *x)
{
    int d = e->cfg.d_model;
    size_t at = (size_t)site * e->cfg.n_layers + l; /* (site, layer) in the steering arrays */
    for (int i = 0; i < b->n_seqs; i++) {
        int slot = b->slots[i], n = b->n_tokens[i], pos0 = e->slot_pos[slot];
        float *rows = x + (size_t)off[i] * d;
        if (e->steer[slot].active && e->steer[slot].alpha[at] != 0.0f)
            ss_cpu_steer(rows, n, d, pos0, e->steer[slot].ops[at], e->steer[slot].alpha[at],
                         e->steer[slot].vectors + at * d, e->steer[slot].pos_begin,
                         e->steer[slot].pos_end);
        if (e->capture[site].fn && e->capture[site].layers[l])
            e->capture[site].fn(e->capture[site].user, slot, site, l, pos0, rows, n, d);
    }
}

/* One work item per (sequence, K/V head, block of queries); *work counts the
 * query-key multiply-adds of a layer, to skip threading tiny batches.  When
 * that gives fewer than two items per thread (decode of a few sequences),
 * each K/V head's query heads are split over several items, so every
 * thread has work (a split reads the head's keys once per part). */
static int build_attn_items(const ss_engine *e, const ss_batch *b, attn_item *items, long *work)
{
    const ss_config *g = &e->cfg;
    int group = g->n_heads / g->n_kv_heads, n_blocks = 0, n_items = 0;
    *work = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        long n = b->n_tokens[i];
        *work += n * (e->slot_pos[b->slots[i]] + n) * g->n_heads * g->head_dim;
        n_blocks += (b->n_tokens[i] + SS_ATTN_QBLOCK - 1) / SS_ATTN_QBLOCK;
    }
    int base = n_blocks * g->n_kv_heads, want = 2 * e->threads;
    int parts = base >= want ? 1 : (want + base - 1) / base; /* per K/V head */
    if (parts > group)
        parts = group;
    int per = (group + parts - 1) / parts; /* query heads per item */
    for (int i = 0; i < b->n_seqs; i++)
        for (int kv = 0; kv < g->n_kv_heads; kv++)
            for (int h0 = kv * group; h0 < (kv + 1) * group; h0 += per)
                for (int i0 = 0; i0 < b->n_tokens[i]; i0 += SS_ATTN_QBLOCK) {
                    int rest = b->n_tokens[i] - i0, nh = (kv + 1) * group - h0;
                    items[n_items++] = (attn_item){i, h0, nh < per ? nh : per, i0,
                                                   rest < SS_ATTN_QBLOCK ? rest : SS_ATTN_QBLOCK};
                }
    return n_items;
}

/* Appends this layer's k, v rows to each slot's cache, then attends. */
static void attention_layer(ss_engine *e, cpu_impl *c, const ss_batch *b, int l, int n_items,
                            long work)
{
    const ss_config *g = &e->cfg;
    size_t qd = (size_t)g->n_heads * g->head_dim, kvd = (size_t)g->n_kv_heads * g->head_dim;
    for (int i = 0; i < b->n_seqs; i++) {
        cpu_kv *kv = &c->kv[b->slots[i]];
        size_t at = ((size_t)l * kv->cap + e->slot_pos[b->slots[i]]) * kvd;
        size_t bytes = (size_t)b->n_tokens[i] * kvd * sizeof(float);
        memcpy(kv->k + at, c->k + (size_t)c->off[i] * kvd, bytes);
        memcpy(kv->v + at, c->v + (size_t)c->off[i] * kvd, bytes);
    }
#pragma omp parallel for schedule(dynamic, 1) if (work >= (1L << 16))
    for (int it = 0; it < n_items; it++) {
        attn_item w = c->items[it];
        int slot = b->slots[w.seq];
        const cpu_kv *kv = &c->kv[slot];
        size_t row = (size_t)c->off[w.seq] + w.i0;
        ss_cpu_attention_heads(c->att + row * qd, c->q + row * qd,
                               kv->k + (size_t)l * kv->cap * kvd,
                               kv->v + (size_t)l * kv->cap * kvd, w.n,
                               e->slot_pos[slot] + w.i0, w.head0, w.n_head, g->n_heads,
                               g->n_kv_heads, g->head_dim);
    }
}

static void add_rows(float *h, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h[i] += x[i];
}

static void decoder_layer(ss_engine *e, cpu_impl *c, const ss_batch *b, int l, int T,
                          int n_items, long attn_work)
{
    const ss_config *g = &e->cfg;
    const cpu_layer *w = &c->layers[l];
    int d = g->d_model, qd = g->n_heads * g->head_dim, kvd = g->n_kv_heads * g->head_dim;
    size_t td = (size_t)T * d;

    ss_cpu_rmsnorm(c->xn, c->h, w->attn_norm, T, d, g->rms_eps);
    ss_cpu_matmul_w(c->q, c->xn, w->wq, T, d, qd, &c->wscratch);
    ss_cpu_matmul_w(c->k, c->xn, w->wk, T, d, kvd, &c->wscratch);
    ss_cpu_matmul_w(c->v, c->xn, w->wv, T, d, kvd, &c->wscratch);
    ss_cpu_rope(c->q, c->pos, T, g->n_heads, g, c->inv_freq);
    ss_cpu_rope(c->k, c->pos, T, g->n_kv_heads, g, c->inv_freq);
    attention_layer(e, c, b, l, n_items, attn_work);
    ss_cpu_matmul_w(c->tmp, c->att, w->wo, T, qd, d, &c->wscratch);
    run_hooks(e, b, c->off, SS_SITE_ATTN_OUT, l, c->tmp);
    add_rows(c->h, c->tmp, td);

    ss_cpu_rmsnorm(c->xn, c->h, w->ffn_norm, T, d, g->rms_eps);
    ss_cpu_matmul_w(c->gate, c->xn, w->w_gate, T, d, g->d_ff, &c->wscratch);
    ss_cpu_matmul_w(c->up, c->xn, w->w_up, T, d, g->d_ff, &c->wscratch);
    ss_cpu_swiglu(c->gate, c->gate, c->up, T * g->d_ff);
    ss_cpu_matmul_w(c->tmp, c->gate, w->w_down, T, g->d_ff, d, &c->wscratch);
    run_hooks(e, b, c->off, SS_SITE_MLP_OUT, l, c->tmp);
    add_rows(c->h, c->tmp, td);
    run_hooks(e, b, c->off, SS_SITE_RESID_POST, l, c->h);
}

/* Final norm and output projection for the rows that need logits. */
static void output_logits(ss_engine *e, cpu_impl *c, const ss_batch *b, int T, float *logits)
{
    const ss_config *g = &e->cfg;
    int d = g->d_model, n = T;
    if (b->all_logits) {
        ss_cpu_rmsnorm(c->xn, c->h, c->output_norm, T, d, g->rms_eps);
    } else {
        n = b->n_seqs;
        for (int i = 0; i < n; i++)
            memcpy(c->xn + (size_t)i * d, c->h + (size_t)(c->off[i + 1] - 1) * d,
                   (size_t)d * sizeof(float));
        ss_cpu_rmsnorm(c->xn, c->xn, c->output_norm, n, d, g->rms_eps);
    }
    ss_cpu_matmul_w(logits, c->xn, c->output, n, d, g->vocab_size, &c->wscratch);
}

static int cpu_forward(ss_engine *e, const ss_batch *b, float *logits, ss_error *err)
{
    cpu_impl *c = e->impl;
    int d = e->cfg.d_model, T = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        c->off[i] = T;
        T += b->n_tokens[i];
        int slot = b->slots[i];
        if (ensure_kv(e, &c->kv[slot], slot, e->slot_pos[slot] + b->n_tokens[i], err))
            return -1;
    }
    c->off[b->n_seqs] = T;
    if (ensure_scratch(e, c, T, err))
        return -1;
    for (int i = 0; i < b->n_seqs; i++)
        for (int t = 0; t < b->n_tokens[i]; t++) {
            int row = c->off[i] + t;
            c->pos[row] = e->slot_pos[b->slots[i]] + t;
            size_t rb = ss_type_row_bytes(c->tok_embd->type, d);
            ss_dequantize(c->tok_embd->type,
                          (const uint8_t *)c->tok_embd->data + (size_t)b->tokens[row] * rb,
                          c->h + (size_t)row * d, d);
        }
    long attn_work;
    int n_items = build_attn_items(e, b, c->items, &attn_work);
    for (int l = 0; l < e->cfg.n_layers; l++)
        decoder_layer(e, c, b, l, T, n_items, attn_work);
    output_logits(e, c, b, T, logits);
    return 0;
}

/* ---------------------------------------------------------------- measurement */

/* Bytes of the matrices a decode step reads as stored (the engine keeps the
 * file's encoding): every layer's, and the output head's (the embedding
 * table when tied; of a separate table only one row is read). */
static void cpu_stats(const ss_engine *e, ss_engine_stats *s)
{
    const ss_model *m = e->model;
    const ss_tensor *head = m->output.data ? &m->output : &m->tok_embd;
    double bytes = (double)head->nbytes;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ss_layer_weights *w = &m->layers[l];
        const ss_tensor *ts[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up,
                                 &w->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            bytes += (double)ts[i]->nbytes;
    }
    snprintf(s->device, sizeof s->device, "cpu");
    s->weight_bytes = s->weight_bytes_read = bytes;
    s->kv_bytes_per_value = 4;
}

/* Host copy bandwidth: the median of 5 copies of 256 MiB split over the
 * OpenMP threads the engine uses, bytes read + written. */
static int cpu_measure_device(ss_engine *e, ss_engine_device *d, ss_error *err)
{
    (void)e;
    enum { REPS = 5 };
    size_t bytes = (size_t)256 << 20;
    char *a = ss_malloc(bytes, err), *b = a ? ss_malloc(bytes, err) : NULL;
    if (!b) {
        free(a);
        return -1;
    }
    memset(a, 1, bytes); /* touch every page before timing */
    memset(b, 0, bytes);
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        double t0 = ss_seconds();
#pragma omp parallel
        {
            size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
            size_t lo = bytes * id / nt, hi = bytes * (id + 1) / nt;
            memcpy(b + lo, a + lo, hi - lo);
        }
        t[r] = ss_seconds() - t0;
    }
    d->copy_gbps = 2.0 * (double)bytes / ss_median(t, REPS) / 1e9;
    free(a);
    free(b);
    return 0;
}

static const ss_engine_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .forward = cpu_forward,
    .sync_hooks = NULL, /* forward reads e->steer and e->capture directly */
    .reset_slot = NULL, /* slot_pos alone marks the valid cache rows */
    .stats = cpu_stats,
    .measure_device = cpu_measure_device,
};

int ss_engine_cpu_create(ss_engine *e, const ss_engine_opts *o, ss_error *err)
{
    if (e->model->weights_on_device)
        return ss_fail(err, "%s: a synthetic model whose weights are drawn on the GPU "
                            "(weights=device) runs only on the CUDA engine", e->model->path);
    /* OpenMP owns the threads; BLAS runs single-threaded inside them (see
     * ss_cpu_matmul), so two spinning pools never fight for the cores */
    int threads = o->threads > 0 ? o->threads : omp_get_num_procs();
    openblas_set_num_threads(1);
    omp_set_num_threads(threads);
    e->threads = threads;

    cpu_impl *c = ss_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    e->impl = c;
    e->ops = &cpu_ops; /* from here on, destroy frees whatever was built */
    const ss_config *g = &e->cfg;
    if (!(c->inv_freq = ss_malloc((size_t)(g->head_dim / 2) * sizeof(float), err)) ||
        !(c->kv = ss_calloc((size_t)e->max_seqs, sizeof *c->kv, err)) ||
        !(c->off = ss_malloc((size_t)(e->max_seqs + 1) * sizeof(int), err)))
        return -1;
    ss_cpu_rope_inv_freq(g, c->inv_freq);
    int64_t qd = (int64_t)g->n_heads * g->head_dim, max_in = g->d_model;
    max_in = qd > max_in ? qd : max_in;
    max_in = g->d_ff > max_in ? g->d_ff : max_in;
    if (ss_cpu_scratch_init(&c->wscratch, threads, max_in, err))
        return -1;
    return load_weights(e->model, c, err);
}
