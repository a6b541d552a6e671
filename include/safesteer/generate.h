/* generate.h - batched text generation on any engine: prefill, sampling,
 * stop tokens and stop strings, streamed text, per-step log-probabilities,
 * and a steering plan per prompt (so a whole grid of plans runs as one
 * batch).  Used by `safesteer generate`, capture (gen_mean), sweeps, the
 * judge and the Python package. */
#ifndef SAFESTEER_GENERATE_H
#define SAFESTEER_GENERATE_H

#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/steer.h"
#include "safesteer/sample.h"
#include "safesteer/tokenizer.h"

typedef struct {
    int max_new;                 /* generated tokens at most */
    ss_sampler_params sampler;   /* temperature 0 = greedy */
    const char *const *stop_strings;
    int n_stop_strings;
    int logprobs_k;              /* 0 = none; else top-K at every step */
} ss_gen_params;

typedef enum { SS_STOP_LENGTH = 0, SS_STOP_EOS = 1, SS_STOP_STRING = 2, SS_STOP_CONTEXT = 3 } ss_stop_reason;

typedef struct {
    int32_t *ids;          /* [n_ids] generated ids (the stop token excluded) */
    int n_ids;
    char *text;            /* decoded generation, cut before a stop string */
    int stop_reason;       /* ss_stop_reason */
    int *top_ids;          /* [n_steps][logprobs_k]; step 0 = prompt's next token */
    float *top_logprobs;   /* [n_steps][logprobs_k] */
    int n_steps;
} ss_gen_result;

/* Called with each sequence's newly decoded text as it is produced. */
typedef void (*ss_gen_text_fn)(void *user, int seq, const char *text, size_t len);

typedef struct {
    double prefill_seconds;
    long prefill_tokens;
    double decode_seconds;
    long decode_tokens;
} ss_gen_timing;

/* What to generate: n prompts, each with its own steering plan or none. */
typedef struct {
    int n;                              /* prompts, 1..the engine's max_seqs */
    const int32_t *const *prompts;      /* [n] token ids */
    const int *n_prompt;                /* [n] */
    const ss_steer_plan *const *plans;  /* [n] plan of each prompt (NULL entry: unsteered);
                                           NULL: every prompt unsteered */
    ss_gen_params params;
    ss_gen_text_fn on_text;             /* streamed text, or NULL */
    void *user;
    ss_progress_sink progress;          /* decode steps; a sink that asks to stop ends the
                                           call with kind SS_ERR_STOPPED */
} ss_gen_request;

/* Generates for every prompt of req at once, prompt i in KV slot i with its
 * plan installed (slots are reset and their steering replaced first).  Each
 * sequence gets its own sampler seeded with params.sampler.seed + i.
 * results[n] are filled; free each with ss_gen_result_free. */
int ss_generate(ss_engine *e, const ss_tokenizer *tok, const ss_gen_request *req,
                ss_gen_result *results, ss_gen_timing *timing, ss_error *err);
void ss_gen_result_free(ss_gen_result *r);

#endif
