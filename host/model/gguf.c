/* gguf.c - read-only GGUF v2/v3 parser over a memory-mapped file.
 *
 * Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv, then n_kv
 * {string key, u32 type, value}, then n_tensors {string name, u32 n_dims,
 * u64 dims[n_dims], u32 type, u64 offset}, then padding to
 * general.alignment, then tensor data.  Strings are {u64 len, bytes}.
 * Every read is bounds-checked against the file size, and the tensors are
 * shaped and placed by mapped.c (sizes overflow-checked, data contiguous in
 * info order inside the file), so a damaged file yields an error naming the
 * file, the field and the value, never a crash. */
#include "model/model_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SS_GGUF_MAX_DIMS 4
#define SS_GGUF_DEFAULT_ALIGNMENT 32

/* Read position in the mapped file. */
typedef struct {
    const ss_gguf *g;
    size_t pos;
} ss_cursor;

static const char *ss_vtype_name(int t)
{
    static const char *names[] = {"uint8", "int8", "uint16", "int16", "uint32",
                                  "int32", "float32", "bool", "string", "array",
                                  "uint64", "int64", "float64"};
    return (t >= 0 && t <= SS_GGUF_FLOAT64) ? names[t] : "unknown";
}

/* Bytes of one scalar of vtype t; 0 for strings, arrays and unknown ids. */
static size_t ss_vtype_size(int t)
{
    switch (t) {
    case SS_GGUF_UINT8: case SS_GGUF_INT8: case SS_GGUF_BOOL: return 1;
    case SS_GGUF_UINT16: case SS_GGUF_INT16: return 2;
    case SS_GGUF_UINT32: case SS_GGUF_INT32: case SS_GGUF_FLOAT32: return 4;
    case SS_GGUF_UINT64: case SS_GGUF_INT64: case SS_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* GGML names of types safesteer cannot decode, for clearer errors. */
static const char *ss_ggml_type_label(uint32_t type)
{
    static const char *names[] = {
        [6] = "Q5_0", [7] = "Q5_1", [9] = "Q8_1", [10] = "Q2_K", [11] = "Q3_K",
        [12] = "Q4_K", [13] = "Q5_K", [14] = "Q6_K", [15] = "Q8_K", [16] = "IQ2_XXS",
        [17] = "IQ2_XS", [18] = "IQ3_XXS", [19] = "IQ1_S", [20] = "IQ4_NL",
        [21] = "IQ3_S", [22] = "IQ2_S", [23] = "IQ4_XS", [24] = "I8", [25] = "I16",
        [26] = "I32", [27] = "I64", [28] = "F64", [29] = "IQ1_M"};
    if (type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "unknown";
}

static int ss_need(ss_cursor *c, size_t n, const char *what, ss_error *err)
{
    if (n > c->g->map_size || c->pos > c->g->map_size - n)
        return ss_fail(err, "%s: truncated file: %s needs %zu bytes at offset %zu but the file "
                            "has %zu bytes",
                       c->g->path, what, n, c->pos, c->g->map_size);
    return 0;
}

static int ss_read_u32(ss_cursor *c, uint32_t *out, const char *what, ss_error *err)
{
    if (ss_need(c, 4, what, err))
        return -1;
    memcpy(out, c->g->map + c->pos, 4);
    c->pos += 4;
    return 0;
}

static int ss_read_u64(ss_cursor *c, uint64_t *out, const char *what, ss_error *err)
{
    if (ss_need(c, 8, what, err))
        return -1;
    memcpy(out, c->g->map + c->pos, 8);
    c->pos += 8;
    return 0;
}

static int ss_read_str(ss_cursor *c, ss_gguf_str *s, const char *what, ss_error *err)
{
    uint64_t len;
    if (ss_read_u64(c, &len, what, err))
        return -1;
    if (len > c->g->map_size - c->pos)
        return ss_fail(err, "%s: %s: string length %" PRIu64 " at offset %zu runs past the end "
                            "of the file (%zu bytes)",
                       c->g->path, what, len, c->pos - 8, c->g->map_size);
    s->ptr = (const char *)c->g->map + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

/* Decodes a numeric scalar at p into kv->num (u, i or f by signedness). */
static void ss_decode_num(ss_gguf_kv *kv, const uint8_t *p)
{
    switch (kv->type) {
    case SS_GGUF_UINT8: case SS_GGUF_BOOL: kv->num.u = p[0]; break;
    case SS_GGUF_INT8: kv->num.i = (int8_t)p[0]; break;
    case SS_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); kv->num.u = v; break; }
    case SS_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); kv->num.i = v; break; }
    case SS_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); kv->num.u = v; break; }
    case SS_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); kv->num.i = v; break; }
    case SS_GGUF_UINT64: memcpy(&kv->num.u, p, 8); break;
    case SS_GGUF_INT64: memcpy(&kv->num.i, p, 8); break;
    case SS_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); kv->num.f = v; break; }
    case SS_GGUF_FLOAT64: memcpy(&kv->num.f, p, 8); break;
    default: break;
    }
}

static int ss_read_array(ss_cursor *c, ss_gguf_kv *kv, const char *key, ss_error *err)
{
    const char *path = c->g->path;
    uint32_t at;
    if (ss_read_u32(c, &at, "array element type", err) ||
        ss_read_u64(c, &kv->arr_len, "array length", err))
        return ss_fail_context(err, "key %s", key);
    kv->arr_type = (int)at;
    kv->data = c->g->map + c->pos;
    if (at == SS_GGUF_STRING) {
        for (uint64_t i = 0; i < kv->arr_len; i++) {
            ss_gguf_str s;
            if (ss_read_str(c, &s, "array string", err))
                return ss_fail(err, "%s: key %s: string %" PRIu64 " of %" PRIu64
                                    " runs past the end of the file (%zu bytes)",
                               path, key, i, kv->arr_len, c->g->map_size);
        }
        return 0;
    }
    size_t es = ss_vtype_size((int)at);
    if (es == 0)
        return ss_fail(err, "%s: key %s: unsupported array element type %u (%s)", path, key,
                       at, ss_vtype_name((int)at));
    if (kv->arr_len > (c->g->map_size - c->pos) / es)
        return ss_fail(err, "%s: key %s: array of %" PRIu64 " %s values at offset %zu runs "
                            "past the end of the file (%zu bytes)",
                       path, key, kv->arr_len, ss_vtype_name((int)at), c->pos, c->g->map_size);
    c->pos += (size_t)kv->arr_len * es;
    return 0;
}

static int ss_read_kv(ss_cursor *c, ss_gguf_kv *kv, uint64_t index, ss_error *err)
{
    const char *path = c->g->path;
    char what[64];
    snprintf(what, sizeof what, "metadata key %" PRIu64, index);
    if (ss_read_str(c, &kv->key, what, err))
        return -1;
    char key[256];
    snprintf(key, sizeof key, "%.*s", (int)(kv->key.len < 200 ? kv->key.len : 200), kv->key.ptr);
    uint32_t t;
    if (ss_read_u32(c, &t, "value type", err))
        return ss_fail_context(err, "key %s", key);
    kv->type = (int)t;
    if (t == SS_GGUF_ARRAY)
        return ss_read_array(c, kv, key, err);
    kv->data = c->g->map + c->pos;
    if (t == SS_GGUF_STRING) {
        if (ss_read_str(c, &kv->str, key, err))
            return -1;
        return 0;
    }
    size_t sz = ss_vtype_size((int)t);
    if (sz == 0)
        return ss_fail(err, "%s: key %s: unknown value type %u", path, key, t);
    if (ss_need(c, sz, key, err))
        return -1;
    ss_decode_num(kv, c->g->map + c->pos);
    c->pos += sz;
    return 0;
}

/* The spec asks for a multiple of 8; ggml's padding needs a power of two. */
static int ss_read_alignment(ss_gguf *g, ss_error *err)
{
    g->alignment = SS_GGUF_DEFAULT_ALIGNMENT;
    const ss_gguf_kv *kv = ss_gguf_find(g, "general.alignment");
    if (!kv)
        return 0;
    if (kv->type != SS_GGUF_UINT32)
        return ss_fail(err, "%s: key general.alignment has type %s, expected uint32", g->path,
                       ss_vtype_name(kv->type));
    if (kv->num.u < 8 || (kv->num.u & (kv->num.u - 1)))
        return ss_fail(err, "%s: key general.alignment = %" PRIu64 " is not a power of two of at "
                            "least 8",
                       g->path, kv->num.u);
    g->alignment = kv->num.u;
    return 0;
}

/* Reads one tensor info and sets its shape; data is placed once every info
 * is read (ss_mapped_place). */
static int ss_read_tensor_info(ss_cursor *c, ss_tensor *t, uint64_t *offset, uint64_t index,
                               ss_error *err)
{
    const char *path = c->g->path;
    char what[64];
    snprintf(what, sizeof what, "name of tensor %" PRIu64, index);
    ss_gguf_str name;
    if (ss_read_str(c, &name, what, err))
        return -1;
    if (name.len >= sizeof t->name)
        return ss_fail(err, "%s: tensor %" PRIu64 ": name \"%.*s...\" is %" PRIu64
                            " bytes, longer than %zu",
                       path, index, 40, name.ptr, name.len, sizeof t->name - 1);
    if (memchr(name.ptr, 0, name.len))
        return ss_fail(err, "%s: tensor %" PRIu64 ": name \"%s\" holds a NUL byte", path, index,
                       name.ptr);
    memcpy(t->name, name.ptr, name.len);
    t->name[name.len] = 0;
    uint32_t n_dims, type;
    if (ss_read_u32(c, &n_dims, "n_dims", err))
        return ss_fail_context(err, "tensor %s", t->name);
    if (n_dims < 1 || n_dims > SS_GGUF_MAX_DIMS)
        return ss_fail(err, "%s: tensor %s: n_dims = %u, expected 1..%d", path, t->name, n_dims,
                       SS_GGUF_MAX_DIMS);
    uint64_t dims[SS_GGUF_MAX_DIMS];
    for (uint32_t d = 0; d < n_dims; d++)
        if (ss_read_u64(c, &dims[d], "dims", err))
            return ss_fail_context(err, "tensor %s", t->name);
    if (ss_read_u32(c, &type, "type", err) || ss_read_u64(c, offset, "offset", err))
        return ss_fail_context(err, "tensor %s", t->name);
    if (!ss_type_supported((int)type))
        return ss_fail(err, "%s: tensor %s has type id %u (%s), which safesteer cannot decode "
                            "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                       path, t->name, type, ss_ggml_type_label(type));
    return ss_tensor_set_shape(t, path, (int)type, (int)n_dims, dims, err);
}

/* Tensor names and metadata keys must be unique: a lookup would silently
 * take the first of two. */
static int ss_check_duplicates(const ss_gguf *g, ss_error *err)
{
    uint64_t n = g->n_tensors > g->n_kv ? g->n_tensors : g->n_kv;
    ss_gguf_str *names = ss_malloc((n ? n : 1) * sizeof *names, err); /* [n] */
    if (!names)
        return -1;
    size_t a, b;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        names[i] = (ss_gguf_str){g->tensors[i].name, strlen(g->tensors[i].name)};
    int rc = ss_find_duplicate(names, g->n_tensors, &a, &b, err);
    if (rc > 0)
        rc = ss_fail(err, "%s: tensor %s appears twice (tensor infos %zu and %zu)", g->path,
                     g->tensors[a].name, a, b);
    for (uint64_t i = 0; rc == 0 && i < g->n_kv; i++)
        names[i] = g->kv[i].key;
    if (rc == 0 && (rc = ss_find_duplicate(names, g->n_kv, &a, &b, err)) > 0)
        rc = ss_fail(err, "%s: metadata key %.*s appears twice (entries %zu and %zu)", g->path,
                     (int)(names[a].len < 200 ? names[a].len : 200), names[a].ptr, a, b);
    free(names);
    return rc;
}

static int ss_read_header(ss_gguf *g, ss_cursor *c, ss_error *err)
{
    if (g->map_size < 4 || memcmp(g->map, "GGUF", 4))
        return ss_fail(err, "%s: not a GGUF file (magic is not \"GGUF\")", g->path);
    c->pos = 4;
    if (ss_read_u32(c, &g->version, "version", err))
        return -1;
    if (g->version == 1)
        return ss_fail(err, "%s: GGUF version 1 is not supported (only v2 and v3); re-convert "
                            "the model with a current llama.cpp",
                       g->path);
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0)
            return ss_fail(err, "%s: GGUF version field 0x%08x looks big-endian; only "
                                "little-endian GGUF is supported",
                           g->path, g->version);
        return ss_fail(err, "%s: unsupported GGUF version %u (supported: 2, 3)", g->path,
                       g->version);
    }
    if (ss_read_u64(c, &g->n_tensors, "tensor count", err) ||
        ss_read_u64(c, &g->n_kv, "metadata count", err))
        return -1;
    /* Every entry takes at least 12 bytes, so larger counts cannot fit. */
    uint64_t cap = g->map_size / 12;
    if (g->n_tensors > cap || g->n_kv > cap)
        return ss_fail(err, "%s: tensor count %" PRIu64 " / metadata count %" PRIu64
                            " cannot fit in a %zu-byte file",
                       g->path, g->n_tensors, g->n_kv, g->map_size);
    return 0;
}

static int ss_parse(ss_gguf *g, const ss_mapped_file *file, ss_error *err)
{
    ss_cursor c = {g, 0};
    if (ss_read_header(g, &c, err))
        return -1;
    g->kv = ss_calloc(g->n_kv, sizeof *g->kv, err);
    g->tensors = ss_calloc(g->n_tensors, sizeof *g->tensors, err);
    ss_tensor_slot *slots = ss_calloc(g->n_tensors, sizeof *slots, err); /* [n_tensors] */
    int rc = (!g->kv || !g->tensors || !slots) ? -1 : 0;
    for (uint64_t i = 0; rc == 0 && i < g->n_kv; i++)
        rc = ss_read_kv(&c, &g->kv[i], i, err);
    if (rc == 0)
        rc = ss_read_alignment(g, err);
    for (uint64_t i = 0; rc == 0 && i < g->n_tensors; i++) {
        slots[i].t = &g->tensors[i];
        rc = ss_read_tensor_info(&c, &g->tensors[i], &slots[i].begin, i, err);
    }
    if (rc == 0)
        rc = ss_check_duplicates(g, err);
    if (rc == 0)
        g->data_offset = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    /* A file without tensors (a vocabulary) need not pad up to its data section. */
    if (rc == 0 && g->n_tensors > 0)
        rc = ss_mapped_place(file, g->data_offset, g->alignment, 0, slots, g->n_tensors, err);
    free(slots);
    return rc;
}

int ss_gguf_open(const char *path, ss_gguf **out, ss_error *err)
{
    *out = NULL;
    if (strlen(path) >= sizeof((ss_gguf *)0)->path)
        return ss_fail(err, "%s: path is too long", path);
    ss_gguf *g = ss_calloc(1, sizeof *g, err);
    if (!g)
        return -1;
    strcpy(g->path, path);
    ss_mapped_file file;
    if (ss_mapped_open(path, &file, err)) {
        ss_gguf_close(g);
        return -1;
    }
    g->map = file.map;
    g->map_size = file.size;
    if (ss_parse(g, &file, err)) {
        ss_gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

void ss_gguf_close(ss_gguf *g)
{
    if (!g)
        return;
    if (g->map)
        munmap((void *)g->map, g->map_size);
    free(g->kv);
    free(g->tensors);
    free(g);
}

const ss_gguf_kv *ss_gguf_find(const ss_gguf *g, const char *key)
{
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.len == n && !memcmp(g->kv[i].key.ptr, key, n))
            return &g->kv[i];
    return NULL;
}

const ss_tensor *ss_gguf_tensor(const ss_gguf *g, const char *name)
{
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static const ss_gguf_kv *ss_find_or_fail(const ss_gguf *g, const char *key, ss_error *err)
{
    const ss_gguf_kv *kv = ss_gguf_find(g, key);
    if (!kv)
        ss_fail(err, "%s: key %s missing", g->path, key);
    return kv;
}

int ss_gguf_get_u64(const ss_gguf *g, const char *key, uint64_t *out, ss_error *err)
{
    const ss_gguf_kv *kv = ss_find_or_fail(g, key, err);
    if (!kv)
        return -1;
    switch (kv->type) {
    case SS_GGUF_UINT8: case SS_GGUF_UINT16: case SS_GGUF_UINT32: case SS_GGUF_UINT64:
    case SS_GGUF_BOOL:
        *out = kv->num.u;
        return 0;
    case SS_GGUF_INT8: case SS_GGUF_INT16: case SS_GGUF_INT32: case SS_GGUF_INT64:
        if (kv->num.i < 0)
            return ss_fail(err, "%s: key %s = %" PRId64 " is negative", g->path, key, kv->num.i);
        *out = (uint64_t)kv->num.i;
        return 0;
    default:
        return ss_fail(err, "%s: key %s has type %s, expected an integer", g->path, key,
                       ss_vtype_name(kv->type));
    }
}

int ss_gguf_get_f64(const ss_gguf *g, const char *key, double *out, ss_error *err)
{
    const ss_gguf_kv *kv = ss_find_or_fail(g, key, err);
    if (!kv)
        return -1;
    switch (kv->type) {
    case SS_GGUF_FLOAT32: case SS_GGUF_FLOAT64: *out = kv->num.f; return 0;
    case SS_GGUF_UINT8: case SS_GGUF_UINT16: case SS_GGUF_UINT32: case SS_GGUF_UINT64:
        *out = (double)kv->num.u;
        return 0;
    case SS_GGUF_INT8: case SS_GGUF_INT16: case SS_GGUF_INT32: case SS_GGUF_INT64:
        *out = (double)kv->num.i;
        return 0;
    default:
        return ss_fail(err, "%s: key %s has type %s, expected a number", g->path, key,
                       ss_vtype_name(kv->type));
    }
}

int ss_gguf_get_str(const ss_gguf *g, const char *key, ss_gguf_str *out, ss_error *err)
{
    const ss_gguf_kv *kv = ss_find_or_fail(g, key, err);
    if (!kv)
        return -1;
    if (kv->type != SS_GGUF_STRING)
        return ss_fail(err, "%s: key %s has type %s, expected string", g->path, key,
                       ss_vtype_name(kv->type));
    *out = kv->str;
    return 0;
}

/* Strings are {u64 len, bytes}; open validated every one of them. */
static const uint8_t *ss_str_at(const uint8_t *p, ss_gguf_str *s)
{
    memcpy(&s->len, p, 8);
    s->ptr = (const char *)p + 8;
    return p + 8 + s->len;
}

ss_gguf_str ss_gguf_arr_str(const ss_gguf_kv *kv, uint64_t i)
{
    ss_gguf_str s = {NULL, 0};
    const uint8_t *p = kv->data;
    for (uint64_t k = 0; k <= i; k++)
        p = ss_str_at(p, &s);
    return s;
}

int ss_gguf_arr_strs(const ss_gguf_kv *kv, ss_gguf_str **out, ss_error *err)
{
    *out = NULL;
    if (kv->type != SS_GGUF_ARRAY || kv->arr_type != SS_GGUF_STRING)
        return ss_fail(err, "key %.*s is not an array of strings", (int)kv->key.len, kv->key.ptr);
    ss_gguf_str *s = ss_malloc(kv->arr_len * sizeof *s, err); /* [arr_len] */
    if (!s)
        return -1;
    const uint8_t *p = kv->data;
    for (uint64_t i = 0; i < kv->arr_len; i++)
        p = ss_str_at(p, &s[i]);
    *out = s;
    return 0;
}
