/* kernels_matvec.cu - y[n][out] = x[n][in] . W^T for bf16 W [out][in] and
 * bf16 x, f32 accumulation and output.  Decode multiplies a few rows by
 * every weight once, so these kernels are bound by reading W.  The engine's
 * two paths (the winners of the variants timed side by side by
 * tests/device/variants/bench_variants.c, docs/cuda.md):
 *   v1 (n <= 8): one warp per output row, 16-byte W loads, 4 in flight per
 *      lane, each W chunk dotted with the n rows of x (re-read from L1 for
 *      every chunk, so n = 8 is L1-load bound: batch 8 ran slower than 32).
 *      SS_CUDA_MM_AUTO takes it for one row, where it reads W at 73% of the
 *      copy bandwidth (cuBLAS 69%).
 *   cuBLAS: cublasGemmEx, bf16 inputs, f32 output, compute 32F; every
 *      other batch (from 2 rows on it beat v1 and the tensor-core matvec).
 * The tensor-core matvec (v2) lost and lives in tests/device/variants/.
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_matmul on the
 * bf16-rounded inputs (every path, n = 1..32 and 64, shapes of Llama-3 8B
 * and SmolLM2, outputs poisoned, rel. L2 < 1e-3). */
#include "common.cuh"

/* ---------------------------------------------------------------- v1 */

#define SS_MV_WARPS 8 /* output rows per block */
#define SS_MV_UNROLL 4

template <int NB>
__global__ void __launch_bounds__(32 * SS_MV_WARPS)
    ss_matvec_kernel(float *y, const uint16_t *x, const uint16_t *w, int in, int out)
{
    int lane = threadIdx.x & 31;
    int row = blockIdx.x * SS_MV_WARPS + (threadIdx.x >> 5);
    if (row >= out)
        return; /* warp-uniform */
    const uint4 *wr = (const uint4 *)(w + (size_t)row * in);
    const uint4 *xr = (const uint4 *)x;
    int nch = in / 8, xch = in / 8;
    float acc[NB];
#pragma unroll
    for (int b = 0; b < NB; b++)
        acc[b] = 0.0f;

    for (int k0 = lane; k0 < nch; k0 += 32 * SS_MV_UNROLL) {
        uint4 wv[SS_MV_UNROLL];
#pragma unroll
        for (int u = 0; u < SS_MV_UNROLL; u++) {
            int k = k0 + 32 * u;
            wv[u] = k < nch ? __ldcs(wr + k) : make_uint4(0, 0, 0, 0); /* streamed once */
        }
#pragma unroll
        for (int u = 0; u < SS_MV_UNROLL; u++) {
            int k = k0 + 32 * u;
            if (k >= nch)
                break;
            float wf[8];
            ss_unpack8(wv[u], wf);
#pragma unroll
            for (int b = 0; b < NB; b++) {
                float xf[8];
                ss_unpack8(__ldg(xr + (size_t)b * xch + k), xf);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[b] += wf[e] * xf[e];
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        float v = ss_warp_sum(acc[b]);
        if (lane == 0)
            y[(size_t)b * out + row] = v;
    }
}

static int ss_matvec_v1(ss_cuda_ctx *c, float *y, const uint16_t *x, const uint16_t *w, int n,
                        int in, int out, ss_error *err)
{
    dim3 grid(ss_cdiv(out, SS_MV_WARPS)), block(32 * SS_MV_WARPS);
    cudaStream_t st = c->stream;
    switch (n) {
    case 1: ss_matvec_kernel<1><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 2: ss_matvec_kernel<2><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 3: ss_matvec_kernel<3><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 4: ss_matvec_kernel<4><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 5: ss_matvec_kernel<5><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 6: ss_matvec_kernel<6><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    case 7: ss_matvec_kernel<7><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    default: ss_matvec_kernel<8><<<grid, block, 0, st>>>(y, x, w, in, out); break;
    }
    SS_LAUNCHED(c, "ss_matvec_kernel", err);
    return 0;
}

/* ---------------------------------------------------------------- cuBLAS */

/* Row-major Y[n][out] = X[n][in] W^T is, column-major, Y^T = W^T' X^T
 * where W [out][in] row-major reads as the column-major in x out matrix. */
static int ss_gemm(ss_cuda_ctx *c, float *y, const uint16_t *x, const uint16_t *w, int n, int in,
                   int out, ss_error *err)
{
    const float one = 1.0f, zero = 0.0f;
    SS_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w, CUDA_R_16BF, in,
                         x, CUDA_R_16BF, in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT),
            err);
    return 0;
}

extern "C" int ss_cuda_matmul_bf16(ss_cuda_ctx *c, float *d_y, const uint16_t *d_x,
                                   const uint16_t *d_w, int n, int in, int out, int path,
                                   ss_error *err)
{
    if (n <= 0)
        return 0;
    int v1_ok = n <= SS_CUDA_MATVEC_MAX_ROWS && in % 8 == 0;
    if (path == SS_CUDA_MM_AUTO)
        path = v1_ok && n <= SS_CUDA_MATVEC_AUTO_ROWS ? SS_CUDA_MM_V1 : SS_CUDA_MM_CUBLAS;
    switch (path) {
    case SS_CUDA_MM_V1:
        if (!v1_ok)
            return ss_fail(err, "ss_cuda_matmul_bf16: matvec v1 needs n <= %d and in %% 8 == 0 "
                                "(n %d, in %d)", SS_CUDA_MATVEC_MAX_ROWS, n, in);
        return ss_matvec_v1(c, d_y, d_x, d_w, n, in, out, err);
    case SS_CUDA_MM_CUBLAS:
        return ss_gemm(c, d_y, d_x, d_w, n, in, out, err);
    default:
        return ss_fail(err, "ss_cuda_matmul_bf16: unknown path %d", path);
    }
}
