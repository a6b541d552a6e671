/* test_model_errors.c - damaged or unsupported model files must fail with a
 * message naming the file and the field at fault (never crash); tiny valid
 * GGUF files and Hugging Face folders written here must load. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/model_internal.h" /* struct ss_hf_folder */
#include "safesteer/model.h"

#define TMP_DIR SS_BINARY_DIR "/test_model_errors_files"

/* ---------------------------------------------------------------- byte writer */

typedef struct {
    char *buf;
    size_t len;
    FILE *f;
} bw;

static void bw_open(bw *w)
{
    w->buf = NULL;
    w->len = 0;
    w->f = open_memstream(&w->buf, &w->len);
}
static void bw_bytes(bw *w, const void *p, size_t n) { fwrite(p, 1, n, w->f); }
static void bw_u32(bw *w, uint32_t v) { bw_bytes(w, &v, 4); }
static void bw_u64(bw *w, uint64_t v) { bw_bytes(w, &v, 8); }
static void bw_str(bw *w, const char *s)
{
    bw_u64(w, strlen(s));
    bw_bytes(w, s, strlen(s));
}
static void bw_zeros(bw *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fputc(0, w->f);
}
static void bw_align(bw *w, size_t a)
{
    fflush(w->f);
    bw_zeros(w, (a - w->len % a) % a);
}

static const char *tmp_path(const char *name)
{
    static char path[1024];
    mkdir(TMP_DIR, 0755);
    snprintf(path, sizeof path, "%s/%s", TMP_DIR, name);
    return path;
}

/* Writes the first `keep` bytes (all when keep is SIZE_MAX) to TMP_DIR/NAME. */
static const char *bw_save(bw *w, const char *name, size_t keep)
{
    fclose(w->f);
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    fwrite(w->buf, 1, keep < w->len ? keep : w->len, f);
    fclose(f);
    free(w->buf);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot create %s", path);
    fputs(text, f);
    fclose(f);
}

/* ---------------------------------------------------------------- tiny llama */

/* d_model 8, 2 heads, 1 kv head, d_ff 16, vocab 10, 1 layer; head_dim varies. */
enum { T_D = 8, T_H = 2, T_KV = 1, T_FF = 16, T_V = 10 };

typedef struct {
    char name[96];
    int n_dims;
    int64_t dims[2]; /* GGUF order: dims[0] innermost */
    uint32_t type;
} tspec;

static int tiny_tensors(tspec *t, int hd, int hf, int with_output)
{
    int n = 0;
    int64_t q = T_H * hd, kv = T_KV * hd;
#define ADD(nm, nd, a, b) \
    do { snprintf(t[n].name, sizeof t[n].name, "%s", nm); t[n].n_dims = nd; \
         t[n].dims[0] = a; t[n].dims[1] = b; t[n].type = 0; n++; } while (0)
    ADD(hf ? "model.embed_tokens.weight" : "token_embd.weight", 2, T_D, T_V);
    ADD(hf ? "model.norm.weight" : "output_norm.weight", 1, T_D, 1);
    if (with_output)
        ADD(hf ? "lm_head.weight" : "output.weight", 2, T_D, T_V);
    ADD(hf ? "model.layers.0.input_layernorm.weight" : "blk.0.attn_norm.weight", 1, T_D, 1);
    ADD(hf ? "model.layers.0.self_attn.q_proj.weight" : "blk.0.attn_q.weight", 2, T_D, q);
    ADD(hf ? "model.layers.0.self_attn.k_proj.weight" : "blk.0.attn_k.weight", 2, T_D, kv);
    ADD(hf ? "model.layers.0.self_attn.v_proj.weight" : "blk.0.attn_v.weight", 2, T_D, kv);
    ADD(hf ? "model.layers.0.self_attn.o_proj.weight" : "blk.0.attn_output.weight", 2, q, T_D);
    ADD(hf ? "model.layers.0.post_attention_layernorm.weight" : "blk.0.ffn_norm.weight", 1, T_D, 1);
    ADD(hf ? "model.layers.0.mlp.gate_proj.weight" : "blk.0.ffn_gate.weight", 2, T_D, T_FF);
    ADD(hf ? "model.layers.0.mlp.up_proj.weight" : "blk.0.ffn_up.weight", 2, T_D, T_FF);
    ADD(hf ? "model.layers.0.mlp.down_proj.weight" : "blk.0.ffn_down.weight", 2, T_FF, T_D);
#undef ADD
    return n;
}

/* Bytes of the tensor's data: F16/BF16 2 per value, everything else F32.
 * Unsigned, so the overflowing dims of the overflow tests wrap (as a naive
 * writer's would) instead of being undefined. */
static int64_t tspec_bytes(const tspec *t)
{
    uint64_t n = (uint64_t)t->dims[0] * (uint64_t)(t->n_dims > 1 ? t->dims[1] : 1);
    return (int64_t)(n * (t->type == SS_TYPE_F16 || t->type == SS_TYPE_BF16 ? 2u : 4u));
}

/* Knobs for damaging the tiny GGUF model.  By default the file stays
 * consistent around the damage (offsets follow the changed dims or type);
 * flipped = 1 changes only the tensor info's bytes, as a flipped byte in a
 * downloaded file would, so the data no longer matches the infos. */
typedef struct {
    const char *arch;        /* general.architecture */
    const char *skip_key;    /* metadata key left out */
    int head_dim;
    int with_output;
    const float *rope_freqs; /* [head_dim/2] or NULL */
    uint32_t alignment;      /* general.alignment when nonzero (default 32) */
    uint32_t block_count;    /* llama.block_count when nonzero (default 1) */
    const char *extra_key;   /* a second copy of this uint32 key, when set */
    const char *bad_tensor;  /* tensor whose info is damaged by bad_* below */
    int64_t bad_dim1;        /* replaces dims[1] when nonzero */
    uint32_t bad_type;       /* replaces type when nonzero */
    uint64_t bad_offset;     /* replaces offset when nonzero */
    const char *bad_name;    /* replaces the name when set */
    const char *share_with;  /* bad_tensor takes this earlier tensor's offset */
    float bad_value;         /* written as bad_tensor's first value when nonzero */
    int flipped;
} gguf_opts;

static gguf_opts tiny_opts(void)
{
    return (gguf_opts){.arch = "llama", .skip_key = "", .extra_key = "", .head_dim = 4,
                       .with_output = 1};
}

static void kv_u32(bw *w, const gguf_opts *o, int *n, const char *key, uint32_t v)
{
    if (!strcmp(key, o->skip_key))
        return;
    bw_str(w, key);
    bw_u32(w, SS_GGUF_UINT32);
    bw_u32(w, v);
    (*n)++;
}

static void kv_f32(bw *w, const gguf_opts *o, int *n, const char *key, float v)
{
    if (!strcmp(key, o->skip_key))
        return;
    bw_str(w, key);
    bw_u32(w, SS_GGUF_FLOAT32);
    bw_bytes(w, &v, 4);
    (*n)++;
}

/* Metadata block into a separate buffer (its count is needed first). */
static int tiny_metadata(bw *w, const gguf_opts *o)
{
    int n = 0;
    bw_str(w, "general.architecture");
    bw_u32(w, SS_GGUF_STRING);
    bw_str(w, o->arch);
    n++;
    bw_str(w, "general.name");
    bw_u32(w, SS_GGUF_STRING);
    bw_str(w, "tiny test llama");
    n++;
    kv_u32(w, o, &n, "llama.block_count", o->block_count ? o->block_count : 1);
    kv_u32(w, o, &n, "llama.embedding_length", T_D);
    kv_u32(w, o, &n, "llama.feed_forward_length", T_FF);
    kv_u32(w, o, &n, "llama.attention.head_count", T_H);
    kv_u32(w, o, &n, "llama.attention.head_count_kv", T_KV);
    kv_u32(w, o, &n, "llama.attention.key_length", (uint32_t)o->head_dim);
    kv_u32(w, o, &n, "llama.context_length", 64);
    kv_f32(w, o, &n, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    kv_f32(w, o, &n, "llama.rope.freq_base", 500000.0f);
    if (o->alignment)
        kv_u32(w, o, &n, "general.alignment", o->alignment);
    if (*o->extra_key)
        kv_u32(w, o, &n, o->extra_key, 1);
    return n;
}

static const char *write_tiny_gguf(const char *file, const gguf_opts *o, size_t keep)
{
    tspec t[16];
    int nt = tiny_tensors(t, o->head_dim, 0, o->with_output);
    if (o->rope_freqs) {
        snprintf(t[nt].name, sizeof t[nt].name, "rope_freqs.weight");
        t[nt].n_dims = 1;
        t[nt].dims[0] = o->head_dim / 2;
        t[nt].dims[1] = 1;
        t[nt].type = 0;
        nt++;
    }
    bw meta;
    bw_open(&meta);
    int n_kv = tiny_metadata(&meta, o);
    fclose(meta.f);

    bw w;
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 3);
    bw_u64(&w, (uint64_t)nt);
    bw_u64(&w, (uint64_t)n_kv);
    bw_bytes(&w, meta.buf, meta.len);
    free(meta.buf);
    /* the damaged infos, and the sizes the data is laid out with */
    tspec written[16];
    int64_t laid[16];
    uint64_t offsets[16], off = 0, align = o->alignment ? o->alignment : 32;
    for (int i = 0; i < nt; i++) {
        int bad = o->bad_tensor && !strcmp(t[i].name, o->bad_tensor);
        written[i] = t[i];
        if (bad && o->bad_dim1)
            written[i].dims[1] = o->bad_dim1;
        if (bad && o->bad_type)
            written[i].type = o->bad_type;
        if (bad && o->bad_name)
            snprintf(written[i].name, sizeof written[i].name, "%s", o->bad_name);
        laid[i] = tspec_bytes(o->flipped ? &t[i] : &written[i]);
        offsets[i] = off;
        for (int j = 0; bad && o->share_with && j < i; j++)
            if (!strcmp(t[j].name, o->share_with))
                offsets[i] = offsets[j];
        if (bad && o->bad_offset)
            offsets[i] = o->bad_offset;
        off += ((uint64_t)laid[i] + align - 1) / align * align;
    }
    for (int i = 0; i < nt; i++) {
        bw_str(&w, written[i].name);
        bw_u32(&w, (uint32_t)written[i].n_dims);
        bw_u64(&w, (uint64_t)written[i].dims[0]);
        if (written[i].n_dims > 1)
            bw_u64(&w, (uint64_t)written[i].dims[1]);
        bw_u32(&w, written[i].type);
        bw_u64(&w, offsets[i]);
    }
    bw_align(&w, align);
    for (int i = 0; i < nt; i++) {
        int bad = o->bad_tensor && !strcmp(t[i].name, o->bad_tensor);
        for (int64_t k = 0; k < laid[i] / 4; k++) {
            float v = !strcmp(t[i].name, "rope_freqs.weight") ? o->rope_freqs[k]
                      : bad && k == 0 && o->bad_value != 0 ? o->bad_value
                                                            : (float)(i * 1000 + k);
            bw_bytes(&w, &v, 4);
        }
        bw_align(&w, align);
    }
    return bw_save(&w, file, keep);
}

/* Loads path expecting failure; checks the message names the file and each
 * of the given substrings. */
static void expect_fail(const char *path, const char *s1, const char *s2)
{
    ss_error err = {.msg = ""};
    ss_model *m = NULL;
    cr_assert_eq(ss_model_load(path, &m, &err), -1, "%s should fail to load", path);
    cr_assert_null(m);
    const char *base = strrchr(path, '/') + 1;
    cr_assert(strstr(err.msg, base), "message lacks file name %s: %s", base, err.msg);
    cr_assert(!s1 || strstr(err.msg, s1), "message lacks \"%s\": %s", s1, err.msg);
    cr_assert(!s2 || strstr(err.msg, s2), "message lacks \"%s\": %s", s2, err.msg);
}

/* ---------------------------------------------------------------- GGUF: valid */

Test(gguf_model, tiny_untied_and_tied)
{
    gguf_opts o = tiny_opts();
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(write_tiny_gguf("untied.gguf", &o, SIZE_MAX), &m, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(m->cfg.tied_embeddings, 0);
    cr_assert_eq(m->cfg.head_dim, 4);
    cr_assert_eq(m->cfg.vocab_size, T_V); /* from token_embd dims */
    cr_assert_eq(m->cfg.rope_theta, 500000.0f);
    cr_assert_eq(m->cfg.rope_neox, 0);
    cr_assert_str_eq(m->name, "tiny test llama");
    cr_assert_neq(m->output.data, m->tok_embd.data);
    cr_assert_eq(m->layers[0].wk.dims[1], 4);
    cr_assert_eq(((const float *)m->layers[0].w_down.data)[3], 11003.0f); /* tensor 11 */
    int64_t want = 2 * T_D * T_V + 3 * T_D + 2 * T_D * 8 + 2 * T_D * 4 + 3 * T_D * T_FF;
    cr_assert_eq(ss_model_param_count(m), want);
    ss_model_free(m);

    o.with_output = 0;
    cr_assert_eq(ss_model_load(write_tiny_gguf("tied.gguf", &o, SIZE_MAX), &m, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(m->cfg.tied_embeddings, 1);
    cr_assert_eq(m->output.data, m->tok_embd.data);
    cr_assert_eq(ss_model_param_count(m), want - T_D * T_V);
    ss_model_free(m);
}

/* llama.cpp's per-frequency factors for Llama-3.1 style scaling. */
static void llama3_factors(float *f, int hd, double theta, double factor, double low, double high,
                           double orig)
{
    for (int j = 0; j < hd / 2; j++) {
        double wavelen = 2 * M_PI / pow(theta, -2.0 * j / hd);
        if (wavelen < orig / high)
            f[j] = 1.0f;
        else if (wavelen > orig / low)
            f[j] = (float)factor;
        else {
            double s = (orig / wavelen - low) / (high - low);
            f[j] = (float)(1.0 / ((1 - s) / factor + s));
        }
    }
}

Test(gguf_model, llama3_scaling_from_rope_freqs)
{
    float f[64];
    llama3_factors(f, 128, 500000.0, 8.0, 1.0, 4.0, 8192.0);
    gguf_opts o = tiny_opts();
    o.head_dim = 128;
    o.rope_freqs = f;
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(write_tiny_gguf("rope_freqs.gguf", &o, SIZE_MAX), &m, &err), 0,
                 "%s", err.msg);
    const ss_config *c = &m->cfg;
    cr_assert_eq(c->rope_scaling, SS_ROPE_SCALING_LLAMA3);
    cr_assert_float_eq(c->rope_factor, 8.0f, 1e-5f);
    cr_assert_float_eq(c->rope_low_freq_factor, 1.0f, 1e-6f);
    cr_assert_float_eq(c->rope_high_freq_factor, 4.0f, 1e-3f);
    cr_assert_eq(c->rope_orig_ctx, 8192);
    ss_model_free(m);

    f[10] *= 1.5f; /* no longer follows the formula */
    expect_fail(write_tiny_gguf("rope_freqs_bad.gguf", &o, SIZE_MAX), "rope_freqs.weight",
                "llama3");
}

/* ---------------------------------------------------------------- GGUF: damaged */

Test(gguf_errors, every_truncation_fails_cleanly)
{
    gguf_opts o = tiny_opts();
    write_tiny_gguf("full.gguf", &o, SIZE_MAX);
    struct stat st;
    cr_assert_eq(stat(tmp_path("full.gguf"), &st), 0);
    for (size_t keep = 0; keep < (size_t)st.st_size; keep += 7) {
        const char *path = write_tiny_gguf("truncated.gguf", &o, keep);
        expect_fail(path, NULL, NULL);
    }
    expect_fail(write_tiny_gguf("truncated.gguf", &o, 100), "truncated", NULL);
    expect_fail(write_tiny_gguf("truncated.gguf", &o, (size_t)st.st_size - 1),
                "past the end", NULL);
}

Test(gguf_errors, wrong_magic_and_versions)
{
    bw w;
    bw_open(&w);
    bw_bytes(&w, "GGML", 4);
    bw_u32(&w, 3);
    bw_u64(&w, 0);
    bw_u64(&w, 0);
    expect_fail(bw_save(&w, "magic.gguf", SIZE_MAX), "magic", NULL);
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 1);
    bw_u32(&w, 0);
    bw_u32(&w, 0);
    expect_fail(bw_save(&w, "v1.gguf", SIZE_MAX), "version 1", NULL);
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 7);
    bw_u64(&w, 0);
    bw_u64(&w, 0);
    expect_fail(bw_save(&w, "v7.gguf", SIZE_MAX), "version 7", NULL);
    write_text(tmp_path("empty.gguf"), "");
    expect_fail(tmp_path("empty.gguf"), "empty", NULL);
}

Test(gguf_errors, tensor_data_past_end)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.ffn_up.weight";
    o.bad_offset = 1u << 20;
    expect_fail(write_tiny_gguf("past_end.gguf", &o, SIZE_MAX), "blk.0.ffn_up.weight",
                "past the end of the file");
}

Test(gguf_errors, unknown_tensor_type)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.attn_k.weight";
    o.bad_type = 99;
    expect_fail(write_tiny_gguf("type99.gguf", &o, SIZE_MAX), "blk.0.attn_k.weight", "type id 99");
    o.bad_type = 12;
    expect_fail(write_tiny_gguf("type12.gguf", &o, SIZE_MAX), "type id 12", "Q4_K");
}

Test(gguf_errors, dims_overflow)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.ffn_gate.weight";
    o.bad_dim1 = INT64_C(1) << 62;
    expect_fail(write_tiny_gguf("overflow.gguf", &o, SIZE_MAX), "blk.0.ffn_gate.weight",
                "overflow");
}

Test(gguf_errors, string_length_past_eof)
{
    bw w;
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 3);
    bw_u64(&w, 0);
    bw_u64(&w, 1);
    bw_str(&w, "general.name");
    bw_u32(&w, SS_GGUF_STRING);
    bw_u64(&w, 1000000);
    bw_bytes(&w, "short", 5);
    expect_fail(bw_save(&w, "longstr.gguf", SIZE_MAX), "general.name", "1000000");
}

/* One F32 tensor "x" of 8 values under general.alignment = alignment,
 * followed by 64 zero bytes. */
static const char *write_aligned_gguf(const char *name, uint32_t alignment)
{
    bw w;
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 3);
    bw_u64(&w, 1);
    bw_u64(&w, 1);
    bw_str(&w, "general.alignment");
    bw_u32(&w, SS_GGUF_UINT32);
    bw_u32(&w, alignment);
    bw_str(&w, "x");
    bw_u32(&w, 1);
    bw_u64(&w, 8);
    bw_u32(&w, SS_TYPE_F32);
    bw_u64(&w, 0);
    bw_zeros(&w, 64);
    return bw_save(&w, name, SIZE_MAX);
}

/* A tensor info of n_dims dims (then zeros). */
static const char *write_n_dims_gguf(const char *name, const char *tensor, uint32_t n_dims)
{
    bw w;
    bw_open(&w);
    bw_bytes(&w, "GGUF", 4);
    bw_u32(&w, 3);
    bw_u64(&w, 1);
    bw_u64(&w, 0);
    bw_str(&w, tensor);
    bw_u32(&w, n_dims);
    bw_zeros(&w, 64);
    return bw_save(&w, name, SIZE_MAX);
}

Test(gguf_errors, bad_alignment_and_n_dims)
{
    expect_fail(write_aligned_gguf("align3.gguf", 3), "general.alignment", "3");
    expect_fail(write_n_dims_gguf("ndims5.gguf", "five_dims", 5), "five_dims", "n_dims = 5");
}

Test(gguf_errors, architecture_keys_and_shapes)
{
    gguf_opts o = tiny_opts();
    o.arch = "qwen2";
    expect_fail(write_tiny_gguf("qwen.gguf", &o, SIZE_MAX), "general.architecture", "qwen2");
    o = tiny_opts();
    o.skip_key = "llama.embedding_length";
    expect_fail(write_tiny_gguf("nokey.gguf", &o, SIZE_MAX), "llama.embedding_length", "missing");
    o = tiny_opts();
    o.bad_tensor = "blk.0.attn_v.weight";
    o.bad_dim1 = 5;
    expect_fail(write_tiny_gguf("shape.gguf", &o, SIZE_MAX), "blk.0.attn_v.weight",
                "has dims {8, 5, 1, 1}, expected {8, 4}");
    expect_fail(tmp_path("does-not-exist.gguf"), "no such file", NULL);
}

/* The classes a mutation fuzzer found passing or crashing (issue 13); each
 * file is the valid tiny model with one field changed. */

Test(gguf_errors, dims_whose_byte_size_overflows)
{
    /* 8 x 2^59 F32 values: the element count fits in int64, the bytes do not
     * (they wrapped to 0, passed the range check and faulted on decode) */
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.ffn_up.weight";
    o.bad_dim1 = INT64_C(1) << 59;
    expect_fail(write_tiny_gguf("bytes_overflow.gguf", &o, SIZE_MAX), "blk.0.ffn_up.weight",
                "[8, 576460752303423488] of F32 take more than 2^63 bytes");
}

Test(gguf_errors, tensors_sharing_or_overlapping_data)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.attn_k.weight";
    o.share_with = "blk.0.attn_q.weight";
    expect_fail(write_tiny_gguf("shared.gguf", &o, SIZE_MAX), "blk.0.attn_k.weight",
                "overlaps tensor blk.0.attn_q.weight");
    o = tiny_opts();
    o.bad_tensor = "blk.0.attn_v.weight";
    o.bad_offset = 1024; /* inside attn_k's data [960, 1088) */
    expect_fail(write_tiny_gguf("overlap.gguf", &o, SIZE_MAX), "blk.0.attn_v.weight",
                "data [1024, 1152) overlaps tensor blk.0.attn_k.weight, which ends at 1088");
}

Test(gguf_errors, stored_type_changed)
{
    /* a norm's type byte flipped F32 -> F16: the infos promise 16 bytes where
     * the file holds 32 (before: garbage weights, non-finite logits later) */
    gguf_opts o = tiny_opts();
    o.alignment = 8;
    o.bad_tensor = "blk.0.attn_norm.weight";
    o.bad_type = SS_TYPE_F16;
    o.flipped = 1;
    expect_fail(write_tiny_gguf("norm_type.gguf", &o, SIZE_MAX), "blk.0.attn_q.weight",
                "gap of 16 bytes after tensor blk.0.attn_norm.weight (F16, 8 values, 16 bytes)");
    o.bad_tensor = "blk.0.ffn_down.weight"; /* the last tensor: its data ends early */
    expect_fail(write_tiny_gguf("last_type.gguf", &o, SIZE_MAX),
                "256 bytes after the last tensor's data (tensor blk.0.ffn_down.weight", NULL);
}

Test(gguf_errors, non_finite_norm_named_at_load)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.ffn_norm.weight";
    o.bad_value = NAN;
    expect_fail(write_tiny_gguf("nan_norm.gguf", &o, SIZE_MAX), "blk.0.ffn_norm.weight",
                "nan at row 0, column 0");
    o.bad_tensor = "output_norm.weight";
    o.bad_value = INFINITY;
    expect_fail(write_tiny_gguf("inf_norm.gguf", &o, SIZE_MAX), "output_norm.weight",
                "inf at row 0, column 0");
}

Test(gguf_errors, unaligned_offset_and_unknown_or_negative_type)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.attn_q.weight";
    o.bad_offset = 1300;
    expect_fail(write_tiny_gguf("unaligned.gguf", &o, SIZE_MAX), "blk.0.attn_q.weight",
                "data offset 1300 is not a multiple of the alignment 32");
    o = tiny_opts();
    o.bad_tensor = "token_embd.weight";
    o.bad_type = UINT32_MAX; /* -1 as int32 */
    expect_fail(write_tiny_gguf("type_neg.gguf", &o, SIZE_MAX), "token_embd.weight",
                "type id 4294967295 (unknown)");
}

Test(gguf_errors, duplicate_tensor_names_and_keys)
{
    gguf_opts o = tiny_opts();
    o.bad_tensor = "blk.0.ffn_up.weight";
    o.bad_name = "blk.0.ffn_gate.weight";
    expect_fail(write_tiny_gguf("dup_tensor.gguf", &o, SIZE_MAX),
                "tensor blk.0.ffn_gate.weight appears twice (tensor infos 9 and 10)", NULL);
    o = tiny_opts();
    o.extra_key = "llama.block_count";
    expect_fail(write_tiny_gguf("dup_key.gguf", &o, SIZE_MAX),
                "metadata key llama.block_count appears twice (entries 2 and 11)", NULL);
}

Test(gguf_errors, layer_count_beyond_the_tensors)
{
    /* checked before allocating per layer (2^31 - 1 layers asked for 1.6 TB) */
    gguf_opts o = tiny_opts();
    o.block_count = INT32_MAX;
    expect_fail(write_tiny_gguf("layers.gguf", &o, SIZE_MAX),
                "llama.block_count = 2147483647, but 2147483647 layers need 19327352823 tensors "
                "and the file holds 12", NULL);
}

Test(gguf_errors, huge_alignment_and_256_dims)
{
    /* a power of two, but the padding it implies is not in the file */
    expect_fail(write_aligned_gguf("align2g.gguf", 1u << 31), "would start at offset 2147483648",
                "past the end of the file");
    expect_fail(write_aligned_gguf("align4.gguf", 4),
                "general.alignment = 4 is not a power of two of at least 8", NULL);
    expect_fail(write_n_dims_gguf("ndims256.gguf", "many_dims", 256), "many_dims",
                "n_dims = 256");
}

/* ---------------------------------------------------------------- Hugging Face */

static const char *tiny_config =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8,"
    " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,"
    " \"intermediate_size\": 16, \"vocab_size\": 10, \"rms_norm_eps\": 1e-05,"
    " \"rope_theta\": 500000.0, \"max_position_embeddings\": 64, \"head_dim\": 4,"
    " \"tie_word_embeddings\": false, \"rope_scaling\": {\"rope_type\": \"llama3\","
    " \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0,"
    " \"original_max_position_embeddings\": 8192}}";

/* Writes a safetensors file holding tensors t[first..last) (F32, value
 * = running index); hlen_delta is added to the stored header length. */
static void write_safetensors(const char *path, const tspec *t, int first, int last,
                              const char *dtype, int64_t hlen_delta)
{
    char header[8192];
    size_t n = (size_t)snprintf(header, sizeof header, "{\"__metadata__\": {\"format\": \"pt\"}");
    int64_t off = 0;
    for (int i = first; i < last; i++) {
        int64_t b = tspec_bytes(&t[i]);
        if (t[i].n_dims == 2)
            n += (size_t)snprintf(header + n, sizeof header - n,
                                  ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%lld, %lld], "
                                  "\"data_offsets\": [%lld, %lld]}",
                                  t[i].name, dtype, (long long)t[i].dims[1], (long long)t[i].dims[0],
                                  (long long)off, (long long)(off + b));
        else
            n += (size_t)snprintf(header + n, sizeof header - n,
                                  ", \"%s\": {\"dtype\": \"%s\", \"shape\": [%lld], "
                                  "\"data_offsets\": [%lld, %lld]}",
                                  t[i].name, dtype, (long long)t[i].dims[0], (long long)off,
                                  (long long)(off + b));
        off += b;
    }
    n += (size_t)snprintf(header + n, sizeof header - n, "}");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    uint64_t hlen = (uint64_t)((int64_t)n + hlen_delta);
    fwrite(&hlen, 8, 1, f);
    fwrite(header, 1, n, f);
    for (int64_t k = 0; k < off / 4; k++) {
        float v = (float)k;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

/* Folder TMP_DIR/NAME with config.json (text) and one model.safetensors. */
static const char *write_hf(const char *name, const char *config, const char *dtype,
                            int64_t hlen_delta)
{
    static char dir[1024], file[1100];
    snprintf(dir, sizeof dir, "%s", tmp_path(name));
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/config.json", dir);
    write_text(file, config);
    tspec t[16];
    int nt = tiny_tensors(t, 4, 1, 1);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    write_safetensors(file, t, 0, nt, dtype, hlen_delta);
    return dir;
}

Test(hf_model, tiny_folder_loads)
{
    const char *dir = write_hf("hf_ok", tiny_config, "F32", 0);
    char file[1100];
    snprintf(file, sizeof file, "%s/tokenizer_config.json", dir);
    write_text(file, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
                     " {\"name\": \"default\", \"template\": \"{{ bos_token }}D\"}]}");
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(dir, &m, &err), 0, "%s", err.msg);
    const ss_config *c = &m->cfg;
    cr_assert_eq(m->format, SS_FORMAT_HF);
    cr_assert(c->d_model == 8 && c->n_layers == 1 && c->n_heads == 2 && c->n_kv_heads == 1);
    cr_assert(c->head_dim == 4 && c->d_ff == 16 && c->vocab_size == 10 && c->max_ctx == 64);
    cr_assert_eq(c->rope_neox, 1);
    cr_assert_eq(c->tied_embeddings, 0);
    cr_assert_eq(c->rope_theta, 500000.0f);
    cr_assert_eq(c->rope_scaling, SS_ROPE_SCALING_LLAMA3);
    cr_assert(c->rope_factor == 8.0f && c->rope_low_freq_factor == 1.0f &&
              c->rope_high_freq_factor == 4.0f && c->rope_orig_ctx == 8192);
    /* safetensors shape [4, 8] becomes dims {8, 4} */
    cr_assert(m->layers[0].wk.dims[0] == 8 && m->layers[0].wk.dims[1] == 4);
    cr_assert_eq(m->layers[0].wk.n_dims, 2);
    cr_assert_eq(m->output_norm.n_dims, 1);
    cr_assert_not_null(m->hf);
    cr_assert_str_eq(m->name, "hf_ok");
    cr_assert_str_eq(m->chat_template, "{{ bos_token }}D");
    float row[8];
    ss_tensor_rows_f32(&m->tok_embd, 1, 1, row);
    cr_assert(row[0] == 8.0f && row[7] == 15.0f);
    ss_model_free(m);
}

Test(hf_model, sharded_index)
{
    char dir[1024], file[1200];
    snprintf(dir, sizeof dir, "%s", tmp_path("hf_sharded"));
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/config.json", dir);
    write_text(file, tiny_config);
    tspec t[16];
    int nt = tiny_tensors(t, 4, 1, 1);
    snprintf(file, sizeof file, "%s/model-00001-of-00002.safetensors", dir);
    write_safetensors(file, t, 0, 5, "F32", 0);
    snprintf(file, sizeof file, "%s/model-00002-of-00002.safetensors", dir);
    write_safetensors(file, t, 5, nt, "F32", 0);
    char index[8192];
    size_t n = (size_t)snprintf(index, sizeof index, "{\"metadata\": {}, \"weight_map\": {");
    for (int i = 0; i < nt; i++)
        n += (size_t)snprintf(index + n, sizeof index - n, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"",
                              i ? ", " : "", t[i].name, i < 5 ? 1 : 2);
    snprintf(index + n, sizeof index - n, "}}");
    snprintf(file, sizeof file, "%s/model.safetensors.index.json", dir);
    write_text(file, index);
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(dir, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m->hf->n_files, 2);
    cr_assert_eq(m->hf->n_tensors, (size_t)nt);
    cr_assert_null(m->chat_template);
    ss_model_free(m);
}

Test(hf_errors, missing_config_key)
{
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%s", tiny_config);
    memcpy(strstr(cfg, "\"hidden_size\""), "\"hidden_sizX\"", 13);
    expect_fail(write_hf("hf_nokey", cfg, "F32", 0), "config.json: missing key \"hidden_size\"",
                NULL);
}

Test(hf_errors, not_llama)
{
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": "
                              "\"mistral\", %s", tiny_config + strlen("{\"architectures\": "
                                                                      "[\"LlamaForCausalLM\"],"));
    expect_fail(write_hf("hf_mistral", cfg, "F32", 0), "config.json", "MistralForCausalLM");
}

Test(hf_errors, unsupported_rope_scaling)
{
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "%s", tiny_config);
    memcpy(strstr(cfg, "\"llama3\""), "\"yarn\"  ", 8);
    expect_fail(write_hf("hf_yarn", cfg, "F32", 0), "config.json", "\"yarn\"");
}

Test(hf_errors, header_length_beyond_file)
{
    expect_fail(write_hf("hf_hlen", tiny_config, "F32", 1 << 20), "model.safetensors",
                "header length");
}

Test(hf_errors, data_offsets_outside_file)
{
    const char *dir = write_hf("hf_offsets", tiny_config, "F32", 0);
    char file[1100];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    struct stat st;
    cr_assert_eq(stat(file, &st), 0);
    cr_assert_eq(truncate(file, st.st_size - 4), 0); /* last tensor loses 4 bytes */
    expect_fail(dir, "model.layers.0.mlp.down_proj.weight", "data_offsets");
}

Test(hf_errors, unsupported_dtype)
{
    expect_fail(write_hf("hf_i32", tiny_config, "I32", 0), "model.safetensors", "dtype I32");
}

Test(hf_errors, no_weights)
{
    char dir[1024], file[1200];
    snprintf(dir, sizeof dir, "%s", tmp_path("hf_empty"));
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/config.json", dir);
    write_text(file, tiny_config);
    expect_fail(dir, "model.safetensors", NULL);
}

/* Folder TMP_DIR/NAME: tiny_config and a model.safetensors made of header
 * (JSON) and n_data bytes of zeros. */
static const char *write_hf_raw(const char *name, const char *header, size_t n_data)
{
    static char dir[1024];
    char file[1100];
    snprintf(dir, sizeof dir, "%s", tmp_path(name));
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/config.json", dir);
    write_text(file, tiny_config);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    FILE *f = fopen(file, "wb");
    cr_assert_not_null(f);
    uint64_t hlen = strlen(header);
    fwrite(&hlen, 8, 1, f);
    fputs(header, f);
    for (size_t i = 0; i < n_data; i++)
        fputc(0, f);
    fclose(f);
    return dir;
}

/* out = src with the first `from` replaced by `to`. */
static void replace_once(const char *src, const char *from, const char *to, char *out,
                         size_t cap)
{
    const char *at = strstr(src, from);
    cr_assert_not_null(at, "\"%s\" not in \"%s\"", from, src);
    snprintf(out, cap, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
}

#define ST_ENTRY(name, shape, b, e) \
    "\"" name "\": {\"dtype\": \"F32\", \"shape\": " shape ", \"data_offsets\": [" #b ", " #e "]}"

Test(hf_errors, shape_overflow)
{
    /* [2^62] F32: the byte count overflowed a signed multiply (UBSan) */
    expect_fail(write_hf_raw("hf_shape62", "{" ST_ENTRY("big", "[4611686018427387904]", 0, 0) "}",
                             0),
                "tensor big: dims [4611686018427387904] of F32 take more than 2^63 bytes", NULL);
    expect_fail(write_hf_raw("hf_shape64",
                             "{" ST_ENTRY("big", "[4294967296, 4294967296]", 0, 0) "}", 0),
                "tensor big: dims [4294967296, 4294967296]: the element count overflows", NULL);
    char header[4096] = "{\"many\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4], \"shape\": [1";
    for (int i = 1; i < 256; i++)
        strcat(header, ", 1");
    strcat(header, "]}}");
    expect_fail(write_hf_raw("hf_ndims", header, 4), "tensor many: n_dims = 256", NULL);
}

Test(hf_errors, shared_gapped_or_trailing_data)
{
    expect_fail(write_hf_raw("hf_shared", "{" ST_ENTRY("a", "[8]", 0, 32) ", "
                             ST_ENTRY("b", "[8]", 0, 32) "}", 32),
                "overlaps tensor", "which ends at 32");
    expect_fail(write_hf_raw("hf_gap", "{" ST_ENTRY("a", "[8]", 0, 32) ", "
                             ST_ENTRY("b", "[8]", 64, 96) "}", 96),
                "tensor b: data offset 64 leaves a gap of 32 bytes after tensor a", NULL);
    expect_fail(write_hf_raw("hf_trailing", "{" ST_ENTRY("a", "[8]", 0, 32) "}", 40),
                "8 bytes after the last tensor's data (tensor a", NULL);
}

Test(hf_errors, duplicate_keys)
{
    expect_fail(write_hf_raw("hf_dup_tensor", "{" ST_ENTRY("a", "[8]", 0, 32) ", "
                             ST_ENTRY("a", "[8]", 32, 64) "}", 64),
                "model.safetensors: header is not a JSON object: duplicate object key", NULL);
    char cfg[2048];
    snprintf(cfg, sizeof cfg, "{\"hidden_size\": 16, %s", tiny_config + 1);
    expect_fail(write_hf("hf_dup_config", cfg, "F32", 0), "config.json: duplicate object key",
                NULL);
}

Test(hf_errors, null_values)
{
    /* null is "absent" where transformers reads None as the default ... */
    char cfg[2048];
    replace_once(tiny_config, "\"head_dim\": 4", "\"head_dim\": null", cfg, sizeof cfg);
    ss_error err;
    ss_model *m;
    cr_assert_eq(ss_model_load(write_hf("hf_head_null", cfg, "F32", 0), &m, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(m->cfg.head_dim, 4, "hidden_size 8 / 2 heads");
    ss_model_free(m);
    /* ... and an error elsewhere (rms_norm_eps: None is no number) */
    replace_once(tiny_config, "1e-05", "null", cfg, sizeof cfg);
    expect_fail(write_hf("hf_eps_null", cfg, "F32", 0),
                "config.json: key \"rms_norm_eps\" is null", NULL);
}

/* ss_config keeps floats: 1e-85 passed the check as a double and became 0 */
Test(hf_errors, values_that_do_not_fit_a_float)
{
    char cfg[2048];
    replace_once(tiny_config, "1e-05", "1e-85", cfg, sizeof cfg);
    expect_fail(write_hf("hf_eps_tiny", cfg, "F32", 0),
                "config.json: key \"rms_norm_eps\" = 1e-85 is not a positive, finite 32-bit "
                "float", NULL);
    replace_once(tiny_config, "500000.0", "1e300", cfg, sizeof cfg);
    expect_fail(write_hf("hf_theta_huge", cfg, "F32", 0), "key \"rope_theta\" = 1e+300", NULL);
}
