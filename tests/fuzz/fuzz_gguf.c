/* fuzz_gguf.c - GGUF header, metadata and tensor infos (ss_gguf_open), then
 * the model (ss_model_load) and its tokenizer (ss_tokenizer_load) from the
 * same file.  Oracle: every accepted tensor lies inside the file, aligned,
 * sized by its dims (checked here in 128-bit arithmetic), overlapping no
 * other; names and keys are unique; an accepted model's tensors have the
 * shapes its config implies and finite norms; tokens decode; the chat
 * template is detected and a prompt rendered without a crash. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/model_internal.h"
#include "safesteer/tokenizer.h"

static void check_tensor(const ss_gguf *g, const ss_tensor *t)
{
    if (t->n_dims < 1 || t->n_dims > 4 || !ss_type_supported(t->type))
        fuzz_reject("tensor %s: n_dims %d, type %d accepted", t->name, t->n_dims, t->type);
    unsigned __int128 n = 1;
    for (int d = 0; d < 4; d++) {
        if (t->dims[d] < 1 || (d >= t->n_dims && t->dims[d] != 1))
            fuzz_reject("tensor %s: dims[%d] = %lld accepted", t->name, d,
                        (long long)t->dims[d]);
        n *= (unsigned __int128)t->dims[d];
        if (n >> 64)
            fuzz_reject("tensor %s: element count past 2^64 accepted", t->name);
    }
    int be = ss_type_block_elems(t->type);
    if (n % (unsigned)be || t->dims[0] % be)
        fuzz_reject("tensor %s: %s dims not whole blocks", t->name, ss_type_name(t->type));
    unsigned __int128 bytes = n / (unsigned)be * (unsigned)ss_type_block_bytes(t->type);
    if (bytes != t->nbytes)
        fuzz_reject("tensor %s: nbytes %zu, dims say %llu", t->name, t->nbytes,
                    (unsigned long long)bytes);
    const uint8_t *p = t->data;
    if (p < g->map + g->data_offset || p > g->map + g->map_size ||
        bytes > (size_t)(g->map + g->map_size - p))
        fuzz_reject("tensor %s: data outside the file", t->name);
    if ((size_t)(p - g->map - g->data_offset) % g->alignment)
        fuzz_reject("tensor %s: data not aligned to %llu", t->name,
                    (unsigned long long)g->alignment);
}

static int by_data(const void *a, const void *b)
{
    const ss_tensor *x = *(const ss_tensor *const *)a, *y = *(const ss_tensor *const *)b;
    const uint8_t *p = x->data, *q = y->data;
    return (p > q) - (p < q);
}

static void check_gguf(const ss_gguf *g)
{
    const ss_tensor **sorted = malloc((g->n_tensors + 1) * sizeof *sorted);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        check_tensor(g, &g->tensors[i]);
        sorted[i] = &g->tensors[i];
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(g->tensors[i].name, g->tensors[j].name))
                fuzz_reject("tensor name %s accepted twice", g->tensors[i].name);
    }
    qsort(sorted, g->n_tensors, sizeof *sorted, by_data);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if ((const uint8_t *)sorted[i - 1]->data + sorted[i - 1]->nbytes >
            (const uint8_t *)sorted[i]->data)
            fuzz_reject("tensors %s and %s overlap", sorted[i - 1]->name, sorted[i]->name);
    free(sorted);
    for (uint64_t i = 0; i < g->n_kv; i++)
        for (uint64_t j = 0; j < i; j++)
            if (g->kv[i].key.len == g->kv[j].key.len &&
                !memcmp(g->kv[i].key.ptr, g->kv[j].key.ptr, g->kv[i].key.len))
                fuzz_reject("metadata key %.*s accepted twice", (int)g->kv[i].key.len,
                            g->kv[i].key.ptr);
    /* decode everything: a read past the mapping faults */
    float *buf = malloc(1 << 20);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ss_tensor *t = &g->tensors[i];
        int64_t rows = ss_tensor_nelem(t) / t->dims[0];
        for (int64_t r = 0; r < rows && t->dims[0] <= (1 << 18); r++)
            ss_tensor_rows_f32(t, r, 1, buf);
    }
    free(buf);
}

static void check_finite(const ss_model *m, const ss_tensor *t, float *buf)
{
    ss_tensor_rows_f32(t, 0, 1, buf);
    for (int64_t i = 0; i < t->dims[0]; i++)
        if (!(buf[i] - buf[i] == 0))
            fuzz_reject("%s: norm %s holds %g at %lld", m->path, t->name, (double)buf[i],
                        (long long)i);
}

static void check_model(const ss_model *m)
{
    const ss_config *c = &m->cfg;
    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 ||
        c->head_dim < 2 || c->head_dim % 2 || c->d_ff < 1 || c->vocab_size < 1 ||
        c->max_ctx < 1 || c->n_heads % c->n_kv_heads || !(c->rms_eps > 0) ||
        !(c->rope_theta > 0) || isinf(c->rms_eps) || isinf(c->rope_theta))
        fuzz_reject("%s: config accepted with a bad size", m->path);
    ss_error err;
    int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim;
    float *buf = malloc((size_t)d * sizeof(float));
    check_finite(m, &m->output_norm, buf);
    if (ss_model_tensor_check(m, &m->tok_embd, "tok_embd", d, c->vocab_size, &err) ||
        ss_model_tensor_check(m, &m->output, "output", d, c->vocab_size, &err))
        fuzz_reject("%s", err.msg);
    for (int l = 0; l < c->n_layers; l++) {
        const ss_layer_weights *w = &m->layers[l];
        check_finite(m, &w->attn_norm, buf);
        check_finite(m, &w->ffn_norm, buf);
        if (ss_model_tensor_check(m, &w->wq, "wq", d, q, &err) ||
            ss_model_tensor_check(m, &w->wk, "wk", d, kv, &err) ||
            ss_model_tensor_check(m, &w->wv, "wv", d, kv, &err) ||
            ss_model_tensor_check(m, &w->wo, "wo", q, d, &err) ||
            ss_model_tensor_check(m, &w->w_gate, "w_gate", d, c->d_ff, &err) ||
            ss_model_tensor_check(m, &w->w_up, "w_up", d, c->d_ff, &err) ||
            ss_model_tensor_check(m, &w->w_down, "w_down", c->d_ff, d, &err))
            fuzz_reject("%s", err.msg);
    }
    free(buf);
}

static void check_tokenizer(const ss_tokenizer *t)
{
    static const char text[] = "Hello world <|im_end|>  42\n\xc3\xb1\xff<s>";
    for (int special = 0; special < 2; special++) {
        int32_t *ids;
        int n;
        char *back;
        ss_error err;
        if (ss_tokenize(t, text, sizeof text - 1, special, &ids, &n, &err))
            continue; /* a refusal is fine; a crash is not */
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= ss_tokenizer_vocab_size(t))
                fuzz_reject("token id %d outside the vocabulary of %d", ids[i],
                            ss_tokenizer_vocab_size(t));
        if (ss_detokenize(t, ids, n, special, &back, &err))
            fuzz_reject("ids from ss_tokenize do not decode: %s", err.msg);
        free(back);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("model.gguf", data, size);
    ss_error err;
    ss_gguf *g;
    if (ss_gguf_open(path, &g, &err)) {
        fuzz_refused(&err, path);
        return 0;
    }
    check_gguf(g);
    ss_gguf_close(g);
    ss_model *m;
    if (ss_model_load(path, &m, &err)) {
        fuzz_refused(&err, path);
        return 0;
    }
    check_model(m);
    ss_tokenizer *t;
    if (ss_tokenizer_load(m, &t, &err)) {
        fuzz_refused(&err, path);
    } else {
        check_tokenizer(t);
        /* the chat template is file text too: detection, rendering, encoding */
        int family;
        int32_t *ids;
        int n;
        if (ss_chat_family_for_model(m, NULL, &family, &err) == 0 &&
            ss_encode_prompt(m, t, family, NULL, "Hi <|im_end|>", &ids, &n, &err) == 0)
            free(ids);
        ss_tokenizer_free(t);
    }
    ss_model_free(m);
    return 0;
}
