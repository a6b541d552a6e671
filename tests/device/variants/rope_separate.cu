/* rope_separate.cu - rope and the KV-cache store as two launches (v1),
 * kept beside their tests: one block per row whose threads walk ~20 pairs
 * each, every step a dependent global round trip (about 10 us per layer at
 * batch 1 on the H200); the engine's fused ss_cuda_rope_kv_store replaced
 * them.  Timed against it by bench_variants.c; checked by
 * tests/device/test_cuda_kernels.c against ss_cpu_rope (rel. L2 < 1e-3). */
#include "common.cuh"
#include "variants.h"

/* One block per row; threads walk the (head, pair) grid of the row. */
__global__ void ss_rope_kernel(float *x, int row_stride, const int *positions, int n_heads,
                               int head_dim, int neox, const float *inv_freq)
{
    int half = head_dim / 2;
    float *row = x + (size_t)blockIdx.x * row_stride;
    float pos = (float)positions[blockIdx.x];
    for (int k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
        int h = k / half, j = k % half;
        float s, c;
        sincosf(pos * inv_freq[j], &s, &c);
        float *hp = row + (size_t)h * head_dim;
        int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
        float xa = hp[a], xb = hp[b];
        hp[a] = xa * c - xb * s;
        hp[b] = xa * s + xb * c;
    }
}

extern "C" int ss_cuda_rope(ss_cuda_ctx *c, float *d_x, int row_stride, const int *d_pos, int n,
                            int n_heads, int head_dim, int neox, const float *d_inv_freq,
                            ss_error *err)
{
    if (n <= 0)
        return 0;
    if (head_dim % 2)
        return ss_fail(err, "ss_cuda_rope: head_dim %d is odd", head_dim);
    ss_rope_kernel<<<n, 128, 0, c->stream>>>(d_x, row_stride, d_pos, n_heads, head_dim, neox,
                                              d_inv_freq);
    SS_LAUNCHED(c, "ss_rope_kernel", err);
    return 0;
}

/* One block per row: K then V, f32 -> bf16, into the slot's cache row. */
__global__ void ss_kv_store_kernel(uint16_t *kc, uint16_t *vc, const float *qkv, int qkv_stride,
                                   int k_col, int kv_dim, const int *slots, const int *positions,
                                   int layer, int n_layers, int max_ctx)
{
    int i = blockIdx.x;
    size_t off = (((size_t)slots[i] * n_layers + layer) * max_ctx + positions[i]) * kv_dim;
    const float *k = qkv + (size_t)i * qkv_stride + k_col;
    const float *v = k + kv_dim;
    for (int j = threadIdx.x; j < kv_dim; j += blockDim.x) {
        kc[off + j] = ss_to_bf(k[j]);
        vc[off + j] = ss_to_bf(v[j]);
    }
}

extern "C" int ss_cuda_kv_store(ss_cuda_ctx *c, uint16_t *d_kcache, uint16_t *d_vcache,
                                const float *d_qkv, int qkv_stride, int k_col, int kv_dim,
                                const int *d_slot, const int *d_pos, int n, int layer,
                                int n_layers, int max_ctx, ss_error *err)
{
    if (n <= 0)
        return 0;
    ss_kv_store_kernel<<<n, 256, 0, c->stream>>>(d_kcache, d_vcache, d_qkv, qkv_stride, k_col,
                                                  kv_dim, d_slot, d_pos, layer, n_layers,
                                                  max_ctx);
    SS_LAUNCHED(c, "ss_kv_store_kernel", err);
    return 0;
}
