/* cpu_weights.h - matrix products with weights kept as the file stores them
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1), for the CPU engine.
 *
 * Every weight enters the arithmetic as exactly the value
 * ss_tensor_rows_f32 decodes (the reference dequantisation, checked against
 * the `gguf` package), so results equal an f32 copy of the weights up to
 * summation order; the engine then holds no f32 copy (4 bytes a parameter)
 * and decode reads the file's bytes (0.6 for Q4_1) instead.
 * Checked by tests/test_cpu_ops.c on every type against a double-precision
 * product of the decoded weights (fused, blocked, threaded, ragged shapes). */
#ifndef SAFESTEER_CPU_WEIGHTS_H
#define SAFESTEER_CPU_WEIGHTS_H

#include "safesteer/util.h"
#include "safesteer/model.h"

/* Rows of x up to which weight blocks are decoded in registers and
 * multiplied straight away (AVX2, four x rows per pass); more rows go
 * through sgemm on decoded row blocks. */
#define SS_CPU_FUSED_ROWS 8

/* Per-thread room for decoded weight rows, made once per engine so a
 * matrix product never allocates (or fails). */
typedef struct {
    float *buf;        /* [threads][SS_CPU_ROW_BLOCK][max_in] */
    int threads;
    int64_t max_in;
} ss_cpu_scratch;

#define SS_CPU_ROW_BLOCK 64 /* weight rows decoded per sgemm call */

int ss_cpu_scratch_init(ss_cpu_scratch *s, int threads, int64_t max_in, ss_error *err);
void ss_cpu_scratch_free(ss_cpu_scratch *s);

/* y[n][out] = x[n][in] . W^T for the tensor t (dims {in, out}, rows of W
 * contiguous in its encoding; in <= s->max_in).  s->threads threads split
 * the rows of W; F32 weights go to ss_cpu_matmul as they are. */
void ss_cpu_matmul_w(float *y, const float *x, const ss_tensor *t, int n, int in, int out,
                     const ss_cpu_scratch *s);

/* Which kernels ss_cpu_matmul_w uses on this CPU: "avx2" or "portable". */
const char *ss_cpu_weights_isa(void);

#endif
