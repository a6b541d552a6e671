/* quant_avx2.h - the AVX2 block decoder shared by ss_dequantize (quant.c)
 * and the CPU engine's fused products (cpu_weights.c).
 *
 * decode_block turns 32 values of one block into four registers, rounding
 * each value as the portable decoder does: multiplies and adds are
 * separate steps (both files are built with -ffp-contract=off). */
#ifndef SAFESTEER_QUANT_AVX2_H
#define SAFESTEER_QUANT_AVX2_H

#include <stdint.h>
#include <string.h>

#include "safesteer/model.h"

/* 1 when this CPU runs the AVX2 paths (AVX2, FMA and F16C). */
int ss_have_avx2(void);
/* ss_dequantize without the AVX2 path: the portable reference decoder. */
void ss_dequantize_portable(int type, const void *src, float *dst, int64_t n);

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SS_X86 1
#define SS_AVX2 __attribute__((target("avx2,fma,f16c")))

static inline uint16_t ss_avx2_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* 32 values of one block (Q types: {f16 d[, f16 m], quants}) into w[0..3].
 * Inlined where type is a constant, so the switch disappears. */
SS_AVX2 static inline __attribute__((always_inline)) void ss_avx2_decode_block(int type,
                                                                               const uint8_t *p,
                                                                               __m256 w[4])
{
    switch (type) {
    case SS_TYPE_F32:
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            w[k] = _mm256_loadu_ps((const float *)p + 8 * k);
        break;
    case SS_TYPE_F16:
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            w[k] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * k)));
        break;
    case SS_TYPE_BF16:
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * k)));
            w[k] = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        }
        break;
    case SS_TYPE_Q8_0: {
        __m256 d = _mm256_set1_ps(_cvtsh_ss(ss_avx2_u16(p)));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m128i q = _mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k));
            w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
        }
        break;
    }
    case SS_TYPE_Q4_0:
    case SS_TYPE_Q4_1: {
        /* quants: byte i holds value i (low nibble) and value i + 16 (high) */
        int q41 = type == SS_TYPE_Q4_1;
        __m256 d = _mm256_set1_ps(_cvtsh_ss(ss_avx2_u16(p)));
        __m256 m = _mm256_set1_ps(q41 ? _cvtsh_ss(ss_avx2_u16(p + 2)) : 0.0f);
        __m128i q = _mm_loadu_si128((const __m128i *)(p + (q41 ? 4 : 2)));
        __m128i nib = _mm_set1_epi8(15);
        __m128i lo = _mm_and_si128(q, nib), hi = _mm_and_si128(_mm_srli_epi16(q, 4), nib);
        __m128i bytes[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        __m256i offset = _mm256_set1_epi32(q41 ? 0 : 8);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_sub_epi32(_mm256_cvtepu8_epi32(bytes[k]), offset);
            w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(v), d);
            if (q41)
                w[k] = _mm256_add_ps(w[k], m);
        }
        break;
    }
    default:
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            w[k] = _mm256_setzero_ps();
    }
}
#endif

#endif
