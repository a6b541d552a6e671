/* sweep.h - config-driven steering sweeps (docs/sweeps.md).
 *
 * A sweep captures the fitting prompts (unsafe per category + the safe
 * pool), computes vectors per (category, method, layer), then generates on
 * each category's evaluation prompts for every cell (category, method,
 * layer, strength, site) plus one no-steering baseline per category, many
 * cells per forward batch (each KV slot has its own steering), evaluates
 * every generation and writes the run folder: results.h5, generations.jsonl,
 * summary.csv, config.resolved.yaml, run.json, cells_done.txt, capture_*.h5,
 * vectors_*.h5.
 *
 * Cells are packed into work units of whole cells (at most `batch`
 * sequences, unless one cell alone is larger); a unit is the grain of
 * --shard (unit index mod N) and of --resume (its cells are appended to
 * cells_done.txt, fsync'd, after its generations).  Batch composition thus
 * never depends on sharding or resuming, so results are identical. */
#ifndef SAFESTEER_SWEEP_H
#define SAFESTEER_SWEEP_H

#include "safesteer/config.h"
#include "safesteer/util.h"

/* Prompts with their labels, strings owned. */
typedef struct {
    int n;
    char **text, **id, **category, **label;   /* [n] */
} ss_prompt_list;

/* The sweep's prompts after filtering, shuffling and splitting. */
typedef struct {
    int n_categories;
    ss_prompt_list fit;       /* unsafe fit prompts (label "unsafe") + safe pool ("safe") */
    ss_prompt_list *eval;     /* [n_categories] evaluation prompts of each category */
} ss_sweep_data;

/* Reads the config's prompt files; a category with too few prompts is an
 * error naming the config file and line of the category. */
int ss_sweep_load_data(const ss_sweep_config *c, ss_sweep_data *d, ss_error *err);
void ss_sweep_data_free(ss_sweep_data *d);

/* What one ss_sweep_run did (also written to throughput.json). */
typedef struct {
    int batch, batch_auto;        /* sequences per batch; 1: chosen by the sweep */
    long generations, prompt_tokens, generated_tokens;
    double capture_seconds;       /* captures and vectors */
    double generate_seconds;      /* ss_generate (prefill + decode) */
    double quality_seconds;       /* perplexity and relevance passes */
    double judge_seconds;         /* the LLM judge */
    double loop_seconds;          /* the generation loop, wall clock: all of the above after the
                                     capture, plus records */
} ss_sweep_throughput;

typedef struct {
    const char *out_dir;
    const char *model;        /* overrides the config's model (NULL: the config's, else the
                                 default model) */
    int resume;
    int shard_i, shard_n;     /* run units u with u % shard_n == shard_i */
    int threads;              /* -1: the config's */
    int device;               /* -1: the config's */
    ss_progress_sink progress; /* captures, vector passes, then the generations */
    ss_sweep_throughput *throughput; /* filled at the end when not NULL */
    int trace_tokens;         /* 1: each generations.jsonl record also holds token_ids and
                                 top2_gap (top-1 minus top-2 log-probability per token) */
} ss_sweep_opts;

void ss_sweep_opts_default(ss_sweep_opts *o);
int ss_sweep_run(ss_sweep_config *c, const ss_sweep_opts *o, ss_error *err);

/* Joins shard run folders into out_dir, equal to the unsharded run. */
int ss_sweep_merge(const char *out_dir, const char *const *shards, int n_shards, ss_error *err);

#endif
