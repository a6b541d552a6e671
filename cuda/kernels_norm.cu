/* kernels_norm.cu - row-wise and element-wise kernels:
 *   embedding gather (bf16 table -> f32 rows),
 *   RMSNorm (f32 in, bf16 out, optional row gather for the final norm),
 *   fused residual add + steering (+ the following RMSNorm),
 *   SwiGLU (silu(gate) * up -> bf16),
 *   f32 <-> bf16 conversion and seeded random fills (synthetic weights).
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_rmsnorm,
 * ss_cpu_steer and ss_cpu_swiglu on random rows (outputs poisoned with NaN
 * first; relative L2 error < 1e-2 for bf16 outputs). */
#include "common.cuh"

/* ---------------------------------------------------------------- embed */

__global__ void ss_embed_kernel(float *x, const uint16_t *table, const int32_t *ids, int d)
{
    const uint16_t *row = table + (size_t)ids[blockIdx.x] * d;
    float *out = x + (size_t)blockIdx.x * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        out[j] = ss_bf(row[j]);
}

extern "C" int ss_cuda_embed(ss_cuda_ctx *c, float *d_x, const uint16_t *d_table,
                             const int32_t *d_ids, int n, int d, ss_error *err)
{
    if (n <= 0)
        return 0;
    ss_embed_kernel<<<n, 256, 0, c->stream>>>(d_x, d_table, d_ids, d);
    SS_LAUNCHED(c, "ss_embed_kernel", err);
    return 0;
}

/* ---------------------------------------------------------------- rmsnorm */

/* One block per output row; the sum of squares is a block reduction. */
__global__ void ss_rmsnorm_kernel(uint16_t *out, const float *x, const int *rows, const float *w,
                                  int d, float eps)
{
    __shared__ float red[32];
    int r = rows ? rows[blockIdx.x] : (int)blockIdx.x;
    const float *xr = x + (size_t)r * d;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        ss += xr[j] * xr[j];
    ss = ss_block_sum(ss, red);
    float rs = rsqrtf(ss / (float)d + eps);
    uint16_t *o = out + (size_t)blockIdx.x * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        o[j] = ss_to_bf(xr[j] * rs * w[j]);
}

extern "C" int ss_cuda_rmsnorm(ss_cuda_ctx *c, uint16_t *d_out, const float *d_x,
                               const int *d_rows, const float *d_w, int n, int d, float eps,
                               ss_error *err)
{
    if (n <= 0)
        return 0;
    ss_rmsnorm_kernel<<<n, 256, 0, c->stream>>>(d_out, d_x, d_rows, d_w, d, eps);
    SS_LAUNCHED(c, "ss_rmsnorm_kernel", err);
    return 0;
}

/* ---------------------------------------------------------------- residual + steering */

/* How one row is steered at (site, layer): op, strength and vector, or
 * v == nullptr when it is not (slot off, strength 0, position outside the
 * slot's range [pos_begin, pos_end), end -1: none).  sp is the device
 * mirror of ss_cuda_steer_params. */
typedef struct {
    int op;
    float alpha;
    const float *v; /* [d] */
} ss_row_steer;

static __device__ __forceinline__ ss_row_steer ss_row_steering(const ss_cuda_steer_params &sp,
                                                               int slot, int pos, int site,
                                                               int layer, int d)
{
    ss_row_steer st = {0, 0.0f, nullptr};
    if (!sp.d_info || !sp.d_vec || !sp.d_info[slot * 3 + 0])
        return st;
    int pb = sp.d_info[slot * 3 + 1], pe = sp.d_info[slot * 3 + 2];
    size_t at = ((size_t)slot * SS_SITE_COUNT + site) * sp.n_layers + layer;
    float alpha = sp.d_alpha[at];
    if (alpha == 0.0f || pos < pb || (pe >= 0 && pos >= pe))
        return st;
    st.op = sp.d_ops[at];
    st.alpha = alpha;
    st.v = sp.d_vec + at * d;
    return st;
}

/* The block output's steering (site = block) and, after the MLP, the
 * layer output's (resid_post), for one row. */
static __device__ __forceinline__ void ss_row_sites(const ss_cuda_steer_params &sp, int slot,
                                                    int pos, int block, int layer, int d,
                                                    ss_row_steer *out_t, ss_row_steer *out_x)
{
    *out_t = ss_row_steering(sp, slot, pos, block, layer, d);
    *out_x = block == SS_SITE_MLP_OUT ? ss_row_steering(sp, slot, pos, SS_SITE_RESID_POST, layer, d)
                                      : ss_row_steer{0, 0.0f, nullptr};
}

/* Applies ADD or ABLATE of vector v to h[d] (one row, whole block).
 * Returns after every thread has updated its own elements. */
static __device__ void ss_steer_row(float *h, const float *v, int d, int op, float alpha,
                                    float *red)
{
    if (op == SS_STEER_ADD) {
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            h[j] = h[j] + alpha * v[j];
    } else {
        float dot = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            dot += h[j] * v[j];
        dot = ss_block_sum(dot, red);
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            h[j] = h[j] - dot * v[j];
    }
}

__global__ void ss_residual_steer_kernel(float *x, float *delta, uint16_t *xb,
                                         const float *norm_w, float eps, const int *slots,
                                         const int *positions, int d, int block, int layer,
                                         ss_cuda_steer_params sp)
{
    __shared__ float red[32];
    int i = blockIdx.x, slot = slots[i], pos = positions[i];
    float *xr = x + (size_t)i * d, *tr = delta + (size_t)i * d;
    ss_row_steer st, sx;
    ss_row_sites(sp, slot, pos, block, layer, d, &st, &sx);

    if (st.v) /* ATTN_OUT or MLP_OUT: steer the block output */
        ss_steer_row(tr, st.v, d, st.op, st.alpha, red);
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        xr[j] = xr[j] + tr[j];
    if (sx.v) /* RESID_POST, after the MLP's residual add */
        ss_steer_row(xr, sx.v, d, sx.op, sx.alpha, red);

    if (norm_w) {
        float ss = 0.0f;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            ss += xr[j] * xr[j];
        ss = ss_block_sum(ss, red);
        float rs = rsqrtf(ss / (float)d + eps);
        uint16_t *o = xb + (size_t)i * d;
        for (int j = threadIdx.x; j < d; j += blockDim.x)
            o[j] = ss_to_bf(xr[j] * rs * norm_w[j]);
    }
}

/* v2: the same function with the row held in registers.  Every thread
 * loads its float4 pieces of x, delta and (when steered) v at once, so a
 * row costs one memory round trip instead of one per pass (v1 walks the
 * row 3-5 times, each pass a chain of dependent loads and stores on one
 * SM), and steering only adds the parallel read of its vector.
 * Thread k owns float4 j = k + u * blockDim.x, u < SS_RS_V. */
#define SS_RS_THREADS 512
#define SS_RS_V 4 /* d <= 4 * 4 * 512 = 8192 */

static __device__ __forceinline__ float ss_dot4(float4 a, float4 b)
{
    return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

/* ADD or ABLATE of v on the register row h (whole block). */
static __device__ __forceinline__ void ss_steer_regs(float4 *h, const float4 *v, int nv, int op,
                                                     float alpha, float *red)
{
    if (op == SS_STEER_ADD) {
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++) {
            h[u].x = h[u].x + alpha * v[u].x;
            h[u].y = h[u].y + alpha * v[u].y;
            h[u].z = h[u].z + alpha * v[u].z;
            h[u].w = h[u].w + alpha * v[u].w;
        }
    } else {
        float dot = 0.0f;
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++)
            if (threadIdx.x + u * blockDim.x < nv)
                dot += ss_dot4(h[u], v[u]);
        dot = ss_block_sum(dot, red);
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++) {
            h[u].x = h[u].x - dot * v[u].x;
            h[u].y = h[u].y - dot * v[u].y;
            h[u].z = h[u].z - dot * v[u].z;
            h[u].w = h[u].w - dot * v[u].w;
        }
    }
}

__global__ void __launch_bounds__(SS_RS_THREADS)
    ss_residual_steer_v2_kernel(float *x, float *delta, uint16_t *xb, const float *norm_w,
                                float eps, const int *slots, const int *positions, int d,
                                int block, int layer, ss_cuda_steer_params sp)
{
    __shared__ float red[32];
    int i = blockIdx.x, slot = slots[i], pos = positions[i], nv = d / 4;
    float4 *xr = (float4 *)(x + (size_t)i * d), *tr = (float4 *)(delta + (size_t)i * d);
    ss_row_steer st, sx;
    ss_row_sites(sp, slot, pos, block, layer, d, &st, &sx);
    /* the first vector used comes with the row's own loads */
    const float4 *v_first = (const float4 *)(st.v ? st.v : sx.v);

    const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float4 h[SS_RS_V], t[SS_RS_V], vv[SS_RS_V];
#pragma unroll
    for (int u = 0; u < SS_RS_V; u++) {
        int j = threadIdx.x + u * blockDim.x;
        bool ok = j < nv;
        h[u] = ok ? xr[j] : z;
        t[u] = ok ? tr[j] : z;
        vv[u] = ok && v_first ? v_first[j] : z;
    }
    if (st.v) { /* ATTN_OUT or MLP_OUT: steer the block output, written back for capture */
        ss_steer_regs(t, vv, nv, st.op, st.alpha, red);
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++)
            if (threadIdx.x + u * blockDim.x < nv)
                tr[threadIdx.x + u * blockDim.x] = t[u];
    }
#pragma unroll
    for (int u = 0; u < SS_RS_V; u++) {
        h[u].x = h[u].x + t[u].x;
        h[u].y = h[u].y + t[u].y;
        h[u].z = h[u].z + t[u].z;
        h[u].w = h[u].w + t[u].w;
    }
    if (sx.v) { /* RESID_POST, after the MLP's residual add */
        if (st.v) { /* both steered: the second vector now */
            const float4 *v4 = (const float4 *)sx.v;
#pragma unroll
            for (int u = 0; u < SS_RS_V; u++) {
                int j = threadIdx.x + u * blockDim.x;
                vv[u] = j < nv ? v4[j] : z;
            }
        }
        ss_steer_regs(h, vv, nv, sx.op, sx.alpha, red);
    }
#pragma unroll
    for (int u = 0; u < SS_RS_V; u++)
        if (threadIdx.x + u * blockDim.x < nv)
            xr[threadIdx.x + u * blockDim.x] = h[u];

    if (norm_w) {
        float ss = 0.0f;
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++)
            ss += ss_dot4(h[u], h[u]); /* padding lanes hold zeros */
        ss = ss_block_sum(ss, red);
        float rs = rsqrtf(ss / (float)d + eps);
        const float4 *w4 = (const float4 *)norm_w;
        uint2 *o = (uint2 *)(xb + (size_t)i * d);
#pragma unroll
        for (int u = 0; u < SS_RS_V; u++) {
            int j = threadIdx.x + u * blockDim.x;
            if (j < nv) {
                float4 w = w4[j];
                uint2 p;
                p.x = (uint32_t)ss_to_bf(h[u].x * rs * w.x) |
                      ((uint32_t)ss_to_bf(h[u].y * rs * w.y) << 16);
                p.y = (uint32_t)ss_to_bf(h[u].z * rs * w.z) |
                      ((uint32_t)ss_to_bf(h[u].w * rs * w.w) << 16);
                o[j] = p;
            }
        }
    }
}

/* v2 when the row fits its registers (unless general), else v1. */
static int ss_residual_launch(ss_cuda_ctx *c, int general, float *d_x, float *d_delta,
                              uint16_t *d_xb, const float *d_norm_w, float eps, const int *d_slot,
                              const int *d_pos, int n, int d, int block, int layer,
                              const ss_cuda_steer_params *sp, ss_error *err)
{
    if (n <= 0)
        return 0;
    if (block != SS_SITE_ATTN_OUT && block != SS_SITE_MLP_OUT)
        return ss_fail(err, "ss_cuda_residual_steer: block %d is not ATTN_OUT or MLP_OUT", block);
    ss_cuda_steer_params none = {nullptr, nullptr, nullptr, nullptr, 0};
    ss_cuda_steer_params p = sp ? *sp : none;
    if (!general && d % 4 == 0 && d <= 4 * SS_RS_V * SS_RS_THREADS) {
        /* fewer threads for narrow rows: every thread owns >= 1 float4 */
        int threads = d / 4 < SS_RS_THREADS ? (d / 4 + 31) / 32 * 32 : SS_RS_THREADS;
        ss_residual_steer_v2_kernel<<<n, threads, 0, c->stream>>>(
            d_x, d_delta, d_xb, d_norm_w, eps, d_slot, d_pos, d, block, layer, p);
        SS_LAUNCHED(c, "ss_residual_steer_v2_kernel", err);
        return 0;
    }
    ss_residual_steer_kernel<<<n, 256, 0, c->stream>>>(d_x, d_delta, d_xb, d_norm_w, eps, d_slot,
                                                       d_pos, d, block, layer, p);
    SS_LAUNCHED(c, "ss_residual_steer_kernel", err);
    return 0;
}

extern "C" int ss_cuda_residual_steer(ss_cuda_ctx *c, float *d_x, float *d_delta, uint16_t *d_xb,
                                      const float *d_norm_w, float eps, const int *d_slot,
                                      const int *d_pos, int n, int d, int block, int layer,
                                      const ss_cuda_steer_params *sp, ss_error *err)
{
    return ss_residual_launch(c, 0, d_x, d_delta, d_xb, d_norm_w, eps, d_slot, d_pos, n, d, block,
                              layer, sp, err);
}

extern "C" int ss_cuda_residual_steer_general(ss_cuda_ctx *c, float *d_x, float *d_delta,
                                              uint16_t *d_xb, const float *d_norm_w, float eps,
                                              const int *d_slot, const int *d_pos, int n, int d,
                                              int block, int layer,
                                              const ss_cuda_steer_params *sp, ss_error *err)
{
    return ss_residual_launch(c, 1, d_x, d_delta, d_xb, d_norm_w, eps, d_slot, d_pos, n, d, block,
                              layer, sp, err);
}

/* ---------------------------------------------------------------- swiglu */

__global__ void ss_swiglu_kernel(uint16_t *out, const float *gu, int n, int d_ff)
{
    size_t total = (size_t)n * d_ff;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < total;
         k += (size_t)gridDim.x * blockDim.x) {
        size_t i = k / d_ff, j = k % d_ff;
        float g = gu[i * 2 * d_ff + j], u = gu[i * 2 * d_ff + d_ff + j];
        out[k] = ss_to_bf(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" int ss_cuda_swiglu(ss_cuda_ctx *c, uint16_t *d_out, const float *d_gu, int n,
                              int d_ff, ss_error *err)
{
    if (n <= 0)
        return 0;
    size_t total = (size_t)n * d_ff;
    unsigned blocks = ss_cdiv(total, 256);
    if (blocks > 65535u * 4u)
        blocks = 65535u * 4u;
    ss_swiglu_kernel<<<blocks, 256, 0, c->stream>>>(d_out, d_gu, n, d_ff);
    SS_LAUNCHED(c, "ss_swiglu_kernel", err);
    return 0;
}

/* ---------------------------------------------------------------- conversions */

__global__ void ss_f32_to_bf16_kernel(uint16_t *dst, const float *src, size_t n)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x)
        dst[k] = ss_to_bf(src[k]);
}

__global__ void ss_bf16_to_f32_kernel(float *dst, const uint16_t *src, size_t n)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x)
        dst[k] = ss_bf(src[k]);
}

static unsigned ss_grid_for(size_t n)
{
    unsigned b = ss_cdiv(n, 256);
    if (b > 8192u)
        b = 8192u;
    return b ? b : 1u;
}

extern "C" int ss_cuda_f32_to_bf16(ss_cuda_ctx *c, uint16_t *d_dst, const float *d_src, size_t n,
                                   ss_error *err)
{
    if (n == 0)
        return 0;
    ss_f32_to_bf16_kernel<<<ss_grid_for(n), 256, 0, c->stream>>>(d_dst, d_src, n);
    SS_LAUNCHED(c, "ss_f32_to_bf16_kernel", err);
    return 0;
}

extern "C" int ss_cuda_bf16_to_f32(ss_cuda_ctx *c, float *d_dst, const uint16_t *d_src, size_t n,
                                   ss_error *err)
{
    if (n == 0)
        return 0;
    ss_bf16_to_f32_kernel<<<ss_grid_for(n), 256, 0, c->stream>>>(d_dst, d_src, n);
    SS_LAUNCHED(c, "ss_bf16_to_f32_kernel", err);
    return 0;
}

/* ---------------------------------------------------------------- random fills */

/* Uniform in [-1, 1) from a splitmix64 hash of (seed, index). */
static __device__ __forceinline__ float ss_hash_uniform(uint64_t seed, size_t k)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(k + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void ss_fill_bf16_kernel(uint16_t *dst, size_t n, uint64_t seed, float offset,
                                    float scale)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x)
        dst[k] = ss_to_bf(offset + scale * ss_hash_uniform(seed, k));
}

__global__ void ss_fill_f32_kernel(float *dst, size_t n, uint64_t seed, float offset, float scale)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n;
         k += (size_t)gridDim.x * blockDim.x)
        dst[k] = offset + scale * ss_hash_uniform(seed, k);
}

extern "C" int ss_cuda_fill_random_bf16(ss_cuda_ctx *c, uint16_t *d_dst, size_t n, uint64_t seed,
                                        float offset, float scale, ss_error *err)
{
    if (n == 0)
        return 0;
    ss_fill_bf16_kernel<<<ss_grid_for(n), 256, 0, c->stream>>>(d_dst, n, seed, offset, scale);
    SS_LAUNCHED(c, "ss_fill_bf16_kernel", err);
    return 0;
}

extern "C" int ss_cuda_fill_random_f32(ss_cuda_ctx *c, float *d_dst, size_t n, uint64_t seed,
                                       float offset, float scale, ss_error *err)
{
    if (n == 0)
        return 0;
    ss_fill_f32_kernel<<<ss_grid_for(n), 256, 0, c->stream>>>(d_dst, n, seed, offset, scale);
    SS_LAUNCHED(c, "ss_fill_f32_kernel", err);
    return 0;
}
