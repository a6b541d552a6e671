/* capture_read.c - the one reader of capture files (format
 * "safesteer.capture", docs/hdf5-schema.md): vectors, clustering,
 * --normalize and the tests all read through it.  Opening validates the
 * format, the shapes and the string datasets (every message names the
 * file); reads go by row blocks, so a capture larger than memory streams. */
#include "safesteer/capture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/h5io.h"

struct ss_capture_file {
    ss_capture_info info;
    hid_t file, acts;
    hsize_t acts_rows;   /* dims[0] of /acts (prompts, or tokens when per_token) */
    int64_t *offsets;    /* [n_prompts + 1] token offsets (per_token only) */
    float *buf;          /* read buffer */
    size_t buf_floats;
    double *acc;         /* [n_rows][d] per-token pooling sums */
    size_t acc_doubles;
};

const ss_capture_info *ss_capture_info_of(const ss_capture_file *a) { return &a->info; }

void ss_capture_close(ss_capture_file *a)
{
    if (!a)
        return;
    ss_capture_info *in = &a->info;
    ss_h5_free_strs(in->ids, (hsize_t)in->n_prompts);
    ss_h5_free_strs(in->categories, (hsize_t)in->n_prompts);
    ss_h5_free_strs(in->labels, (hsize_t)in->n_prompts);
    free(in->layers);
    free(in->layer_norms);
    free(a->offsets);
    free(a->buf);
    free(a->acc);
    if (a->acts >= 0)
        H5Dclose(a->acts);
    if (a->file >= 0)
        H5Fclose(a->file);
    free(a);
}

/* Reads a string dataset with at least n rows (extra rows are dropped). */
static int read_strs(ss_capture_file *a, const char *name, char ***out, ss_error *err)
{
    hsize_t n;
    if (ss_h5_read_strs(a->file, name, out, &n, err) < 0)
        return -1;
    if (n < (hsize_t)a->info.n_prompts) {
        ss_h5_free_strs(*out, n);
        *out = NULL;
        return ss_fail(err, "%s: %s has %llu rows, expected %lld (n_done)", a->info.path, name,
                       (unsigned long long)n, (long long)a->info.n_prompts);
    }
    for (hsize_t i = (hsize_t)a->info.n_prompts; i < n; i++)
        free((*out)[i]);
    return 0;
}

static int open_acts(ss_capture_file *a, ss_error *err)
{
    ss_capture_info *in = &a->info;
    const char *path = in->path;
    int rank;
    hsize_t dims[8];
    if ((a->acts = ss_h5_open_dataset(a->file, path, "/acts", err)) < 0)
        return -1;
    if (ss_h5_shape(a->acts, &rank, dims, err) < 0)
        return -1;
    if (rank != 3 || dims[1] != (hsize_t)in->n_layers || dims[2] != (hsize_t)in->d_model)
        return ss_fail(err, "%s: /acts has rank %d shape [%llu][%llu][%llu], expected "
                            "[rows][%d layers][%d d_model]", path, rank,
                       (unsigned long long)dims[0], (unsigned long long)(rank > 1 ? dims[1] : 0),
                       (unsigned long long)(rank > 2 ? dims[2] : 0), in->n_layers, in->d_model);
    a->acts_rows = dims[0];
    hid_t ft = H5Dget_type(a->acts);
    int is_float = H5Tget_class(ft) == H5T_FLOAT;
    H5Tclose(ft);
    if (!is_float)
        return ss_fail(err, "%s: /acts is not a floating-point dataset", path);
    if (!in->per_token) {
        if (dims[0] < (hsize_t)in->n_prompts)
            return ss_fail(err, "%s: /acts has %llu rows but n_done is %lld", path,
                           (unsigned long long)dims[0], (long long)in->n_prompts);
        in->n_rows = in->n_prompts;
        return 0;
    }
    void *off;
    if (ss_h5_read_1d(a->file, path, "/offsets", H5T_NATIVE_INT64, sizeof(int64_t),
                      (hsize_t)in->n_prompts + 1, 1, &off, NULL, err) < 0)
        return -1;
    a->offsets = off;
    in->offsets = a->offsets;
    if (a->offsets[0] != 0)
        return ss_fail(err, "%s: /offsets[0] is %lld, expected 0", path,
                       (long long)a->offsets[0]);
    for (int64_t i = 0; i < in->n_prompts; i++)
        if (a->offsets[i + 1] < a->offsets[i] || (hsize_t)a->offsets[i + 1] > dims[0])
            return ss_fail(err, "%s: /offsets[%lld..%lld] = %lld..%lld is not a token range "
                                "inside /acts (%llu rows)", path, (long long)i,
                           (long long)i + 1, (long long)a->offsets[i],
                           (long long)a->offsets[i + 1], (unsigned long long)dims[0]);
    in->n_rows = a->offsets[in->n_prompts];
    return 0;
}

/* Integer attribute name of the file, checked to lie in [lo, hi]. */
static int attr_int(ss_capture_file *a, const char *name, int64_t lo, int64_t hi, int64_t *v,
                    ss_error *err)
{
    if (ss_h5_attr_get_i64(a->file, name, v, err) < 0)
        return -1;
    if (*v < lo || *v > hi)
        return ss_fail(err, "%s: attribute %s is %lld (expected %lld..%lld)", a->info.path, name,
                       (long long)*v, (long long)lo, (long long)hi);
    return 0;
}

/* The file's attributes: format, shapes, counts and provenance. */
static int read_attrs(ss_capture_file *a, ss_error *err)
{
    ss_capture_info *in = &a->info;
    const char *path = in->path;
    char format[64];
    int64_t v;
    if (ss_h5_attr_get_str_buf(a->file, "format", 0, format, sizeof format, err) < 0)
        return -1;
    if (strcmp(format, "safesteer.capture"))
        return ss_fail(err, "%s: attribute format is \"%s\", expected \"safesteer.capture\"",
                       path, format);
    if (attr_int(a, "d_model", 1, 1 << 20, &v, err) < 0)
        return -1;
    in->d_model = (int)v;
    if (attr_int(a, "n_layers_model", 1, 1 << 16, &v, err) < 0)
        return -1;
    in->n_layers_model = (int)v;
    if (attr_int(a, "n_prompts", 0, INT32_MAX, &in->n_prompts_total, err) < 0)
        return -1;
    /* files written before resumable captures have no n_done: all rows count */
    in->n_prompts = in->n_prompts_total;
    if (ss_h5_attr_exists(a->file, "n_done") &&
        attr_int(a, "n_done", 0, in->n_prompts_total, &in->n_prompts, err) < 0)
        return -1;
    in->complete = in->n_prompts == in->n_prompts_total;
    if (ss_h5_attr_exists(a->file, "complete")) {
        if (attr_int(a, "complete", 0, 1, &v, err) < 0)
            return -1;
        in->complete = (int)v;
    }
    if (ss_h5_attr_get_str_buf(a->file, "site", 0, in->site, sizeof in->site, err) < 0 ||
        ss_h5_attr_get_str_buf(a->file, "pooling", 0, in->pooling, sizeof in->pooling, err) < 0 ||
        ss_h5_attr_get_str_buf(a->file, "model_name", 1, in->model_name, sizeof in->model_name,
                               err) < 0 ||
        ss_h5_attr_get_str_buf(a->file, "model_sha256", 1, in->model_sha256,
                               sizeof in->model_sha256, err) < 0)
        return -1;
    in->per_token = !strcmp(in->pooling, "all");
    return 0;
}

/* /layers (each inside the model) and /layer_norms when present. */
static int read_layers(ss_capture_file *a, ss_error *err)
{
    ss_capture_info *in = &a->info;
    void *buf;
    hsize_t nl;
    if (ss_h5_read_1d(a->file, in->path, "/layers", H5T_NATIVE_INT32, sizeof(int32_t), 1, 1,
                      &buf, &nl, err) < 0)
        return -1;
    in->layers = buf;
    in->n_layers = (int)nl;
    for (int i = 0; i < in->n_layers; i++)
        if (in->layers[i] < 0 || in->layers[i] >= in->n_layers_model)
            return ss_fail(err, "%s: /layers[%d] is %d, outside the model's layers 0..%d",
                           in->path, i, (int)in->layers[i], in->n_layers_model - 1);
    if (H5Lexists(a->file, "/layer_norms", H5P_DEFAULT) <= 0)
        return 0;
    if (ss_h5_read_1d(a->file, in->path, "/layer_norms", H5T_NATIVE_FLOAT, sizeof(float), nl,
                      0, &buf, NULL, err) < 0)
        return -1;
    in->layer_norms = buf;
    return 0;
}

int ss_capture_open(const char *path, ss_capture_file **out, ss_error *err)
{
    *out = NULL;
    ss_capture_file *a = ss_calloc(1, sizeof *a, err);
    if (!a)
        return -1;
    a->file = a->acts = -1;
    ss_capture_info *in = &a->info;
    snprintf(in->path, sizeof in->path, "%s", path);
    if ((a->file = ss_h5_open(path, H5F_ACC_RDONLY, err)) < 0 || read_attrs(a, err) < 0 ||
        read_layers(a, err) < 0 || read_strs(a, "/prompts/category", &in->categories, err) < 0 ||
        read_strs(a, "/prompts/label", &in->labels, err) < 0 ||
        read_strs(a, "/prompts/id", &in->ids, err) < 0 || open_acts(a, err) < 0) {
        ss_capture_close(a);
        return ss_h5_fail_in(err, path);
    }
    *out = a;
    return 0;
}

int ss_capture_require_complete(const ss_capture_file *a, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    if (in->complete)
        return 0;
    return ss_fail_kind(err, SS_ERR_INCOMPLETE, "%s: incomplete capture (%lld of %lld prompts)",
                        in->path, (long long)in->n_prompts, (long long)in->n_prompts_total);
}

int ss_capture_layer_row(const ss_capture_file *a, int layer, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    char list[256];
    int row = ss_layer_index(in->layers, in->n_layers, layer, ",", list, sizeof list);
    if (row < 0)
        ss_fail(err, "%s: layer %d was not captured (/layers holds %s)", in->path, layer, list);
    return row;
}

static int grow(ss_capture_file *a, size_t floats, size_t doubles, ss_error *err)
{
    if (floats > a->buf_floats) {
        free(a->buf);
        if (!(a->buf = ss_malloc(floats * sizeof(float), err)))
            return a->buf_floats = 0, -1;
        a->buf_floats = floats;
    }
    if (doubles > a->acc_doubles) {
        free(a->acc);
        if (!(a->acc = ss_malloc(doubles * sizeof(double), err)))
            return a->acc_doubles = 0, -1;
        a->acc_doubles = doubles;
    }
    return 0;
}

int ss_capture_read_rows(ss_capture_file *a, int64_t r0, int64_t n, float *out, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    if (r0 < 0 || n < 0 || r0 + n > in->n_rows)
        return ss_fail(err, "%s: rows %lld..%lld outside the %lld rows of /acts in use",
                       in->path, (long long)r0, (long long)(r0 + n), (long long)in->n_rows);
    if (n && ss_h5_read_rows(a->acts, H5T_NATIVE_FLOAT, (hsize_t)r0, (hsize_t)n, out, err) < 0)
        return ss_fail_context(err, "%s", in->path);
    return 0;
}

/* Token rows read per HDF5 call when mean-pooling a per-token capture. */
#define SS_TOKEN_BLOCK 256

/* Mean of prompt p's token rows at the selected layers into out[n_rows][d]. */
static int read_pooled_tokens(ss_capture_file *a, int64_t p, const int *rows, int n_rows,
                              float *out, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    size_t L = (size_t)in->n_layers, d = (size_t)in->d_model;
    int64_t t0 = a->offsets[p], t1 = a->offsets[p + 1];
    if (t1 == t0)
        return ss_fail(err, "%s: prompt %lld (id %s) has no tokens in /offsets", in->path,
                       (long long)p, in->ids[p]);
    if (grow(a, SS_TOKEN_BLOCK * L * d, (size_t)n_rows * d, err) < 0)
        return -1;
    memset(a->acc, 0, (size_t)n_rows * d * sizeof(double));
    for (int64_t t = t0; t < t1; t += SS_TOKEN_BLOCK) {
        int64_t nt = t1 - t < SS_TOKEN_BLOCK ? t1 - t : SS_TOKEN_BLOCK;
        if (ss_capture_read_rows(a, t, nt, a->buf, err) < 0)
            return -1;
        for (int64_t k = 0; k < nt; k++)
            for (int r = 0; r < n_rows; r++) {
                const float *src = a->buf + ((size_t)k * L + (size_t)rows[r]) * d;
                double *dst = a->acc + (size_t)r * d;
                for (size_t j = 0; j < d; j++)
                    dst[j] += src[j];
            }
    }
    for (size_t j = 0; j < (size_t)n_rows * d; j++)
        out[j] = (float)(a->acc[j] / (double)(t1 - t0));
    return 0;
}

int ss_capture_read(ss_capture_file *a, int64_t p0, int64_t n, const int *rows, int n_rows,
                    float *out, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    size_t L = (size_t)in->n_layers, d = (size_t)in->d_model;
    if (p0 < 0 || n < 0 || p0 + n > in->n_prompts)
        return ss_fail(err, "%s: prompts %lld..%lld outside 0..%lld", in->path, (long long)p0,
                       (long long)(p0 + n), (long long)in->n_prompts);
    if (in->per_token) {
        for (int64_t i = 0; i < n; i++)
            if (read_pooled_tokens(a, p0 + i, rows, n_rows, out + (size_t)i * n_rows * d,
                                   err) < 0)
                return -1;
    } else {
        if (grow(a, (size_t)n * L * d, 0, err) < 0 || ss_capture_read_rows(a, p0, n, a->buf, err))
            return -1;
        for (int64_t i = 0; i < n; i++)
            for (int r = 0; r < n_rows; r++)
                memcpy(out + ((size_t)i * n_rows + r) * d,
                       a->buf + ((size_t)i * L + (size_t)rows[r]) * d, d * sizeof(float));
    }
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < n_rows; r++) {
            const float *x = out + ((size_t)i * n_rows + r) * d;
            for (size_t j = 0; j < d; j++)
                if (!isfinite(x[j]))
                    return ss_fail(err, "%s: /acts prompt %lld (id %s) layer %d dim %zu is %g "
                                        "(NaN/Inf activations)", in->path, (long long)(p0 + i),
                                   in->ids[p0 + i], in->layers[rows[r]], j, (double)x[j]);
        }
    return 0;
}

/* ---------------------------------------------------------------- whole files */

void ss_capture_data_free(ss_capture_data *d)
{
    free(d->layers);
    free(d->acts);
    free(d->offsets);
    free(d->n_tokens);
    free(d->layer_norms);
    memset(d, 0, sizeof *d);
}

/* Copies the reader's view of the file into out (all but /acts). */
static int copy_info(ss_capture_file *a, ss_capture_data *out, ss_error *err)
{
    const ss_capture_info *in = &a->info;
    size_t L = (size_t)in->n_layers, n = (size_t)in->n_prompts;
    out->n_prompts = (int)in->n_prompts_total;
    out->n_done = (int)in->n_prompts;
    out->complete = in->complete;
    out->n_layers = in->n_layers;
    out->d_model = in->d_model;
    out->n_rows = in->n_rows;
    if (ss_pool_parse(in->pooling, &out->pool, err) < 0 ||
        ss_site_parse(in->site, &out->site, err) < 0)
        return ss_fail_context(err, "%s", in->path);
    if (!in->layer_norms)
        return ss_fail(err, "%s: dataset /layer_norms is missing", in->path);
    out->layers = ss_malloc(L * sizeof(int32_t), err);
    out->layer_norms = ss_malloc(L * sizeof(float), err);
    if (!out->layers || !out->layer_norms)
        return -1;
    memcpy(out->layers, in->layers, L * sizeof(int32_t));
    memcpy(out->layer_norms, in->layer_norms, L * sizeof(float));
    void *nt;
    if (ss_h5_read_1d(a->file, in->path, "/prompts/n_tokens", H5T_NATIVE_INT32, sizeof(int32_t),
                      n, 1, &nt, NULL, err) < 0)
        return -1;
    out->n_tokens = nt;
    if (in->per_token) {
        if (!(out->offsets = ss_malloc((n + 1) * sizeof(int64_t), err)))
            return -1;
        memcpy(out->offsets, in->offsets, (n + 1) * sizeof(int64_t));
    }
    return 0;
}

int ss_capture_load(const char *path, int allow_incomplete, ss_capture_data *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    ss_capture_file *a;
    if (ss_capture_open(path, &a, err) < 0)
        return -1;
    const ss_capture_info *in = &a->info;
    size_t row = (size_t)in->n_layers * in->d_model;
    int rc = (!allow_incomplete && ss_capture_require_complete(a, err) < 0) ||
                     copy_info(a, out, err) < 0 ||
                     !(out->acts = ss_malloc((size_t)(in->n_rows ? in->n_rows : 1) * row *
                                                 sizeof(float), err)) ||
                     ss_capture_read_rows(a, 0, in->n_rows, out->acts, err) < 0
                 ? -1
                 : 0;
    ss_capture_close(a);
    if (rc)
        ss_capture_data_free(out);
    return rc;
}

int ss_capture_layer_norm(const ss_capture_file *a, int layer, int d_model, float *norm,
                          ss_error *err)
{
    const ss_capture_info *in = &a->info;
    if (ss_capture_require_complete(a, err) < 0)
        return -1;
    if (in->d_model != d_model)
        return ss_fail(err, "%s: captured with d_model %d, the steered model has %d", in->path,
                       in->d_model, d_model);
    if (!in->layer_norms)
        return ss_fail(err, "%s: dataset /layer_norms is missing", in->path);
    int row = ss_capture_layer_row(a, layer, err);
    if (row < 0)
        return -1;
    *norm = in->layer_norms[row];
    return 0;
}
