/* steer.h - steering plans: which vectors go into which layers, how
 * strongly, at which token positions; compiled into the engine's per-slot
 * steering (ss_steer_slot), so CPU and CUDA apply them identically.
 *
 * Vectors come from safesteer vector files (HDF5, format
 * "safesteer.vectors", see docs/vectors.md) or llama.cpp control-vector
 * GGUF files (tensors "direction.N", see docs/steering.md for the layer
 * convention). */
#ifndef SAFESTEER_STEER_H
#define SAFESTEER_STEER_H

#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/error.h"

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

/* ---------------------------------------------------------------- vector files */

typedef struct {
    char path[1024];
    int n_categories, n_layers, d_model;
    char **categories;    /* [n_categories] */
    int32_t *layers;      /* [n_layers] 0-based model layer of each vector row */
    float *vectors;       /* [n_categories][n_layers][d_model] */
    int site;             /* ss_site (GGUF control vectors: resid_post) */
    char method[64];      /* "control-vector" for GGUF files */
    char model_hint[256]; /* GGUF controlvector.model_hint, "" if none */
} ss_vector_set;

/* Reads a safesteer HDF5 vector file or a llama.cpp control-vector GGUF
 * (recognised by its magic bytes).  GGUF "direction.N" (N = 1..n_layers-1)
 * becomes model layer N (0-based), where llama.cpp adds it: the output of
 * decoder block N. */
int ss_vectors_load(const char *path, ss_vector_set *out, ss_error *err);
void ss_vectors_free(ss_vector_set *v);
/* Index of a category by name; name NULL picks the only one.  Errors list
 * the names available. */
int ss_vectors_category(const ss_vector_set *v, const char *name, int *index, ss_error *err);
/* Row of model layer `layer` in v->layers, or -1 with an error (err may be
 * NULL) naming the file and the layers it has. */
int ss_vectors_layer_row(const ss_vector_set *v, int layer, ss_error *err);
/* Index of `layer` in layers[n], or -1 with the layers written to list[cap]
 * joined by sep (truncated to fit), for the caller's error message.  Vector
 * sets and capture files both look layers up this way. */
int ss_layer_index(const int32_t *layers, int n, int layer, const char *sep, char *list,
                   size_t cap);

#endif
