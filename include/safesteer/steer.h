/* steer.h - steering plans: which vectors go into which layers, how
 * strongly, at which token positions; built from vector sets (vectors.h:
 * safesteer HDF5 files, llama.cpp control vectors, arrays) by one plan
 * builder that the CLI, the sweep and the Python package share, and
 * compiled into the engine's per-slot steering (ss_steer_slot), so CPU and
 * CUDA apply them identically.  Layer convention: docs/steering.md. */
#ifndef SAFESTEER_STEER_H
#define SAFESTEER_STEER_H

#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/util.h"
#include "safesteer/vectors.h"

/* ---------------------------------------------------------------- positions */

typedef enum {
    SS_POS_ALL = 0,        /* every position of the slot */
    SS_POS_PROMPT = 1,     /* positions < n_prompt */
    SS_POS_GENERATED = 2,  /* positions >= n_prompt (fed-back generated tokens) */
    SS_POS_FROM = 3,       /* positions >= k */
} ss_pos_rule;

typedef struct {
    int rule;  /* ss_pos_rule */
    int k;     /* SS_POS_FROM only */
} ss_positions;

/* "all", "prompt", "generated", "from:K". */
int ss_positions_parse(const char *s, ss_positions *p, ss_error *err);
/* [*begin, *end) in slot positions for a prompt of n_prompt tokens (end -1:
 * no end), as ss_steer_slot wants them. */
void ss_positions_range(const ss_positions *p, int n_prompt, int *begin, int *end);

/* ---------------------------------------------------------------- plan */

typedef struct {
    int site;        /* ss_site */
    int layer;       /* 0-based decoder layer */
    int op;          /* ss_steer_op */
    float strength;  /* ADD: h += strength * vector; ABLATE: 0 disables, else ignored */
    float *vector;   /* [d_model], owned; unit norm for ABLATE */
} ss_steer_entry;

typedef struct {
    int n_layers, d_model;
    int n_entries;
    ss_steer_entry *entries;   /* [n_entries] */
    ss_positions positions;
} ss_steer_plan;

void ss_steer_plan_init(ss_steer_plan *p, int n_layers, int d_model);
void ss_steer_plan_free(ss_steer_plan *p);
/* Appends an entry (vector copied; ABLATE vectors are normalised to unit
 * length here, a zero vector is an error). */
int ss_steer_plan_add(ss_steer_plan *p, int site, int layer, int op, float strength,
                      const float *vector, ss_error *err);

/* The engine form of a plan for one sequence: per (site, layer) a
 * strength, an op and a vector, and the position range for a prompt of
 * n_prompt tokens.  Entries may mix sites, layers and ops; one (site,
 * layer) takes either ADD entries, summed into one vector with alpha 1
 * (a single one keeps its strength as alpha), or one ABLATE entry: an
 * ABLATE sharing its (site, layer) with any other entry is an error naming
 * both. */
typedef struct {
    float *alpha;      /* [SS_SITE_COUNT][n_layers] */
    uint8_t *ops;      /* [SS_SITE_COUNT][n_layers] */
    float *vectors;    /* [SS_SITE_COUNT][n_layers][d_model] */
    ss_steer_slot slot;
} ss_steer_compiled;

int ss_steer_compile(const ss_steer_plan *p, int n_prompt, ss_steer_compiled *out,
                     ss_error *err);
/* The engine form of one site steered with one op at every layer:
 * alpha[n_layers] and vectors[n_layers][d_model] (copied) at `site`, the
 * other sites unsteered, positions [pos_begin, pos_end). */
int ss_steer_compile_site(int n_layers, int d_model, int site, int op, const float *alpha,
                          const float *vectors, int pos_begin, int pos_end,
                          ss_steer_compiled *out, ss_error *err);
void ss_steer_compiled_free(ss_steer_compiled *c);
/* Compiles and installs on slot (an empty plan clears the slot). */
int ss_steer_apply(ss_engine *e, int slot, const ss_steer_plan *p, int n_prompt,
                   ss_error *err);

/* ---------------------------------------------------------------- plans from vector sets */

/* One group of entries taken from a vector set: a `--steer FILE[:NAME]` of
 * the CLI, a sweep cell, a Plan.add() in Python. */
typedef struct {
    const ss_vector_set *vectors;
    const char *category;        /* NULL: the set's only category */
    int site;                    /* ss_site; -1: the set's own */
    const int *layers;           /* [n_layers] model layers; NULL: every layer of the set
                                    that the plan's model has */
    int n_layers;
    const float *strengths;      /* [n_strengths]: one for every layer, or one per layer;
                                    NULL: 1 */
    int n_strengths;
    int op;                      /* ss_steer_op */
    const char *normalize_acts;  /* a capture file: each vector becomes its unit direction
                                    times that layer's mean activation norm (ADD only);
                                    NULL: vectors as stored */
} ss_steer_source;

/* Appends one entry per layer of s to p.  Errors name the vector file, the
 * category, the layer or the parameter at fault. */
int ss_steer_plan_add_vectors(ss_steer_plan *p, const ss_steer_source *s, ss_error *err);

#endif
