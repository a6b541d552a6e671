/* tiny_model.h - a small random Llama-shaped ss_model held in memory (F32
 * tensors from ss_model_random), for engine-level tests of steering and
 * capture without a model file.  Header-only so each test binary gets its
 * own copy. */
#ifndef SS_TESTS_TINY_MODEL_H
#define SS_TESTS_TINY_MODEL_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "safesteer/model.h"

/* Uniform in [-1, 1) from an LCG state, for test vectors. */
static inline float tiny_rand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

/* head_dim and d_model chosen by the caller (the CUDA engine wants head_dim
 * 64, 96 or 128); 4 layers, 4 query heads over 2 KV heads, tied embeddings;
 * norms 1 + 0.1 U(-1, 1), projections 0.3 U(-1, 1).  Free with
 * ss_model_free. */
static inline ss_model *tiny_model_new_dims(uint64_t seed, int d_model, int head_dim)
{
    ss_config c = {0};
    c.n_layers = 4;
    c.d_model = d_model;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = head_dim;
    c.d_ff = 48;
    c.vocab_size = 64;
    c.max_ctx = 128;
    c.rms_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.tied_embeddings = 1;
    const ss_random_scales s = {.embd = 1.0f, .norm = 0.1f, .wq = 0.3f, .wk = 0.3f,
                                .wv = 0.3f, .wo = 0.3f, .w_gate = 0.3f, .w_up = 0.3f,
                                .w_down = 0.3f};
    ss_model *m = NULL;
    ss_error err;
    cr_assert_eq(ss_model_random(&c, &s, seed, &m, &err), 0, "tiny model: %s", err.msg);
    return m;
}

static inline ss_model *tiny_model_new(uint64_t seed)
{
    return tiny_model_new_dims(seed, 32, 8);
}

#endif
