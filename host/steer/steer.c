/* steer.c - steering plans, their compilation into engine slots, and the
 * vector-file readers (safesteer HDF5, llama.cpp control-vector GGUF). */
#include "safesteer/steer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/h5io.h"
#include "safesteer/model.h"

/* ---------------------------------------------------------------- positions */

int ss_positions_parse(const char *s, ss_positions *p, ss_error *err)
{
    p->k = 0;
    if (!strcmp(s, "all"))
        p->rule = SS_POS_ALL;
    else if (!strcmp(s, "prompt"))
        p->rule = SS_POS_PROMPT;
    else if (!strcmp(s, "generated"))
        p->rule = SS_POS_GENERATED;
    else if (!strncmp(s, "from:", 5)) {
        char *end;
        errno = 0;
        long k = strtol(s + 5, &end, 10);
        if (!s[5] || *end || errno || k < 0 || k > 1 << 30)
            return ss_fail(err, "--positions: \"%s\" needs from:K with K a token index >= 0",
                           s);
        p->rule = SS_POS_FROM;
        p->k = (int)k;
    } else {
        return ss_fail(err, "--positions: unknown rule \"%s\" (expected all, prompt, "
                            "generated or from:K)", s);
    }
    return 0;
}

void ss_positions_range(const ss_positions *p, int n_prompt, int *begin, int *end)
{
    switch (p->rule) {
    case SS_POS_PROMPT: *begin = 0, *end = n_prompt; break;
    case SS_POS_GENERATED: *begin = n_prompt, *end = -1; break;
    case SS_POS_FROM: *begin = p->k, *end = -1; break;
    default: *begin = 0, *end = -1; break;
    }
}

/* ---------------------------------------------------------------- plan */

void ss_steer_plan_init(ss_steer_plan *p, int n_layers, int d_model)
{
    memset(p, 0, sizeof *p);
    p->n_layers = n_layers;
    p->d_model = d_model;
    p->positions.rule = SS_POS_ALL;
}

void ss_steer_plan_free(ss_steer_plan *p)
{
    for (int i = 0; i < p->n_entries; i++)
        free(p->entries[i].vector);
    free(p->entries);
    p->entries = NULL;
    p->n_entries = 0;
}

int ss_steer_plan_add(ss_steer_plan *p, int site, int layer, int op, float strength,
                      const float *vector, ss_error *err)
{
    int d = p->d_model;
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "steering entry: site %d out of range", site);
    if (layer < 0 || layer >= p->n_layers)
        return ss_fail(err, "steering entry: layer %d out of range (model has layers 0..%d)",
                       layer, p->n_layers - 1);
    if (op != SS_STEER_ADD && op != SS_STEER_ABLATE)
        return ss_fail(err, "steering entry: op %d is neither add nor ablate", op);
    if (!isfinite(strength))
        return ss_fail(err, "steering entry (layer %d): strength %g is not finite", layer,
                       (double)strength);
    double nn = 0;
    for (int j = 0; j < d; j++) {
        if (!isfinite(vector[j]))
            return ss_fail(err, "steering entry (layer %d): vector has %g at index %d", layer,
                           (double)vector[j], j);
        nn += (double)vector[j] * vector[j];
    }
    if (op == SS_STEER_ABLATE && nn == 0)
        return ss_fail(err, "steering entry (layer %d): cannot ablate a zero vector", layer);
    ss_steer_entry *ne = realloc(p->entries, (size_t)(p->n_entries + 1) * sizeof *ne);
    if (!ne)
        return ss_fail(err, "out of memory adding a steering entry");
    p->entries = ne;
    float *v = ss_malloc((size_t)d * sizeof(float), err);
    if (!v)
        return -1;
    /* ablation projects out a unit direction: the engine requires |v| = 1 */
    double scale = op == SS_STEER_ABLATE ? 1.0 / sqrt(nn) : 1.0;
    for (int j = 0; j < d; j++)
        v[j] = (float)(vector[j] * scale);
    p->entries[p->n_entries++] = (ss_steer_entry){site, layer, op, strength, v};
    return 0;
}

void ss_steer_compiled_free(ss_steer_compiled *c)
{
    free(c->alpha);
    free(c->ops);
    free(c->vectors);
    c->alpha = c->vectors = NULL;
    c->ops = NULL;
}

/* Zeroed arrays for every (site, layer) pair, wired into out->slot. */
static int compiled_alloc(int n_layers, int d_model, ss_steer_compiled *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    size_t n = (size_t)SS_SITE_COUNT * n_layers;
    out->alpha = ss_calloc(n, sizeof(float), err);
    out->ops = out->alpha ? ss_calloc(n, 1, err) : NULL;
    out->vectors = out->ops ? ss_calloc(n * d_model, sizeof(float), err) : NULL;
    if (!out->vectors) {
        ss_steer_compiled_free(out);
        return -1;
    }
    out->slot.alpha = out->alpha;
    out->slot.ops = out->ops;
    out->slot.vectors = out->vectors;
    return 0;
}

int ss_steer_compile_site(int n_layers, int d_model, int site, int op, const float *alpha,
                          const float *vectors, int pos_begin, int pos_end,
                          ss_steer_compiled *out, ss_error *err)
{
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "steering: site %d out of range", site);
    if (compiled_alloc(n_layers, d_model, out, err) < 0)
        return -1;
    size_t at = (size_t)site * n_layers;
    memcpy(out->alpha + at, alpha, (size_t)n_layers * sizeof(float));
    memset(out->ops + at, op, (size_t)n_layers); /* the engine checks op */
    memcpy(out->vectors + at * d_model, vectors, (size_t)n_layers * d_model * sizeof(float));
    out->slot.pos_begin = pos_begin;
    out->slot.pos_end = pos_end;
    return 0;
}

int ss_steer_compile(const ss_steer_plan *p, int n_prompt, ss_steer_compiled *out,
                     ss_error *err)
{
    memset(out, 0, sizeof *out);
    int L = p->n_layers, d = p->d_model;
    size_t n = (size_t)SS_SITE_COUNT * L; /* (site, layer) pairs */
    if (p->n_entries == 0)
        return ss_fail(err, "steering plan has no entries");
    if (compiled_alloc(L, d, out, err) < 0)
        return -1;
    /* entries per (site, layer): how many, and the first two */
    int *count = ss_calloc(n, sizeof(int), err);
    int *two = count ? ss_malloc(2 * n * sizeof(int), err) : NULL;
    if (!two) {
        free(count);
        ss_steer_compiled_free(out);
        return -1;
    }
    for (int i = 0; i < p->n_entries; i++) {
        size_t at = (size_t)p->entries[i].site * L + p->entries[i].layer;
        if (count[at] < 2)
            two[2 * at + count[at]] = i;
        count[at]++;
    }
    int rc = 0;
    for (int i = 0; i < p->n_entries && !rc; i++) {
        const ss_steer_entry *e = &p->entries[i];
        size_t at = (size_t)e->site * L + e->layer;
        float *v = out->vectors + at * d;
        if (e->op == SS_STEER_ABLATE && count[at] > 1) {
            rc = ss_fail(err,
                         "steering plan entries %d and %d both steer %s at layer %d, and entry "
                         "%d ablates: an ablation must be the only entry at its site and layer",
                         two[2 * at], two[2 * at + 1], ss_site_name(e->site), e->layer, i);
        } else if (e->op == SS_STEER_ABLATE) {
            memcpy(v, e->vector, (size_t)d * sizeof(float));
            out->alpha[at] = e->strength != 0.0f ? 1.0f : 0.0f;
            out->ops[at] = SS_STEER_ABLATE;
        } else if (count[at] == 1) {
            /* keep alpha and v apart: the engine adds alpha * v exactly */
            memcpy(v, e->vector, (size_t)d * sizeof(float));
            out->alpha[at] = e->strength;
        } else {
            for (int j = 0; j < d; j++)
                v[j] += e->strength * e->vector[j];
            out->alpha[at] = 1.0f;
        }
    }
    free(count);
    free(two);
    if (rc) {
        ss_steer_compiled_free(out);
        return -1;
    }
    ss_positions_range(&p->positions, n_prompt, &out->slot.pos_begin, &out->slot.pos_end);
    return 0;
}

int ss_steer_apply(ss_engine *e, int slot, const ss_steer_plan *p, int n_prompt, ss_error *err)
{
    if (!p || p->n_entries == 0)
        return ss_engine_set_steering(e, slot, NULL, err);
    const ss_config *c = ss_engine_config(e);
    if (p->n_layers != c->n_layers || p->d_model != c->d_model)
        return ss_fail(err, "steering plan is for %d layers x %d, the engine's model has %d x %d",
                       p->n_layers, p->d_model, c->n_layers, c->d_model);
    ss_steer_compiled comp;
    if (ss_steer_compile(p, n_prompt, &comp, err) < 0)
        return -1;
    int rc = ss_engine_set_steering(e, slot, &comp.slot, err);
    ss_steer_compiled_free(&comp);
    return rc;
}

/* ---------------------------------------------------------------- vector files */

void ss_vectors_free(ss_vector_set *v)
{
    if (v->categories)
        for (int i = 0; i < v->n_categories; i++)
            free(v->categories[i]);
    free(v->categories);
    free(v->layers);
    free(v->vectors);
    memset(v, 0, sizeof *v);
}

static int cmp_int(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* llama.cpp control vector: every tensor "direction.N" (N >= 1) is one
 * [d_model] f32 vector that llama.cpp adds to the output of decoder block N
 * (0-based; layer 0's output is never steered there). */
static int load_gguf_vectors(const char *path, ss_vector_set *v, ss_error *err)
{
    ss_gguf *g;
    if (ss_gguf_open(path, &g, err) < 0)
        return -1;
    int rc = -1, n = 0, d = 0;
    int *order = ss_calloc(g->n_tensors ? g->n_tensors : 1, sizeof(int), err);
    int *layer_of = ss_calloc(g->n_tensors ? g->n_tensors : 1, sizeof(int), err);
    if (!order || !layer_of)
        goto out;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ss_tensor *t = &g->tensors[i];
        if (strncmp(t->name, "direction.", 10))
            continue;
        char *end;
        long N = strtol(t->name + 10, &end, 10);
        if (!t->name[10] || *end || N < 1 || N > 1 << 20) {
            ss_fail(err, "%s: tensor %s: layer index must be an integer >= 1 (llama.cpp "
                         "numbering: direction.N is added to the output of block N)",
                    path, t->name);
            goto out;
        }
        if (t->n_dims != 1 || (d && t->dims[0] != d) || !ss_type_supported(t->type)) {
            ss_fail(err, "%s: tensor %s: expected a 1-D F32/F16 vector%s, got %d dims of %lld "
                         "(%s)", path, t->name, d ? " like the others" : "", t->n_dims,
                    (long long)t->dims[0], ss_type_name(t->type));
            goto out;
        }
        d = (int)t->dims[0];
        for (int k = 0; k < n; k++)
            if (layer_of[k] == N) {
                ss_fail(err, "%s: direction.%ld appears twice", path, N);
                goto out;
            }
        layer_of[n] = (int)N;
        order[n++] = (int)i;
    }
    if (n == 0) {
        ss_fail(err, "%s: no direction.N tensors (not a control-vector file?)", path);
        goto out;
    }
    const ss_gguf_kv *lc = ss_gguf_find(g, "controlvector.layer_count");
    if (lc && lc->type != SS_GGUF_STRING && lc->type != SS_GGUF_ARRAY &&
        (int64_t)lc->num.u != n) {
        ss_fail(err, "%s: controlvector.layer_count is %llu but the file holds %d direction "
                     "tensors", path, (unsigned long long)lc->num.u, n);
        goto out;
    }
    const ss_gguf_kv *hint = ss_gguf_find(g, "controlvector.model_hint");
    if (hint && hint->type == SS_GGUF_STRING)
        snprintf(v->model_hint, sizeof v->model_hint, "%.*s", (int)hint->str.len,
                 hint->str.ptr);
    int *sorted = ss_malloc((size_t)n * sizeof(int), err);
    if (!sorted)
        goto out;
    memcpy(sorted, layer_of, (size_t)n * sizeof(int));
    qsort(sorted, (size_t)n, sizeof(int), cmp_int);
    v->n_categories = 1;
    v->n_layers = n;
    v->d_model = d;
    v->site = SS_SITE_RESID_POST;
    snprintf(v->method, sizeof v->method, "control-vector");
    v->categories = ss_calloc(1, sizeof(char *), err);
    v->layers = ss_malloc((size_t)n * sizeof(int32_t), err);
    v->vectors = ss_malloc((size_t)n * d * sizeof(float), err);
    if (!v->categories || !v->layers || !v->vectors || !(v->categories[0] = strdup("control"))) {
        free(sorted);
        ss_fail(err, "%s: out of memory", path);
        goto out;
    }
    for (int r = 0; r < n; r++) {
        v->layers[r] = sorted[r];
        for (int k = 0; k < n; k++)
            if (layer_of[k] == sorted[r])
                ss_tensor_rows_f32(&g->tensors[order[k]], 0, 1, v->vectors + (size_t)r * d);
    }
    free(sorted);
    rc = 0;
out:
    free(order);
    free(layer_of);
    ss_gguf_close(g);
    return rc;
}

static int load_h5_vectors(const char *path, ss_vector_set *v, ss_error *err)
{
    hid_t f = ss_h5_open(path, H5F_ACC_RDONLY, err);
    if (f < 0)
        return -1;
    int rc = -1, rank;
    hsize_t dims[8], nc = 0;
    char *format = NULL, *site = NULL, *method = NULL;
    hid_t d = -1;
    if (ss_h5_attr_get_str(f, "format", &format, err) < 0)
        goto out;
    if (strcmp(format, "safesteer.vectors")) {
        ss_fail(err, "%s: format is \"%s\", expected \"safesteer.vectors\"", path, format);
        goto out;
    }
    if (ss_h5_attr_get_str(f, "site", &site, err) < 0 ||
        ss_site_parse(site, &v->site, err) < 0 ||
        ss_h5_attr_get_str(f, "method", &method, err) < 0)
        goto out;
    snprintf(v->method, sizeof v->method, "%s", method);
    if ((d = H5Dopen2(f, "/vectors", H5P_DEFAULT)) < 0) {
        ss_fail(err, "%s: dataset /vectors is missing", path);
        goto out;
    }
    if (ss_h5_shape(d, &rank, dims, err) < 0)
        goto out;
    if (rank != 3) {
        ss_fail(err, "%s: /vectors has rank %d, expected [C][L][d_model]", path, rank);
        goto out;
    }
    if (!dims[0] || !dims[1] || !dims[2] || dims[0] > 1 << 16 || dims[1] > 1 << 16 ||
        dims[2] > 1 << 20) { /* they size the allocations below */
        ss_fail(err, "%s: /vectors has shape [%llu][%llu][%llu]", path,
                (unsigned long long)dims[0], (unsigned long long)dims[1],
                (unsigned long long)dims[2]);
        goto out;
    }
    v->n_categories = (int)dims[0];
    v->n_layers = (int)dims[1];
    v->d_model = (int)dims[2];
    if (ss_h5_read_strs(f, "/categories", &v->categories, &nc, err) < 0)
        goto out;
    if ((int)nc != v->n_categories) {
        ss_fail(err, "%s: /categories has %llu names for %d vector rows", path,
                (unsigned long long)nc, v->n_categories);
        goto out;
    }
    v->layers = ss_malloc((size_t)v->n_layers * sizeof(int32_t), err);
    v->vectors = ss_malloc(dims[0] * dims[1] * dims[2] * sizeof(float), err);
    if (!v->layers || !v->vectors || ss_h5_read_rows(d, H5T_NATIVE_FLOAT, 0, dims[0],
                                                     v->vectors, err) < 0)
        goto out;
    H5Dclose(d);
    if ((d = H5Dopen2(f, "/layers", H5P_DEFAULT)) < 0) {
        ss_fail(err, "%s: dataset /layers is missing", path);
        goto out;
    }
    if (ss_h5_shape(d, &rank, dims, err) < 0)
        goto out;
    if (rank != 1 || (int)dims[0] != v->n_layers) {
        ss_fail(err, "%s: /layers must hold %d layer indices", path, v->n_layers);
        goto out;
    }
    if (ss_h5_read_rows(d, H5T_NATIVE_INT32, 0, dims[0], v->layers, err) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        ss_h5_fail_in(err, path);
    if (rc < 0 && v->categories) {
        ss_h5_free_strs(v->categories, nc);
        v->categories = NULL;
        v->n_categories = 0;
    }
    if (d >= 0)
        H5Dclose(d);
    free(format);
    free(site);
    free(method);
    H5Fclose(f);
    return rc;
}

/* Layers are looked up by value, so each must be a layer and appear once; a
 * NaN or infinity would only show later, as logits that are not finite. */
static int check_vector_set(const ss_vector_set *v, ss_error *err)
{
    for (int l = 0; l < v->n_layers; l++)
        for (int k = 0; k <= l; k++)
            if (v->layers[l] < 0 || (k < l && v->layers[k] == v->layers[l]))
                return ss_fail(err, "%s: /layers[%d] = %d is %s", v->path, l, (int)v->layers[l],
                               v->layers[l] < 0 ? "negative" : "listed twice");
    size_t per_row = (size_t)v->d_model;
    for (int c = 0; c < v->n_categories; c++)
        for (int l = 0; l < v->n_layers; l++) {
            const float *x = v->vectors + ((size_t)c * v->n_layers + l) * per_row;
            for (size_t j = 0; j < per_row; j++)
                if (!isfinite(x[j]))
                    return ss_fail(err, "%s: vector of category %s, layer %d has %g at dim %zu",
                                   v->path, v->categories[c], (int)v->layers[l], (double)x[j],
                                   j);
        }
    return 0;
}

int ss_vectors_load(const char *path, ss_vector_set *v, ss_error *err)
{
    memset(v, 0, sizeof *v);
    snprintf(v->path, sizeof v->path, "%s", path);
    FILE *f = fopen(path, "rb");
    if (!f)
        return ss_fail(err, "%s: cannot open: %s", path, strerror(errno));
    char magic[8] = {0};
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    int rc;
    if (n >= 4 && !memcmp(magic, "GGUF", 4))
        rc = load_gguf_vectors(path, v, err);
    else if (n == 8 && !memcmp(magic, "\x89HDF\r\n\x1a\n", 8))
        rc = load_h5_vectors(path, v, err);
    else
        rc = ss_fail(err, "%s: neither a GGUF control vector nor an HDF5 vector file", path);
    if (rc == 0)
        rc = check_vector_set(v, err);
    if (rc < 0) {
        char path_copy[1024];
        snprintf(path_copy, sizeof path_copy, "%s", v->path);
        ss_vectors_free(v);
        snprintf(v->path, sizeof v->path, "%s", path_copy);
    }
    return rc;
}

int ss_vectors_category(const ss_vector_set *v, const char *name, int *index, ss_error *err)
{
    char list[512] = "";
    size_t o = 0;
    for (int i = 0; i < v->n_categories; i++) {
        if (name && !strcmp(v->categories[i], name)) {
            *index = i;
            return 0;
        }
        o += (size_t)snprintf(list + o, o < sizeof list ? sizeof list - o : 0, "%s%s",
                              i ? ", " : "", v->categories[i]);
        if (o >= sizeof list)
            o = sizeof list;
    }
    if (!name && v->n_categories == 1) {
        *index = 0;
        return 0;
    }
    if (!name)
        return ss_fail(err, "%s holds %d vectors (%s): name one as FILE:NAME", v->path,
                       v->n_categories, list);
    return ss_fail(err, "%s: no vector named \"%s\" (it has: %s)", v->path, name, list);
}

int ss_layer_index(const int32_t *layers, int n, int layer, const char *sep, char *list,
                   size_t cap)
{
    size_t o = 0;
    list[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (layers[i] == layer)
            return i;
        if (o < cap)
            o += (size_t)snprintf(list + o, cap - o, "%s%d", i ? sep : "", (int)layers[i]);
    }
    return -1;
}

int ss_vectors_layer_row(const ss_vector_set *v, int layer, ss_error *err)
{
    char list[512];
    int row = ss_layer_index(v->layers, v->n_layers, layer, ", ", list, sizeof list);
    if (row < 0 && err)
        ss_fail(err, "%s: no vector for layer %d (it has layers %s)", v->path, layer, list);
    return row;
}
