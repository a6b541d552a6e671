/* test_gguf.c - GGUF reader round trips, f16/bf16 conversion edge cases,
 * block dequantisation layouts, and the default model's configuration. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "safesteer/model.h"

/* ---------------------------------------------------------------- tiny GGUF writer */

typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} gw;

static void gw_open(gw *w)
{
    w->buf = NULL;
    w->len = 0;
    w->f = open_memstream(&w->buf, &w->len);
}
static void gw_bytes(gw *w, const void *p, size_t n) { fwrite(p, 1, n, w->f); }
static void gw_u8(gw *w, uint8_t v) { gw_bytes(w, &v, 1); }
static void gw_u16(gw *w, uint16_t v) { gw_bytes(w, &v, 2); }
static void gw_u32(gw *w, uint32_t v) { gw_bytes(w, &v, 4); }
static void gw_u64(gw *w, uint64_t v) { gw_bytes(w, &v, 8); }
static void gw_str(gw *w, const char *s)
{
    gw_u64(w, strlen(s));
    gw_bytes(w, s, strlen(s));
}
static void gw_header(gw *w, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    gw_bytes(w, "GGUF", 4);
    gw_u32(w, version);
    gw_u64(w, n_tensors);
    gw_u64(w, n_kv);
}
static void gw_key(gw *w, const char *key, uint32_t type)
{
    gw_str(w, key);
    gw_u32(w, type);
}
static void gw_tensor_info(gw *w, const char *name, uint32_t n_dims, const uint64_t *dims,
                           uint32_t type, uint64_t offset)
{
    gw_str(w, name);
    gw_u32(w, n_dims);
    for (uint32_t i = 0; i < n_dims; i++)
        gw_u64(w, dims[i]);
    gw_u32(w, type);
    gw_u64(w, offset);
}
static void gw_align(gw *w, size_t a)
{
    fflush(w->f);
    while (w->len % a) {
        gw_u8(w, 0);
        fflush(w->f);
    }
}
/* Writes the buffer to SS_BINARY_DIR/test_gguf_files/NAME; returns the path. */
static const char *gw_save(gw *w, const char *name)
{
    static char path[1024];
    fclose(w->f);
    mkdir(SS_BINARY_DIR "/test_gguf_files", 0755);
    snprintf(path, sizeof path, "%s/test_gguf_files/%s", SS_BINARY_DIR, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    fwrite(w->buf, 1, w->len, f);
    fclose(f);
    free(w->buf);
    return path;
}

/* ---------------------------------------------------------------- metadata */

/* One key of every scalar type, arrays (numeric, string, empty), custom
 * alignment 64, and two F32 tensors. */
static const char *write_all_types(const char *file)
{
    gw w;
    gw_open(&w);
    gw_header(&w, 3, 2, 18);
    gw_key(&w, "t.u8", SS_GGUF_UINT8); gw_u8(&w, 200);
    gw_key(&w, "t.i8", SS_GGUF_INT8); gw_u8(&w, (uint8_t)-100);
    gw_key(&w, "t.u16", SS_GGUF_UINT16); gw_u16(&w, 60000);
    gw_key(&w, "t.i16", SS_GGUF_INT16); gw_u16(&w, (uint16_t)-30000);
    gw_key(&w, "t.u32", SS_GGUF_UINT32); gw_u32(&w, 4000000000u);
    gw_key(&w, "t.i32", SS_GGUF_INT32); gw_u32(&w, (uint32_t)-2000000000);
    float f = 1.5f;
    gw_key(&w, "t.f32", SS_GGUF_FLOAT32); gw_bytes(&w, &f, 4);
    gw_key(&w, "t.bool", SS_GGUF_BOOL); gw_u8(&w, 1);
    gw_key(&w, "t.str", SS_GGUF_STRING); gw_str(&w, "héllo");
    gw_key(&w, "t.u64", SS_GGUF_UINT64); gw_u64(&w, 1ull << 40);
    gw_key(&w, "t.i64", SS_GGUF_INT64); gw_u64(&w, (uint64_t)-(1ll << 40));
    double d = -2.25;
    gw_key(&w, "t.f64", SS_GGUF_FLOAT64); gw_bytes(&w, &d, 8);
    gw_key(&w, "t.arr_i32", SS_GGUF_ARRAY); gw_u32(&w, SS_GGUF_INT32); gw_u64(&w, 3);
    gw_u32(&w, 7); gw_u32(&w, (uint32_t)-8); gw_u32(&w, 9);
    gw_key(&w, "t.arr_str", SS_GGUF_ARRAY); gw_u32(&w, SS_GGUF_STRING); gw_u64(&w, 3);
    gw_str(&w, "a"); gw_str(&w, ""); gw_str(&w, "ccc");
    gw_key(&w, "t.arr_empty", SS_GGUF_ARRAY); gw_u32(&w, SS_GGUF_FLOAT32); gw_u64(&w, 0);
    gw_key(&w, "t.arr_u8", SS_GGUF_ARRAY); gw_u32(&w, SS_GGUF_UINT8); gw_u64(&w, 2);
    gw_u8(&w, 1); gw_u8(&w, 2);
    gw_key(&w, "general.alignment", SS_GGUF_UINT32); gw_u32(&w, 64);
    gw_key(&w, "t.neg", SS_GGUF_INT32); gw_u32(&w, (uint32_t)-1);
    uint64_t da[2] = {4, 2}, db[1] = {3};
    gw_tensor_info(&w, "a", 2, da, SS_TYPE_F32, 0);
    gw_tensor_info(&w, "b", 1, db, SS_TYPE_F32, 64);
    gw_align(&w, 64);
    for (int i = 0; i < 16; i++) { /* a: 8 floats then padding to 64 */
        float v = i < 8 ? (float)i : 0.0f;
        gw_bytes(&w, &v, 4);
    }
    for (int i = 0; i < 3; i++) {
        float v = 10.0f + (float)i;
        gw_bytes(&w, &v, 4);
    }
    return gw_save(&w, file);
}

Test(gguf, every_value_type_round_trips)
{
    ss_error err;
    ss_gguf *g;
    const char *path = write_all_types("all_types_1.gguf");
    cr_assert_eq(ss_gguf_open(path, &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g->version, 3);
    cr_assert_eq(g->n_kv, 18);
    const ss_gguf_kv *kv;
    cr_assert_eq(ss_gguf_find(g, "t.u8")->num.u, 200);
    cr_assert_eq(ss_gguf_find(g, "t.i8")->num.i, -100);
    cr_assert_eq(ss_gguf_find(g, "t.u16")->num.u, 60000);
    cr_assert_eq(ss_gguf_find(g, "t.i16")->num.i, -30000);
    cr_assert_eq(ss_gguf_find(g, "t.u32")->num.u, 4000000000u);
    cr_assert_eq(ss_gguf_find(g, "t.i32")->num.i, -2000000000);
    cr_assert_eq(ss_gguf_find(g, "t.f32")->num.f, 1.5);
    cr_assert_eq(ss_gguf_find(g, "t.bool")->num.u, 1);
    cr_assert_eq(ss_gguf_find(g, "t.u64")->num.u, 1ull << 40);
    cr_assert_eq(ss_gguf_find(g, "t.i64")->num.i, -(1ll << 40));
    cr_assert_eq(ss_gguf_find(g, "t.f64")->num.f, -2.25);
    ss_gguf_str s;
    cr_assert_eq(ss_gguf_get_str(g, "t.str", &s, &err), 0);
    cr_assert_eq(s.len, strlen("héllo"));
    cr_assert_eq(memcmp(s.ptr, "héllo", s.len), 0);
    cr_assert_null(ss_gguf_find(g, "t.missing"));

    kv = ss_gguf_find(g, "t.arr_i32");
    cr_assert_eq(kv->type, SS_GGUF_ARRAY);
    cr_assert_eq(kv->arr_type, SS_GGUF_INT32);
    cr_assert_eq(kv->arr_len, 3);
    int32_t vals[3];
    memcpy(vals, kv->data, sizeof vals);
    cr_assert(vals[0] == 7 && vals[1] == -8 && vals[2] == 9);
    kv = ss_gguf_find(g, "t.arr_str");
    cr_assert_eq(kv->arr_len, 3);
    ss_gguf_str c = ss_gguf_arr_str(kv, 2);
    cr_assert(c.len == 3 && !memcmp(c.ptr, "ccc", 3));
    ss_gguf_str *all;
    cr_assert_eq(ss_gguf_arr_strs(kv, &all, &err), 0);
    cr_assert(all[0].len == 1 && all[0].ptr[0] == 'a' && all[1].len == 0 && all[2].len == 3);
    free(all);
    cr_assert_eq(ss_gguf_arr_strs(ss_gguf_find(g, "t.arr_u8"), &all, &err), -1);
    cr_assert_eq(ss_gguf_find(g, "t.arr_empty")->arr_len, 0);
    cr_assert_eq(ss_gguf_find(g, "t.arr_u8")->arr_len, 2);
    ss_gguf_close(g);
}

Test(gguf, typed_getters)
{
    ss_error err;
    ss_gguf *g;
    cr_assert_eq(ss_gguf_open(write_all_types("all_types_2.gguf"), &g, &err), 0, "%s", err.msg);
    uint64_t u;
    double d;
    ss_gguf_str s;
    cr_assert_eq(ss_gguf_get_u64(g, "t.u16", &u, &err), 0);
    cr_assert_eq(u, 60000);
    cr_assert_eq(ss_gguf_get_u64(g, "t.neg", &u, &err), -1);
    cr_assert(strstr(err.msg, "t.neg") && strstr(err.msg, "-1"), "%s", err.msg);
    cr_assert_eq(ss_gguf_get_u64(g, "t.str", &u, &err), -1);
    cr_assert(strstr(err.msg, "t.str") && strstr(err.msg, "string"), "%s", err.msg);
    cr_assert(strstr(err.msg, "all_types_2.gguf"), "%s", err.msg);
    cr_assert_eq(ss_gguf_get_f64(g, "t.f32", &d, &err), 0);
    cr_assert_eq(d, 1.5);
    cr_assert_eq(ss_gguf_get_f64(g, "t.i32", &d, &err), 0);
    cr_assert_eq(d, -2000000000.0);
    cr_assert_eq(ss_gguf_get_str(g, "t.u8", &s, &err), -1);
    cr_assert(strstr(err.msg, "t.u8"), "%s", err.msg);
    cr_assert_eq(ss_gguf_get_u64(g, "nope.key", &u, &err), -1);
    cr_assert(strstr(err.msg, "nope.key") && strstr(err.msg, "missing"), "%s", err.msg);
    ss_gguf_close(g);
}

Test(gguf, tensors_and_alignment)
{
    ss_error err;
    ss_gguf *g;
    cr_assert_eq(ss_gguf_open(write_all_types("all_types_3.gguf"), &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g->alignment, 64);
    cr_assert_eq(g->data_offset % 64, 0);
    const ss_tensor *a = ss_gguf_tensor(g, "a"), *b = ss_gguf_tensor(g, "b");
    cr_assert(a && b);
    cr_assert(a->n_dims == 2 && a->dims[0] == 4 && a->dims[1] == 2 && a->dims[2] == 1);
    cr_assert_eq(a->nbytes, 32);
    cr_assert_eq(ss_tensor_nelem(a), 8);
    float row[4];
    ss_tensor_rows_f32(a, 1, 1, row);
    cr_assert(row[0] == 4.0f && row[3] == 7.0f);
    cr_assert_eq((const uint8_t *)b->data - g->map, (long)(g->data_offset + 64));
    cr_assert_eq(((const float *)b->data)[2], 12.0f);
    cr_assert_null(ss_gguf_tensor(g, "c"));
    ss_gguf_close(g);
}

Test(gguf, default_alignment_is_32)
{
    gw w;
    gw_open(&w);
    gw_header(&w, 2, 1, 1);
    gw_key(&w, "k", SS_GGUF_STRING);
    gw_str(&w, "odd-length");
    uint64_t dims[1] = {32};
    gw_tensor_info(&w, "q", 1, dims, SS_TYPE_Q8_0, 0);
    gw_align(&w, 32);
    uint16_t one = 0x3c00; /* d = 1.0 */
    gw_u16(&w, one);
    for (int i = 0; i < 32; i++)
        gw_u8(&w, (uint8_t)(int8_t)(i - 16));
    const char *path = gw_save(&w, "v2_default_align.gguf");
    ss_error err;
    ss_gguf *g;
    cr_assert_eq(ss_gguf_open(path, &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g->version, 2);
    cr_assert_eq(g->alignment, 32);
    cr_assert_eq(g->data_offset % 32, 0);
    float out[32];
    ss_tensor_rows_f32(ss_gguf_tensor(g, "q"), 0, 1, out);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(out[i], (float)(i - 16));
    ss_gguf_close(g);
}

/* ---------------------------------------------------------------- f16 / bf16 */

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

Test(convert, f16_to_f32_special_values)
{
    cr_assert(isinf(ss_f16_to_f32(0x7c00)) && ss_f16_to_f32(0x7c00) > 0);
    cr_assert(isinf(ss_f16_to_f32(0xfc00)) && ss_f16_to_f32(0xfc00) < 0);
    cr_assert(isnan(ss_f16_to_f32(0x7e00)));
    cr_assert(isnan(ss_f16_to_f32(0x7c01)));
    cr_assert_eq(bits_of(ss_f16_to_f32(0x8000)), 0x80000000u);
    cr_assert_eq(ss_f16_to_f32(0x0001), ldexpf(1.0f, -24));   /* smallest subnormal */
    cr_assert_eq(ss_f16_to_f32(0x03ff), ldexpf(1023.0f, -24)); /* largest subnormal */
    cr_assert_eq(ss_f16_to_f32(0x0400), ldexpf(1.0f, -14));   /* smallest normal */
    cr_assert_eq(ss_f16_to_f32(0x7bff), 65504.0f);
    cr_assert_eq(ss_f16_to_f32(0x3c00), 1.0f);
    cr_assert_eq(ss_f16_to_f32(0xc000), -2.0f);
}

Test(convert, f32_to_f16_rounding)
{
    cr_assert_eq(ss_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(ss_f32_to_f16(65519.0f), 0x7bff);
    cr_assert_eq(ss_f32_to_f16(65520.0f), 0x7c00); /* tie rounds to even = inf */
    cr_assert_eq(ss_f32_to_f16(1e10f), 0x7c00);
    cr_assert_eq(ss_f32_to_f16(-INFINITY), 0xfc00);
    cr_assert_eq(ss_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie -> even */
    cr_assert_eq(ss_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie -> even */
    cr_assert_eq(ss_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    cr_assert_eq(ss_f32_to_f16(ldexpf(1, -24)), 0x0001);
    cr_assert_eq(ss_f32_to_f16(ldexpf(1, -25)), 0x0000);      /* tie -> even (0) */
    cr_assert_eq(ss_f32_to_f16(ldexpf(3, -25)), 0x0002);      /* 1.5 units, tie -> 2 */
    cr_assert_eq(ss_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);   /* above the tie */
    cr_assert_eq(ss_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400); /* carries into normal */
    cr_assert_eq(ss_f32_to_f16(1e-30f), 0x0000);
    cr_assert_eq(ss_f32_to_f16(-0.0f), 0x8000);
    uint16_t n = ss_f32_to_f16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff) != 0);
}

Test(convert, f16_round_trip_all_values)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = ss_f16_to_f32((uint16_t)h);
        if (isnan(f))
            cr_assert(isnan(ss_f16_to_f32(ss_f32_to_f16(f))));
        else
            cr_assert_eq(ss_f32_to_f16(f), h, "half 0x%04x", h);
    }
}

Test(convert, bf16)
{
    cr_assert_eq(ss_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_eq(ss_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(ss_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);     /* tie -> even */
    cr_assert_eq(ss_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82); /* tie -> even */
    cr_assert_eq(ss_f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)), 0x3f81);
    cr_assert_eq(ss_f32_to_bf16(INFINITY), 0x7f80);
    cr_assert_eq(ss_f32_to_bf16(3.4028235e38f), 0x7f80); /* rounds up to inf */
    cr_assert(isnan(ss_bf16_to_f32(ss_f32_to_bf16(NAN))));
    uint32_t qnan = 0x7f800001u; /* payload only in low bits: must stay NaN */
    float f;
    memcpy(&f, &qnan, 4);
    cr_assert(isnan(ss_bf16_to_f32(ss_f32_to_bf16(f))));
    cr_assert_eq(ss_bf16_to_f32(0x0001), ldexpf(1, -133)); /* subnormal */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float v = ss_bf16_to_f32((uint16_t)h);
        if (!isnan(v))
            cr_assert_eq(ss_f32_to_bf16(v), h);
    }
}

/* ---------------------------------------------------------------- blocks */

Test(quant, type_helpers)
{
    cr_assert_str_eq(ss_type_name(SS_TYPE_Q4_1), "Q4_1");
    cr_assert_str_eq(ss_type_name(12), "type-12");
    cr_assert(ss_type_supported(SS_TYPE_BF16) && !ss_type_supported(12));
    cr_assert_eq(ss_type_block_elems(SS_TYPE_F32), 1);
    cr_assert_eq(ss_type_block_bytes(SS_TYPE_F32), 4);
    cr_assert_eq(ss_type_block_elems(SS_TYPE_Q4_1), 32);
    cr_assert_eq(ss_type_block_bytes(SS_TYPE_Q4_1), 20);
    cr_assert_eq(ss_type_block_bytes(SS_TYPE_Q4_0), 18);
    cr_assert_eq(ss_type_block_bytes(SS_TYPE_Q8_0), 34);
    cr_assert_eq(ss_type_row_bytes(SS_TYPE_Q8_0, 576), 18 * 34);
    cr_assert_eq(ss_type_row_bytes(SS_TYPE_F16, 3), 6);
    cr_assert_eq(ss_type_row_bytes(SS_TYPE_Q4_0, 33), 0);
    cr_assert_eq(ss_type_row_bytes(12, 256), 0);
}

Test(quant, q4_nibble_order)
{
    uint8_t q40[18], q41[20];
    uint16_t d = ss_f32_to_f16(0.5f), m = ss_f32_to_f16(-1.0f);
    memcpy(q40, &d, 2);
    memcpy(q41, &d, 2);
    memcpy(q41 + 2, &m, 2);
    for (int i = 0; i < 16; i++) /* low nibble i, high nibble 15 - i */
        q40[2 + i] = q41[4 + i] = (uint8_t)(i | ((15 - i) << 4));
    float a[32], b[32];
    ss_dequantize(SS_TYPE_Q4_0, q40, a, 32);
    ss_dequantize(SS_TYPE_Q4_1, q41, b, 32);
    for (int i = 0; i < 16; i++) {
        cr_assert_eq(a[i], (float)(i - 8) * 0.5f, "Q4_0 element %d", i);
        cr_assert_eq(a[16 + i], (float)(15 - i - 8) * 0.5f, "Q4_0 element %d", 16 + i);
        cr_assert_eq(b[i], (float)i * 0.5f - 1.0f, "Q4_1 element %d", i);
        cr_assert_eq(b[16 + i], (float)(15 - i) * 0.5f - 1.0f, "Q4_1 element %d", 16 + i);
    }
}

Test(quant, q8_0_and_half_types)
{
    uint8_t blk[68]; /* two Q8_0 blocks */
    uint16_t d0 = ss_f32_to_f16(0.25f), d1 = ss_f32_to_f16(-2.0f);
    memcpy(blk, &d0, 2);
    memcpy(blk + 34, &d1, 2);
    for (int i = 0; i < 32; i++) {
        blk[2 + i] = (uint8_t)(int8_t)(i - 128 + 100);
        blk[36 + i] = (uint8_t)(int8_t)(127 - i);
    }
    float out[64];
    ss_dequantize(SS_TYPE_Q8_0, blk, out, 64);
    for (int i = 0; i < 32; i++) {
        cr_assert_eq(out[i], (float)(i - 28) * 0.25f);
        cr_assert_eq(out[32 + i], (float)(127 - i) * -2.0f);
    }
    uint16_t h[3] = {0x3c00, 0xc000, 0x7bff}, bf[2] = {0x3f80, 0xc040};
    ss_dequantize(SS_TYPE_F16, h, out, 3);
    cr_assert(out[0] == 1.0f && out[1] == -2.0f && out[2] == 65504.0f);
    ss_dequantize(SS_TYPE_BF16, bf, out, 2);
    cr_assert(out[0] == 1.0f && out[1] == -3.0f);
}

/* ---------------------------------------------------------------- default model */

Test(model, default_model_config)
{
    const char *path = ss_default_model_path();
    struct stat st;
    if (stat(path, &st) != 0)
        cr_skip_test("default model %s is absent", path);
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(path, &m, &err), 0, "%s", err.msg);
    const ss_config *c = &m->cfg;
    cr_assert_eq(m->format, SS_FORMAT_GGUF);
    cr_assert_eq(c->n_layers, 30);
    cr_assert_eq(c->d_model, 576);
    cr_assert_eq(c->n_heads, 9);
    cr_assert_eq(c->n_kv_heads, 3);
    cr_assert_eq(c->head_dim, 64);
    cr_assert_eq(c->d_ff, 1536);
    cr_assert_eq(c->vocab_size, 49152);
    cr_assert_eq(c->max_ctx, 8192);
    cr_assert_eq(c->rope_theta, 100000.0f);
    cr_assert_float_eq(c->rms_eps, 1e-5f, 1e-9f);
    cr_assert_eq(c->rope_neox, 0);
    cr_assert_eq(c->rope_scaling, SS_ROPE_SCALING_NONE);
    cr_assert_eq(c->tied_embeddings, 1);
    cr_assert_eq(m->output.data, m->tok_embd.data);
    cr_assert_eq(m->tok_embd.type, SS_TYPE_Q8_0);
    cr_assert_eq(m->layers[0].wq.type, SS_TYPE_Q4_1);
    cr_assert_eq(m->layers[29].w_down.dims[0], 1536);
    cr_assert_eq(m->layers[29].wk.dims[1], 192);
    cr_assert_eq(m->output_norm.type, SS_TYPE_F32);
    cr_assert_eq(ss_model_param_count(m), 134515008);
    cr_assert_not_null(m->chat_template);
    cr_assert(strstr(m->chat_template, "<|im_start|>"));
    cr_assert_not_null(m->gguf);
    cr_assert_null(m->hf);
    int counts[31] = {0};
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++)
        counts[m->gguf->tensors[i].type]++;
    cr_assert(counts[SS_TYPE_Q4_1] == 210 && counts[SS_TYPE_F32] == 61 && counts[SS_TYPE_Q8_0] == 1);
    ss_model_free(m);
}
