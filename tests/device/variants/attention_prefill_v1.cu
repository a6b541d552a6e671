/* attention_prefill_v1.cu - prefill attention v1, kept beside its tests:
 * one block per (tile of <= 16 queries, head) as the engine's v2, but each
 * query reads K and V from shared memory on its own (2 shared-memory reads
 * per FMA: bound by shared-memory bandwidth).  v2 interleaves a warp's 4
 * queries and replaced it (H200, 512-token prefill of the Llama-3-8B
 * shape, docs/cuda.md).  Timed against v2 by bench_variants.c; checked by
 * tests/device/test_cuda_kernels.c against ss_cpu_attention (rel. L2 <
 * 1e-2, poisoned outputs). */
#include "attention_tile.cuh"
#include "variants.h"

template <int HD>
__global__ void __launch_bounds__(128)
    ss_attn_prefill_kernel(uint16_t *out, const float *q, const uint16_t *kc, const uint16_t *vc,
                           const int *slots, const int *positions, const int *tiles,
                           ss_cuda_attn_shape s)
{
    constexpr int DPL = HD / 32; /* output dims per lane */
    __shared__ float sq[SS_PF_BQ][HD];
    __shared__ float sk[SS_PF_BK][HD + 1]; /* +1: lane j reads row j without bank conflicts */
    __shared__ float sv[SS_PF_BK][HD];

    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    ss_pf_tile t = ss_pf_begin<HD>(&sq[0][0], q, slots, positions, tiles, s);
    int nq = t.nq, pos0 = t.pos0, kvd = t.kvd;
    const uint16_t *kb = kc + t.base, *vb = vc + t.base;

    float m[4], l[4], acc[4][DPL]; /* running max, sum and output of the warp's 4 queries */
    ss_pf_reset<HD>(m, l, acc);

    int n_keys = pos0 + nq; /* the last query sees positions 0..pos0+nq-1 */
    for (int k0 = 0; k0 < n_keys; k0 += SS_PF_BK) {
        __syncthreads(); /* previous tile fully consumed (and sq written) */
        for (int k = tid; k < SS_PF_BK * HD; k += blockDim.x) {
            int key = k / HD, dd = k % HD, kk = k0 + key;
            bool ok = kk < n_keys;
            sk[key][dd] = ok ? ss_bf(kb[(size_t)kk * kvd + dd]) : 0.0f;
            sv[key][dd] = ok ? ss_bf(vb[(size_t)kk * kvd + dd]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < 4; a++) {
            int r = warp * 4 + a;
            if (r >= nq)
                continue; /* warp-uniform */
            int qpos = pos0 + r, key = k0 + lane;
            float sc = 0.0f;
#pragma unroll 8
            for (int dd = 0; dd < HD; dd++)
                sc += sq[r][dd] * sk[lane][dd];
            sc = key <= qpos ? sc : -INFINITY;
            float mnew = fmaxf(m[a], ss_warp_max(sc));
            if (mnew == -INFINITY)
                continue; /* every key of this tile is in this query's future */
            float p = __expf(sc - mnew);
            float corr = __expf(m[a] - mnew);
            l[a] = l[a] * corr + ss_warp_sum(p);
#pragma unroll
            for (int c = 0; c < DPL; c++)
                acc[a][c] *= corr;
            for (int j = 0; j < SS_PF_BK; j++) {
                float pj = __shfl_sync(0xffffffffu, p, j);
#pragma unroll
                for (int c = 0; c < DPL; c++)
                    acc[a][c] += pj * sv[j][lane + 32 * c];
            }
            m[a] = mnew;
        }
    }

    ss_pf_finish<HD>(out, t, warp, lane, l, acc, s);
}

extern "C" int ss_cuda_attention_prefill_v1(ss_cuda_ctx *c, uint16_t *d_out, const float *d_q,
                                            const uint16_t *d_kcache, const uint16_t *d_vcache,
                                            const int *d_slot, const int *d_pos,
                                            const int *d_tiles, int n_tiles,
                                            const ss_cuda_attn_shape *s, ss_error *err)
{
    static const ss_pf_kernel v1[3] = {ss_attn_prefill_kernel<64>, ss_attn_prefill_kernel<96>,
                                       ss_attn_prefill_kernel<128>};
    return ss_pf_launch(c, "ss_attn_prefill_kernel", v1, d_out, d_q, d_kcache, d_vcache, d_slot,
                        d_pos, d_tiles, n_tiles, s, err);
}
