/* model_random.c - ss_model_random: a Llama model with random weights held
 * in memory, for benchmarks of model shapes and for engine tests that need
 * no model file. */
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
    snprintf(m->path, sizeof m->path, "synthetic:seed=%llu", (unsigned long long)seed);
    snprintf(m->name, sizeof m->name, "random");
    m->format = SS_FORMAT_GGUF;
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
