/* vector_file.c - ss_vector_set in and out: the safesteer HDF5 vector file
 * (format "safesteer.vectors", written whole and read back with every
 * statistic it holds), the llama.cpp control-vector GGUF reader, sets built
 * from arrays, and lookups by category and layer.  Layout: docs/vectors.md. */
#include "safesteer/vectors.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/engine.h"
#include "util/h5io.h"

void ss_vectors_free(ss_vector_set *v)
{
    ss_h5_free_strs(v->categories, (hsize_t)v->n_categories);
    ss_h5_free_strs(v->safe_pool, (hsize_t)v->n_categories);
    free(v->layers);
    free(v->vectors);
    free(v->norms);
    free(v->cosine);
    free(v->counts_unsafe);
    free(v->counts_safe);
    free(v->counts_kept);
    free(v->separability);
    free(v->split);
    free(v->safe_split);
    memset(v, 0, sizeof *v);
}

int ss_vectors_fill_stats(ss_vector_set *v, ss_error *err)
{
    size_t C = (size_t)v->n_categories, L = (size_t)v->n_layers, d = (size_t)v->d_model;
    free(v->norms);
    free(v->cosine);
    v->norms = ss_malloc(C * L * sizeof(float), err);
    v->cosine = ss_malloc(L * C * C * sizeof(float), err);
    if (!v->norms || !v->cosine)
        return -1;
    for (size_t c = 0; c < C; c++)
        for (size_t l = 0; l < L; l++) {
            const float *w = v->vectors + (c * L + l) * d;
            v->norms[c * L + l] = (float)sqrt((double)cblas_sdot((int)d, w, 1, w, 1));
        }
    for (size_t l = 0; l < L; l++)
        for (size_t a = 0; a < C; a++)
            for (size_t b = 0; b < C; b++) {
                const float *x = v->vectors + (a * L + l) * d, *y = v->vectors + (b * L + l) * d;
                double na = v->norms[a * L + l], nb = v->norms[b * L + l];
                v->cosine[(l * C + a) * C + b] =
                    na > 0 && nb > 0 ? (float)(cblas_sdot((int)d, x, 1, y, 1) / (na * nb)) : 0.0f;
            }
    return 0;
}

/* The shape of a set: one category name, [L] layers, [C][L][d] zeros. */
static int alloc_core(ss_vector_set *v, int C, int L, int d, ss_error *err)
{
    v->n_categories = C;
    v->n_layers = L;
    v->d_model = d;
    v->categories = ss_calloc((size_t)C, sizeof(char *), err);
    v->layers = ss_calloc((size_t)L, sizeof(int32_t), err);
    v->vectors = ss_calloc((size_t)C * L * d, sizeof(float), err);
    return v->categories && v->layers && v->vectors ? 0 : -1;
}

/* Layers are looked up by value, so each must be a layer and appear once; a
 * NaN or infinity would only show later, as logits that are not finite.
 * where names the source in messages (a path, or "vector array"). */
static int check_set(const ss_vector_set *v, const char *where, ss_error *err)
{
    for (int l = 0; l < v->n_layers; l++)
        for (int k = 0; k <= l; k++)
            if (v->layers[l] < 0 || (k < l && v->layers[k] == v->layers[l]))
                return ss_fail(err, "%s: /layers[%d] = %d is %s", where, l, (int)v->layers[l],
                               v->layers[l] < 0 ? "negative" : "listed twice");
    size_t d = (size_t)v->d_model;
    for (int c = 0; c < v->n_categories; c++)
        for (int l = 0; l < v->n_layers; l++) {
            const float *x = v->vectors + ((size_t)c * v->n_layers + l) * d;
            for (size_t j = 0; j < d; j++)
                if (!isfinite(x[j]))
                    return ss_fail(err, "%s: vector of category %s, layer %d has %g at dim %zu",
                                   where, v->categories[c], (int)v->layers[l], (double)x[j], j);
        }
    return 0;
}

int ss_vectors_from_array(const char *category, int site, const int32_t *layers, int n_layers,
                          int d_model, const float *vectors, ss_vector_set *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    if (n_layers < 1 || d_model < 1)
        return ss_fail(err, "vector array: need at least one layer and d_model >= 1 (got %d "
                            "layers of %d)", n_layers, d_model);
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "vector array: site %d out of range", site);
    if (alloc_core(out, 1, n_layers, d_model, err) < 0 ||
        !(out->categories[0] = strdup(category ? category : "array"))) {
        ss_vectors_free(out);
        return ss_fail(err, "out of memory");
    }
    memcpy(out->layers, layers, (size_t)n_layers * sizeof(int32_t));
    memcpy(out->vectors, vectors, (size_t)n_layers * d_model * sizeof(float));
    out->site = site;
    snprintf(out->method, sizeof out->method, "array");
    if (check_set(out, "vector array", err) < 0 || ss_vectors_fill_stats(out, err) < 0) {
        ss_vectors_free(out);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- GGUF control vectors */

static int cmp_int(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* The "direction.N" tensors of g: their layers N (sorted) and tensor
 * indices, and their common width. */
static int gguf_directions(const ss_gguf *g, const char *path, int *order, int *layer_of,
                           int *n_out, int *d_out, ss_error *err)
{
    int n = 0, d = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const ss_tensor *t = &g->tensors[i];
        if (strncmp(t->name, "direction.", 10))
            continue;
        char *end;
        long N = strtol(t->name + 10, &end, 10);
        if (!t->name[10] || *end || N < 1 || N > 1 << 20)
            return ss_fail(err, "%s: tensor %s: layer index must be an integer >= 1 (llama.cpp "
                                "numbering: direction.N is added to the output of block N)",
                           path, t->name);
        if (t->n_dims != 1 || (d && t->dims[0] != d) || !ss_type_supported(t->type))
            return ss_fail(err, "%s: tensor %s: expected a 1-D F32/F16 vector%s, got %d dims of "
                                "%lld (%s)", path, t->name, d ? " like the others" : "",
                           t->n_dims, (long long)t->dims[0], ss_type_name(t->type));
        d = (int)t->dims[0];
        for (int k = 0; k < n; k++)
            if (layer_of[k] == N)
                return ss_fail(err, "%s: direction.%ld appears twice", path, N);
        layer_of[n] = (int)N;
        order[n++] = (int)i;
    }
    if (n == 0)
        return ss_fail(err, "%s: no direction.N tensors (not a control-vector file?)", path);
    *n_out = n;
    *d_out = d;
    return 0;
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
    size_t cap = g->n_tensors ? g->n_tensors : 1;
    int *order = ss_calloc(cap, sizeof(int), err);
    int *layer_of = ss_calloc(cap, sizeof(int), err);
    int *sorted = ss_calloc(cap, sizeof(int), err);
    if (!order || !layer_of || !sorted ||
        gguf_directions(g, path, order, layer_of, &n, &d, err) < 0)
        goto out;
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
    memcpy(sorted, layer_of, (size_t)n * sizeof(int));
    qsort(sorted, (size_t)n, sizeof(int), cmp_int);
    if (alloc_core(v, 1, n, d, err) < 0 || !(v->categories[0] = strdup("control"))) {
        ss_fail(err, "%s: out of memory", path);
        goto out;
    }
    v->site = SS_SITE_RESID_POST;
    snprintf(v->method, sizeof v->method, "control-vector");
    for (int r = 0; r < n; r++) {
        v->layers[r] = sorted[r];
        for (int k = 0; k < n; k++)
            if (layer_of[k] == sorted[r])
                ss_tensor_rows_f32(&g->tensors[order[k]], 0, 1, v->vectors + (size_t)r * d);
    }
    rc = ss_vectors_fill_stats(v, err);
out:
    free(order);
    free(layer_of);
    free(sorted);
    ss_gguf_close(g);
    return rc;
}

/* ---------------------------------------------------------------- HDF5 */

/* Dataset name of exactly n0 x n1 x n2 values (rank of them) into a
 * malloc'd *out; absent and optional: *out NULL. */
static int read_array(hid_t f, const char *path, const char *name, int optional, hid_t mtype,
                      size_t elem, int rank, hsize_t n0, hsize_t n1, hsize_t n2, void **out,
                      ss_error *err)
{
    *out = NULL;
    if (optional && H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return 0;
    const hsize_t want[3] = {n0, n1, n2};
    return ss_h5_read_array(f, path, name, mtype, elem, rank, want, 0, out, NULL, err);
}

/* Optional numeric attributes of a vector file. */
static int read_h5_attrs(hid_t f, ss_vector_set *v, ss_error *err)
{
    struct { const char *name; char *dst; size_t cap; } strs[] = {
        {"method", v->method, sizeof v->method},
        {"pooling", v->pooling, sizeof v->pooling},
        {"model_name", v->model_name, sizeof v->model_name},
        {"model_sha256", v->model_sha256, sizeof v->model_sha256},
        {"source_sha256", v->source_sha256, sizeof v->source_sha256},
        {"safe_source_sha256", v->safe_source_sha256, sizeof v->safe_source_sha256},
        {"unsafe_label", v->unsafe_label, sizeof v->unsafe_label},
        {"safe_label", v->safe_label, sizeof v->safe_label},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (ss_h5_attr_get_str_buf(f, strs[i].name, 1, strs[i].dst, strs[i].cap, err) < 0)
            return -1;
    int64_t iv;
    if (ss_h5_attr_exists(f, "passes") && ss_h5_attr_get_i64(f, "passes", &iv, err) == 0)
        v->passes = (int)iv;
    if (ss_h5_attr_exists(f, "pca_iterations") &&
        ss_h5_attr_get_i64(f, "pca_iterations", &iv, err) == 0)
        v->pca_iterations = (int)iv;
    if (ss_h5_attr_exists(f, "seed") && ss_h5_attr_get_i64(f, "seed", &iv, err) == 0)
        v->seed = (uint64_t)iv;
    if (ss_h5_attr_exists(f, "holdout"))
        ss_h5_attr_get_f64(f, "holdout", &v->holdout, err);
    if (ss_h5_attr_exists(f, "pca_residual"))
        ss_h5_attr_get_f64(f, "pca_residual", &v->pca_residual, err);
    return 0;
}

/* The optional per-category statistics datasets. */
static int read_h5_stats(hid_t f, const char *path, ss_vector_set *v, ss_error *err)
{
    hsize_t C = (hsize_t)v->n_categories, L = (hsize_t)v->n_layers;
    void *p;
    if (H5Lexists(f, "/safe_pool", H5P_DEFAULT) > 0) {
        hsize_t n;
        if (ss_h5_read_strs(f, "/safe_pool", &v->safe_pool, &n, err) < 0)
            return -1;
        if (n != C) {
            ss_h5_free_strs(v->safe_pool, n);
            v->safe_pool = NULL;
            return ss_fail(err, "%s: /safe_pool has %llu names for %llu categories", path,
                           (unsigned long long)n, (unsigned long long)C);
        }
    }
    if (read_array(f, path, "/counts_unsafe", 1, H5T_NATIVE_INT64, 8, 1, C, 0, 0, &p, err))
        return -1;
    v->counts_unsafe = p;
    if (read_array(f, path, "/counts_safe", 1, H5T_NATIVE_INT64, 8, 1, C, 0, 0, &p, err))
        return -1;
    v->counts_safe = p;
    if (read_array(f, path, "/counts_kept", 1, H5T_NATIVE_INT64, 8, 2, C, L, 0, &p, err))
        return -1;
    v->counts_kept = p;
    if (read_array(f, path, "/separability", 1, H5T_NATIVE_FLOAT, 4, 2, C, L, 0, &p, err))
        return -1;
    v->separability = p;
    if (H5Lexists(f, "/split", H5P_DEFAULT) > 0) {
        hsize_t n;
        if (ss_h5_read_1d(f, path, "/split", H5T_NATIVE_INT8, 1, 0, 1, &p, &n, err) < 0)
            return -1;
        v->split = p;
        v->n_prompts = (int64_t)n;
    }
    if (H5Lexists(f, "/safe_split", H5P_DEFAULT) > 0) {
        hsize_t n;
        if (ss_h5_read_1d(f, path, "/safe_split", H5T_NATIVE_INT8, 1, 0, 1, &p, &n, err) < 0)
            return -1;
        v->safe_split = p;
        v->n_safe_prompts = (int64_t)n;
    }
    return 0;
}

static int load_h5_vectors(const char *path, ss_vector_set *v, ss_error *err)
{
    hid_t f = ss_h5_open(path, H5F_ACC_RDONLY, err);
    if (f < 0)
        return -1;
    int rc = -1, rank;
    hsize_t dims[8], nc = 0;
    char format[64], site[32];
    void *p;
    hid_t d = -1;
    if (ss_h5_attr_get_str_buf(f, "format", 0, format, sizeof format, err) < 0)
        goto out;
    if (strcmp(format, "safesteer.vectors")) {
        ss_fail(err, "%s: format is \"%s\", expected \"safesteer.vectors\"", path, format);
        goto out;
    }
    if (ss_h5_attr_get_str_buf(f, "site", 0, site, sizeof site, err) < 0 ||
        ss_site_parse(site, &v->site, err) < 0 || read_h5_attrs(f, v, err) < 0)
        goto out;
    if ((d = ss_h5_open_dataset(f, path, "/vectors", err)) < 0 || ss_h5_shape(d, &rank, dims, err))
        goto out;
    H5Dclose(d);
    d = -1;
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
    if (nc != dims[0]) { /* ss_vectors_free frees n_categories names: free these here */
        ss_fail(err, "%s: /categories has %llu names for %d vector rows", path,
                (unsigned long long)nc, v->n_categories);
        ss_h5_free_strs(v->categories, nc);
        v->categories = NULL;
        goto out;
    }
    if (read_array(f, path, "/vectors", 0, H5T_NATIVE_FLOAT, 4, 3, dims[0], dims[1], dims[2], &p,
                   err))
        goto out;
    v->vectors = p;
    if (read_array(f, path, "/layers", 0, H5T_NATIVE_INT32, 4, 1, dims[1], 0, 0, &p, err))
        goto out;
    v->layers = p;
    rc = read_h5_stats(f, path, v, err) < 0 || ss_vectors_fill_stats(v, err) < 0 ? -1 : 0;
out:
    if (rc < 0)
        ss_h5_fail_in(err, path); /* messages from h5io name only the dataset */
    if (d >= 0)
        H5Dclose(d);
    H5Fclose(f);
    return rc;
}

int ss_vectors_load(const char *path, ss_vector_set *v, ss_error *err)
{
    memset(v, 0, sizeof *v);
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
        rc = check_set(v, path, err);
    if (rc < 0)
        ss_vectors_free(v);
    snprintf(v->path, sizeof v->path, "%s", path);
    return rc;
}

static int write_strs(hid_t f, const char *name, char **strs, hsize_t n, ss_error *err)
{
    hid_t t = ss_h5_vlen_str_type();
    hid_t d = ss_h5_create(f, name, t, 1, &n, 0, n ? n : 1, err);
    H5Tclose(t);
    if (d < 0)
        return -1;
    int rc = ss_h5_write_strs(d, 0, n, (const char *const *)strs, err);
    H5Dclose(d);
    return rc;
}

static int write_arr(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank,
                     hsize_t d0, hsize_t d1, hsize_t d2, const void *buf, ss_error *err)
{
    hsize_t dims[3] = {d0, d1, d2};
    return ss_h5_write_all(f, name, ftype, mtype, rank, dims, buf, err);
}

int ss_vectors_write(const char *path, const ss_vector_set *r, ss_error *err)
{
    ss_outfile out;
    hid_t f = ss_h5_out_create(&out, path, err);
    if (f < 0)
        return -1;
    hsize_t C = (hsize_t)r->n_categories, L = (hsize_t)r->n_layers, d = (hsize_t)r->d_model;
    int rc = ss_h5_attr_set_str(f, "format", "safesteer.vectors", err) ||
             ss_h5_attr_set_i64(f, "format_version", 1, err) ||
             ss_h5_attr_set_str(f, "toolkit_version", SAFESTEER_VERSION, err) ||
             ss_h5_attr_set_str(f, "method", r->method, err) ||
             ss_h5_attr_set_str(f, "site", ss_site_name(r->site), err) ||
             ss_h5_attr_set_str(f, "pooling", r->pooling, err) ||
             ss_h5_attr_set_i64(f, "d_model", r->d_model, err) ||
             ss_h5_attr_set_str(f, "source_sha256", r->source_sha256, err) ||
             ss_h5_attr_set_str(f, "safe_source_sha256", r->safe_source_sha256, err) ||
             ss_h5_attr_set_str(f, "model_name", r->model_name, err) ||
             ss_h5_attr_set_str(f, "model_sha256", r->model_sha256, err) ||
             ss_h5_attr_set_str(f, "unsafe_label", r->unsafe_label, err) ||
             ss_h5_attr_set_str(f, "safe_label", r->safe_label, err) ||
             ss_h5_attr_set_f64(f, "holdout", r->holdout, err) ||
             ss_h5_attr_set_i64(f, "seed", (int64_t)r->seed, err) ||
             ss_h5_attr_set_i64(f, "passes", r->passes, err) ||
             ss_h5_attr_set_i64(f, "pca_iterations", r->pca_iterations, err) ||
             ss_h5_attr_set_f64(f, "pca_residual", r->pca_residual, err) ||
             write_arr(f, "/vectors", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, C, L, d, r->vectors,
                       err) ||
             write_strs(f, "/categories", r->categories, C, err) ||
             write_arr(f, "/layers", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, L, 0, 0, r->layers,
                       err) ||
             write_arr(f, "/norms", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, C, L, 0, r->norms,
                       err) ||
             write_arr(f, "/cosine", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, L, C, C, r->cosine,
                       err)
                 ? -1
                 : 0;
    if (!rc && r->safe_pool)
        rc = write_strs(f, "/safe_pool", r->safe_pool, C, err);
    if (!rc && r->counts_unsafe)
        rc = write_arr(f, "/counts_unsafe", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, C, 0, 0,
                       r->counts_unsafe, err);
    if (!rc && r->counts_safe)
        rc = write_arr(f, "/counts_safe", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, C, 0, 0,
                       r->counts_safe, err);
    if (!rc && r->counts_kept)
        rc = write_arr(f, "/counts_kept", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, C, L, 0,
                       r->counts_kept, err);
    if (!rc && r->separability)
        rc = write_arr(f, "/separability", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, C, L, 0,
                       r->separability, err);
    if (!rc && r->split)
        rc = write_arr(f, "/split", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, (hsize_t)r->n_prompts, 0,
                       0, r->split, err);
    if (!rc && r->safe_split)
        rc = write_arr(f, "/safe_split", H5T_STD_I8LE, H5T_NATIVE_INT8, 1,
                       (hsize_t)r->n_safe_prompts, 0, 0, r->safe_split, err);
    return ss_h5_out_close(&out, f, rc, err);
}

/* ---------------------------------------------------------------- lookups */

void ss_vectors_split_ref(const char *ref, char *file, size_t cap, const char **name)
{
    snprintf(file, cap, "%s", ref);
    *name = NULL;
    char *colon = strrchr(file, ':');
    FILE *f = fopen(file, "rb");
    if (f) {
        fclose(f);
        return;
    }
    if (colon) {
        *colon = '\0';
        *name = ref + (colon - file) + 1;
    }
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
    const char *where = v->path[0] ? v->path : "the vector set";
    if (!name)
        return ss_fail(err, "%s holds %d vectors (%s): name one as FILE:NAME", where,
                       v->n_categories, list);
    return ss_fail(err, "%s: no vector named \"%s\" (it has: %s)", where, name, list);
}

int ss_vectors_layer_row(const ss_vector_set *v, int layer, ss_error *err)
{
    char list[512];
    int row = ss_layer_index(v->layers, v->n_layers, layer, ", ", list, sizeof list);
    if (row < 0 && err)
        ss_fail(err, "%s: no vector for layer %d (it has layers %s)",
                v->path[0] ? v->path : "vector set", layer, list);
    return row;
}

const float *ss_vectors_row(const ss_vector_set *v, int cat, int row)
{
    return v->vectors + ((size_t)cat * v->n_layers + (size_t)row) * v->d_model;
}

int ss_vectors_check_model(const ss_vector_set *v, const ss_config *cfg, const char *model_path,
                           ss_error *err)
{
    if (v->d_model != cfg->d_model)
        return ss_fail(err, "%s: vector d_model is %d but model %s has d_model %d", v->path,
                       v->d_model, model_path, cfg->d_model);
    for (int l = 0; l < v->n_layers; l++)
        if (v->layers[l] < 0 || v->layers[l] >= cfg->n_layers)
            return ss_fail(err, "%s: /layers[%d] is %d but model %s has layers 0..%d", v->path,
                           l, v->layers[l], model_path, cfg->n_layers - 1);
    return 0;
}
