/* model.c - ss_model_load: reads the Llama configuration from GGUF metadata
 * or a Hugging Face config.json, then binds and shape-checks every weight.
 *
 * GGUF llama files pair rotary dims (2i, 2i+1) (llama.cpp's converter
 * permutes Q/K rows); Hugging Face checkpoints pair (i, i + head_dim/2).
 * Llama-3.1 rope scaling in GGUF is stored by llama.cpp as the tensor
 * rope_freqs.weight (one factor per rotary frequency); the llama3
 * parameters are recovered from it (see ss_fit_llama3). */
#include "model/model_internal.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- tensors */

void ss_model_tensors(const ss_model *m, const ss_tensor **tensors, size_t *n)
{
    if (m->format == SS_FORMAT_SYNTHETIC) {
        *tensors = NULL;
        *n = 0;
    } else if (m->format == SS_FORMAT_GGUF) {
        *tensors = m->gguf->tensors;
        *n = (size_t)m->gguf->n_tensors;
    } else {
        *tensors = m->hf->tensors;
        *n = m->hf->n_tensors;
    }
}

const ss_tensor *ss_model_find_tensor(const ss_model *m, const char *name)
{
    const ss_tensor *t;
    size_t n;
    ss_model_tensors(m, &t, &n);
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name))
            return &t[i];
    return NULL;
}

/* Copies tensor `name` into dst after checking its dims are {d0, d1}
 * (d1 = 0 for a vector). */
static int ss_bind(const ss_model *m, ss_tensor *dst, const char *name, int64_t d0, int64_t d1,
                   ss_error *err)
{
    const ss_tensor *t = ss_model_find_tensor(m, name);
    if (!t)
        return ss_fail(err, "%s: tensor %s is missing", m->path, name);
    int64_t want[4] = {d0, d1 ? d1 : 1, 1, 1};
    for (int d = 0; d < 4; d++)
        if (t->dims[d] != want[d]) {
            if (d1)
                return ss_fail(err, "%s: tensor %s has dims {%" PRId64 ", %" PRId64 ", %" PRId64
                                    ", %" PRId64 "}, expected {%" PRId64 ", %" PRId64 "}",
                               m->path, name, t->dims[0], t->dims[1], t->dims[2], t->dims[3], d0,
                               d1);
            return ss_fail(err, "%s: tensor %s has dims {%" PRId64 ", %" PRId64 ", %" PRId64
                                ", %" PRId64 "}, expected {%" PRId64 "}",
                           m->path, name, t->dims[0], t->dims[1], t->dims[2], t->dims[3], d0);
        }
    *dst = *t;
    return 0;
}

typedef enum { SS_SHAPE_NORM, SS_SHAPE_Q, SS_SHAPE_KV, SS_SHAPE_O, SS_SHAPE_UP, SS_SHAPE_DOWN } ss_shape;

/* Per-layer weights: name patterns in both namings and expected shape. */
static const struct {
    const char *gguf, *hf;
    size_t offset; /* into ss_layer_weights */
    ss_shape shape;
} ss_layer_slots[] = {
    {"blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight",
     offsetof(ss_layer_weights, attn_norm), SS_SHAPE_NORM},
    {"blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight",
     offsetof(ss_layer_weights, wq), SS_SHAPE_Q},
    {"blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight",
     offsetof(ss_layer_weights, wk), SS_SHAPE_KV},
    {"blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight",
     offsetof(ss_layer_weights, wv), SS_SHAPE_KV},
    {"blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight",
     offsetof(ss_layer_weights, wo), SS_SHAPE_O},
    {"blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight",
     offsetof(ss_layer_weights, ffn_norm), SS_SHAPE_NORM},
    {"blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight",
     offsetof(ss_layer_weights, w_gate), SS_SHAPE_UP},
    {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight",
     offsetof(ss_layer_weights, w_up), SS_SHAPE_UP},
    {"blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight",
     offsetof(ss_layer_weights, w_down), SS_SHAPE_DOWN},
};

static void ss_shape_dims(const ss_config *c, ss_shape s, int64_t *d0, int64_t *d1)
{
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    switch (s) {
    case SS_SHAPE_NORM: *d0 = c->d_model; *d1 = 0; break;
    case SS_SHAPE_Q: *d0 = c->d_model; *d1 = q; break;
    case SS_SHAPE_KV: *d0 = c->d_model; *d1 = kv; break;
    case SS_SHAPE_O: *d0 = q; *d1 = c->d_model; break;
    case SS_SHAPE_UP: *d0 = c->d_model; *d1 = c->d_ff; break;
    case SS_SHAPE_DOWN: *d0 = c->d_ff; *d1 = c->d_model; break;
    }
}

/* Norm weights are small, so a NaN or infinity in one is refused at load,
 * named by tensor, row and column (engines check the matrices as they
 * decode them; doing it here would read every weight twice). */
static int ss_check_norms(const ss_model *m, ss_error *err)
{
    float *buf = ss_malloc((size_t)m->cfg.d_model * sizeof *buf, err); /* [d_model] */
    int rc = buf ? ss_model_tensor_rows(m, &m->output_norm, 0, 1, buf, err) : -1;
    for (int l = 0; rc == 0 && l < m->cfg.n_layers; l++)
        rc = ss_model_tensor_rows(m, &m->layers[l].attn_norm, 0, 1, buf, err) ||
                     ss_model_tensor_rows(m, &m->layers[l].ffn_norm, 0, 1, buf, err)
                 ? -1
                 : 0;
    free(buf);
    return rc;
}

static int ss_bind_all(ss_model *m, ss_error *err)
{
    const ss_config *c = &m->cfg;
    int hf = m->format == SS_FORMAT_HF;
    if (ss_bind(m, &m->tok_embd, hf ? "model.embed_tokens.weight" : "token_embd.weight",
                c->d_model, c->vocab_size, err) ||
        ss_bind(m, &m->output_norm, hf ? "model.norm.weight" : "output_norm.weight", c->d_model,
                0, err))
        return -1;
    const char *out_name = hf ? "lm_head.weight" : "output.weight";
    if (hf && c->tied_embeddings) {
        m->output = m->tok_embd;
    } else if (!hf && !ss_model_find_tensor(m, out_name)) {
        m->cfg.tied_embeddings = 1; /* llama.cpp drops output.weight when tied */
        m->output = m->tok_embd;
    } else if (ss_bind(m, &m->output, out_name, c->d_model, c->vocab_size, err)) {
        return -1;
    }
    const ss_tensor *all;
    size_t n_tensors, per_layer = sizeof ss_layer_slots / sizeof ss_layer_slots[0];
    ss_model_tensors(m, &all, &n_tensors);
    if ((size_t)c->n_layers > n_tensors / per_layer) /* before allocating for each layer */
        return ss_fail(err, "%s: %s = %d, but %d layers need %zu tensors and the file holds %zu",
                       m->path, hf ? "num_hidden_layers" : "llama.block_count", c->n_layers,
                       c->n_layers, (size_t)c->n_layers * per_layer, n_tensors);
    m->layers = ss_calloc((size_t)c->n_layers, sizeof *m->layers, err);
    if (!m->layers)
        return -1;
    for (int l = 0; l < c->n_layers; l++)
        for (size_t s = 0; s < sizeof ss_layer_slots / sizeof ss_layer_slots[0]; s++) {
            char name[96];
            snprintf(name, sizeof name, hf ? ss_layer_slots[s].hf : ss_layer_slots[s].gguf, l);
            int64_t d0 = 0, d1 = 0;
            ss_shape_dims(c, ss_layer_slots[s].shape, &d0, &d1);
            ss_tensor *dst = (ss_tensor *)((char *)&m->layers[l] + ss_layer_slots[s].offset);
            if (ss_bind(m, dst, name, d0, d1, err))
                return -1;
        }
    return ss_check_norms(m, err);
}

/* ---------------------------------------------------------------- config checks */

static int ss_check_config(const char *path, const ss_config *c, ss_error *err)
{
    if (c->n_layers <= 0 || c->d_model <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
        c->head_dim <= 0 || c->d_ff <= 0 || c->vocab_size <= 0 || c->max_ctx <= 0)
        return ss_fail(err, "%s: config has a non-positive size (layers %d, d_model %d, heads %d, "
                            "kv heads %d, head_dim %d, d_ff %d, vocab %d, context %d)",
                       path, c->n_layers, c->d_model, c->n_heads, c->n_kv_heads, c->head_dim,
                       c->d_ff, c->vocab_size, c->max_ctx);
    if (c->n_heads % c->n_kv_heads)
        return ss_fail(err, "%s: %d query heads are not a multiple of %d kv heads", path,
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return ss_fail(err, "%s: head_dim %d is odd (rotary embedding needs pairs)", path,
                       c->head_dim);
    if (!(c->rms_eps > 0) || !(c->rope_theta > 0) || isinf(c->rms_eps) || isinf(c->rope_theta))
        return ss_fail(err, "%s: rms eps %g and rope theta %g must be positive and finite", path,
                       (double)c->rms_eps, (double)c->rope_theta);
    return 0;
}

/* ---------------------------------------------------------------- GGUF config */

static int ss_gguf_int(const ss_gguf *g, const char *key, int required, int fallback, int *out,
                       ss_error *err)
{
    uint64_t v;
    if (!ss_gguf_find(g, key) && !required) {
        *out = fallback;
        return 0;
    }
    if (ss_gguf_get_u64(g, key, &v, err))
        return -1;
    if (v == 0 || v > INT32_MAX)
        return ss_fail(err, "%s: key %s = %" PRIu64 " is out of range", g->path, key, v);
    *out = (int)v;
    return 0;
}

static int ss_gguf_float(const ss_gguf *g, const char *key, int required, float fallback,
                         float *out, ss_error *err)
{
    double v;
    if (!ss_gguf_find(g, key) && !required) {
        *out = fallback;
        return 0;
    }
    if (ss_gguf_get_f64(g, key, &v, err))
        return -1;
    *out = (float)v;
    return 0;
}

static int ss_check_arch(const ss_gguf *g, ss_error *err)
{
    ss_gguf_str arch;
    if (ss_gguf_get_str(g, "general.architecture", &arch, err))
        return -1;
    if (arch.len != 5 || memcmp(arch.ptr, "llama", 5))
        return ss_fail(err, "%s: general.architecture is \"%.*s\"; safesteer supports only "
                            "\"llama\"",
                       g->path, (int)(arch.len < 64 ? arch.len : 64), arch.ptr);
    return 0;
}

/* llama3 rope factor of one frequency (llama.cpp's rope_freqs convention:
 * the angle is divided by it). */
static double ss_llama3_factor(double inv_freq, double factor, double low, double high, double orig)
{
    double wavelen = 2.0 * M_PI / inv_freq;
    if (wavelen < orig / high)
        return 1.0;
    if (wavelen > orig / low)
        return factor;
    double smooth = (orig / wavelen - low) / (high - low);
    return 1.0 / ((1.0 - smooth) / factor + smooth);
}

/* Recovers llama3 parameters from per-frequency factors f[n].  Only the
 * ratios orig/low and orig/high matter, so low_freq_factor is fixed at 1;
 * the two unknowns come from two frequencies in the smoothing band, and the
 * result is checked against every factor. */
static int ss_fit_llama3(const ss_gguf *g, const float *f, int n, ss_config *c, ss_error *err)
{
    double F = f[n - 1];
    int all_one = 1;
    for (int j = 0; j < n; j++)
        all_one &= f[j] == 1.0f;
    if (all_one)
        return 0; /* factors of 1 are no scaling */
    int mid[2], n_mid = 0;
    for (int j = 0; j < n; j++)
        if (fabs(f[j] - 1.0) > 1e-6 && fabs(f[j] - F) > 1e-6 * F && n_mid < 2)
            mid[n_mid++] = j;
    if (F <= 1.0 || n_mid < 2)
        return ss_fail(err, "%s: tensor rope_freqs.weight: cannot derive llama3 rope scaling "
                            "parameters (factor %g, %d frequencies in the smoothing band, need 2)",
                       g->path, F, n_mid);
    /* smooth_j = (orig / wavelen_j - 1) / (high - 1): linear in (orig, high - 1). */
    double a[2], s[2];
    for (int k = 0; k < 2; k++) {
        int j = mid[k];
        double inv = pow(c->rope_theta, -2.0 * j / c->head_dim);
        a[k] = inv / (2.0 * M_PI); /* 1 / wavelen */
        s[k] = (1.0 / f[j] - 1.0 / F) / (1.0 - 1.0 / F);
    }
    double det = -a[0] * s[1] + a[1] * s[0];
    double orig = (-s[1] + s[0]) / det; /* solves a_k orig - s_k b = 1 */
    double b = (a[0] - a[1]) / det;
    double high = 1.0 + b;
    for (int j = 0; j < n; j++) {
        double inv = pow(c->rope_theta, -2.0 * j / c->head_dim);
        double want = ss_llama3_factor(inv, F, 1.0, high, orig);
        if (!(fabs(want - f[j]) <= 1e-4 * f[j]))
            return ss_fail(err, "%s: tensor rope_freqs.weight: factor %d = %g does not follow "
                                "the llama3 formula (expected %g)",
                           g->path, j, (double)f[j], want);
    }
    c->rope_scaling = SS_ROPE_SCALING_LLAMA3;
    c->rope_factor = (float)F;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = (float)high;
    c->rope_orig_ctx = (int)lround(orig);
    return 0;
}

static int ss_gguf_rope_scaling(const ss_gguf *g, ss_config *c, ss_error *err)
{
    c->rope_scaling = SS_ROPE_SCALING_NONE;
    const ss_gguf_kv *type = ss_gguf_find(g, "llama.rope.scaling.type");
    if (type && (type->type != SS_GGUF_STRING ||
                 !(type->str.len == 4 && !memcmp(type->str.ptr, "none", 4))))
        return ss_fail(err, "%s: llama.rope.scaling.type \"%.*s\" is not supported", g->path,
                       type->type == SS_GGUF_STRING ? (int)type->str.len : 1,
                       type->type == SS_GGUF_STRING ? type->str.ptr : "?");
    const ss_tensor *rf = ss_gguf_tensor(g, "rope_freqs.weight");
    if (!rf)
        return 0;
    int n = c->head_dim / 2;
    if (rf->type != SS_TYPE_F32 || rf->n_dims != 1 || rf->dims[0] != n)
        return ss_fail(err, "%s: tensor rope_freqs.weight is %s with %" PRId64 " values, "
                            "expected F32 with %d (head_dim / 2)",
                       g->path, ss_type_name(rf->type), ss_tensor_nelem(rf), n);
    float f[512]; /* [head_dim/2] */
    if (n > 512)
        return ss_fail(err, "%s: head_dim %d is too large", g->path, c->head_dim);
    memcpy(f, rf->data, (size_t)n * sizeof(float));
    return ss_fit_llama3(g, f, n, c, err);
}

/* head_dim from attention.key_length or rope.dimension_count, which must
 * agree (partial rotary embeddings are not Llama). */
static int ss_gguf_head_dim(const ss_gguf *g, ss_config *c, ss_error *err)
{
    int dflt = c->d_model / c->n_heads, key_len, rope_dim;
    if (ss_gguf_int(g, "llama.attention.key_length", 0, 0, &key_len, err) ||
        ss_gguf_int(g, "llama.rope.dimension_count", 0, 0, &rope_dim, err))
        return -1;
    c->head_dim = key_len ? key_len : rope_dim ? rope_dim : dflt;
    if (rope_dim && rope_dim != c->head_dim)
        return ss_fail(err, "%s: llama.rope.dimension_count %d differs from head_dim %d "
                            "(partial rotary embeddings are not supported)",
                       g->path, rope_dim, c->head_dim);
    return 0;
}

static int ss_gguf_config(const ss_gguf *g, ss_config *c, ss_error *err)
{
    memset(c, 0, sizeof *c);
    if (ss_check_arch(g, err) ||
        ss_gguf_int(g, "llama.block_count", 1, 0, &c->n_layers, err) ||
        ss_gguf_int(g, "llama.embedding_length", 1, 0, &c->d_model, err) ||
        ss_gguf_int(g, "llama.feed_forward_length", 1, 0, &c->d_ff, err) ||
        ss_gguf_int(g, "llama.attention.head_count", 1, 0, &c->n_heads, err) ||
        ss_gguf_int(g, "llama.attention.head_count_kv", 0, c->n_heads, &c->n_kv_heads, err) ||
        ss_gguf_int(g, "llama.context_length", 1, 0, &c->max_ctx, err) ||
        ss_gguf_float(g, "llama.attention.layer_norm_rms_epsilon", 1, 0, &c->rms_eps, err) ||
        ss_gguf_float(g, "llama.rope.freq_base", 0, 10000.0f, &c->rope_theta, err) ||
        ss_gguf_head_dim(g, c, err))
        return -1;
    const ss_tensor *emb = ss_gguf_tensor(g, "token_embd.weight");
    if (ss_gguf_int(g, "llama.vocab_size", 0, emb ? (int)emb->dims[1] : 0, &c->vocab_size, err))
        return -1;
    c->rope_neox = 0; /* llama.cpp permuted Q/K rows: pairs (2i, 2i+1) */
    return ss_gguf_rope_scaling(g, c, err);
}

/* ---------------------------------------------------------------- loading */

static int ss_gguf_string_dup(const ss_gguf *g, const char *key, char **out, ss_error *err)
{
    const ss_gguf_kv *kv = ss_gguf_find(g, key);
    *out = NULL;
    if (!kv || kv->type != SS_GGUF_STRING)
        return 0;
    *out = ss_malloc(kv->str.len + 1, err);
    if (!*out)
        return -1;
    memcpy(*out, kv->str.ptr, kv->str.len);
    (*out)[kv->str.len] = 0;
    return 0;
}

static int ss_load_gguf(ss_model *m, ss_error *err)
{
    m->format = SS_FORMAT_GGUF;
    if (ss_gguf_open(m->path, &m->gguf, err) || ss_gguf_config(m->gguf, &m->cfg, err) ||
        ss_gguf_string_dup(m->gguf, "tokenizer.chat_template", &m->chat_template, err))
        return -1;
    const ss_gguf_kv *name = ss_gguf_find(m->gguf, "general.name");
    const char *base = strrchr(m->path, '/');
    if (name && name->type == SS_GGUF_STRING)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name->str.len < 255 ? name->str.len : 255),
                 name->str.ptr);
    else
        snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : m->path);
    return 0;
}

static int ss_load_hf(ss_model *m, ss_error *err)
{
    m->format = SS_FORMAT_HF;
    size_t len = strlen(m->path);
    while (len > 1 && m->path[len - 1] == '/')
        m->path[--len] = 0;
    const char *base = strrchr(m->path, '/');
    snprintf(m->name, sizeof m->name, "%s", base ? base + 1 : m->path);
    return ss_hf_read_config(m->path, &m->cfg, err) || ss_hf_open(m->path, &m->hf, err) ||
                   ss_hf_chat_template(m->path, &m->chat_template, err)
               ? -1
               : 0;
}

int ss_model_load(const char *path, ss_model **out, ss_error *err)
{
    *out = NULL;
    if (!strncmp(path, "synthetic:", 10))
        return ss_model_synthetic(path + 10, out, err);
    ss_model *m = ss_calloc(1, sizeof *m, err);
    if (!m)
        return -1;
    if (strlen(path) >= sizeof m->path) {
        free(m);
        return ss_fail(err, "%s: path is too long", path);
    }
    strcpy(m->path, path);
    struct stat st;
    int rc;
    if (stat(path, &st) != 0)
        rc = ss_fail(err, "%s: no such file or folder", path);
    else if (S_ISDIR(st.st_mode))
        rc = ss_load_hf(m, err);
    else
        rc = ss_load_gguf(m, err);
    if (rc == 0)
        rc = ss_check_config(m->path, &m->cfg, err);
    if (rc == 0)
        rc = ss_bind_all(m, err);
    if (rc) {
        ss_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void ss_model_free(ss_model *m)
{
    if (!m)
        return;
    ss_gguf_close(m->gguf);
    ss_hf_close(m->hf);
    free(m->layers);
    free(m->chat_template);
    free(m->random_data);
    free(m);
}

int ss_model_tensor_check(const ss_model *m, const ss_tensor *t, const char *what, int64_t in,
                          int64_t out, ss_error *err)
{
    if (!t->data)
        return ss_fail(err, "%s: tensor %s (%s) is missing", m->path, t->name, what);
    if (!ss_type_supported(t->type))
        return ss_fail(err, "%s: tensor %s has type %s, which safesteer cannot decode",
                       m->path, t->name, ss_type_name(t->type));
    if (t->dims[0] != in || ss_tensor_nelem(t) != in * out)
        return ss_fail(err,
                       "%s: tensor %s (%s) has dims {%lld, %lld, %lld, %lld}, expected "
                       "{%lld, %lld}",
                       m->path, t->name, what, (long long)t->dims[0], (long long)t->dims[1],
                       (long long)t->dims[2], (long long)t->dims[3], (long long)in,
                       (long long)out);
    return 0;
}

int ss_model_tensor_rows(const ss_model *m, const ss_tensor *t, int64_t row0, int64_t nrows,
                         float *dst, ss_error *err)
{
    ss_tensor_rows_f32(t, row0, nrows, dst);
    int64_t in = t->dims[0], n = nrows * in;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) /* branch-free, so it vectorises */
        bad |= !(fabsf(dst[i]) <= FLT_MAX);
    for (int64_t i = 0; bad && i < n; i++)
        if (!isfinite(dst[i]))
            return ss_fail(err, "%s: tensor %s has %g at row %lld, column %lld", m->path,
                           t->name, (double)dst[i], (long long)(row0 + i / in),
                           (long long)(i % in));
    return 0;
}

int64_t ss_model_param_count(const ss_model *m)
{
    int64_t n = ss_tensor_nelem(&m->tok_embd) + ss_tensor_nelem(&m->output_norm);
    if (!m->cfg.tied_embeddings)
        n += ss_tensor_nelem(&m->output);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const ss_layer_weights *w = &m->layers[l];
        const ss_tensor *ts[] = {&w->attn_norm, &w->wq, &w->wk, &w->wv, &w->wo,
                                 &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            n += ss_tensor_nelem(ts[i]);
    }
    return n;
}

const char *ss_default_model_path(void)
{
    static char path[1024];
    const char *env = getenv("SAFESTEER_MODEL");
    if (env && *env)
        return env;
    const char *cache = getenv("SAFESTEER_CACHE");
    if (cache && *cache)
        snprintf(path, sizeof path, "%s/models/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    else
        snprintf(path, sizeof path, "%s/.cache/safesteer/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : ".");
    return path;
}
