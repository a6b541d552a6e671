/* engine.h - one engine interface, two backends (CPU with OpenBLAS, CUDA).
 *
 * An engine owns the weights in compute form and a KV cache of `max_seqs`
 * slots of `max_ctx` positions.  ss_engine_forward appends tokens to any set
 * of slots in one call (a batch of sequences of different lengths) and
 * returns logits.  Steering and capture act inside the forward pass at the
 * same sites on both backends, so everything above the engine (capture,
 * sweeps, evaluation) is written once. */
#ifndef SAFESTEER_ENGINE_H
#define SAFESTEER_ENGINE_H

#include <stdint.h>

#include "safesteer/util.h"
#include "safesteer/model.h"

typedef enum { SS_DEVICE_CPU = 0, SS_DEVICE_CUDA = 1 } ss_device;

typedef struct {
    int device;      /* ss_device */
    int threads;     /* CPU threads (OpenBLAS and our loops); 0 = all cores */
    int max_seqs;    /* KV-cache slots */
    int max_ctx;     /* positions per slot; 0 = min(model context, 4096) */
    int gpu;         /* CUDA device ordinal */
} ss_engine_opts;

void ss_engine_opts_default(ss_engine_opts *o);
int ss_device_parse(const char *name, int *device, ss_error *err);

/* One forward call.  Sequence i appends n_tokens[i] tokens to KV slot
 * slots[i] at that slot's current position; tokens holds all of them
 * concatenated in sequence order.  A slot appears at most once. */
typedef struct {
    int n_seqs;
    const int *slots;        /* [n_seqs] */
    const int *n_tokens;     /* [n_seqs], each >= 1 */
    const int32_t *tokens;   /* [sum n_tokens] */
    /* 0: logits[n_seqs][vocab] for each sequence's last token.
     * 1: logits[sum n_tokens][vocab] for every appended token. */
    int all_logits;
} ss_batch;

/* Residual-stream sites (where steering adds and capture reads). */
typedef enum {
    SS_SITE_RESID_POST = 0,  /* output of decoder layer l */
    SS_SITE_ATTN_OUT = 1,    /* attention block output (before its residual add) */
    SS_SITE_MLP_OUT = 2,     /* MLP block output (before its residual add) */
    SS_SITE_COUNT = 3,
} ss_site;

const char *ss_site_name(int site);
int ss_site_parse(const char *name, int *site, ss_error *err);

typedef enum { SS_STEER_ADD = 0, SS_STEER_ABLATE = 1 } ss_steer_op;

/* Steering state of one KV slot.  At every site s and layer l with
 * alpha[s][l] != 0, for token positions p with pos_begin <= p < pos_end,
 * with v = vectors[s][l]:
 *   ops[s][l] ADD:    h[p] += alpha[s][l] * v
 *   ops[s][l] ABLATE: h[p] -= (h[p] . v) v   (v unit norm)
 * Sites and layers combine freely (one op per site and layer).  At a layer
 * the sites apply in forward order: attn_out, mlp_out, then resid_post.
 * The engine copies the arrays; pos_end < 0 means no end. */
typedef struct {
    const float *alpha;     /* [SS_SITE_COUNT][n_layers] */
    const uint8_t *ops;     /* [SS_SITE_COUNT][n_layers] ss_steer_op */
    const float *vectors;   /* [SS_SITE_COUNT][n_layers][d_model] */
    int pos_begin, pos_end;
} ss_steer_slot;

/* Capture: after each forward computes `site` at layer l for a sequence,
 * the callback receives h[n_tok][d_model] (f32, host memory) for its
 * appended tokens, whose first position is pos.  layers_mask[l] != 0
 * selects layers. */
typedef void (*ss_capture_fn)(void *user, int slot, int site, int layer, int pos,
                              const float *h, int n_tok, int d_model);

typedef struct ss_engine ss_engine;

/* The CPU engine computes from m's weights in place: free the engine before
 * the model. */
int ss_engine_create(const ss_model *m, const ss_engine_opts *o, ss_engine **out, ss_error *err);
void ss_engine_free(ss_engine *e);
const ss_config *ss_engine_config(const ss_engine *e);
int ss_engine_max_seqs(const ss_engine *e);
int ss_engine_max_ctx(const ss_engine *e);
const char *ss_engine_device_name(const ss_engine *e);

/* Forgets a slot's KV contents (next forward starts at position 0). */
void ss_engine_reset_slot(ss_engine *e, int slot);
int ss_engine_slot_pos(const ss_engine *e, int slot);

/* Runs the batch; positions advance by n_tokens (not on failure).  Errors:
 * slot out of range or repeated, context overflow ("sequence in slot S: N
 * tokens at position P exceed the context of M"), token id out of vocabulary. */
int ss_engine_forward(ss_engine *e, const ss_batch *b, float *logits, ss_error *err);

/* Installs (s != NULL) or clears (s == NULL) a slot's steering. */
int ss_engine_set_steering(ss_engine *e, int slot, const ss_steer_slot *s, ss_error *err);
/* Installs (fn != NULL) or clears a capture hook. */
int ss_engine_set_capture(ss_engine *e, int site, const uint8_t *layers_mask, ss_capture_fn fn,
                          void *user, ss_error *err);

/* ------------------------------------------------------------- measurement */

/* Like ss_engine_forward with all_logits 0, but returns each sequence's
 * greedy next token, ids[n_seqs] (on the GPU, the logits never leave it). */
int ss_engine_forward_argmax(ss_engine *e, const ss_batch *b, int32_t *ids, ss_error *err);

/* What an engine holds, for benchmarks and memory accounting. */
typedef struct {
    char device[256];           /* "cpu" or the GPU's name */
    double weight_bytes;        /* held: as the file stores them (CPU), bf16 (CUDA) */
    double weight_bytes_read;   /* read by one decode step (of an untied embedding table
                                   only the gathered rows) */
    int kv_bytes_per_value;     /* 4 (f32 cache, CPU) or 2 (bf16 cache, CUDA) */
    int device_timer;           /* 1: the engine timer reads device events */
    int decode_graphs;          /* 1: decode steps can replay captured graphs */
} ss_engine_stats;

void ss_engine_get_stats(const ss_engine *e, ss_engine_stats *s);

/* What the engine's device does, measured when called. */
typedef struct {
    double copy_gbps;             /* copy bandwidth, bytes read + written (GB/s, 1e9):
                                     device to device, or host memcpy over the CPU threads */
    double matmul_tflops;         /* dense bf16 GEMM of matmul_size^3 (CUDA); 0 on the CPU */
    double matmul_tflops_nominal; /* from SM count and clock (CUDA); 0 when unknown */
    int matmul_size;
    double memory_gib;            /* device memory (CUDA), 0 on the CPU */
} ss_engine_device;

int ss_engine_measure_device(ss_engine *e, ss_engine_device *d, ss_error *err);

/* GPU memory an engine for m with opts o would take, before creating it:
 * fixed (weights, scratch) plus per_slot (KV cache of o->max_ctx positions,
 * steering state) for each of o->max_seqs slots, and what the device has
 * free now.  CUDA only: the CPU engine computes in host memory (an error). */
typedef struct {
    size_t fixed, per_slot;
    size_t device_free, device_total;
} ss_engine_footprint;

int ss_engine_footprint_of(const ss_model *m, const ss_engine_opts *o, ss_engine_footprint *f,
                           ss_error *err);

/* Times engine work: begin, the calls, end -> *ms.  Device events on CUDA
 * (the work queued in between), the wall clock on the CPU. */
int ss_engine_timer_begin(ss_engine *e, ss_error *err);
int ss_engine_timer_end(ss_engine *e, double *ms, ss_error *err);

/* Decode steps (every sequence appends one token, no capture hook) replay a
 * captured CUDA graph when on (default on; SAFESTEER_CUDA_GRAPHS=0 turns it
 * off); an error on an engine without graphs (stats.decode_graphs 0). */
int ss_engine_set_decode_graphs(ss_engine *e, int on, ss_error *err);

#endif
