/* kernels_rope.cu - rotary position embedding on the q and k heads of the
 * fused qkv rows and the store of rotated K and V into the bf16 KV cache,
 * in one launch (v2; v1, rope then a separate store, lives in
 * tests/device/variants/rope_separate.cu).
 *
 * The inverse frequencies come precomputed from ss_cpu_rope_inv_freq (rope
 * theta and llama3 scaling applied on the host), so the kernel only
 * rotates: pair (a, b) = (2j, 2j+1) for GGUF files, (j, j + head_dim/2) for
 * Hugging Face (neox) checkpoints, angle pos * inv_freq[j].
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_rope for both
 * pairings and with llama3 scaling and against the cache rows v1 writes
 * (poisoned outputs, rel. L2 < 1e-3). */
#include "common.cuh"

/* Rope on the q and k heads and the store of k and v into the caches in
 * one launch, one (head, pair) or v pair per thread over a grid of
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
