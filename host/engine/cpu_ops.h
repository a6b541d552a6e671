/* cpu_ops.h - the CPU engine's building blocks, f32, one function per op.
 *
 * These are the reference every CUDA kernel is checked against (the device
 * tests call them directly), so each states its shapes and exact semantics.
 * Row-major throughout; "[n][d]" means n rows of d contiguous floats. */
#ifndef SAFESTEER_CPU_OPS_H
#define SAFESTEER_CPU_OPS_H

#include "safesteer/engine.h"
#include "safesteer/model.h"

/* out[i][:] = x[i][:] / sqrt(mean(x[i]^2) + eps) * w[:]; x, out [n][d] (may alias). */
void ss_cpu_rmsnorm(float *out, const float *x, const float *w, int n, int d, float eps);

/* y[n][out] = x[n][in] . W^T with W stored [out][in] (cblas_sgemm; sgemv when n == 1). */
void ss_cpu_matmul(float *y, const float *x, const float *w, int n, int in, int out);

/* Rotary inverse frequencies inv_freq[head_dim/2] for cfg (rope_theta and
 * llama3 scaling applied). */
void ss_cpu_rope_inv_freq(const ss_config *cfg, float *inv_freq);

/* Rotates x[n][n_heads][head_dim] in place; row i is at position pos[i].
 * Pairs (2j, 2j+1) when cfg->rope_neox == 0, (j, j + head_dim/2) otherwise,
 * both rotated by angle pos * inv_freq[j]. */
void ss_cpu_rope(float *x, const int *pos, int n, int n_heads, const ss_config *cfg,
                 const float *inv_freq);

/* out[i][:] = silu(gate[i][:]) * up[i][:], flattened to n values. */
void ss_cpu_swiglu(float *out, const float *gate, const float *up, int n);

/* Causal grouped-query attention for one sequence.
 * q[n_q][n_heads][head_dim]; k, v [n_kv_pos][n_kv_heads][head_dim] hold
 * positions 0..n_kv_pos-1 (the cache, already including these queries);
 * query i sits at position q_pos0 + i and attends to positions 0..q_pos0+i.
 * Head h reads kv head h / (n_heads / n_kv_heads).  Scale 1/sqrt(head_dim).
 * out[n_q][n_heads][head_dim]. */
void ss_cpu_attention(float *out, const float *q, const float *k, const float *v, int n_q,
                      int q_pos0, int n_heads, int n_kv_heads, int head_dim);

/* ss_cpu_attention restricted to query heads head0 .. head0 + n_head - 1,
 * which must read the same K/V head (same layouts; writes only those
 * heads' slices of out).  The engine schedules these per (sequence, K/V
 * head or part of its heads, query block) across threads; a head's result
 * does not depend on which heads share its call. */
void ss_cpu_attention_heads(float *out, const float *q, const float *k, const float *v, int n_q,
                            int q_pos0, int head0, int n_head, int n_heads, int n_kv_heads,
                            int head_dim);

/* Steering at one layer for one sequence: for rows i of h[n][d] whose
 * position pos0 + i lies in [pos_begin, pos_end) (pos_end < 0: no end):
 *   SS_STEER_ADD:    h[i] += alpha * v
 *   SS_STEER_ABLATE: h[i] -= (h[i] . v) v
 * alpha == 0 leaves h bit-identical. */
void ss_cpu_steer(float *h, int n, int d, int pos0, int op, float alpha, const float *v,
                  int pos_begin, int pos_end);

#endif
