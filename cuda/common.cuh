/* common.cuh - error checks, bf16 helpers and reductions shared by the
 * kernel files.  Every CUDA call goes through SS_CU (returns -1 with the
 * call text, file, line and CUDA's message); every launch is followed by
 * SS_LAUNCHED, which reads cudaGetLastError and, with SAFESTEER_CUDA_SYNC=1,
 * synchronises so faults surface at the kernel that caused them. */
#ifndef SAFESTEER_CUDA_COMMON_CUH
#define SAFESTEER_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include "kernels.h"

struct ss_cuda_ctx {
    int gpu;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *workspace;        /* cuBLAS workspace (fixed, so graph capture works) */
    size_t workspace_bytes;
    int sync_each;          /* SAFESTEER_CUDA_SYNC=1 */
    int capturing;          /* inside stream capture: no synchronisation */
};

#define SS_CU(call, err)                                                                   \
    do {                                                                                   \
        cudaError_t ss_e_ = (call);                                                        \
        if (ss_e_ != cudaSuccess)                                                          \
            return ss_fail((err), "%s:%d: %s: %s", __FILE__, __LINE__, #call,             \
                           cudaGetErrorString(ss_e_));                                     \
    } while (0)

#define SS_BLAS(call, err)                                                                 \
    do {                                                                                   \
        cublasStatus_t ss_s_ = (call);                                                     \
        if (ss_s_ != CUBLAS_STATUS_SUCCESS)                                                \
            return ss_fail((err), "%s:%d: %s: cuBLAS status %d (%s)", __FILE__, __LINE__,  \
                           #call, (int)ss_s_, cublasGetStatusString(ss_s_));               \
    } while (0)

/* After a launch on ctx c: report launch errors (and faults when syncing). */
int ss_cuda_launched(ss_cuda_ctx *c, const char *kernel, ss_error *err);
#define SS_LAUNCHED(c, name, err)                                                          \
    do {                                                                                   \
        if (ss_cuda_launched((c), (name), (err)))                                          \
            return -1;                                                                     \
    } while (0)

typedef __nv_bfloat16 bf16;

static __device__ __forceinline__ float ss_bf(uint16_t v)
{
    return __uint_as_float(((uint32_t)v) << 16);
}

static __device__ __forceinline__ uint16_t ss_to_bf(float f)
{
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* 8 bf16 in a 16-byte word -> 8 floats. */
static __device__ __forceinline__ void ss_unpack8(uint4 w, float *f)
{
    f[0] = __uint_as_float(w.x << 16);
    f[1] = __uint_as_float(w.x & 0xffff0000u);
    f[2] = __uint_as_float(w.y << 16);
    f[3] = __uint_as_float(w.y & 0xffff0000u);
    f[4] = __uint_as_float(w.z << 16);
    f[5] = __uint_as_float(w.z & 0xffff0000u);
    f[6] = __uint_as_float(w.w << 16);
    f[7] = __uint_as_float(w.w & 0xffff0000u);
}

static __device__ __forceinline__ float ss_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float ss_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every
 * thread gets the result.  red[32] is shared scratch. */
static __device__ __forceinline__ float ss_block_sum(float v, float *red)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = ss_warp_sum(v);
    __syncthreads(); /* red may still be read by a previous call */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    v = lane < nw ? red[lane] : 0.0f;
    return ss_warp_sum(v);
}

static inline unsigned ss_cdiv(size_t a, size_t b)
{
    return (unsigned)((a + b - 1) / b);
}

#endif
