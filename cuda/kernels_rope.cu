/* kernels_rope.cu - rotary position embedding, in place on f32 rows, and
 * the store of rotated K and V rows into the bf16 KV cache.
 *
 * The inverse frequencies come precomputed from ss_cpu_rope_inv_freq (rope
 * theta and llama3 scaling applied on the host), so the kernel only
 * rotates: pair (a, b) = (2j, 2j+1) for GGUF files, (j, j + head_dim/2) for
 * Hugging Face (neox) checkpoints, angle pos * inv_freq[j].
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_rope for both
 * pairings and with llama3 scaling (poisoned outputs, rel. L2 < 1e-3);
 * the cache store is checked through the attention tests. */
#include "common.cuh"

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

/* v2: rope on the q and k heads and the store of k and v into the caches
 * in one launch, one (head, pair) or v pair per thread over a grid of
 * (row, 256-item block): v1 (rope then kv_store) gave each row one block
 * whose threads walked 20 pairs each, every step a dependent global round
 * trip (about 10 us per layer at batch 1). */
__global__ void ss_rope_kv_kernel(float *qkv, int stride, const int *positions, const int *slots,
                                  int n_heads, int n_kv, int head_dim, int neox,
                                  const float *inv_freq, uint16_t *kc, uint16_t *vc, int layer,
                                  int n_layers, int max_ctx)
{
    int i = blockIdx.x, item = blockIdx.y * blockDim.x + threadIdx.x;
    int half = head_dim / 2, n_rot = (n_heads + n_kv) * half, kvd = n_kv * head_dim;
    int q_dim = n_heads * head_dim;
    float *row = qkv + (size_t)i * stride;
    size_t off = (((size_t)slots[i] * n_layers + layer) * max_ctx + positions[i]) * kvd;
    if (item < n_rot) {
        int h = item / half, j = item % half;
        float s, c;
        sincosf((float)positions[i] * inv_freq[j], &s, &c);
        int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
        float *hp = row + (size_t)h * head_dim;
        float xa = hp[a], xb = hp[b];
        float ya = xa * c - xb * s, yb = xa * s + xb * c;
        if (h < n_heads) {
            hp[a] = ya;
            hp[b] = yb;
        } else { /* k head: only the cache keeps it */
            size_t kpos = off + (size_t)(h - n_heads) * head_dim;
            kc[kpos + a] = ss_to_bf(ya);
            kc[kpos + b] = ss_to_bf(yb);
        }
    } else if (item < n_rot + kvd / 2) {
        int e = 2 * (item - n_rot);
        const float *v = row + q_dim + kvd;
        vc[off + e] = ss_to_bf(v[e]);
        vc[off + e + 1] = ss_to_bf(v[e + 1]);
    }
}

extern "C" int ss_cuda_rope_kv_store(ss_cuda_ctx *c, float *d_qkv, int qkv_stride,
                                     const int *d_slot, const int *d_pos, int n, int n_heads,
                                     int n_kv_heads, int head_dim, int neox,
                                     const float *d_inv_freq, uint16_t *d_kcache,
                                     uint16_t *d_vcache, int layer, int n_layers, int max_ctx,
                                     ss_error *err)
{
    if (n <= 0)
        return 0;
    if (head_dim % 2)
        return ss_fail(err, "ss_cuda_rope_kv_store: head_dim %d is odd", head_dim);
    int items = (n_heads + n_kv_heads) * (head_dim / 2) + n_kv_heads * head_dim / 2;
    dim3 grid(n, ss_cdiv(items, 256));
    ss_rope_kv_kernel<<<grid, 256, 0, c->stream>>>(d_qkv, qkv_stride, d_pos, d_slot, n_heads,
                                                    n_kv_heads, head_dim, neox, d_inv_freq,
                                                    d_kcache, d_vcache, layer, n_layers, max_ctx);
    SS_LAUNCHED(c, "ss_rope_kv_kernel", err);
    return 0;
}
