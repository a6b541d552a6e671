/* capture.h - activation capture for labelled prompt sets, streamed to HDF5
 * (format "safesteer.capture", docs/hdf5-schema.md).
 *
 * Captures read the engine's capture hooks, so CPU and CUDA write the same
 * file.  Output is written and flushed chunk by chunk (memory stays bounded
 * by one batch whatever the dataset size); the file records how many prompts
 * are complete (n_done), so a killed run can be resumed. */
#ifndef SAFESTEER_CAPTURE_H
#define SAFESTEER_CAPTURE_H

#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/error.h"
#include "safesteer/generate.h"
#include "safesteer/model.h"
#include "safesteer/tokenizer.h"

typedef enum {
    SS_POOL_MEAN = 0,      /* mean over the scope's tokens (prompt, or prompt+response) */
    SS_POOL_LAST = 1,      /* the last prompt token */
    SS_POOL_ALL = 2,       /* every token of the scope, ragged, with /offsets */
    SS_POOL_GEN_MEAN = 3,  /* mean over generation positions (see docs/hdf5-schema.md) */
} ss_pool;

const char *ss_pool_name(int pool);
int ss_pool_parse(const char *name, int *pool, ss_error *err);

/* "10,14,20", "0-29", "3-5,20", or "all" -> sorted unique malloc'd layers[n]
 * (each checked against n_layers). */
int ss_layers_parse(const char *spec, int n_layers, int **layers, int *n, ss_error *err);

/* The prompts to capture.  encode gives item i's token ids (malloc'd):
 * ids[n_ids], of which the first n_prompt are the prompt (the rest, if any,
 * the response). */
typedef struct {
    int n;
    const char *const *text;       /* [n] */
    const char *const *id;         /* [n] */
    const char *const *category;   /* [n] */
    const char *const *label;      /* [n] */
    const char *const *response;   /* [n] given responses, or NULL */
    int (*encode)(void *user, int i, int32_t **ids, int *n_ids, int *n_prompt, ss_error *err);
    void *user;
} ss_capture_source;

typedef struct {
    int site;                  /* ss_site */
    int n_layers;
    const int *layers;         /* [n_layers] sorted model layers */
    int pool;                  /* ss_pool */
    int mean_response;         /* 1: mean/all also cover the response tokens */
    int f16;                   /* store /acts as float16 */
    int batch;                 /* prompts per forward (<= engine max_seqs) */
    int resume, force;
    int progress;              /* 1: progress lines on stderr */
    /* gen_mean: generation settings and the tokenizer */
    const ss_tokenizer *tok;
    ss_gen_params gen;
    /* provenance, written as root attributes */
    const char *model_name, *model_path, *model_sha256;
    int chat;
    const char *chat_template; /* family name ("chatml") or "none" */
    const char *data_path;
} ss_capture_opts;

void ss_capture_opts_default(ss_capture_opts *o);

/* Captures src into path.  An existing complete file is kept unless force;
 * an incomplete one is continued with resume (after checking that model,
 * data and settings match) or refused with "incomplete capture (N of M
 * prompts); rerun with --resume or delete it". */
int ss_capture_run(ss_engine *e, const ss_capture_source *src, const ss_capture_opts *o,
                   const char *path, ss_error *err);

/* Token ids of a prompt, or of a prompt followed by its response: with a
 * chat family the user turn and an assistant turn holding the response are
 * rendered through the template (the prompt part ends with the assistant
 * header); without one the response tokens follow the prompt's.  *n_prompt
 * counts the prompt part. */
int ss_capture_encode(const ss_model *m, const ss_tokenizer *t, int chat_family,
                      const char *text, const char *response, int32_t **ids, int *n_ids,
                      int *n_prompt, ss_error *err);

/* ---------------------------------------------------------------- reading */

typedef struct {
    int n_prompts, n_done, complete;
    int n_layers, d_model, pool, site;
    int32_t *layers;        /* [n_layers] */
    int64_t n_rows;         /* rows of acts: n_done, or offsets[n_done] for pool all */
    float *acts;            /* [n_rows][n_layers][d_model] */
    int64_t *offsets;       /* [n_done + 1] for pool all, else NULL */
    int32_t *n_tokens;      /* [n_done] prompt tokens */
    float *layer_norms;     /* [n_layers] */
} ss_capture_data;

/* Loads a capture file whole (tests and small analyses).  Incomplete files
 * are refused unless allow_incomplete (then only the n_done prompts). */
int ss_capture_load(const char *path, int allow_incomplete, ss_capture_data *out,
                    ss_error *err);
void ss_capture_data_free(ss_capture_data *d);

/* Mean activation norm of model layer `layer` from a complete capture
 * file's /layer_norms (for steering with --normalize); d_model is checked. */
int ss_capture_layer_norm(const char *path, int layer, int d_model, float *norm,
                          ss_error *err);

#endif
