/* control_vector.c - llama.cpp control-vector GGUF export.  Reading goes
 * through ss_vectors_load (vector_file.c), which parses GGUF with
 * ss_gguf_open.
 *
 * Layer convention (docs/vectors.md): our layer l is the output of decoder
 * block l (0-based, resid_post); llama.cpp adds tensor "direction.N" to the
 * output of block il = N and never steers block 0's output, so row l is
 * written as direction.l and l = 0 cannot be represented. */
#include "safesteer/vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/outfile.h"

/* GGUF constants used by the writer (GGUF v3, little-endian host). */
#define GGUF_VERSION 3
#define GGUF_ALIGN 32
#define GGUF_TYPE_INT32 5
#define GGUF_TYPE_STRING 8
#define GGML_TYPE_F32 0

typedef struct {
    FILE *f;
    int bad;
} gw;

static void put(gw *w, const void *p, size_t n)
{
    if (!w->bad && fwrite(p, 1, n, w->f) != n)
        w->bad = 1;
}

static void put_u32(gw *w, uint32_t v) { put(w, &v, 4); }
static void put_u64(gw *w, uint64_t v) { put(w, &v, 8); }

static void put_str(gw *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}

static void put_pad(gw *w, uint64_t *pos)
{
    static const char zeros[GGUF_ALIGN];
    uint64_t pad = (GGUF_ALIGN - *pos % GGUF_ALIGN) % GGUF_ALIGN;
    put(w, zeros, pad);
    *pos += pad;
}

int ss_control_vector_write(const char *path, const ss_vector_set *v, int cat, float scale,
                            const char *model_hint, int skip_layer0, int *skipped,
                            ss_error *err)
{
    if (cat < 0 || cat >= v->n_categories)
        return ss_fail(err, "%s: category index %d out of range 0..%d", v->path, cat,
                       v->n_categories - 1);
    int n = 0, n0 = 0;
    for (int l = 0; l < v->n_layers; l++) {
        if (v->layers[l] < 0)
            return ss_fail(err, "%s: /layers[%d] is %d", v->path, l, v->layers[l]);
        if (v->layers[l] == 0)
            n0++;
        else
            n++;
    }
    if (n0 && !skip_layer0)
        return ss_fail(err, "%s: holds a vector for layer 0, which llama.cpp control vectors "
                            "cannot express (direction.N steers the output of block N >= 1); "
                            "select other layers or skip layer 0", v->path);
    if (skipped)
        *skipped = n0;
    if (n == 0)
        return ss_fail(err, "%s: no layer >= 1 to export", v->path);
    ss_outfile out;
    gw w = {ss_outfile_fopen(&out, path, err), 0};
    if (!w.f)
        return -1;
    size_t d = (size_t)v->d_model;
    float *row = ss_malloc(d * sizeof(float), err);
    if (!row)
        return ss_outfile_fclose(&out, w.f, -1, err);
    uint64_t pos = 0;
    put(&w, "GGUF", 4);
    put_u32(&w, GGUF_VERSION);
    put_u64(&w, (uint64_t)n);
    put_u64(&w, 3);
    pos += 4 + 4 + 8 + 8;
    const char *keys[2] = {"general.architecture", "controlvector.model_hint"};
    const char *vals[2] = {"controlvector", model_hint ? model_hint : "llama"};
    for (int k = 0; k < 2; k++) {
        put_str(&w, keys[k]);
        put_u32(&w, GGUF_TYPE_STRING);
        put_str(&w, vals[k]);
        pos += 8 + strlen(keys[k]) + 4 + 8 + strlen(vals[k]);
    }
    const char *lc = "controlvector.layer_count";
    put_str(&w, lc);
    put_u32(&w, GGUF_TYPE_INT32);
    int32_t n32 = n;
    put(&w, &n32, 4);
    pos += 8 + strlen(lc) + 4 + 4;
    /* tensor infos: each F32 [d] tensor's data padded to the alignment */
    uint64_t stride = (d * 4 + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN, off = 0;
    for (int l = 0; l < v->n_layers; l++) {
        if (v->layers[l] == 0)
            continue;
        char name[64];
        snprintf(name, sizeof name, "direction.%d", v->layers[l]);
        put_str(&w, name);
        put_u32(&w, 1);
        put_u64(&w, d);
        put_u32(&w, GGML_TYPE_F32);
        put_u64(&w, off);
        pos += 8 + strlen(name) + 4 + 8 + 4 + 8;
        off += stride;
    }
    put_pad(&w, &pos);
    for (int l = 0; l < v->n_layers; l++) {
        if (v->layers[l] == 0)
            continue;
        const float *src = v->vectors + ((size_t)cat * v->n_layers + l) * d;
        for (size_t j = 0; j < d; j++)
            row[j] = scale == 1.0f ? src[j] : scale * src[j];
        put(&w, row, d * 4);
        pos += d * 4;
        put_pad(&w, &pos);
    }
    free(row);
    return ss_outfile_fclose(&out, w.f, 0, err);
}
