/* vectors.h - category steering vectors (SafeSteer, arXiv 2506.04250):
 * mean-diff, pruned mean-diff and the top principal component of the
 * safe-minus-unsafe differences, computed by streaming a capture file in
 * row blocks; one type for a set of vectors, with its reader and writer
 * (safesteer HDF5 "safesteer.vectors" and llama.cpp control-vector GGUF).
 * File layouts: docs/vectors.md. */
#ifndef SAFESTEER_VECTORS_H
#define SAFESTEER_VECTORS_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/model.h"
#include "safesteer/util.h"

/* ---------------------------------------------------------------- vector sets */

/* Vectors for categories x layers, and what they were computed from.
 * Computed (ss_vectors_compute), read (ss_vectors_load), built from an
 * array (ss_vectors_from_array); written with ss_vectors_write or exported
 * with ss_control_vector_write.  norms and cosine are always filled; the
 * other statistics are NULL / 0 / "" when unknown (a control vector, an
 * array). */
typedef struct {
    char path[1024];          /* file read from; "" for a set made in memory */
    int n_categories, n_layers, d_model;
    char **categories;        /* [C] */
    int32_t *layers;          /* [L] 0-based model layer of each vector row */
    float *vectors;           /* [C][L][d_model] */
    int site;                 /* ss_site the vectors belong to (control vectors: resid_post) */
    char method[64];          /* "mean-diff", "pruned", "pca", "control-vector", "array" */
    char pooling[16], model_name[256], model_sha256[80];
    char model_hint[256];     /* GGUF controlvector.model_hint, "" if none */
    float *norms;             /* [C][L] */
    float *cosine;            /* [L][C][C] */
    /* statistics of the computation */
    char **safe_pool;         /* [C] "category:NAME", "label:safe" or "file:PATH"; or NULL */
    int64_t *counts_unsafe;   /* [C] training unsafe prompts, or NULL */
    int64_t *counts_safe;     /* [C] training safe prompts, or NULL */
    int64_t *counts_kept;     /* [C][L] pruned: differences kept; NULL otherwise */
    float *separability;      /* [C][L] held-out threshold accuracy, or NULL */
    int64_t n_prompts, n_safe_prompts;
    int8_t *split;            /* [n_prompts] 1 = held out (acts file), or NULL */
    int8_t *safe_split;       /* [n_safe_prompts] same for the safe-acts file, or NULL */
    int passes;               /* full reads of the activation data */
    int pca_iterations;       /* power iterations run (pca) */
    double pca_residual;      /* max over (category, layer) of 1 - |cos(v_k, v_k-1)| at the end */
    char source_sha256[65], safe_source_sha256[65];
    char unsafe_label[64], safe_label[64];
    double holdout;
    uint64_t seed;
} ss_vector_set;

/* Reads a safesteer HDF5 vector file or a llama.cpp control-vector GGUF
 * (recognised by its magic bytes).  GGUF "direction.N" (N = 1..n_layers-1)
 * becomes model layer N (0-based), where llama.cpp adds it: the output of
 * decoder block N. */
int ss_vectors_load(const char *path, ss_vector_set *out, ss_error *err);
/* Writes v as a safesteer HDF5 vector file (written whole, see outfile). */
int ss_vectors_write(const char *path, const ss_vector_set *v, ss_error *err);
void ss_vectors_free(ss_vector_set *v);
/* A one-category set from vectors[n_layers][d_model] at layers[n_layers]
 * (method "array"), for vectors made outside safesteer. */
int ss_vectors_from_array(const char *category, int site, const int32_t *layers, int n_layers,
                          int d_model, const float *vectors, ss_vector_set *out, ss_error *err);
/* Fills v->norms and v->cosine from v->vectors. */
int ss_vectors_fill_stats(ss_vector_set *v, ss_error *err);

/* "FILE:NAME" -> file[cap] and *name (NULL when absent); a FILE that exists
 * as given wins, so paths with colons still work. */
void ss_vectors_split_ref(const char *ref, char *file, size_t cap, const char **name);
/* Index of a category by name; name NULL picks the only one.  Errors list
 * the names available. */
int ss_vectors_category(const ss_vector_set *v, const char *name, int *index, ss_error *err);
/* Row of model layer `layer` in v->layers, or -1 with an error (err may be
 * NULL) naming the file and the layers it has. */
int ss_vectors_layer_row(const ss_vector_set *v, int layer, ss_error *err);
/* The vector of category cat at row `row`: v->vectors + (cat * L + row) * d. */
const float *ss_vectors_row(const ss_vector_set *v, int cat, int row);
/* Checks a vector set against a model: same d_model, layers inside the model. */
int ss_vectors_check_model(const ss_vector_set *v, const ss_config *cfg, const char *model_path,
                           ss_error *err);

/* ---------------------------------------------------------------- computing */

typedef enum { SS_VEC_MEAN_DIFF = 0, SS_VEC_PRUNED = 1, SS_VEC_PCA = 2 } ss_vec_method;

const char *ss_vec_method_name(int method);
int ss_vec_method_parse(const char *s, int *method, ss_error *err);

typedef struct {
    const char *acts_path;
    const char *safe_acts_path;            /* NULL: safe pool taken from acts_path */
    const char *unsafe_label, *safe_label; /* "unsafe", "safe" */
    const char *safe_category;             /* NULL, or the category forming the safe pool */
    const char *const *categories;         /* [n_categories]; NULL: every category with
                                              unsafe prompts, sorted by name */
    int n_categories;
    const int *layers;                     /* [n_layers] model layers; NULL: all captured */
    int n_layers;
    int method;                            /* ss_vec_method */
    double holdout;                        /* fraction of prompts held out, [0, 1) */
    uint64_t seed;                         /* split seed (PCA start is fixed) */
    int pca_iters;                         /* maximum power iterations */
    int chunk_rows;                        /* prompts per HDF5 read */
    ss_progress_sink progress;             /* reports for passes over a second */
} ss_vec_options;

void ss_vec_options_init(ss_vec_options *o);

/* Computes the vectors of o into v (every statistic filled). */
int ss_vectors_compute(const ss_vec_options *o, ss_vector_set *v, ss_error *err);

/* Threshold separability: scores[n] with labels[n] (1 = safe, expected to
 * score higher); fits the threshold maximising accuracy on the rows with
 * held[i] == 0 and returns the accuracy of that threshold on held[i] == 1
 * rows (on the training rows when none are held out).  -1 when no row is
 * in the training part. */
double ss_vec_separability(const float *scores, const int8_t *labels, const int8_t *held,
                           int64_t n, float *threshold);

/* ---------------------------------------------------------------- control vectors */

/* Writes category `cat` of v as a llama.cpp control vector: one F32 tensor
 * "direction.N" = scale * vector for every layer N >= 1 (llama.cpp has no
 * direction for the output of layer 0: a layer-0 row is an error unless
 * skip_layer0, which drops it and counts it in *skipped). */
int ss_control_vector_write(const char *path, const ss_vector_set *v, int cat, float scale,
                            const char *model_hint, int skip_layer0, int *skipped,
                            ss_error *err);

#endif
