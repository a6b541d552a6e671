/* kernels_attention.cu - causal grouped-query attention over the bf16 KV
 * cache, f32 arithmetic, online (streaming) softmax, bf16 output.
 *
 * Prefill: one block per (tile of <= 16 consecutive query rows of one
 * sequence, query head).  K/V tiles of 32 positions are staged in shared
 * memory and shared by the tile's queries; each warp owns 4 queries, lane j
 * scores key j, and each lane accumulates head_dim/32 output dimensions.
 * Decode: one block per (row, head, split of 128 positions); each of the 4
 * warps streams 32 keys straight from the cache with 16-byte loads, the
 * warps merge in shared memory, and a combine kernel merges the splits
 * (max-rescaled sums), so long contexts spread over many blocks.  Empty
 * splits (past the row's position) contribute nothing, so the result does
 * not depend on how many splits were launched.
 * Checked by tests/device/test_cuda_kernels.c against ss_cpu_attention
 * (several sequences of different lengths, GQA shapes of Llama-3 8B and
 * SmolLM2, outputs poisoned first; rel. L2 < 1e-2). */
#include "attention_tile.cuh"

#define SS_DEC_SPLIT 128 /* 4 warps x 32 keys: at 500 positions, 4 splits x 32 heads fill the SMs */

/* Prefill v2: the work of a warp's 4 queries interleaved so every
 * shared-memory read feeds 4 FMAs: a lane reads its key's K row as float4
 * (rows padded by 4 floats: conflict-free) against the 4 queries' float4
 * (broadcast), and a V element once for the 4 queries.  v1
 * (tests/device/variants/attention_prefill_v1.cu) read K and V once per
 * query (2 reads per FMA: bound by shared-memory bandwidth).  The K/V tile
 * is loaded with 16-byte loads. */
template <int HD>
__global__ void __launch_bounds__(128)
    ss_attn_prefill_v2_kernel(uint16_t *out, const float *q, const uint16_t *kc,
                              const uint16_t *vc, const int *slots, const int *positions,
                              const int *tiles, ss_cuda_attn_shape s)
{
    constexpr int DPL = HD / 32; /* output dims per lane */
    constexpr int HP = HD + 4;   /* padded K row */
    __shared__ __align__(16) float sq[SS_PF_BQ][HD];
    __shared__ __align__(16) float sk[SS_PF_BK][HP];
    __shared__ __align__(16) float sv[SS_PF_BK][HD];

    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    ss_pf_tile t = ss_pf_begin<HD>(&sq[0][0], q, slots, positions, tiles, s);
    int nq = t.nq, pos0 = t.pos0, kvd = t.kvd;
    const uint16_t *kb = kc + t.base, *vb = vc + t.base;

    float m[4], l[4], acc[4][DPL]; /* running max, sum and output of the warp's 4 queries */
    ss_pf_reset<HD>(m, l, acc);
    bool busy = warp * 4 < nq; /* warp-uniform: this warp has queries */

    int n_keys = pos0 + nq; /* the last query sees positions 0..pos0+nq-1 */
    for (int k0 = 0; k0 < n_keys; k0 += SS_PF_BK) {
        __syncthreads(); /* previous tile fully consumed (and sq written) */
        for (int k = tid; k < SS_PF_BK * HD / 8; k += blockDim.x) {
            int key = k / (HD / 8), dd = (k % (HD / 8)) * 8, kk = k0 + key;
            float fk[8], fv[8];
            if (kk < n_keys) {
                ss_unpack8(*(const uint4 *)(kb + (size_t)kk * kvd + dd), fk);
                ss_unpack8(*(const uint4 *)(vb + (size_t)kk * kvd + dd), fv);
            } else {
#pragma unroll
                for (int e = 0; e < 8; e++)
                    fk[e] = fv[e] = 0.0f;
            }
            *(float4 *)&sk[key][dd] = make_float4(fk[0], fk[1], fk[2], fk[3]);
            *(float4 *)&sk[key][dd + 4] = make_float4(fk[4], fk[5], fk[6], fk[7]);
            *(float4 *)&sv[key][dd] = make_float4(fv[0], fv[1], fv[2], fv[3]);
            *(float4 *)&sv[key][dd + 4] = make_float4(fv[4], fv[5], fv[6], fv[7]);
        }
        __syncthreads();
        if (!busy)
            continue;
        int key = k0 + lane;
        float sc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 8
        for (int dd = 0; dd < HD; dd += 4) {
            float4 kv = *(const float4 *)&sk[lane][dd];
#pragma unroll
            for (int a = 0; a < 4; a++) {
                float4 qv = *(const float4 *)&sq[warp * 4 + a][dd];
                sc[a] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
            }
        }
        float p[4];
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int r = warp * 4 + a;
            /* future keys and padding queries (r >= nq) score -inf */
            float sa = r < nq && key <= pos0 + r ? sc[a] : -INFINITY;
            float mnew = fmaxf(m[a], ss_warp_max(sa));
            if (mnew == -INFINITY) { /* nothing visible yet for this query */
                p[a] = 0.0f;
                continue;
            }
            p[a] = __expf(sa - mnew);
            float corr = __expf(m[a] - mnew);
            l[a] = l[a] * corr + ss_warp_sum(p[a]);
#pragma unroll
            for (int c = 0; c < DPL; c++)
                acc[a][c] *= corr;
            m[a] = mnew;
        }
#pragma unroll 4
        for (int j = 0; j < SS_PF_BK; j++) {
            float vj[DPL];
#pragma unroll
            for (int c = 0; c < DPL; c++)
                vj[c] = sv[j][lane + 32 * c];
#pragma unroll
            for (int a = 0; a < 4; a++) {
                float pj = __shfl_sync(0xffffffffu, p[a], j);
#pragma unroll
                for (int c = 0; c < DPL; c++)
                    acc[a][c] += pj * vj[c];
            }
        }
    }

    ss_pf_finish<HD>(out, t, warp, lane, l, acc, s);
}

/* partial[row][head][split][HD + 2] = {acc[HD] (unnormalised), m, l}. */
template <int HD>
__global__ void __launch_bounds__(128)
    ss_attn_decode_kernel(float *partial, const float *q, const uint16_t *kc, const uint16_t *vc,
                          const int *slots, const int *positions, ss_cuda_attn_shape s)
{
    constexpr int DPL = HD / 32;
    __shared__ float sq[HD];
    __shared__ float wm[4], wl[4];
    __shared__ float wacc[4][HD];

    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int split = blockIdx.x, h = blockIdx.y, row = blockIdx.z;
    int n_splits = gridDim.x;
    int kvh = h / (s.n_heads / s.n_kv_heads);
    int L = positions[row] + 1; /* keys 0..pos */
    float *po = partial + (((size_t)row * s.n_heads + h) * n_splits + split) * (HD + 2);
    int begin = split * SS_DEC_SPLIT;
    if (begin >= L) { /* empty split: contributes nothing */
        for (int dd = tid; dd < HD; dd += blockDim.x)
            po[dd] = 0.0f;
        if (tid == 0) {
            po[HD] = -INFINITY;
            po[HD + 1] = 0.0f;
        }
        return;
    }
    int end = min(begin + SS_DEC_SPLIT, L);
    int kvd = s.n_kv_heads * HD;
    size_t base =
        ((size_t)slots[row] * s.n_layers + s.layer) * s.max_ctx * kvd + (size_t)kvh * HD;
    const uint16_t *kb = kc + base, *vb = vc + base;
    float scale = rsqrtf((float)HD);
    for (int dd = tid; dd < HD; dd += blockDim.x)
        sq[dd] = q[(size_t)row * s.q_stride + h * HD + dd] * scale;
    __syncthreads();

    float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
    for (int c = 0; c < DPL; c++)
        acc[c] = 0.0f;
    /* warp w takes keys begin + KW w .. begin + KW (w + 1) - 1, 32 at a time */
    constexpr int KW = SS_DEC_SPLIT / 4;
    for (int k0 = begin + warp * KW; k0 < min(begin + warp * KW + KW, end); k0 += 32) {
        int key = k0 + lane, nvalid = min(32, end - k0);
        float sc = -INFINITY;
        if (key < end) {
            const uint4 *kr = (const uint4 *)(kb + (size_t)key * kvd);
            float dot = 0.0f;
#pragma unroll
            for (int u = 0; u < HD / 8; u++) {
                float f[8];
                ss_unpack8(kr[u], f);
#pragma unroll
                for (int e = 0; e < 8; e++)
                    dot += sq[u * 8 + e] * f[e];
            }
            sc = dot;
        }
        float mnew = fmaxf(m, ss_warp_max(sc)); /* finite: key k0 is valid */
        float p = key < end ? __expf(sc - mnew) : 0.0f;
        float corr = __expf(m - mnew);
        l = l * corr + ss_warp_sum(p);
#pragma unroll
        for (int c = 0; c < DPL; c++)
            acc[c] *= corr;
        /* unrolled so 8 keys' V loads are in flight at once (a loop to
         * nvalid waited one memory latency per key) */
#pragma unroll 8
        for (int j = 0; j < 32; j++) {
            float pj = __shfl_sync(0xffffffffu, p, j);
            if (j < nvalid) {
                const uint16_t *vr = vb + (size_t)(k0 + j) * kvd;
#pragma unroll
                for (int c = 0; c < DPL; c++)
                    acc[c] += pj * ss_bf(vr[lane + 32 * c]);
            }
        }
        m = mnew;
    }

    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int c = 0; c < DPL; c++)
        wacc[warp][lane + 32 * c] = acc[c];
    __syncthreads();
    float M = fmaxf(fmaxf(wm[0], wm[1]), fmaxf(wm[2], wm[3]));
    for (int dd = tid; dd < HD; dd += blockDim.x) {
        float a = 0.0f;
        for (int w = 0; w < 4; w++)
            if (wm[w] != -INFINITY)
                a += wacc[w][dd] * __expf(wm[w] - M);
        po[dd] = a;
    }
    if (tid == 0) {
        float lsum = 0.0f;
        for (int w = 0; w < 4; w++)
            if (wm[w] != -INFINITY)
                lsum += wl[w] * __expf(wm[w] - M);
        po[HD] = M;
        po[HD + 1] = lsum;
    }
}

/* One block per (head, row): merges the splits into bf16 output. */
__global__ void ss_attn_combine_kernel(uint16_t *out, const float *partial, int n_splits,
                                       int n_heads, int hd)
{
    int h = blockIdx.x, row = blockIdx.y;
    const float *p = partial + ((size_t)row * n_heads + h) * n_splits * (hd + 2);
    float M = -INFINITY;
    for (int sp = 0; sp < n_splits; sp++)
        M = fmaxf(M, p[(size_t)sp * (hd + 2) + hd]);
    float lsum = 0.0f;
    for (int sp = 0; sp < n_splits; sp++) {
        float ms = p[(size_t)sp * (hd + 2) + hd];
        if (ms != -INFINITY)
            lsum += p[(size_t)sp * (hd + 2) + hd + 1] * __expf(ms - M);
    }
    float inv = 1.0f / lsum;
    for (int dd = threadIdx.x; dd < hd; dd += blockDim.x) {
        float a = 0.0f;
        for (int sp = 0; sp < n_splits; sp++) {
            float ms = p[(size_t)sp * (hd + 2) + hd];
            if (ms != -INFINITY)
                a += p[(size_t)sp * (hd + 2) + dd] * __expf(ms - M);
        }
        out[((size_t)row * n_heads + h) * hd + dd] = ss_to_bf(a * inv);
    }
}

int ss_attn_check(const ss_cuda_attn_shape *s, ss_error *err)
{
    if (s->head_dim != 64 && s->head_dim != 96 && s->head_dim != 128)
        return ss_fail(err, "CUDA attention: head_dim %d not supported (64, 96 or 128)",
                       s->head_dim);
    if (s->n_kv_heads <= 0 || s->n_heads % s->n_kv_heads)
        return ss_fail(err, "CUDA attention: n_heads %d not a multiple of n_kv_heads %d",
                       s->n_heads, s->n_kv_heads);
    return 0;
}

int ss_pf_launch(ss_cuda_ctx *c, const char *name, const ss_pf_kernel kernels[3],
                 uint16_t *d_out, const float *d_q, const uint16_t *d_kcache,
                 const uint16_t *d_vcache, const int *d_slot, const int *d_pos,
                 const int *d_tiles, int n_tiles, const ss_cuda_attn_shape *s, ss_error *err)
{
    if (ss_attn_check(s, err))
        return -1;
    if (n_tiles <= 0)
        return 0;
    ss_pf_kernel k = kernels[s->head_dim == 64 ? 0 : s->head_dim == 96 ? 1 : 2];
    k<<<dim3(n_tiles, s->n_heads), 128, 0, c->stream>>>(d_out, d_q, d_kcache, d_vcache, d_slot,
                                                         d_pos, d_tiles, *s);
    SS_LAUNCHED(c, name, err);
    return 0;
}

extern "C" int ss_cuda_attention_prefill(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                                         const uint16_t *d_kcache, const uint16_t *d_vcache,
                                         const int *d_slot, const int *d_pos, const int *d_tiles,
                                         int n_tiles, const ss_cuda_attn_shape *s, ss_error *err)
{
    static const ss_pf_kernel v2[3] = {ss_attn_prefill_v2_kernel<64>,
                                       ss_attn_prefill_v2_kernel<96>,
                                       ss_attn_prefill_v2_kernel<128>};
    return ss_pf_launch(c, "ss_attn_prefill_v2_kernel", v2, d_out, d_q, d_kcache, d_vcache,
                        d_slot, d_pos, d_tiles, n_tiles, s, err);
}

extern "C" size_t ss_cuda_attention_partial_floats(int n, int n_heads, int head_dim, int n_splits)
{
    return (size_t)n * n_heads * n_splits * (head_dim + 2);
}

extern "C" int ss_cuda_attention_splits(int n_positions)
{
    return (n_positions + SS_DEC_SPLIT - 1) / SS_DEC_SPLIT;
}

extern "C" int ss_cuda_attention_decode(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                                        const uint16_t *d_kcache, const uint16_t *d_vcache,
                                        const int *d_slot, const int *d_pos, int n, int n_splits,
                                        float *d_partial, const ss_cuda_attn_shape *s,
                                        ss_error *err)
{
    if (ss_attn_check(s, err))
        return -1;
    if (n <= 0)
        return 0;
    if (n_splits <= 0)
        return ss_fail(err, "ss_cuda_attention_decode: n_splits %d", n_splits);
    dim3 grid(n_splits, s->n_heads, n);
    switch (s->head_dim) {
    case 64:
        ss_attn_decode_kernel<64><<<grid, 128, 0, c->stream>>>(d_partial, d_q, d_kcache, d_vcache,
                                                                d_slot, d_pos, *s);
        break;
    case 96:
        ss_attn_decode_kernel<96><<<grid, 128, 0, c->stream>>>(d_partial, d_q, d_kcache, d_vcache,
                                                                d_slot, d_pos, *s);
        break;
    default:
        ss_attn_decode_kernel<128><<<grid, 128, 0, c->stream>>>(d_partial, d_q, d_kcache,
                                                                 d_vcache, d_slot, d_pos, *s);
        break;
    }
    SS_LAUNCHED(c, "ss_attn_decode_kernel", err);
    ss_attn_combine_kernel<<<dim3(s->n_heads, n), 128, 0, c->stream>>>(d_out, d_partial, n_splits,
                                                                        s->n_heads, s->head_dim);
    SS_LAUNCHED(c, "ss_attn_combine_kernel", err);
    return 0;
}
