/* sample.h - the next token from a row of logits: greedy, temperature and
 * top-p sampling (seeded and reproducible: the same seed, logits and
 * parameters give the same token on every machine), plus the log-softmax
 * and top-k that per-step log-probabilities use. */
#ifndef SAFESTEER_SAMPLE_H
#define SAFESTEER_SAMPLE_H

#include <stdint.h>

#include "safesteer/util.h"

typedef struct {
    float temperature;   /* 0 = greedy (argmax) */
    float top_p;         /* 1 = off */
    uint64_t seed;
} ss_sampler_params;

typedef struct {
    ss_sampler_params p;
    uint64_t rng;        /* splitmix64/xorshift state */
    float *scratch;      /* [vocab] probabilities */
    int *order;          /* [vocab] sort indices for top-p */
    int vocab;
} ss_sampler;

int ss_sampler_init(ss_sampler *s, const ss_sampler_params *p, int vocab, ss_error *err);
void ss_sampler_free(ss_sampler *s);
int ss_sample(ss_sampler *s, const float *logits);
/* Index of the largest logit (lowest index on ties). */
int ss_argmax(const float *logits, int n);
/* log-softmax of logits into out[n]. */
void ss_log_softmax(const float *logits, float *out, int n);
/* The k largest entries of v (descending), ids[k] and vals[k]. */
void ss_top_k(const float *v, int n, int k, int *ids, float *vals);

#endif
