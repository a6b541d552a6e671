/* capture.h - activation capture for labelled prompt sets, streamed to HDF5
 * (format "safesteer.capture", docs/hdf5-schema.md), and the one reader of
 * those files.
 *
 * Captures read the engine's capture hooks, so CPU and CUDA write the same
 * file.  Output is written and flushed chunk by chunk (memory stays bounded
 * by one batch whatever the dataset size); the file records how many prompts
 * are complete (n_done), so a killed run can be resumed. */
#ifndef SAFESTEER_CAPTURE_H
#define SAFESTEER_CAPTURE_H

#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/util.h"
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
    int resume;                /* continue an incomplete file (settings must match) */
    int force;                 /* overwrite an existing file */
    ss_progress_sink progress; /* one report per batch at most once a second */
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
/* The provenance fields of o: model m (name, path, fingerprint sha256, which
 * is borrowed), its tokenizer, the chat family its prompts were rendered
 * with and the prompt file. */
void ss_capture_opts_set_source(ss_capture_opts *o, const ss_model *m, const ss_tokenizer *tok,
                                const char *sha256, int chat_family, const char *data_path);

/* What ss_capture_run found at its output and did. */
typedef struct {
    int64_t n_before;   /* prompts the file held already (resumed), 0 for a new file */
    int was_complete;   /* 1: the file was complete and matching: nothing ran */
} ss_capture_outcome;

/* Captures src into path.  An existing file is overwritten with force; else
 * a complete one is an error of kind SS_ERR_EXISTS, and an incomplete one is
 * continued with resume (after checking that model, data and settings
 * match) or is an error of kind SS_ERR_INCOMPLETE ("incomplete capture (N of
 * M prompts)").  outcome may be NULL. */
int ss_capture_run(ss_engine *e, const ss_capture_source *src, const ss_capture_opts *o,
                   const char *path, ss_capture_outcome *outcome, ss_error *err);

/* Token ids of a prompt, or of a prompt followed by its response: with a
 * chat family the user turn and an assistant turn holding the response are
 * rendered through the template (the prompt part ends with the assistant
 * header); without one the response tokens follow the prompt's.  *n_prompt
 * counts the prompt part. */
int ss_capture_encode(const ss_model *m, const ss_tokenizer *t, int chat_family,
                      const char *text, const char *response, int32_t **ids, int *n_ids,
                      int *n_prompt, ss_error *err);

/* ---------------------------------------------------------------- reading */

typedef struct ss_capture_file ss_capture_file;

/* What a capture file holds (filled by ss_capture_open, owned by the reader). */
typedef struct {
    char path[1024];
    int64_t n_prompts;        /* prompts usable: n_done (all of them when complete) */
    int64_t n_prompts_total;  /* prompts the capture was started for */
    int complete;
    int n_layers, d_model;
    int32_t *layers;          /* [n_layers] model layer of each captured row */
    int n_layers_model;       /* layers of the model the capture came from */
    float *layer_norms;       /* [n_layers] mean token norms, or NULL when absent */
    char **ids;               /* [n_prompts] */
    char **categories;        /* [n_prompts] */
    char **labels;            /* [n_prompts] */
    int per_token;            /* 1: pooling "all": /acts rows are tokens, offsets map prompts */
    const int64_t *offsets;   /* [n_prompts + 1] per-token captures, else NULL */
    int64_t n_rows;           /* rows of /acts in use: n_prompts, or offsets[n_prompts] */
    char site[32], pooling[16], model_name[256], model_sha256[80];
} ss_capture_info;

/* Opens and validates a capture file (format, shapes, string datasets); an
 * incomplete file is opened with its n_done prompts. */
int ss_capture_open(const char *path, ss_capture_file **out, ss_error *err);
const ss_capture_info *ss_capture_info_of(const ss_capture_file *a);
void ss_capture_close(ss_capture_file *a);
/* An error of kind SS_ERR_INCOMPLETE ("PATH: incomplete capture (N of M
 * prompts)") unless the capture is complete. */
int ss_capture_require_complete(const ss_capture_file *a, ss_error *err);
/* Row index in /layers of model layer `layer`; -1 with an error naming the
 * file and the captured layers when it was not captured. */
int ss_capture_layer_row(const ss_capture_file *a, int layer, ss_error *err);
/* Rows [r0, r0 + n) of /acts as stored (prompts, or tokens of a per-token
 * capture) into out[n][n_layers][d_model]. */
int ss_capture_read_rows(ss_capture_file *a, int64_t r0, int64_t n, float *out, ss_error *err);
/* Reads prompts [p0, p0 + n) at the captured-layer rows rows[n_rows] into
 * out[n][n_rows][d_model] (per-token captures are mean-pooled over each
 * prompt's tokens).  Any NaN/Inf is an error naming prompt, layer and dim. */
int ss_capture_read(ss_capture_file *a, int64_t p0, int64_t n, const int *rows, int n_rows,
                    float *out, ss_error *err);

/* A whole capture in memory (tests and small analyses). */
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

/* Loads a capture file whole through the reader.  Incomplete files are
 * refused unless allow_incomplete (then only the n_done prompts). */
int ss_capture_load(const char *path, int allow_incomplete, ss_capture_data *out,
                    ss_error *err);
void ss_capture_data_free(ss_capture_data *d);

/* Captures src into out without a file: what ss_capture_run would store, in
 * f32 (o->f16, resume, force and the provenance fields do not apply).
 * Free with ss_capture_data_free. */
int ss_capture_to_memory(ss_engine *e, const ss_capture_source *src, const ss_capture_opts *o,
                         ss_capture_data *out, ss_error *err);

/* Mean activation norm of model layer `layer` from an open, complete
 * capture's /layer_norms (to scale unit directions when steering); d_model
 * is checked. */
int ss_capture_layer_norm(const ss_capture_file *a, int layer, int d_model, float *norm,
                          ss_error *err);

#endif
