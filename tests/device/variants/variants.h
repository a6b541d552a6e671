/* variants.h - CUDA kernel variants that lost to the engine's kernels,
 * kept beside their tests (as llm.c's dev/cuda): each is checked by
 * tests/device/test_cuda_kernels.c against the same CPU reference as the
 * winner, and bench_variants.c times it against the winner, so a new
 * variant is measured here before the engine takes it (docs/cuda.md).
 * Conventions as cuda/kernels.h: d_* device memory, bf16 as uint16_t,
 * work queued on the context's stream, 0 or -1 with err filled. */
#ifndef SAFESTEER_CUDA_VARIANTS_H
#define SAFESTEER_CUDA_VARIANTS_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels.h"

/* Tensor-core matvec (matvec_mma.cu): d_y[n][out] = x[n][in] . W^T like
 * ss_cuda_matmul_bf16, n <= SS_CUDA_MMA_MAX_ROWS, in % 8 == 0. */
#define SS_CUDA_MMA_MAX_ROWS 32
int ss_cuda_matvec_mma_bf16(ss_cuda_ctx *c, float *d_y, const uint16_t *d_x,
                            const uint16_t *d_w, int n, int in, int out, ss_error *err);
/* The same with swiglu fused into its input: d_y = swiglu(gu) . W^T with gu
 * [n][2 d_ff] f32 (as ss_cuda_swiglu takes it), W bf16 [out][d_ff]. */
int ss_cuda_matvec_mma_swiglu_bf16(ss_cuda_ctx *c, float *d_y, const float *d_gu,
                                   const uint16_t *d_w, int n, int d_ff, int out,
                                   ss_error *err);

/* Prefill attention v1 (attention_prefill_v1.cu): arguments and result as
 * ss_cuda_attention_prefill. */
int ss_cuda_attention_prefill_v1(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                                 const uint16_t *d_kcache, const uint16_t *d_vcache,
                                 const int *d_slot, const int *d_pos, const int *d_tiles,
                                 int n_tiles, const ss_cuda_attn_shape *s, ss_error *err);

/* Rope and the KV store as two launches (rope_separate.cu).
 * ss_cuda_rope rotates the first n_heads heads of each row of
 * d_x[n][row_stride] in place (row i at position d_pos[i]). */
int ss_cuda_rope(ss_cuda_ctx *c, float *d_x, int row_stride, const int *d_pos, int n,
                 int n_heads, int head_dim, int neox, const float *d_inv_freq, ss_error *err);
/* Writes K and V of each row into the bf16 caches: d_qkv[n][qkv_stride]
 * holds k at column k_col and v at column k_col + kv_dim; row i goes to
 * slot d_slot[i], position d_pos[i] (layout as ss_cuda_rope_kv_store). */
int ss_cuda_kv_store(ss_cuda_ctx *c, uint16_t *d_kcache, uint16_t *d_vcache, const float *d_qkv,
                     int qkv_stride, int k_col, int kv_dim, const int *d_slot, const int *d_pos,
                     int n, int layer, int n_layers, int max_ctx, ss_error *err);

#ifdef __cplusplus
}
#endif

#endif
