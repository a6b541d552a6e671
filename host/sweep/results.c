/* results.c - a sweep's records (generations.jsonl) and its results tables
 * (results.h5, summary.csv) aggregated from them (see sweep_internal.h). */
#include "sweep/sweep_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/eval.h"
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
    if (r->n > 0) /* rows is NULL when empty: qsort's pointer must not be (UBSan) */
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

/* Per-generation flags whose rate a cell reports with its count and 95%
 * Wilson interval; the paired ones also get the exact McNemar test against
 * the category's baseline on the same prompts. */
enum { RATE_UNSAFE, RATE_REFUSAL, RATE_DEGENERATE, RATE_CONTRADICTION, N_RATES };
static const struct {
    const char *key;    /* generations.jsonl field */
    const char *name;   /* column prefix */
    int paired;
} rates[N_RATES] = {{"unsafe", "unsafe", 1},
                    {"refused", "refusal", 1},
                    {"degenerate", "degenerate", 1},
                    {"judge_contradiction", "judge_contradiction", 0}};

/* Per-generation numbers a cell reports as means. */
enum { N_MEANS = 5 };
static const char *const mean_names[N_MEANS] = {"perplexity", "distinct_1", "distinct_2",
                                                "mean_length", "relevance"};
static const char *const mean_keys[N_MEANS] = {"perplexity", "distinct_1", "distinct_2",
                                               "n_tokens", "relevance"};

typedef struct {
    long count, n;               /* flag true / flag present */
    long paired_n, gained, lost; /* prompts with the flag in both this cell and the
                                    baseline; false -> true; true -> false */
} rate_acc;

typedef struct {
    int id, layer, n;
    const char *category, *method, *site;
    double strength;
    int first;                   /* its first record in the sorted list */
    rate_acc rate[N_RATES];
    double sum[N_MEANS];
    int cnt[N_MEANS];
} cell_row;

/* 1/0 for a boolean field, -1 when absent or null. */
static int flag_of(json_t *rec, const char *key)
{
    json_t *v = json_object_get(rec, key);
    return json_is_boolean(v) ? json_is_true(v) : -1;
}

static long index_of(json_t *rec)
{
    return (long)json_integer_value(json_object_get(rec, "index"));
}

/* The paired counts of cell c against its baseline b: records matched by
 * prompt index (both lists are in index order). */
static void pair_with_baseline(const rec_list *r, cell_row *c, const cell_row *b)
{
    int i = c->first, j = b->first, ie = c->first + c->n, je = b->first + b->n;
    while (i < ie && j < je) {
        long xi = index_of(r->rows[i]), xj = index_of(r->rows[j]);
        if (xi != xj) {
            xi < xj ? i++ : j++;
            continue;
        }
        for (int k = 0; k < N_RATES; k++) {
            int fs = flag_of(r->rows[i], rates[k].key), fb = flag_of(r->rows[j], rates[k].key);
            if (!rates[k].paired || fs < 0 || fb < 0)
                continue;
            c->rate[k].paired_n++;
            c->rate[k].gained += fs && !fb;
            c->rate[k].lost += fb && !fs;
        }
        i++;
        j++;
    }
}

/* One row per cell from records sorted by cell id and prompt index. */
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
            c->first = i;
            c->category = json_string_value(json_object_get(j, "category"));
            c->method = json_string_value(json_object_get(j, "method"));
            c->site = json_string_value(json_object_get(j, "site"));
            c->layer = (int)json_integer_value(json_object_get(j, "layer"));
            c->strength = json_number_value(json_object_get(j, "strength"));
            if (!c->category || !c->method || !c->site) {
                free(rows);
                return ss_fail(err, "record of cell %d: category, method or site missing", id);
            }
        }
        cell_row *c = &rows[n - 1];
        c->n++;
        for (int k = 0; k < N_RATES; k++) {
            int f = flag_of(j, rates[k].key);
            c->rate[k].n += f >= 0;
            c->rate[k].count += f > 0;
        }
        for (int k = 0; k < N_MEANS; k++) {
            json_t *v = json_object_get(j, mean_keys[k]);
            if (json_is_number(v)) {
                c->sum[k] += json_number_value(v);
                c->cnt[k]++;
            }
        }
    }
    for (int i = 0; i < n; i++)
        for (int b = 0; b < n && rows[i].layer >= 0; b++)
            if (rows[b].layer < 0 && !strcmp(rows[b].category, rows[i].category)) {
                pair_with_baseline(r, &rows[i], &rows[b]);
                break;
            }
    *out = rows;
    *n_out = n;
    return 0;
}

/* ---------------------------------------------------------------- columns */

/* The numeric columns of the tables, in order, for results.h5 and
 * summary.csv alike. */
typedef struct {
    char name[64];
    int integer;
} column;

#define MAX_COLUMNS 64

static int add_column(column *cols, int n, int integer, const char *prefix, const char *suffix)
{
    snprintf(cols[n].name, sizeof cols[n].name, "%s%s", prefix, suffix);
    cols[n].integer = integer;
    return n + 1;
}

/* The numeric columns after cell_id .. n_prompts; returns their number. */
static int numeric_columns(column *cols)
{
    int n = 0;
    n = add_column(cols, n, 0, "unsafe_rate", "");
    n = add_column(cols, n, 0, "refusal_rate", "");
    for (int k = 0; k < N_MEANS; k++)
        n = add_column(cols, n, 0, mean_names[k], "");
    for (int k = 0; k < N_RATES; k++) {
        const char *p = rates[k].name;
        if (k != RATE_UNSAFE && k != RATE_REFUSAL)
            n = add_column(cols, n, 0, p, "_rate");
        n = add_column(cols, n, 1, p, "_count");
        n = add_column(cols, n, 1, p, "_n");
        n = add_column(cols, n, 0, p, "_ci_low");
        n = add_column(cols, n, 0, p, "_ci_high");
        if (rates[k].paired) {
            n = add_column(cols, n, 1, p, "_paired_n");
            n = add_column(cols, n, 1, p, "_gained");
            n = add_column(cols, n, 1, p, "_lost");
            n = add_column(cols, n, 0, p, "_change");
            n = add_column(cols, n, 0, p, "_change_p");
        }
    }
    return n;
}

/* The value of column name for cell c (NaN: no value). */
static double column_value(const cell_row *c, const char *name)
{
    for (int k = 0; k < N_MEANS; k++)
        if (!strcmp(name, mean_names[k]))
            return c->cnt[k] ? c->sum[k] / c->cnt[k] : NAN;
    for (int k = 0; k < N_RATES; k++) {
        const rate_acc *a = &c->rate[k];
        size_t len = strlen(rates[k].name);
        if (strncmp(name, rates[k].name, len) || name[len] != '_')
            continue;
        const char *what = name + len + 1;
        double lo, hi;
        ss_eval_wilson(a->count, a->n, &lo, &hi);
        /* baselines have no paired test: NaN change and p, zero counts */
        int has_pairs = c->layer >= 0 && a->paired_n > 0;
        if (!strcmp(what, "rate"))
            return a->n ? (double)a->count / a->n : NAN;
        if (!strcmp(what, "count"))
            return (double)a->count;
        if (!strcmp(what, "n"))
            return (double)a->n;
        if (!strcmp(what, "ci_low"))
            return lo;
        if (!strcmp(what, "ci_high"))
            return hi;
        if (!strcmp(what, "paired_n"))
            return (double)a->paired_n;
        if (!strcmp(what, "gained"))
            return (double)a->gained;
        if (!strcmp(what, "lost"))
            return (double)a->lost;
        if (!strcmp(what, "change"))
            return has_pairs ? (double)(a->gained - a->lost) / a->paired_n : NAN;
        if (!strcmp(what, "change_p"))
            return has_pairs ? ss_eval_mcnemar_exact(a->gained, a->lost) : NAN;
    }
    return NAN;
}

/* ---------------------------------------------------------------- tables */

/* A CSV field: quoted when it holds a comma, a quote or a line break. */
static void put_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static int write_summary(const char *path, const cell_row *rows, int n, ss_error *err)
{
    column cols[MAX_COLUMNS];
    int nc = numeric_columns(cols);
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, path, err);
    if (!f)
        return -1;
    fputs("cell_id,category,method,layer,strength,site,n_prompts", f);
    for (int k = 0; k < nc; k++)
        fprintf(f, ",%s", cols[k].name);
    fputc('\n', f);
    for (int i = 0; i < n; i++) {
        const cell_row *c = &rows[i];
        fprintf(f, "%d,", c->id);
        put_csv_field(f, c->category);
        fputc(',', f);
        put_csv_field(f, c->method);
        fprintf(f, ",%d,%.17g,", c->layer, c->strength);
        put_csv_field(f, c->site);
        fprintf(f, ",%d", c->n);
        for (int k = 0; k < nc; k++) {
            double v = column_value(c, cols[k].name);
            if (isnan(v))
                fputs(",", f);
            else if (cols[k].integer)
                fprintf(f, ",%ld", (long)v);
            else
                fprintf(f, ",%.17g", v);
        }
        fputc('\n', f);
    }
    return ss_outfile_fclose(&out, f, 0, err);
}

static int write_results(const char *path, const cell_row *rows, int n, const char *config,
                         const json_t *info, ss_error *err)
{
    column cols[MAX_COLUMNS];
    int nc = numeric_columns(cols);
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
    for (int k = 0; k < nc; k++) {
        char name[80];
        snprintf(name, sizeof name, "cells/%.63s", cols[k].name);
        for (int i = 0; i < n; i++) {
            dv[i] = column_value(&rows[i], cols[k].name);
            if (cols[k].integer) /* a rate column may be NaN: no int of it (UBSan) */
                iv[i] = (int32_t)dv[i];
        }
        if (cols[k].integer
                ? ss_h5_write_all(f, name, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dims, iv, err)
                : ss_h5_write_all(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, dv, err))
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
    const char *model_path = json_string_value(json_object_get(info, "model_path"));
    if (ss_h5_attr_set_str(f, "format", "safesteer.sweep", err) ||
        ss_h5_attr_set_i64(f, "format_version", 2, err) ||
        ss_h5_attr_set_str(f, "config_yaml", config, err) ||
        ss_h5_attr_set_str(f, "model_name",
                           json_string_value(json_object_get(info, "model_name")), err) ||
        ss_h5_attr_set_str(f, "model_path", model_path ? model_path : "", err) ||
        ss_h5_attr_set_str(f, "model_sha256",
                           json_string_value(json_object_get(info, "model_sha256")), err) ||
        ss_h5_attr_set_str(f, "rate_interval", "Wilson score interval, 95%", err) ||
        ss_h5_attr_set_str(f, "paired_test",
                           "exact McNemar, two-sided, against the category's baseline on the "
                           "same prompts", err))
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

/* Rewrites generations.jsonl in cell order, writes results.h5 and
 * summary.csv from it, and marks run.json complete.  n_expected < 0: no
 * completeness check. */
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
        recs_read(path, done, n_cells, &r, err) < 0 || recs_write(path, &r, err) < 0)
        goto out;
    if (aggregate(&r, &rows, &n_rows, err) < 0) {
        ss_fail_context(err, "%s", path);
        goto out;
    }
    if (ss_read_file(cfg_path, &config, NULL, err) < 0)
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
    if (write_results(path, rows, n_rows, config, info, err) < 0 ||
        write_summary(p2, rows, n_rows, err) < 0)
        goto out;
    /* last: merge takes a shard whose run.json says complete as finished */
    json_object_set_new(info, "complete", json_true());
    join(path, sizeof path, dir, "run.json");
    if (write_json(path, info, err) < 0)
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
