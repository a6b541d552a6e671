/* results.c - a sweep's records (generations.jsonl) and its results tables
 * (results.h5, summary.csv) aggregated from them (see sweep_internal.h). */
#include "sweep/sweep_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/h5io.h"
#include "util/outfile.h"

/* ---------------------------------------------------------------- records */

void recs_free(rec_list *r)
{
    for (int i = 0; i < r->n; i++)
        json_decref(r->rows[i]);
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static int cell_id_of(json_t *row)
{
    return (int)json_integer_value(json_object_get(row, "cell_id"));
}

/* Appends the records of path whose cell is done (done NULL: all); a torn
 * last line (killed mid-write) belongs to an unfinished unit and is
 * skipped, any other bad line is an error. */
int recs_read(const char *path, const uint8_t *done, int n_cells, rec_list *r,
                     ss_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : ss_fail(err, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        lineno++;
        int torn = line[len - 1] != '\n';
        json_error_t je;
        json_t *row = json_loads(line, 0, &je);
        if (!row) {
            if (torn)
                break;
            rc = ss_fail(err, "%s:%d: bad record: %s", path, lineno, je.text);
            break;
        }
        int id = cell_id_of(row);
        if (id < 0 || id >= n_cells) {
            json_decref(row);
            rc = ss_fail(err, "%s:%d: cell_id %d out of range", path, lineno, id);
            break;
        }
        if (done && !done[id]) {
            json_decref(row);
            continue;
        }
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 256;
            json_t **g = realloc(r->rows, (size_t)r->cap * sizeof *g);
            if (!g) {
                json_decref(row);
                rc = ss_fail(err, "out of memory");
                break;
            }
            r->rows = g;
        }
        r->rows[r->n++] = row;
    }
    free(line);
    fclose(f);
    return rc;
}

/* Stable order by cell id (records within a cell keep prompt order). */
static int cmp_rows(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int cx = cell_id_of(x), cy = cell_id_of(y);
    if (cx != cy)
        return (cx > cy) - (cx < cy);
    return (int)(json_integer_value(json_object_get(x, "index")) -
                 json_integer_value(json_object_get(y, "index")));
}

int recs_write(const char *path, rec_list *r, ss_error *err)
{
    qsort(r->rows, (size_t)r->n, sizeof *r->rows, cmp_rows);
    size_t cap = 1 << 16, len = 0;
    char *buf = ss_malloc(cap, err);
    if (!buf)
        return -1;
    buf[0] = 0;
    for (int i = 0; i < r->n; i++) {
        char *s = json_dumps(r->rows[i], JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!s) {
            free(buf);
            return ss_fail(err, "out of memory");
        }
        size_t k = strlen(s);
        if (len + k + 2 > cap) {
            while (len + k + 2 > cap)
                cap *= 2;
            char *g = realloc(buf, cap);
            if (!g) {
                free(s);
                free(buf);
                return ss_fail(err, "out of memory");
            }
            buf = g;
        }
        memcpy(buf + len, s, k);
        len += k;
        buf[len++] = '\n';
        buf[len] = 0;
        free(s);
    }
    int rc = write_text(path, buf, err);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- results */

typedef struct {
    int id, layer, n;
    const char *category, *method, *site;
    double strength;
    double sum[7];   /* unsafe, refused, perplexity, distinct_1, distinct_2, length, relevance */
    int cnt[7];
} cell_row;

static const char *const metric_names[7] = {"unsafe_rate", "refusal_rate", "perplexity",
                                            "distinct_1", "distinct_2", "mean_length",
                                            "relevance"};
static const char *const metric_keys[7] = {"unsafe", "refused", "perplexity", "distinct_1",
                                           "distinct_2", "n_tokens", "relevance"};

static double metric(const cell_row *c, int k)
{
    return c->cnt[k] ? c->sum[k] / c->cnt[k] : NAN;
}

static int aggregate(rec_list *r, cell_row **out, int *n_out, ss_error *err)
{
    cell_row *rows = ss_calloc((size_t)r->n + 1, sizeof *rows, err);
    if (!rows)
        return -1;
    int n = 0;
    for (int i = 0; i < r->n; i++) {
        json_t *j = r->rows[i];
        int id = cell_id_of(j);
        if (n == 0 || rows[n - 1].id != id) {
            cell_row *c = &rows[n++];
            c->id = id;
            c->category = json_string_value(json_object_get(j, "category"));
            c->method = json_string_value(json_object_get(j, "method"));
            c->site = json_string_value(json_object_get(j, "site"));
            c->layer = (int)json_integer_value(json_object_get(j, "layer"));
            c->strength = json_number_value(json_object_get(j, "strength"));
        }
        cell_row *c = &rows[n - 1];
        c->n++;
        for (int k = 0; k < 7; k++) {
            json_t *v = json_object_get(j, metric_keys[k]);
            if (json_is_boolean(v)) {
                c->sum[k] += json_is_true(v);
                c->cnt[k]++;
            } else if (json_is_number(v)) {
                c->sum[k] += json_number_value(v);
                c->cnt[k]++;
            }
        }
    }
    *out = rows;
    *n_out = n;
    return 0;
}

static int write_summary(const char *path, const cell_row *rows, int n, ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, path, err);
    if (!f)
        return -1;
    fputs("cell_id,category,method,layer,strength,site,n_prompts", f);
    for (int k = 0; k < 7; k++)
        fprintf(f, ",%s", metric_names[k]);
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        const cell_row *c = &rows[i];
        fprintf(f, "%d,%s,%s,%d,%.17g,%s,%d", c->id, c->category, c->method, c->layer,
                c->strength, c->site, c->n);
        for (int k = 0; k < 7; k++) {
            double v = metric(c, k);
            if (isnan(v))
                fputs(",", f);
            else
                fprintf(f, ",%.17g", v);
        }
        fputc('\n', f);
    }
    return ss_outfile_fclose(&out, f, 0, err);
}

static int write_results(const char *path, const cell_row *rows, int n, const char *config,
                         const char *model_name, const char *model_sha, ss_error *err)
{
    ss_outfile out;
    hid_t f = ss_h5_out_create(&out, path, err);
    if (f < 0)
        return -1;
    int rc = -1;
    int32_t *iv = ss_calloc((size_t)n + 1, sizeof *iv, err);
    double *dv = ss_calloc((size_t)n + 1, sizeof *dv, err);
    const char **sv = ss_calloc((size_t)n + 1, sizeof *sv, err);
    hid_t g = f >= 0 ? H5Gcreate2(f, "cells", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (!iv || !dv || !sv || g < 0)
        goto out;
    hsize_t dims[1] = {(hsize_t)n};
    /* integer columns */
    for (int col = 0; col < 3; col++) {
        static const char *const names[3] = {"cells/cell_id", "cells/layer", "cells/n_prompts"};
        for (int i = 0; i < n; i++)
            iv[i] = col == 0 ? rows[i].id : col == 1 ? rows[i].layer : rows[i].n;
        if (ss_h5_write_all(f, names[col], H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims, iv, err))
            goto out;
    }
    for (int i = 0; i < n; i++)
        dv[i] = rows[i].strength;
    if (ss_h5_write_all(f, "cells/strength", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, dv, err))
        goto out;
    for (int k = 0; k < 7; k++) {
        char name[64];
        snprintf(name, sizeof name, "cells/%s", metric_names[k]);
        for (int i = 0; i < n; i++)
            dv[i] = metric(&rows[i], k);
        if (ss_h5_write_all(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, dv, err))
            goto out;
    }
    for (int col = 0; col < 3; col++) {
        static const char *const names[3] = {"cells/category", "cells/method", "cells/site"};
        for (int i = 0; i < n; i++)
            sv[i] = col == 0 ? rows[i].category : col == 1 ? rows[i].method : rows[i].site;
        hid_t t = ss_h5_vlen_str_type();
        hid_t d = ss_h5_create(f, names[col], t, 1, dims, 0, n ? (hsize_t)n : 1, err);
        H5Tclose(t);
        if (d < 0)
            goto out;
        int w = ss_h5_write_strs(d, 0, (hsize_t)n, sv, err);
        H5Dclose(d);
        if (w < 0)
            goto out;
    }
    if (ss_h5_attr_set_str(f, "format", "safesteer.sweep", err) ||
        ss_h5_attr_set_i64(f, "format_version", 1, err) ||
        ss_h5_attr_set_str(f, "config_yaml", config, err) ||
        ss_h5_attr_set_str(f, "model_name", model_name, err) ||
        ss_h5_attr_set_str(f, "model_sha256", model_sha, err))
        goto out;
    rc = 0;
out:
    if (g >= 0)
        H5Gclose(g);
    free(iv);
    free(dv);
    free(sv);
    return ss_h5_out_close(&out, f, rc, err);
}

/* Reads run.json: model name/sha, cell count. */
int read_run_info(const char *dir, json_t **out, ss_error *err)
{
    char path[2048];
    join(path, sizeof path, dir, "run.json");
    json_error_t je;
    *out = json_load_file(path, 0, &je);
    if (!*out)
        return ss_fail(err, "%s: %s", path, je.text);
    return 0;
}

/* Rewrites generations.jsonl in cell order and writes results.h5 and
 * summary.csv from it.  n_cells_expected < 0: no completeness check. */
int finalize(const char *dir, int n_expected, ss_error *err)
{
    char path[2048], cfg_path[2048];
    json_t *info = NULL;
    if (read_run_info(dir, &info, err) < 0)
        return -1;
    int n_cells = (int)json_integer_value(json_object_get(info, "n_cells"));
    uint8_t *done = ss_calloc((size_t)n_cells + 1, 1, err);
    rec_list r = {0};
    cell_row *rows = NULL;
    char *config = NULL;
    int n_rows = 0, rc = -1;
    join(path, sizeof path, dir, "generations.jsonl");
    join(cfg_path, sizeof cfg_path, dir, "config.resolved.yaml");
    if (!done || read_done(dir, n_cells, done, err) < 0 ||
        recs_read(path, done, n_cells, &r, err) < 0 || recs_write(path, &r, err) < 0 ||
        aggregate(&r, &rows, &n_rows, err) < 0 || !(config = read_text(cfg_path, err)))
        goto out;
    int n_done = 0;
    for (int i = 0; i < n_cells; i++)
        n_done += done[i];
    if (n_expected >= 0 && (n_done != n_expected || n_rows != n_done)) {
        ss_fail(err, "%s: %d cells done, %d with generations, %d expected", dir, n_done, n_rows,
                n_expected);
        goto out;
    }
    char p2[2048];
    join(path, sizeof path, dir, "results.h5");
    join(p2, sizeof p2, dir, "summary.csv");
    if (write_results(path, rows, n_rows, config,
                      json_string_value(json_object_get(info, "model_name")),
                      json_string_value(json_object_get(info, "model_sha256")), err) < 0 ||
        write_summary(p2, rows, n_rows, err) < 0)
        goto out;
    rc = 0;
out:
    json_decref(info);
    free(done);
    recs_free(&r);
    free(rows);
    free(config);
    return rc;
}
