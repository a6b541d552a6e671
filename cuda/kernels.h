/* kernels.h - host-callable launch wrappers for every CUDA kernel, plain C.
 *
 * The CUDA engine (engine_cuda.cu) and the device tests
 * (tests/device/test_cuda_kernels.c) call the same wrappers, so each kernel
 * is checked on its own against host/engine/cpu_ops.h.  Variants that lost
 * to these are in tests/device/variants/variants.h.  All pointers named d_*
 * are device memory; bf16 buffers are uint16_t (bfloat16 bit patterns).
 * Every wrapper queues work on the context's stream, checks the launch
 * (cudaGetLastError) and returns 0, or -1 with err filled. */
#ifndef SAFESTEER_CUDA_KERNELS_H
#define SAFESTEER_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the project headers carry no C++ guards of their own */
#endif

#include "safesteer/engine.h"
#include "safesteer/util.h"

/* ---------------------------------------------------------------- device */

/* Number of CUDA devices; 0 with why[cap] filled when there is none or no
 * driver (the cudaGetDeviceCount error string). */
int ss_cuda_device_count(char *why, size_t cap);

/* Stream + cuBLAS handle + workspace; kernels run on ctx's stream.
 * Setting env SAFESTEER_CUDA_SYNC=1 synchronises after every launch so an
 * asynchronous fault is reported at the kernel that caused it. */
typedef struct ss_cuda_ctx ss_cuda_ctx;
/* Makes GPU gpu current; errors say no device is there or which exist. */
int ss_cuda_select_device(int gpu, ss_error *err);
int ss_cuda_ctx_create(int gpu, ss_cuda_ctx **out, ss_error *err);
void ss_cuda_ctx_free(ss_cuda_ctx *c);
int ss_cuda_sync(ss_cuda_ctx *c, ss_error *err);

void *ss_cuda_malloc(size_t bytes, ss_error *err);
void ss_cuda_free(void *d);
int ss_cuda_upload(void *d_dst, const void *src, size_t bytes, ss_error *err);
int ss_cuda_download(void *dst, const void *d_src, size_t bytes, ss_error *err);
/* Fills bytes with 0xff: NaN in both f32 and bf16 (poisoned outputs). */
int ss_cuda_poison(void *d, size_t bytes, ss_error *err);
/* Host conversions used by tests (round to nearest even). */
void ss_cuda_host_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
void ss_cuda_host_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
/* Device conversions. */
int ss_cuda_f32_to_bf16(ss_cuda_ctx *c, uint16_t *d_dst, const float *d_src, size_t n,
                        ss_error *err);
int ss_cuda_bf16_to_f32(ss_cuda_ctx *c, float *d_dst, const uint16_t *d_src, size_t n,
                        ss_error *err);
/* d_dst[n] = bf16(scale * u), u uniform in [-1, 1) from (seed, index); with
 * offset added: offset + scale * u.  Synthetic weights are made this way. */
int ss_cuda_fill_random_bf16(ss_cuda_ctx *c, uint16_t *d_dst, size_t n, uint64_t seed,
                             float offset, float scale, ss_error *err);
int ss_cuda_fill_random_f32(ss_cuda_ctx *c, float *d_dst, size_t n, uint64_t seed, float offset,
                            float scale, ss_error *err);

/* ---------------------------------------------------------------- kernels */

/* d_x[n][d] = f32(d_table[d_ids[i]][:]), d_table bf16 [vocab][d]. */
int ss_cuda_embed(ss_cuda_ctx *c, float *d_x, const uint16_t *d_table, const int32_t *d_ids,
                  int n, int d, ss_error *err);

/* d_out[i][:] = bf16(x[r][:] / sqrt(mean(x[r]^2) + eps) * w[:]) with
 * r = d_rows ? d_rows[i] : i; d_x [*][d] f32, d_w [d] f32, d_out [n][d] bf16. */
int ss_cuda_rmsnorm(ss_cuda_ctx *c, uint16_t *d_out, const float *d_x, const int *d_rows,
                    const float *d_w, int n, int d, float eps, ss_error *err);

/* Rotary embedding on the n_heads q heads and n_kv_heads k heads of each
 * row of d_qkv[n][qkv_stride] (q at column 0, k at n_heads * head_dim, v
 * after k; row i at position d_pos[i]; d_inv_freq [head_dim/2]; neox 0
 * pairs (2j, 2j+1), 1 pairs (j, j + head_dim/2)), and the store of the
 * rotated k and of v into the bf16 caches, in one launch: row i goes to
 * slot d_slot[i], position d_pos[i] at
 *   cache + ((slot * n_layers + layer) * max_ctx + pos) * kv_dim.
 * The rotated q stays in d_qkv; k goes only to the cache. */
int ss_cuda_rope_kv_store(ss_cuda_ctx *c, float *d_qkv, int qkv_stride, const int *d_slot,
                          const int *d_pos, int n, int n_heads, int n_kv_heads, int head_dim,
                          int neox, const float *d_inv_freq, uint16_t *d_kcache,
                          uint16_t *d_vcache, int layer, int n_layers, int max_ctx,
                          ss_error *err);

/* Attention geometry shared by both attention kernels.  Query row i is
 * d_q[i * q_stride + h * head_dim ...] (f32, rope applied), at position
 * d_pos[i] of slot d_slot[i]; it attends to cache positions 0..d_pos[i] of
 * that slot and layer.  d_out[n][n_heads][head_dim] bf16. */
typedef struct {
    int n_heads, n_kv_heads, head_dim;
    int n_layers, max_ctx, layer;
    int q_stride;
} ss_cuda_attn_shape;

/* Prefill: queries grouped in tiles of consecutive rows of one slot with
 * consecutive positions.  d_tiles[n_tiles][2] = {first row, row count <= 16}. */
int ss_cuda_attention_prefill(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                              const uint16_t *d_kcache, const uint16_t *d_vcache,
                              const int *d_slot, const int *d_pos, const int *d_tiles,
                              int n_tiles, const ss_cuda_attn_shape *s, ss_error *err);
/* Decode: one block per (row, head, split of 128 positions); n_splits must
 * cover max(d_pos)+1 positions; d_partial holds
 * ss_cuda_attention_partial_floats(n, ...) floats. */
size_t ss_cuda_attention_partial_floats(int n, int n_heads, int head_dim, int n_splits);
int ss_cuda_attention_splits(int n_positions);
int ss_cuda_attention_decode(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                             const uint16_t *d_kcache, const uint16_t *d_vcache,
                             const int *d_slot, const int *d_pos, int n, int n_splits,
                             float *d_partial, const ss_cuda_attn_shape *s, ss_error *err);

/* d_out[i][j] = bf16(silu(gu[i][j]) * gu[i][d_ff + j]); d_gu [n][2*d_ff] f32
 * (gate and up side by side), d_out [n][d_ff] bf16. */
int ss_cuda_swiglu(ss_cuda_ctx *c, uint16_t *d_out, const float *d_gu, int n, int d_ff,
                   ss_error *err);

/* Device mirror of every slot's steering (ss_engine.steer), S =
 * SS_SITE_COUNT.  Arrays: d_info[max_seqs][3] = {active, pos_begin,
 * pos_end}, d_alpha[max_seqs][S][n_layers], d_ops[max_seqs][S][n_layers],
 * d_vec[max_seqs][S][n_layers][d] (may be NULL when no slot is active). */
typedef struct {
    const int *d_info;
    const float *d_alpha;
    const int *d_ops;
    const float *d_vec;
    int n_layers;
} ss_cuda_steer_params;

/* Fused residual add + steering (+ the next RMSNorm).  For each row i of
 * d_x[n][d] (slot d_slot[i], position d_pos[i]):
 *   block == SS_SITE_ATTN_OUT: t = delta, steered if its slot steers
 *     ATTN_OUT at this layer; x += t.
 *   block == SS_SITE_MLP_OUT:  t = delta, steered if MLP_OUT; x += t;
 *     then x steered if the slot steers RESID_POST at this layer.
 * Steering is ss_cpu_steer's (alpha[site][layer] != 0, pos in range).  The
 * steered block output t is written back to d_delta (capture reads it).
 * If d_norm_w is not NULL, d_xb[n][d] = bf16(rmsnorm(x) * d_norm_w). */
int ss_cuda_residual_steer(ss_cuda_ctx *c, float *d_x, float *d_delta, uint16_t *d_xb,
                           const float *d_norm_w, float eps, const int *d_slot,
                           const int *d_pos, int n, int d, int block, int layer,
                           const ss_cuda_steer_params *sp, ss_error *err);
/* The same with the general kernel (v1: any d, one pass per step over
 * memory), which ss_cuda_residual_steer takes when a row does not fit the
 * registers of v2 (d % 4 != 0 or d > 8192); the tests check it at every
 * width. */
int ss_cuda_residual_steer_general(ss_cuda_ctx *c, float *d_x, float *d_delta, uint16_t *d_xb,
                                   const float *d_norm_w, float eps, const int *d_slot,
                                   const int *d_pos, int n, int d, int block, int layer,
                                   const ss_cuda_steer_params *sp, ss_error *err);

/* d_y[n][out] = x[n][in] . W^T, x bf16, W bf16 stored [out][in], y f32,
 * f32 accumulation.  path: SS_CUDA_MM_AUTO takes the matvec v1 up to
 * SS_CUDA_MATVEC_AUTO_ROWS rows (when in % 8 == 0), else cuBLAS; the others
 * force one path: V1 warp-per-row matvec (n <= 8, in % 8 == 0), CUBLAS.
 * Chosen from the variants measured side by side on an H200 (docs/cuda.md,
 * run 2, Llama-3-8B shape): v1 at batch 1 reads weights at 73% of copy
 * bandwidth (the tensor-core matvec of tests/device/variants 58%, cuBLAS
 * 69%); from batch 2 on cuBLAS beats both (batch 8: 5.9 ms vs 7.1, v1 10.2). */
#define SS_CUDA_MM_AUTO 0
#define SS_CUDA_MM_V1 1
#define SS_CUDA_MM_CUBLAS 2
#define SS_CUDA_MATVEC_MAX_ROWS 8
#define SS_CUDA_MATVEC_AUTO_ROWS 1
int ss_cuda_matmul_bf16(ss_cuda_ctx *c, float *d_y, const uint16_t *d_x, const uint16_t *d_w,
                        int n, int in, int out, int path, ss_error *err);

/* d_ids[i] = index of the largest d_logits[i][:] (lowest index on ties). */
int ss_cuda_argmax(ss_cuda_ctx *c, int *d_ids, const float *d_logits, int n, int vocab,
                   ss_error *err);

/* ---------------------------------------------------------------- timing */

/* Device-to-device copy bandwidth over a buffer of `bytes`, median of reps,
 * counting bytes read + written (GB/s, 1e9). */
int ss_cuda_copy_bandwidth(size_t bytes, int reps, double *gbps, ss_error *err);
/* Nominal dense bf16 tensor-core peak (TFLOP/s) from SM count, clock and
 * compute capability; 0 if the architecture is not in the table. */
double ss_cuda_bf16_peak_tflops(int gpu);
/* Measured bf16 tensor-core rate: median TFLOP/s of reps cuBLAS GEMMs of
 * size^3 (random bf16 inputs, f32 accumulation, bf16 output). */
int ss_cuda_gemm_tflops(int size, int reps, double *tflops, ss_error *err);
/* Device name and memory of GPU gpu into name[cap]. */
int ss_cuda_device_info(int gpu, char *name, size_t cap, double *mem_gib, ss_error *err);

/* Event timer on the legacy default stream (which orders against the
 * engine's blocking stream). */
typedef struct ss_cuda_timer ss_cuda_timer;
int ss_cuda_timer_create(ss_cuda_timer **out, ss_error *err);
void ss_cuda_timer_free(ss_cuda_timer *t);
int ss_cuda_timer_start(ss_cuda_timer *t, ss_error *err);
/* Records the stop event, waits for it, returns elapsed ms in *ms. */
int ss_cuda_timer_stop(ss_cuda_timer *t, double *ms, ss_error *err);

#ifdef __cplusplus
}
#endif

#endif
