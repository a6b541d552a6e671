/* matvec_mma.cu - the tensor-core matvec (v2), kept beside its tests: it
 * lost to the engine's paths (matvec v1 at one row, cuBLAS above; H200,
 * Llama-3-8B shape, docs/cuda.md run 2: batch 1 58% of copy bandwidth
 * against v1's 73%, batch 8 7.1 ms against cuBLAS 5.9 ms for the matmuls of
 * a step) and is timed against them by bench_variants.c.
 *
 * y[n][out] = x[n][in] . W^T, W bf16 [out][in], x bf16 [n][in], f32 out,
 * n <= 32, in % 8 == 0: tensor cores (mma.sync m16n8k16 bf16 -> f32).  A
 * block of 8 warps owns 16 output rows and splits the k range among its
 * warps (so even 1024-row matrices launch 64 blocks x 8 warps with 8 loads
 * in flight per lane), then sums the 8 partials in shared memory in a fixed
 * order (deterministic).  The order of k inside an mma does not matter, so
 * each lane loads 8 contiguous k of a W row with one 16-byte load and feeds
 * them to two mmas; x rows are the mma's B operand (n padded to 8 with
 * zeros).  The SWIGLU form takes the f32 gate/up rows instead of x and
 * computes bf16(silu(gate) * up) on the fly (the down projection's input).
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_matmul (n =
 * 1..32, Llama-3-8B and SmolLM2 shapes, poisoned outputs, rel. L2 < 1e-3). */
#include "common.cuh"
#include "variants.h"

#define SS_MMA_WARPS 8  /* warps per block, splitting k */
#define SS_MMA_UNROLL 4 /* 32-k chunks per warp per load batch (two batches live) */

/* d += a . b for one m16n8k16 tile (bf16 in, f32 accumulate). */
static __device__ __forceinline__ void ss_mma_bf16(float *d, uint32_t a0, uint32_t a1,
                                                   uint32_t a2, uint32_t a3, uint32_t b0,
                                                   uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* W pieces of U chunks c, c + 8, ... (see below) for rows a and b; zeros
 * past in (in % 8 == 0: a 16-byte piece is all in or all out) or past out. */
template <int U>
static __device__ __forceinline__ void ss_mma_load_w(uint4 *va, uint4 *vb, const uint16_t *wa,
                                                     const uint16_t *wb, bool oka, bool okb,
                                                     int c, int t, int in)
{
#pragma unroll
    for (int u = 0; u < U; u++) {
        int k = (c + u * SS_MMA_WARPS) * 32 + 8 * t;
        bool ok = k < in;
        va[u] = ok && oka ? __ldcs((const uint4 *)(wa + k)) : make_uint4(0, 0, 0, 0);
        vb[u] = ok && okb ? __ldcs((const uint4 *)(wb + k)) : make_uint4(0, 0, 0, 0);
    }
}

static __device__ __forceinline__ uint32_t ss_swiglu_pair(float g0, float u0, float g1,
                                                          float u1)
{
    return (uint32_t)ss_to_bf(g0 / (1.0f + expf(-g0)) * u0) |
           ((uint32_t)ss_to_bf(g1 / (1.0f + expf(-g1)) * u1) << 16);
}

/* x values k .. k + 7 of one row as 8 bf16 (see SWIGLU below). */
template <bool SWIGLU>
static __device__ __forceinline__ uint4 ss_mma_load_x(const char *row, int k, int in)
{
    if (!SWIGLU)
        return __ldg((const uint4 *)((const uint16_t *)row + k));
    const float4 *gp = (const float4 *)((const float *)row + k);
    const float4 *up = (const float4 *)((const float *)row + in + k);
    float4 g0 = __ldg(gp), g1 = __ldg(gp + 1), u0 = __ldg(up), u1 = __ldg(up + 1);
    return make_uint4(ss_swiglu_pair(g0.x, u0.x, g0.y, u0.y), ss_swiglu_pair(g0.z, u0.z, g0.w, u0.w),
                      ss_swiglu_pair(g1.x, u1.x, g1.y, u1.y), ss_swiglu_pair(g1.z, u1.z, g1.w, u1.w));
}

/* Lane (g = lane / 4, t = lane % 4) of a warp, chunk of 32 k starting at
 * kb: W rows r0 + g and r0 + g + 8 and x rows nt * 8 + g, each at k
 * kb + 8t .. kb + 8t + 7 (one 16-byte load).  Mapped onto the mma's k
 * slots {2t, 2t+1, 2t+8, 2t+9} (words .x and .y for the first mma, .z and
 * .w for the second), identically for A and B, so the products pair up.
 * NT: n-tiles of 8 x rows.  SWIGLU: x is not bf16 [n][in] but the f32
 * gate/up rows gu [n][2 in], and the x piece is bf16(silu(gate) * up),
 * computed as ss_swiglu_kernel does (the swiglu launch and its output's
 * round trip are saved). */
template <int NT, bool SWIGLU>
__global__ void __launch_bounds__(32 * SS_MMA_WARPS)
    ss_matvec_mma_kernel(float *y, const void *x, const uint16_t *w, int n, int in, int out)
{
    __shared__ float4 red[SS_MMA_WARPS][NT][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    int r0 = blockIdx.x * 16;
    int ra = r0 + g, rb = r0 + g + 8;
    bool oka = ra < out, okb = rb < out;
    const uint16_t *wa = w + (size_t)(oka ? ra : 0) * in;
    const uint16_t *wb = w + (size_t)(okb ? rb : 0) * in;
    const char *xr[NT];
    bool okx[NT];
    size_t xrow_bytes = SWIGLU ? (size_t)in * 8 : (size_t)in * 2;
#pragma unroll
    for (int j = 0; j < NT; j++) {
        okx[j] = j * 8 + g < n;
        xr[j] = (const char *)x + (size_t)(okx[j] ? j * 8 + g : 0) * xrow_bytes;
    }
    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    /* chunk c covers k = 32c .. 32c + 31; warp w takes c = w, w + 8, ...
     * Double-buffered: the next SS_MMA_UNROLL chunks are loaded before the
     * current ones are multiplied (without it ptxas interleaved each load
     * with its mma, one chunk in flight per warp). */
    const int step = SS_MMA_WARPS * SS_MMA_UNROLL; /* chunks per iteration */
    uint4 ca[SS_MMA_UNROLL], cb[SS_MMA_UNROLL];
    ss_mma_load_w<SS_MMA_UNROLL>(ca, cb, wa, wb, oka, okb, warp, t, in);
    for (int c0 = warp; c0 * 32 < in; c0 += step) {
        uint4 na[SS_MMA_UNROLL], nb[SS_MMA_UNROLL];
        ss_mma_load_w<SS_MMA_UNROLL>(na, nb, wa, wb, oka, okb, c0 + step, t, in);
#pragma unroll
        for (int u = 0; u < SS_MMA_UNROLL; u++) {
            int k = (c0 + u * SS_MMA_WARPS) * 32 + 8 * t;
            bool ok = k < in;
#pragma unroll
            for (int j = 0; j < NT; j++) {
                uint4 xv = ok && okx[j] ? ss_mma_load_x<SWIGLU>(xr[j], k, in)
                                        : make_uint4(0, 0, 0, 0);
                ss_mma_bf16(acc[j], ca[u].x, cb[u].x, ca[u].y, cb[u].y, xv.x, xv.y);
                ss_mma_bf16(acc[j], ca[u].z, cb[u].z, ca[u].w, cb[u].w, xv.z, xv.w);
            }
        }
#pragma unroll
        for (int u = 0; u < SS_MMA_UNROLL; u++) {
            ca[u] = na[u];
            cb[u] = nb[u];
        }
    }
#pragma unroll
    for (int j = 0; j < NT; j++)
        red[warp][j][lane] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
    __syncthreads();
    /* thread -> (n-tile, lane, accumulator); sum the warps in a fixed order */
    for (int q = threadIdx.x; q < NT * 32 * 4; q += blockDim.x) {
        int j = q / 128, l = (q / 4) % 32, i = q % 4;
        float s = 0.0f;
#pragma unroll
        for (int v = 0; v < SS_MMA_WARPS; v++) {
            float4 p = red[v][j][l];
            s += i == 0 ? p.x : i == 1 ? p.y : i == 2 ? p.z : p.w;
        }
        /* accumulator i of lane l: row (l / 4) + 8 (i / 2), column 2 (l % 4) + i % 2 */
        int row = r0 + (l >> 2) + 8 * (i >> 1), col = j * 8 + 2 * (l & 3) + (i & 1);
        if (row < out && col < n)
            y[(size_t)col * out + row] = s;
    }
}

template <bool SWIGLU>
static int ss_matvec_v2(ss_cuda_ctx *c, float *y, const void *x, const uint16_t *w, int n, int in,
                        int out, ss_error *err)
{
    dim3 grid(ss_cdiv(out, 16)), block(32 * SS_MMA_WARPS);
    cudaStream_t st = c->stream;
    switch ((n + 7) / 8) {
    case 1: ss_matvec_mma_kernel<1, SWIGLU><<<grid, block, 0, st>>>(y, x, w, n, in, out); break;
    case 2: ss_matvec_mma_kernel<2, SWIGLU><<<grid, block, 0, st>>>(y, x, w, n, in, out); break;
    case 3: ss_matvec_mma_kernel<3, SWIGLU><<<grid, block, 0, st>>>(y, x, w, n, in, out); break;
    default: ss_matvec_mma_kernel<4, SWIGLU><<<grid, block, 0, st>>>(y, x, w, n, in, out); break;
    }
    SS_LAUNCHED(c, "ss_matvec_mma_kernel", err);
    return 0;
}

extern "C" int ss_cuda_matvec_mma_bf16(ss_cuda_ctx *c, float *d_y, const uint16_t *d_x,
                                       const uint16_t *d_w, int n, int in, int out, ss_error *err)
{
    if (n <= 0)
        return 0;
    if (n > SS_CUDA_MMA_MAX_ROWS || in % 8)
        return ss_fail(err, "ss_cuda_matvec_mma_bf16: needs n <= %d and in %% 8 == 0 (n %d, in "
                            "%d)", SS_CUDA_MMA_MAX_ROWS, n, in);
    return ss_matvec_v2<false>(c, d_y, d_x, d_w, n, in, out, err);
}

extern "C" int ss_cuda_matvec_mma_swiglu_bf16(ss_cuda_ctx *c, float *d_y, const float *d_gu,
                                              const uint16_t *d_w, int n, int d_ff, int out,
                                              ss_error *err)
{
    if (n <= 0)
        return 0;
    if (n > SS_CUDA_MMA_MAX_ROWS || d_ff % 8)
        return ss_fail(err, "ss_cuda_matvec_mma_swiglu_bf16: needs n <= %d and d_ff %% 8 == 0 "
                            "(n %d, d_ff %d)", SS_CUDA_MMA_MAX_ROWS, n, d_ff);
    return ss_matvec_v2<true>(c, d_y, d_gu, d_w, n, d_ff, out, err);
}
