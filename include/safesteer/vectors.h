/* vectors.h - category steering vectors from captured activations (SafeSteer,
 * arXiv 2506.04250): mean-diff, pruned mean-diff and top principal
 * component of the safe-minus-unsafe differences, computed by streaming a
 * capture file (format "safesteer.capture") in row blocks; plus the reader
 * for capture files that vectors and clustering share, and the llama.cpp
 * control-vector (GGUF) export.  File layouts: docs/vectors.md. */
#ifndef SAFESTEER_VECTORS_H
#define SAFESTEER_VECTORS_H

#include <stdint.h>

#include "safesteer/error.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"

/* ---------------------------------------------------------------- capture reader */

typedef struct ss_actfile ss_actfile;

/* What a capture file holds (filled by ss_actfile_open; owned by the reader). */
typedef struct {
    char path[1024];
    int64_t n_prompts;      /* rows usable: n_done when present, else n_prompts */
    int n_layers, d_model;
    int32_t *layers;        /* [n_layers] model layer of each captured row */
    int n_layers_model;     /* layers of the model the capture came from */
    char **ids;             /* [n_prompts] */
    char **categories;      /* [n_prompts] */
    char **labels;          /* [n_prompts] */
    int per_token;          /* 1: pooling "all", /acts rows are tokens, /offsets maps prompts */
    char site[32], pooling[16], model_name[256], model_sha256[80];
} ss_actfile_info;

/* Opens and validates a capture file (format, shapes, string datasets). */
int ss_actfile_open(const char *path, ss_actfile **out, ss_error *err);
const ss_actfile_info *ss_actfile_info_of(const ss_actfile *a);
void ss_actfile_close(ss_actfile *a);
/* Row index in /layers of model layer `layer`; -1 with an error naming the
 * file and the captured layers when it was not captured. */
int ss_actfile_layer_row(const ss_actfile *a, int layer, ss_error *err);
/* Reads prompts [p0, p0 + n) at the captured-layer rows rows[n_rows] into
 * out[n][n_rows][d_model] (per-token captures are mean-pooled over each
 * prompt's tokens).  Any NaN/Inf is an error naming prompt, layer and dim. */
int ss_actfile_read(ss_actfile *a, int64_t p0, int64_t n, const int *rows, int n_rows,
                    float *out, ss_error *err);

/* ---------------------------------------------------------------- vectors */

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
    int progress;                          /* 1: progress lines on stderr for passes
                                              that take more than a second */
} ss_vec_options;

void ss_vec_options_init(ss_vec_options *o);

typedef struct {
    int n_categories, n_layers, d_model;
    char **categories;        /* [C] */
    char **safe_pool;         /* [C] "category:NAME", "label:safe" or "file:PATH" */
    int32_t *layers;          /* [L] */
    float *vectors;           /* [C][L][d_model] */
    int64_t *counts_unsafe;   /* [C] training unsafe prompts */
    int64_t *counts_safe;     /* [C] training safe prompts */
    int64_t *counts_kept;     /* [C][L] pruned: differences kept; NULL otherwise */
    float *norms;             /* [C][L] */
    float *cosine;            /* [L][C][C] */
    float *separability;      /* [C][L] held-out threshold accuracy; NULL if not computed */
    int64_t n_prompts, n_safe_prompts;
    int8_t *split;            /* [n_prompts] 1 = held out (acts file) */
    int8_t *safe_split;       /* [n_safe_prompts] same for --safe-acts, or NULL */
    int passes;               /* full reads of the activation data */
    int pca_iterations;       /* power iterations run (pca) */
    double pca_residual;      /* max over (category, layer) of 1 - |cos(v_k, v_k-1)| at the end */
    char method[64], site[32], pooling[16], model_name[256], model_sha256[80];
    char source_sha256[65], safe_source_sha256[65];
    char unsafe_label[64], safe_label[64];
    double holdout;
    uint64_t seed;
} ss_vec_result;

int ss_vec_compute(const ss_vec_options *o, ss_vec_result *r, ss_error *err);
/* Fills r->norms and r->cosine from r->vectors. */
int ss_vec_fill_stats(ss_vec_result *r, ss_error *err);
int ss_vec_write(const char *path, const ss_vec_result *r, ss_error *err);
void ss_vec_result_free(ss_vec_result *r);

/* Threshold separability: scores[n] with labels[n] (1 = safe, expected to
 * score higher); fits the threshold maximising accuracy on the rows with
 * held[i] == 0 and returns the accuracy of that threshold on held[i] == 1
 * rows (on the training rows when none are held out).  -1 when no row is
 * in the training part. */
double ss_vec_separability(const float *scores, const int8_t *labels, const int8_t *held,
                           int64_t n, float *threshold);

/* ---------------------------------------------------------------- control vectors */

/* Checks a vector set against a model: same d_model, layers inside the model. */
int ss_vec_check_model(const ss_vector_set *v, const ss_config *cfg, const char *model_path,
                       ss_error *err);
/* Writes category `cat` of v as a llama.cpp control vector: one F32 tensor
 * "direction.N" = scale * vector for every layer N >= 1 (llama.cpp has no
 * direction for the output of layer 0: a layer-0 row is an error unless
 * skip_layer0, which drops it and counts it in *skipped). */
int ss_control_vector_write(const char *path, const ss_vector_set *v, int cat, float scale,
                            const char *model_hint, int skip_layer0, int *skipped,
                            ss_error *err);

#endif
