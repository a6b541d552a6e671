/* kernels_sample.cu - greedy decoding on the GPU: the index of the largest
 * logit of each row (lowest index on ties, as ss_argmax), so bench and
 * greedy loops need not copy whole vocabularies to the host.
 * Checked by tests/device/test_cuda_kernels.c against ss_argmax on random
 * rows with planted maxima and planted ties. */
#include "common.cuh"

static __device__ __forceinline__ void ss_better(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

__global__ void ss_argmax_kernel(int *ids, const float *logits, int vocab)
{
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x)
        ss_better(best, bi, row[j], j);
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_xor_sync(0xffffffffu, best, o);
        int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
        ss_better(best, bi, v2, i2);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        best = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            float v2 = __shfl_xor_sync(0xffffffffu, best, o);
            int i2 = __shfl_xor_sync(0xffffffffu, bi, o);
            ss_better(best, bi, v2, i2);
        }
        if (lane == 0)
            ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi; /* all -inf/NaN: index 0 */
    }
}

extern "C" int ss_cuda_argmax(ss_cuda_ctx *c, int *d_ids, const float *d_logits, int n, int vocab,
                              ss_error *err)
{
    if (n <= 0)
        return 0;
    ss_argmax_kernel<<<n, 1024, 0, c->stream>>>(d_ids, d_logits, vocab);
    SS_LAUNCHED(c, "ss_argmax_kernel", err);
    return 0;
}
