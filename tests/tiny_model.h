/* tiny_model.h - a small random Llama-shaped ss_model held in memory (F32
 * tensors), for engine-level tests of steering and capture without a model
 * file.  Header-only so each test binary gets its own copy. */
#ifndef SS_TESTS_TINY_MODEL_H
#define SS_TESTS_TINY_MODEL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/model.h"

typedef struct {
    ss_model m;
    float *blocks[64];   /* every tensor's data, freed by tiny_model_free */
    int n_blocks;
} tiny_model;

static float tiny_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

/* dims {in, out}; values offset + scale * U(-1, 1) */
static void tiny_tensor(tiny_model *t, ss_tensor *x, const char *name, int64_t in, int64_t out,
                        float offset, float scale, uint64_t *seed)
{
    float *w = malloc((size_t)(in * out) * sizeof(float));
    for (int64_t i = 0; i < in * out; i++)
        w[i] = offset + scale * tiny_rand(seed);
    t->blocks[t->n_blocks++] = w;
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->type = SS_TYPE_F32;
    x->n_dims = out > 1 ? 2 : 1;
    x->dims[0] = in;
    x->dims[1] = out;
    x->dims[2] = x->dims[3] = 1;
    x->data = w;
    x->nbytes = (size_t)(in * out) * sizeof(float);
}

/* head_dim and d_model chosen by the caller (the CUDA engine wants head_dim
 * 64, 96 or 128); 4 query heads over 2 KV heads. */
static void tiny_model_init_dims(tiny_model *t, uint64_t seed, int d_model, int head_dim)
{
    memset(t, 0, sizeof *t);
    ss_model *m = &t->m;
    snprintf(m->path, sizeof m->path, "tiny-model");
    snprintf(m->name, sizeof m->name, "tiny");
    m->format = SS_FORMAT_GGUF;
    ss_config *c = &m->cfg;
    c->n_layers = 4;
    c->d_model = d_model;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = head_dim;
    c->d_ff = 48;
    c->vocab_size = 64;
    c->max_ctx = 128;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tied_embeddings = 1;
    int d = c->d_model, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    tiny_tensor(t, &m->tok_embd, "token_embd.weight", d, c->vocab_size, 0, 1.0f, &seed);
    tiny_tensor(t, &m->output_norm, "output_norm.weight", d, 1, 1.0f, 0.1f, &seed);
    m->output = m->tok_embd;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int l = 0; l < c->n_layers; l++) {
        ss_layer_weights *w = &m->layers[l];
        tiny_tensor(t, &w->attn_norm, "attn_norm", d, 1, 1.0f, 0.1f, &seed);
        tiny_tensor(t, &w->wq, "wq", d, qd, 0, 0.3f, &seed);
        tiny_tensor(t, &w->wk, "wk", d, kvd, 0, 0.3f, &seed);
        tiny_tensor(t, &w->wv, "wv", d, kvd, 0, 0.3f, &seed);
        tiny_tensor(t, &w->wo, "wo", qd, d, 0, 0.3f, &seed);
        tiny_tensor(t, &w->ffn_norm, "ffn_norm", d, 1, 1.0f, 0.1f, &seed);
        tiny_tensor(t, &w->w_gate, "w_gate", d, c->d_ff, 0, 0.3f, &seed);
        tiny_tensor(t, &w->w_up, "w_up", d, c->d_ff, 0, 0.3f, &seed);
        tiny_tensor(t, &w->w_down, "w_down", c->d_ff, d, 0, 0.3f, &seed);
    }
}

static inline void tiny_model_init(tiny_model *t, uint64_t seed)
{
    tiny_model_init_dims(t, seed, 32, 8);
}

static void tiny_model_free(tiny_model *t)
{
    for (int i = 0; i < t->n_blocks; i++)
        free(t->blocks[i]);
    free(t->m.layers);
}

#endif
