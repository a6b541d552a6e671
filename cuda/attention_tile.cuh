/* attention_tile.cuh - the tiling every prefill attention kernel shares
 * (the engine's v2 in kernels_attention.cu, v1 in tests/device/variants/):
 * a block takes <= SS_PF_BQ consecutive query rows of one sequence and one
 * query head, stages its queries in shared memory, streams K/V tiles of
 * SS_PF_BK positions, and writes each query's normalised output. */
#ifndef SAFESTEER_CUDA_ATTENTION_TILE_CUH
#define SAFESTEER_CUDA_ATTENTION_TILE_CUH

#include "common.cuh"

#define SS_PF_BQ 16   /* queries per prefill block (4 warps x 4) */
#define SS_PF_BK 32   /* keys per shared-memory tile */

/* A prefill block's work: query rows row0..row0+nq-1 of one sequence (at
 * positions pos0..), query head h, and the offset of that sequence's layer
 * for h's K/V head in the cache (rows of kvd elements). */
struct ss_pf_tile {
    int row0, nq, h, pos0, kvd;
    size_t base;
};

/* Reads the block's tile and stages its queries, pre-scaled by
 * 1/sqrt(HD), in sq[SS_PF_BQ][HD] (rows past nq zero). */
template <int HD>
static __device__ __forceinline__ ss_pf_tile ss_pf_begin(float *sq, const float *q,
                                                         const int *slots, const int *positions,
                                                         const int *tiles, ss_cuda_attn_shape s)
{
    ss_pf_tile t;
    t.row0 = tiles[2 * blockIdx.x];
    t.nq = tiles[2 * blockIdx.x + 1];
    t.h = blockIdx.y;
    t.pos0 = positions[t.row0];
    t.kvd = s.n_kv_heads * HD;
    int kvh = t.h / (s.n_heads / s.n_kv_heads);
    t.base = ((size_t)slots[t.row0] * s.n_layers + s.layer) * s.max_ctx * t.kvd + (size_t)kvh * HD;
    float scale = rsqrtf((float)HD);
    for (int k = threadIdx.x; k < SS_PF_BQ * HD; k += blockDim.x) {
        int r = k / HD, dd = k % HD;
        sq[k] = r < t.nq ? q[(size_t)(t.row0 + r) * s.q_stride + t.h * HD + dd] * scale : 0.0f;
    }
    return t;
}

/* Online-softmax state before the first key: max -inf, sums and outputs 0. */
template <int HD>
static __device__ __forceinline__ void ss_pf_reset(float (&m)[4], float (&l)[4],
                                                   float (&acc)[4][HD / 32])
{
#pragma unroll
    for (int a = 0; a < 4; a++) {
        m[a] = -INFINITY;
        l[a] = 0.0f;
#pragma unroll
        for (int c = 0; c < HD / 32; c++)
            acc[a][c] = 0.0f;
    }
}

/* Writes each of the warp's 4 queries' normalised output (lane owns
 * dimensions lane + 32c) as bf16. */
template <int HD>
static __device__ __forceinline__ void ss_pf_finish(uint16_t *out, const ss_pf_tile &t, int warp,
                                                    int lane, const float (&l)[4],
                                                    const float (&acc)[4][HD / 32],
                                                    ss_cuda_attn_shape s)
{
#pragma unroll
    for (int a = 0; a < 4; a++) {
        int r = warp * 4 + a;
        if (r >= t.nq)
            continue;
        uint16_t *o = out + (size_t)(t.row0 + r) * s.n_heads * HD + t.h * HD;
        float inv = 1.0f / l[a];
#pragma unroll
        for (int c = 0; c < HD / 32; c++)
            o[lane + 32 * c] = ss_to_bf(acc[a][c] * inv);
    }
}

/* Shape checks shared by the prefill and decode launchers. */
int ss_attn_check(const ss_cuda_attn_shape *s, ss_error *err);

/* A prefill kernel instantiated for one head_dim. */
typedef void (*ss_pf_kernel)(uint16_t *out, const float *q, const uint16_t *kc,
                             const uint16_t *vc, const int *slots, const int *positions,
                             const int *tiles, ss_cuda_attn_shape s);

/* Checks s and launches kernels[0, 1, 2] (head_dim 64, 96, 128) over
 * (tile, head) blocks of 128 threads. */
int ss_pf_launch(ss_cuda_ctx *c, const char *name, const ss_pf_kernel kernels[3],
                 uint16_t *d_out, const float *d_q, const uint16_t *d_kcache,
                 const uint16_t *d_vcache, const int *d_slot, const int *d_pos,
                 const int *d_tiles, int n_tiles, const ss_cuda_attn_shape *s, ss_error *err);

#endif
