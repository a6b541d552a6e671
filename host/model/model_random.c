/* model_random.c - ss_model_random: a Llama model with random weights held
 * in memory, for benchmarks of model shapes and for engine tests that need
 * no model file; the named shapes of real models; and synthetic model
 * specs ("synthetic:llama3-8b,tokenizer=...") that sweeps and the bench
 * load like files. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/model.h"

/* Tensor descriptor of dims {in, out} (out 1: a vector), no data yet. */
static void ss_random_tensor(ss_tensor *t, const char *name, int64_t in, int64_t out)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = SS_TYPE_F32;
    t->n_dims = out > 1 ? 2 : 1;
    t->dims[0] = in;
    t->dims[1] = out;
    t->dims[2] = t->dims[3] = 1;
    t->nbytes = (size_t)(in * out) * sizeof(float);
}

/* Uniform in [-1, 1) from a xorshift64 state (24 random bits). */
static float ss_random_uniform(uint64_t *rng)
{
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    return (float)(*rng >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* Points t at the next nelem floats of *next and fills them with
 * offset + scale * U(-1, 1). */
static void ss_random_fill(ss_tensor *t, float **next, float offset, float scale, int bf16_exact,
                           uint64_t *rng)
{
    float *p = *next;
    int64_t n = ss_tensor_nelem(t);
    for (int64_t i = 0; i < n; i++) {
        float v = offset + scale * ss_random_uniform(rng);
        p[i] = bf16_exact ? ss_bf16_to_f32(ss_f32_to_bf16(v)) : v;
    }
    t->data = p;
    *next = p + n;
}

int ss_model_random(const ss_config *cfg, const ss_random_scales *s, uint64_t seed,
                    ss_model **out, ss_error *err)
{
    *out = NULL;
    ss_model *m = ss_calloc(1, sizeof *m, err);
    if (!m)
        return -1;
    m->cfg = *cfg;
    m->synthetic_seed = seed;
    m->weights_on_device = s == NULL;
    snprintf(m->path, sizeof m->path, "synthetic:seed=%llu", (unsigned long long)seed);
    snprintf(m->name, sizeof m->name, "random");
    m->format = SS_FORMAT_SYNTHETIC;
    int L = cfg->n_layers, tied = cfg->tied_embeddings;
    int64_t d = cfg->d_model, qd = (int64_t)cfg->n_heads * cfg->head_dim;
    int64_t kvd = (int64_t)cfg->n_kv_heads * cfg->head_dim, ff = cfg->d_ff, V = cfg->vocab_size;
    m->layers = ss_calloc((size_t)L, sizeof *m->layers, err);
    if (!m->layers) {
        ss_model_free(m);
        return -1;
    }
    ss_random_tensor(&m->tok_embd, "token_embd.weight", d, V);
    ss_random_tensor(&m->output_norm, "output_norm.weight", d, 1);
    if (!tied)
        ss_random_tensor(&m->output, "output.weight", d, V);
    for (int l = 0; l < L; l++) {
        ss_layer_weights *w = &m->layers[l];
        ss_random_tensor(&w->attn_norm, "attn_norm", d, 1);
        ss_random_tensor(&w->wq, "attn_q", d, qd);
        ss_random_tensor(&w->wk, "attn_k", d, kvd);
        ss_random_tensor(&w->wv, "attn_v", d, kvd);
        ss_random_tensor(&w->wo, "attn_output", qd, d);
        ss_random_tensor(&w->ffn_norm, "ffn_norm", d, 1);
        ss_random_tensor(&w->w_gate, "ffn_gate", d, ff);
        ss_random_tensor(&w->w_up, "ffn_up", d, ff);
        ss_random_tensor(&w->w_down, "ffn_down", ff, d);
    }
    if (s) {
        /* one block for every tensor, sized from the descriptors above */
        int64_t n = ss_model_param_count(m);
        m->random_data = ss_malloc((size_t)n * sizeof(float), err);
        if (!m->random_data) {
            ss_model_free(m);
            return ss_fail_context(err, "random model of %lld parameters", (long long)n);
        }
        float *next = m->random_data;
        uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
        int bf = s->bf16_exact;
        ss_random_fill(&m->tok_embd, &next, 0.0f, s->embd, bf, &rng);
        ss_random_fill(&m->output_norm, &next, 1.0f, s->norm, bf, &rng);
        if (!tied)
            ss_random_fill(&m->output, &next, 0.0f, s->output, bf, &rng);
        for (int l = 0; l < L; l++) {
            ss_layer_weights *w = &m->layers[l];
            ss_random_fill(&w->attn_norm, &next, 1.0f, s->norm, bf, &rng);
            ss_random_fill(&w->wq, &next, 0.0f, s->wq, bf, &rng);
            ss_random_fill(&w->wk, &next, 0.0f, s->wk, bf, &rng);
            ss_random_fill(&w->wv, &next, 0.0f, s->wv, bf, &rng);
            ss_random_fill(&w->wo, &next, 0.0f, s->wo, bf, &rng);
            ss_random_fill(&w->ffn_norm, &next, 1.0f, s->norm, bf, &rng);
            ss_random_fill(&w->w_gate, &next, 0.0f, s->w_gate, bf, &rng);
            ss_random_fill(&w->w_up, &next, 0.0f, s->w_up, bf, &rng);
            ss_random_fill(&w->w_down, &next, 0.0f, s->w_down, bf, &rng);
        }
    }
    if (tied)
        m->output = m->tok_embd;
    *out = m;
    return 0;
}

/* ---------------------------------------------------------------- named shapes */

/* n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab, max_ctx,
 * eps, theta, neox, scaling, factor, low, high, orig ctx, tied */
static const struct {
    const char *name;
    ss_config cfg;
} shapes[] = {
    {"smollm2-135m", {30, 576, 9, 3, 64, 1536, 49152, 8192, 1e-5f, 100000.0f, 0, 0, 0, 0, 0, 0, 1}},
    {"llama2-7b", {32, 4096, 32, 32, 128, 11008, 32000, 4096, 1e-5f, 10000.0f, 0, 0, 0, 0, 0, 0, 0}},
    {"llama3-8b",
     {32, 4096, 32, 8, 128, 14336, 128256, 8192, 1e-5f, 500000.0f, 0, SS_ROPE_SCALING_LLAMA3,
      8.0f, 1.0f, 4.0f, 8192, 0}},
};

int ss_model_shape(const char *name, ss_config *cfg, ss_error *err)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(name, shapes[i].name)) {
            *cfg = shapes[i].cfg;
            return 0;
        }
    return ss_fail(err, "unknown model shape \"%s\" (expected smollm2-135m, llama2-7b or "
                        "llama3-8b)", name);
}

/* ---------------------------------------------------------------- synthetic specs */

/* The values a synthetic model's tensors take: projections scaled by
 * 1/sqrt(fan_in) so activations stay O(1) through every layer (its text is
 * noise, its timing real). */
static ss_random_scales synthetic_scales(const ss_config *c)
{
    float sd = 1.0f / sqrtf((float)c->d_model);
    return (ss_random_scales){.embd = 1.0f, .output = sd, .norm = 0.1f, .wq = sd, .wk = sd,
                              .wv = sd, .wo = 1.0f / sqrtf((float)c->n_heads * c->head_dim),
                              .w_gate = sd, .w_up = sd, .w_down = 1.0f / sqrtf((float)c->d_ff),
                              .bf16_exact = 1};
}

/* The options after the shape: seed=N, tokenizer=GGUF, weights=host|device. */
typedef struct {
    uint64_t seed;
    char tokenizer[1024];
    int on_device;
} synthetic_opts;

static int parse_synthetic(const char *spec, char *shape, size_t cap, synthetic_opts *o,
                           ss_error *err)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    size_t n = strcspn(spec, ",");
    snprintf(shape, cap, "%.*s", (int)n, spec);
    for (const char *p = spec + n; *p == ','; p += n) {
        p++;
        n = strcspn(p, ",");
        char item[1100];
        snprintf(item, sizeof item, "%.*s", (int)n, p);
        char *eq = strchr(item, '=');
        if (!eq)
            return ss_fail(err, "synthetic:%s: option \"%s\" is not KEY=VALUE", spec, item);
        *eq++ = '\0';
        if (!strcmp(item, "seed")) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(eq, &end, 10);
            if (!*eq || *end || errno)
                return ss_fail(err, "synthetic:%s: seed \"%s\" is not a number", spec, eq);
            o->seed = v;
        } else if (!strcmp(item, "tokenizer")) {
            snprintf(o->tokenizer, sizeof o->tokenizer, "%s", eq);
        } else if (!strcmp(item, "weights") && (!strcmp(eq, "host") || !strcmp(eq, "device"))) {
            o->on_device = !strcmp(eq, "device");
        } else {
            return ss_fail(err, "synthetic:%s: unknown option %s=%s (expected seed=N, "
                                "tokenizer=GGUF, weights=host|device)", spec, item, eq);
        }
    }
    return 0;
}

/* The GGUF whose tokenizer a synthetic model takes, and its vocabulary size
 * (which the embedding shapes follow). */
static int open_tokenizer(const char *path, ss_gguf **g, int *vocab, ss_error *err)
{
    if (ss_gguf_open(path, g, err) < 0)
        return ss_fail_context(err, "synthetic model tokenizer");
    const ss_gguf_kv *tokens = ss_gguf_find(*g, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != SS_GGUF_ARRAY || tokens->arr_len < 1 ||
        tokens->arr_len > (1u << 24)) {
        ss_gguf_close(*g);
        *g = NULL;
        return ss_fail(err, "%s: no tokenizer.ggml.tokens array to take the tokenizer from",
                       path);
    }
    *vocab = (int)tokens->arr_len;
    return 0;
}

int ss_model_synthetic(const char *spec, ss_model **out, ss_error *err)
{
    *out = NULL;
    char shape[64];
    synthetic_opts o;
    ss_config cfg;
    if (parse_synthetic(spec, shape, sizeof shape, &o, err) < 0 ||
        ss_model_shape(shape, &cfg, err) < 0)
        return -1;
    ss_gguf *tok = NULL;
    if (o.tokenizer[0] && open_tokenizer(o.tokenizer, &tok, &cfg.vocab_size, err) < 0)
        return -1;
    ss_random_scales s = synthetic_scales(&cfg);
    if (ss_model_random(&cfg, o.on_device ? NULL : &s, o.seed, out, err) < 0) {
        ss_gguf_close(tok);
        return -1;
    }
    ss_model *m = *out;
    m->gguf = tok;
    snprintf(m->path, sizeof m->path, "synthetic:%s", spec);
    snprintf(m->name, sizeof m->name, "%s (synthetic)", shape);
    ss_gguf_str t;
    if (tok && ss_gguf_get_str(tok, "tokenizer.chat_template", &t, NULL) == 0 &&
        !(m->chat_template = strndup(t.ptr, t.len))) {
        ss_model_free(m);
        *out = NULL;
        return ss_fail(err, "out of memory");
    }
    return 0;
}
