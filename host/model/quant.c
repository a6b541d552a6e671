/* quant.c - tensor element types: sizes, f16/bf16 conversion and the GGML
 * block decoders (Q8_0, Q4_0, Q4_1).
 *
 * Block layouts (little-endian, packed):
 *   Q8_0: {f16 d; int8 qs[32]}            value i = qs[i] * d
 *   Q4_0: {f16 d; uint8 qs[16]}           value i = (nibble_i - 8) * d
 *   Q4_1: {f16 d; f16 m; uint8 qs[16]}    value i = nibble_i * d + m
 * where nibble_i is the low nibble of qs[i] for i < 16 and the high nibble
 * of qs[i - 16] for i >= 16.  The arithmetic is done in float exactly as
 * gguf-py's dequantize does it, so results match it bit for bit. */
#include "model/quant_avx2.h"

#include <stdio.h>
#include <string.h>
#ifdef SS_X86
#include <cpuid.h>
#endif

#define SS_QK 32 /* elements per quantised block */

float ss_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise into an f32 normal */
            uint32_t e = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                e--;
            }
            bits = sign | (e << 23) | ((mant & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Rounds m >> shift to nearest, ties to even. */
static uint32_t ss_round_shift(uint32_t m, int shift)
{
    uint32_t r = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1)))
        r++;
    return r;
}

uint16_t ss_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t abs = x & 0x7fffffffu;
    if (abs > 0x7f800000u) /* NaN: keep it quiet and keep top payload bits */
        return sign | 0x7e00 | (uint16_t)((abs >> 13) & 0x1ff);
    if (abs == 0x7f800000u)
        return sign | 0x7c00;
    int exp = (int)(abs >> 23) - 127 + 15;
    if (exp >= 31)
        return sign | 0x7c00;
    if (exp <= 0) { /* half subnormal (or zero): count in units of 2^-24 */
        int shift = 14 - exp;
        if (shift > 24)
            return sign;
        uint32_t mant = (abs & 0x7fffff) | 0x800000;
        return sign | (uint16_t)ss_round_shift(mant, shift);
    }
    /* A carry out of the mantissa bumps the exponent, up to infinity. */
    uint32_t r = ((uint32_t)exp << 10) | ((abs >> 13) & 0x3ff);
    uint32_t rem = abs & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++;
    return sign | (uint16_t)r;
}

float ss_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t ss_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

const char *ss_type_name(int type)
{
    static _Thread_local char buf[24];
    switch (type) {
    case SS_TYPE_F32: return "F32";
    case SS_TYPE_F16: return "F16";
    case SS_TYPE_BF16: return "BF16";
    case SS_TYPE_Q8_0: return "Q8_0";
    case SS_TYPE_Q4_0: return "Q4_0";
    case SS_TYPE_Q4_1: return "Q4_1";
    default:
        snprintf(buf, sizeof buf, "type-%d", type);
        return buf;
    }
}

int ss_type_supported(int type)
{
    return ss_type_block_elems(type) > 0;
}

int ss_type_block_elems(int type)
{
    switch (type) {
    case SS_TYPE_F32:
    case SS_TYPE_F16:
    case SS_TYPE_BF16: return 1;
    case SS_TYPE_Q8_0:
    case SS_TYPE_Q4_0:
    case SS_TYPE_Q4_1: return SS_QK;
    default: return 0;
    }
}

int ss_type_block_bytes(int type)
{
    switch (type) {
    case SS_TYPE_F32: return 4;
    case SS_TYPE_F16:
    case SS_TYPE_BF16: return 2;
    case SS_TYPE_Q8_0: return 2 + SS_QK;
    case SS_TYPE_Q4_0: return 2 + SS_QK / 2;
    case SS_TYPE_Q4_1: return 4 + SS_QK / 2;
    default: return 0;
    }
}

size_t ss_type_row_bytes(int type, int64_t n)
{
    int be = ss_type_block_elems(type);
    if (be <= 0 || n < 0 || n % be)
        return 0;
    return (size_t)(n / be) * (size_t)ss_type_block_bytes(type);
}

static uint16_t ss_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static void ss_dequant_f32(const uint8_t *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void ss_dequant_f16(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = ss_f16_to_f32(ss_load_u16(src + 2 * i));
}

static void ss_dequant_bf16(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = ss_bf16_to_f32(ss_load_u16(src + 2 * i));
}

static void ss_dequant_q8_0(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / SS_QK; b++) {
        const uint8_t *blk = src + b * (2 + SS_QK); /* {d, qs[32]} */
        float d = ss_f16_to_f32(ss_load_u16(blk));
        const int8_t *qs = (const int8_t *)(blk + 2);
        for (int i = 0; i < SS_QK; i++)
            dst[b * SS_QK + i] = (float)qs[i] * d;
    }
}

static void ss_dequant_q4_0(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / SS_QK; b++) {
        const uint8_t *blk = src + b * (2 + SS_QK / 2); /* {d, qs[16]} */
        float d = ss_f16_to_f32(ss_load_u16(blk));
        const uint8_t *qs = blk + 2;
        float *out = dst + b * SS_QK;
        for (int i = 0; i < SS_QK / 2; i++) {
            out[i] = (float)((qs[i] & 0x0f) - 8) * d;
            out[i + SS_QK / 2] = (float)((qs[i] >> 4) - 8) * d;
        }
    }
}

/* No fused multiply-add: gguf-py rounds d * q before adding m. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
static void ss_dequant_q4_1(const uint8_t *src, float *dst, int64_t n)
{
    for (int64_t b = 0; b < n / SS_QK; b++) {
        const uint8_t *blk = src + b * (4 + SS_QK / 2); /* {d, m, qs[16]} */
        float d = ss_f16_to_f32(ss_load_u16(blk));
        float m = ss_f16_to_f32(ss_load_u16(blk + 2));
        const uint8_t *qs = blk + 4;
        float *out = dst + b * SS_QK;
        for (int i = 0; i < SS_QK / 2; i++) {
            out[i] = (float)(qs[i] & 0x0f) * d + m;
            out[i + SS_QK / 2] = (float)(qs[i] >> 4) * d + m;
        }
    }
}

int ss_have_avx2(void)
{
#ifdef SS_X86
    static int cached = -1;
    if (cached < 0) {
        /* F16C from CPUID: clang's __builtin_cpu_supports does not know it */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return cached;
#else
    return 0;
#endif
}

#ifdef SS_X86
/* Whole 32-value blocks with AVX2; returns how many values it decoded. */
SS_AVX2 static int64_t ss_dequant_avx2(int type, const uint8_t *src, float *dst, int64_t n)
{
    size_t bb = ss_type_row_bytes(type, SS_QK);
    int64_t nb = n / SS_QK;
    for (int64_t b = 0; b < nb; b++) {
        __m256 w[4];
        ss_avx2_decode_block(type, src + (size_t)b * bb, w);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(dst + b * SS_QK + 8 * k, w[k]);
    }
    return nb * SS_QK;
}
#endif

/* Every value as gguf-py decodes it (the AVX2 path gives the same bits; an
 * F16 signalling NaN comes out quiet there, and is refused anyway). */
void ss_dequantize(int type, const void *src, float *dst, int64_t n)
{
#ifdef SS_X86
    if (ss_have_avx2() && type != SS_TYPE_F32) {
        int64_t done = ss_dequant_avx2(type, src, dst, n);
        if (done == n)
            return;
        /* float types only: rows need not fill a block */
        src = (const uint8_t *)src + ss_type_row_bytes(type, done);
        dst += done;
        n -= done;
    }
#endif
    ss_dequantize_portable(type, src, dst, n);
}

void ss_dequantize_portable(int type, const void *src, float *dst, int64_t n)
{
    const uint8_t *s = src;
    switch (type) {
    case SS_TYPE_F32: ss_dequant_f32(s, dst, n); break;
    case SS_TYPE_F16: ss_dequant_f16(s, dst, n); break;
    case SS_TYPE_BF16: ss_dequant_bf16(s, dst, n); break;
    case SS_TYPE_Q8_0: ss_dequant_q8_0(s, dst, n); break;
    case SS_TYPE_Q4_0: ss_dequant_q4_0(s, dst, n); break;
    case SS_TYPE_Q4_1: ss_dequant_q4_1(s, dst, n); break;
    default: break; /* loaders reject unsupported types before data is read */
    }
}

int64_t ss_tensor_nelem(const ss_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++)
        n *= t->dims[i];
    return n;
}

void ss_tensor_rows_f32(const ss_tensor *t, int64_t row0, int64_t nrows, float *dst)
{
    size_t row_bytes = ss_type_row_bytes(t->type, t->dims[0]);
    const uint8_t *src = (const uint8_t *)t->data + (size_t)row0 * row_bytes;
    ss_dequantize(t->type, src, dst, nrows * t->dims[0]);
}
