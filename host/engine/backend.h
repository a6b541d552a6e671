/* backend.h - what the engine front (engine.c: creation, checks, steering
 * and capture state) shares with its backends: the CPU engine
 * (engine_cpu.c) and the CUDA engine (cuda/engine_cuda.cu).  Each backend
 * fills an ss_engine_ops table; ss_engine_create dispatches on the device.
 * Internal: nothing above the engine sees these fields. */
#ifndef SAFESTEER_ENGINE_BACKEND_H
#define SAFESTEER_ENGINE_BACKEND_H

#ifdef __cplusplus
extern "C" { /* cuda/engine_cuda.cu includes this */
#endif

#include "safesteer/engine.h"

typedef struct {
    const char *name;
    void (*destroy)(ss_engine *e);
    int (*forward)(ss_engine *e, const ss_batch *b, float *logits, ss_error *err);
    /* greedy next tokens (the batch already checked); NULL: forward, then
     * argmax on the host */
    int (*forward_argmax)(ss_engine *e, const ss_batch *b, int32_t *ids, ss_error *err);
    /* Steering and capture state changed: a backend that mirrors it in
     * device memory uploads it here. */
    int (*sync_hooks)(ss_engine *e, ss_error *err);
    void (*reset_slot)(ss_engine *e, int slot);
    /* measurement (engine.h); timer NULL: the wall clock */
    void (*stats)(const ss_engine *e, ss_engine_stats *s);
    int (*measure_device)(ss_engine *e, ss_engine_device *d, ss_error *err);
    int (*timer_begin)(ss_engine *e, ss_error *err);
    int (*timer_end)(ss_engine *e, double *ms, ss_error *err);
    /* NULL: no decode graphs */
    int (*set_decode_graphs)(ss_engine *e, int on);
} ss_engine_ops;

/* Fields every backend shares; a backend's private state hangs off impl. */
struct ss_engine {
    const ss_engine_ops *ops;
    const ss_model *model;
    ss_config cfg;
    int max_seqs, max_ctx, threads;
    int *slot_pos;                 /* [max_seqs] tokens in each slot */
    /* steering, per slot (host copies; backends mirror what they need) */
    struct {
        int active, pos_begin, pos_end;
        int dirty;                 /* changed since the backend last mirrored it */
        float *alpha;              /* [SS_SITE_COUNT][n_layers] */
        uint8_t *ops;              /* [SS_SITE_COUNT][n_layers] */
        float *vectors;            /* [SS_SITE_COUNT][n_layers][d_model] */
    } *steer;                      /* [max_seqs] */
    /* capture hooks, one per site */
    struct {
        ss_capture_fn fn;
        void *user;
        uint8_t *layers;           /* [n_layers] */
    } capture[SS_SITE_COUNT];
    double timer_t0;               /* wall-clock timer start (backends without events) */
    void *impl;
};

int ss_engine_cpu_create(ss_engine *e, const ss_engine_opts *o, ss_error *err);
/* Defined in cuda/ when built with CUDA; otherwise host/engine/engine_nocuda.c
 * returns an error saying the build has no CUDA. */
int ss_engine_cuda_create(ss_engine *e, const ss_engine_opts *o, ss_error *err);
/* o->max_ctx already resolved (ss_engine_context). */
int ss_engine_cuda_footprint(const ss_model *m, const ss_engine_opts *o, ss_engine_footprint *f,
                             ss_error *err);

/* The positions per slot an engine for m gets from o->max_ctx (0: the
 * model's context, at most 4096). */
int ss_engine_context(const ss_model *m, const ss_engine_opts *o);

/* Shared by backends: validates a batch against slots, context, vocab. */
int ss_engine_check_batch(const ss_engine *e, const ss_batch *b, ss_error *err);

#ifdef __cplusplus
}
#endif

#endif
