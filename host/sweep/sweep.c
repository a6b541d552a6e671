/* sweep.c - config-driven steering sweeps: data split, capture, vectors,
 * the cell grid run in packed batches, evaluation, resumable per-unit
 * records, results tables and shard merging (see sweep.h). */
#include "safesteer/sweep.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/h5io.h"
#include "util/progress.h"
#include "safesteer/capture.h"
#include "safesteer/dataset.h"
#include "safesteer/eval.h"
#include "safesteer/generate.h"
#include "safesteer/sha256.h"
#include "safesteer/steer.h"
#include "safesteer/tokenizer.h"
#include "safesteer/vectors.h"

#define SAFE_POOL_NAME "benign-pool"

/* ---------------------------------------------------------------- data */

static int list_push(ss_prompt_list *l, const ss_record *r, const char *category,
                     const char *label, ss_error *err)
{
    char **t = realloc(l->text, (size_t)(l->n + 1) * sizeof *t);
    if (t)
        l->text = t;
    char **i = realloc(l->id, (size_t)(l->n + 1) * sizeof *i);
    if (i)
        l->id = i;
    char **c = realloc(l->category, (size_t)(l->n + 1) * sizeof *c);
    if (c)
        l->category = c;
    char **b = realloc(l->label, (size_t)(l->n + 1) * sizeof *b);
    if (b)
        l->label = b;
    if (!t || !i || !c || !b)
        return ss_fail(err, "out of memory");
    l->text[l->n] = strdup(r->prompt);
    l->id[l->n] = strdup(r->id);
    l->category[l->n] = strdup(category);
    l->label[l->n] = strdup(label);
    l->n++;
    if (!l->text[l->n - 1] || !l->id[l->n - 1] || !l->category[l->n - 1] || !l->label[l->n - 1])
        return ss_fail(err, "out of memory");
    return 0;
}

static void list_free(ss_prompt_list *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->text[i]);
        free(l->id[i]);
        free(l->category[i]);
        free(l->label[i]);
    }
    free(l->text);
    free(l->id);
    free(l->category);
    free(l->label);
    memset(l, 0, sizeof *l);
}

void ss_sweep_data_free(ss_sweep_data *d)
{
    list_free(&d->fit);
    for (int c = 0; c < d->n_categories && d->eval; c++)
        list_free(&d->eval[c]);
    free(d->eval);
    memset(d, 0, sizeof *d);
}

/* Loads ds filtered to categories[n] (n = 0: no filter), shuffled with the
 * data seed, at most limit records. */
static int load_select(const ss_cfg_dataset *ds, const char *const *categories, int n,
                       long limit, uint64_t seed, ss_dataset **out, ss_error *err)
{
    ss_dataset_fields f;
    ss_dataset_fields_default(&f);
    const char **slot[5] = {&f.prompt, &f.id, &f.category, &f.label, &f.response};
    int *explicit[5] = {NULL, &f.explicit_id, &f.explicit_category, &f.explicit_label,
                        &f.explicit_response};
    for (int i = 0; i < 5; i++)
        if (ds->fields[i]) {
            *slot[i] = ds->fields[i];
            if (explicit[i])
                *explicit[i] = 1;
        }
    ss_dataset_select s;
    ss_dataset_select_default(&s);
    s.categories = categories;
    s.n_categories = n;
    s.limit = limit;
    s.shuffle = 1;
    s.seed = seed;
    if (ss_dataset_load(ds->file, &f, out, err) < 0)
        return -1;
    return ss_dataset_apply(*out, &s, err);
}

int ss_sweep_load_data(const ss_sweep_config *c, ss_sweep_data *d, ss_error *err)
{
    memset(d, 0, sizeof *d);
    d->n_categories = c->unsafe.n_categories;
    if (!(d->eval = ss_calloc((size_t)d->n_categories, sizeof *d->eval, err)))
        return -1;
    ss_dataset *ds = NULL;
    for (int k = 0; k < d->n_categories; k++) {
        const char *cat = c->unsafe.categories[k];
        long need = (long)c->n_fit + c->n_eval;
        if (load_select(&c->unsafe, &cat, 1, need, c->data_seed, &ds, err) < 0 ||
            ds->n < need) {
            if (ds && ds->n < need)
                ss_fail(err, "%s has %d prompts of category \"%s\", the split needs %ld "
                             "(fit %d + eval %d)", c->unsafe.file, ds->n, cat, need, c->n_fit,
                        c->n_eval);
            ss_fail_context(err, "%s:%d: category \"%s\"", c->path, c->unsafe.category_lines[k],
                            cat);
            goto fail;
        }
        for (int i = 0; i < ds->n; i++)
            if (list_push(i < c->n_fit ? &d->fit : &d->eval[k], &ds->rec[i], cat,
                          i < c->n_fit ? "unsafe" : "eval", err) < 0)
                goto fail;
        ss_dataset_free(ds);
        ds = NULL;
    }
    /* the safe pool: generic (one pool) or each category's own safe prompts */
    int n_pools = c->safe_pool_category ? d->n_categories : 1;
    for (int k = 0; k < n_pools; k++) {
        const char *cat = c->safe_pool_category ? c->unsafe.categories[k] : SAFE_POOL_NAME;
        const char *const *filt = c->safe_pool_category ? &cat
                                                        : (const char *const *)c->safe.categories;
        int nf = c->safe_pool_category ? 1 : c->safe.n_categories;
        if (load_select(&c->safe, filt, nf, c->n_fit_safe, c->data_seed, &ds, err) < 0) {
            if (c->safe_pool_category)
                ss_fail_context(err, "%s:%d: safe prompts of category \"%s\"", c->path,
                                c->unsafe.category_lines[k], cat);
            else
                ss_fail_context(err, "%s:%d: data.safe", c->path, c->safe.line);
            goto fail;
        }
        for (int i = 0; i < ds->n; i++)
            if (list_push(&d->fit, &ds->rec[i], cat, "safe", err) < 0)
                goto fail;
        ss_dataset_free(ds);
        ds = NULL;
    }
    return 0;
fail:
    if (ds)
        ss_dataset_free(ds);
    ss_sweep_data_free(d);
    return -1;
}

/* ---------------------------------------------------------------- cells */

typedef struct {
    int cat;          /* index into the categories */
    int method;       /* ss_vec_method, -1 = baseline */
    int site;         /* ss_site, -1 = baseline */
    int layer;        /* -1 = baseline */
    double strength;  /* 0 for the baseline */
} cell;

/* Category-major: baseline first, then site x method x layer x strength. */
static int make_cells(const ss_sweep_config *c, cell **out, int *n, ss_error *err)
{
    int per = 1 + c->n_sites * c->n_methods * c->n_layers * c->n_strengths;
    *n = c->unsafe.n_categories * per;
    cell *cs = ss_calloc((size_t)*n, sizeof *cs, err);
    if (!cs)
        return -1;
    int k = 0;
    for (int cat = 0; cat < c->unsafe.n_categories; cat++) {
        cs[k++] = (cell){cat, -1, -1, -1, 0};
        for (int s = 0; s < c->n_sites; s++)
            for (int m = 0; m < c->n_methods; m++)
                for (int l = 0; l < c->n_layers; l++)
                    for (int a = 0; a < c->n_strengths; a++)
                        cs[k++] = (cell){cat, c->methods[m], c->sites[s], c->layers[l],
                                         c->strengths[a]};
    }
    *out = cs;
    return 0;
}

/* unit_of[cell]: whole cells packed in order while they fit in batch. */
static int make_units(int n_cells, int per_cell, int batch, int *unit_of)
{
    int u = 0, used = 0;
    for (int i = 0; i < n_cells; i++) {
        if (used > 0 && used + per_cell > batch) {
            u++;
            used = 0;
        }
        unit_of[i] = u;
        used += per_cell;
    }
    return n_cells ? u + 1 : 0;
}

/* ---------------------------------------------------------------- files */

static void join(char *dst, size_t cap, const char *dir, const char *name)
{
    snprintf(dst, cap, "%s/%s", dir, name);
}

/* mkdir -p */
static int make_dirs(const char *dir, ss_error *err)
{
    char p[2048];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(p, 0777) < 0 && errno != EEXIST)
                return ss_fail(err, "%s: %s", p, strerror(errno));
            *q = '/';
        }
    if (mkdir(p, 0777) < 0 && errno != EEXIST)
        return ss_fail(err, "%s: %s", p, strerror(errno));
    return 0;
}

static int append_text(const char *path, const char *text, ss_error *err)
{
    FILE *f = fopen(path, "ab");
    if (!f)
        return ss_fail(err, "%s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    return bad ? ss_fail(err, "%s: write failed: %s", path, strerror(errno)) : 0;
}

static char *read_text(const char *path, ss_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ss_fail(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = ss_malloc((size_t)n + 1, err);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
        ss_fail(err, "%s: read failed", path);
    }
    if (s)
        s[n] = 0;
    fclose(f);
    return s;
}

static int write_text(const char *path, const char *text, ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, path, err);
    if (!f)
        return -1;
    fputs(text, f);
    return ss_outfile_fclose(&out, f, 0, err);
}

/* run.json: info as indented JSON, written whole (write_text). */
static int write_json(const char *path, const json_t *info, ss_error *err)
{
    char *text = info ? json_dumps(info, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (!text)
        return ss_fail(err, "%s: out of memory", path);
    int rc = write_text(path, text, err);
    free(text);
    return rc;
}

/* done[n_cells] from cells_done.txt (one cell id a line); a missing file
 * means none.  A repeated or out-of-range id is an error. */
static int read_done(const char *dir, int n_cells, uint8_t *done, ss_error *err)
{
    char path[2048];
    join(path, sizeof path, dir, "cells_done.txt");
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : ss_fail(err, "%s: %s", path, strerror(errno));
    int id, rc = 0;
    while (fscanf(f, "%d", &id) == 1) {
        if (id < 0 || id >= n_cells || done[id]) {
            rc = ss_fail(err, "%s: cell %d is out of range or repeated", path, id);
            break;
        }
        done[id] = 1;
    }
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------- records */

typedef struct {
    json_t **rows;   /* [n] parsed generations.jsonl records */
    int n, cap;
} rec_list;

static void recs_free(rec_list *r)
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
static int recs_read(const char *path, const uint8_t *done, int n_cells, rec_list *r,
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

static int recs_write(const char *path, rec_list *r, ss_error *err)
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
static int read_run_info(const char *dir, json_t **out, ss_error *err)
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
static int finalize(const char *dir, int n_expected, ss_error *err)
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

/* ---------------------------------------------------------------- run */

typedef struct {
    const ss_sweep_config *c;
    ss_sweep_data data;
    ss_model *m, *jm;
    ss_tokenizer *tok, *jtok;
    ss_engine *e, *je;
    int family, jfamily;
    char sha[65];
    int32_t **ids;          /* [n_cat][n_eval] encoded evaluation prompts */
    int *n_ids;             /* [n_cat][n_eval] */
    ss_vector_set *vsets;   /* [n_sites][n_methods] */
    cell *cells;
    int n_cells;
    const char *dir;
    /* progress */
    double t0;
    long todo, finished;
    int progress;
} sweep;

static void show_progress(sweep *s)
{
    if (!s->progress || s->todo == 0)
        return;
    double el = ss_seconds() - s->t0;
    double eta = s->finished ? el * (s->todo - s->finished) / s->finished : 0;
    int w = 30, fill = (int)(w * s->finished / s->todo);
    char bar[64];
    for (int i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "%ssweep [%s] %ld/%ld generations  %02d:%02d elapsed  ETA %02d:%02d%s",
            isatty(2) ? "\r" : "", bar, s->finished, s->todo, (int)el / 60, (int)el % 60,
            (int)eta / 60, (int)eta % 60, isatty(2) && s->finished < s->todo ? "" : "\n");
    fflush(stderr);
}

static int encode_fit(void *user, int i, int32_t **ids, int *n_ids, int *n_prompt, ss_error *err)
{
    sweep *s = user;
    if (ss_encode_prompt(s->m, s->tok, s->family, s->c->system, s->data.fit.text[i], ids, n_ids,
                         err) < 0)
        return -1;
    *n_prompt = *n_ids;
    return 0;
}

static int capture_and_vectors(sweep *s, int resume, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    int layers[SS_CFG_MAX_LIST], L = c->n_layers;
    memcpy(layers, c->layers, sizeof layers);
    for (int i = 1; i < L; i++)
        for (int j = i; j > 0 && layers[j - 1] > layers[j]; j--) {
            int t = layers[j];
            layers[j] = layers[j - 1];
            layers[j - 1] = t;
        }
    ss_capture_source src = {.n = s->data.fit.n,
                             .text = (const char *const *)s->data.fit.text,
                             .id = (const char *const *)s->data.fit.id,
                             .category = (const char *const *)s->data.fit.category,
                             .label = (const char *const *)s->data.fit.label,
                             .encode = encode_fit,
                             .user = s};
    for (int si = 0; si < c->n_sites; si++) {
        char cap_path[2048], name[128];
        snprintf(name, sizeof name, "capture_%s.h5", ss_site_name(c->sites[si]));
        join(cap_path, sizeof cap_path, s->dir, name);
        ss_capture_opts o;
        ss_capture_opts_default(&o);
        o.site = c->sites[si];
        o.n_layers = L;
        o.layers = layers;
        o.pool = c->pool;
        o.batch = c->batch;
        o.resume = resume;
        o.force = !resume;
        o.progress = s->progress;
        o.tok = s->tok;
        o.model_name = s->m->name;
        o.model_path = s->m->path;
        o.model_sha256 = s->sha;
        o.chat = s->family != SS_CHAT_NONE;
        o.chat_template = ss_chat_family_name(s->family);
        o.data_path = c->unsafe.file;
        if (ss_capture_run(s->e, &src, &o, cap_path, err) < 0)
            return -1;
        for (int mi = 0; mi < c->n_methods; mi++) {
            char vec_path[2048];
            snprintf(name, sizeof name, "vectors_%s_%s.h5", ss_site_name(c->sites[si]),
                     ss_vec_method_name(c->methods[mi]));
            join(vec_path, sizeof vec_path, s->dir, name);
            ss_vec_options vo;
            ss_vec_options_init(&vo);
            vo.acts_path = cap_path;
            vo.categories = (const char *const *)c->unsafe.categories;
            vo.n_categories = c->unsafe.n_categories;
            vo.layers = layers;
            vo.n_layers = L;
            vo.method = c->methods[mi];
            vo.seed = c->data_seed;
            vo.progress = s->progress;
            ss_vec_result r;
            memset(&r, 0, sizeof r);
            if (ss_vec_compute(&vo, &r, err) < 0)
                return -1;
            int w = ss_vec_fill_stats(&r, err) < 0 || ss_vec_write(vec_path, &r, err) < 0;
            ss_vec_result_free(&r);
            if (w || ss_vectors_load(vec_path, &s->vsets[si * c->n_methods + mi], err) < 0)
                return -1;
        }
    }
    return 0;
}

static int vector_of(sweep *s, const cell *cl, const float **v, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    int si = 0, mi = 0;
    while (c->sites[si] != cl->site)
        si++;
    while (c->methods[mi] != cl->method)
        mi++;
    ss_vector_set *vs = &s->vsets[si * c->n_methods + mi];
    int cat, row;
    if (ss_vectors_category(vs, c->unsafe.categories[cl->cat], &cat, err) < 0 ||
        (row = ss_vectors_layer_row(vs, cl->layer, err)) < 0)
        return -1;
    *v = vs->vectors + ((size_t)cat * vs->n_layers + row) * vs->d_model;
    return 0;
}

/* One generation's record line. */
static int write_record(FILE *f, sweep *s, const cell *cl, int cell_id, int j,
                        const ss_gen_result *g, int refused, int unsafe, const char *judge,
                        double ppl, double rel, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    const ss_prompt_list *ev = &s->data.eval[cl->cat];
    json_t *o = json_object();
    json_object_set_new(o, "cell_id", json_integer(cell_id));
    json_object_set_new(o, "index", json_integer(j));
    json_object_set_new(o, "category", json_string(c->unsafe.categories[cl->cat]));
    json_object_set_new(o, "method",
                        json_string(cl->method < 0 ? "none" : ss_vec_method_name(cl->method)));
    json_object_set_new(o, "layer", json_integer(cl->layer));
    json_object_set_new(o, "strength", json_real(cl->strength));
    json_object_set_new(o, "site", json_string(cl->site < 0 ? "none" : ss_site_name(cl->site)));
    json_object_set_new(o, "prompt_id", json_string(ev->id[j]));
    json_object_set_new(o, "prompt", json_string(ev->text[j]));
    json_object_set_new(o, "response", json_string(g->text ? g->text : ""));
    json_object_set_new(o, "refused", json_boolean(refused));
    json_object_set_new(o, "unsafe", unsafe < 0 ? json_null() : json_boolean(unsafe));
    json_object_set_new(o, "judge_output", judge ? json_string(judge) : json_null());
    json_object_set_new(o, "perplexity",
                        isnan(ppl) || !c->perplexity ? json_null() : json_real(ppl));
    json_object_set_new(o, "relevance", isnan(rel) ? json_null() : json_real(rel));
    double d1 = ss_eval_distinct(g->ids, g->n_ids, 1), d2 = ss_eval_distinct(g->ids, g->n_ids, 2);
    json_object_set_new(o, "distinct_1", isnan(d1) ? json_null() : json_real(d1));
    json_object_set_new(o, "distinct_2", isnan(d2) ? json_null() : json_real(d2));
    json_object_set_new(o, "n_tokens", json_integer(g->n_ids));
    int rc = json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0 || fputc('\n', f) == EOF;
    json_decref(o);
    return rc ? ss_fail(err, "writing generations.jsonl failed") : 0;
}

/* Appends the tokens of text to ids[*n] (reallocated). */
static int append_text_tokens(const ss_tokenizer *t, const char *text, int32_t **ids, int *n,
                              ss_error *err)
{
    int32_t *more;
    int n_more;
    if (ss_tokenize(t, text, strlen(text), 0, &more, &n_more, err) < 0)
        return -1;
    int32_t *p = realloc(*ids, sizeof(int32_t) * (size_t)(*n + n_more));
    if (!p) {
        free(more);
        return ss_fail(err, "out of memory");
    }
    memcpy(p + *n, more, sizeof(int32_t) * (size_t)n_more);
    free(more);
    *ids = p;
    *n += n_more;
    return 0;
}

#define JUDGE_TOP_K 20

/* Judges n responses on the judge engine: verdict[n], out[n] malloc'd.  With
 * an answer prefix (generic judge) the verdict is read from the first
 * generated token's probabilities, else (or when neither word is among the
 * top tokens) from the generated text. */
static int judge(sweep *s, int n, const int *cat, const int *j, ss_gen_result *g, int *verdict,
                 char **out, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    const ss_tokenizer *jt = s->jm ? s->jtok : s->tok;
    const char *prefix = ss_eval_judge_answer_prefix(c->judge_kind);
    int32_t **ids = ss_calloc((size_t)n, sizeof *ids, err);
    int *n_ids = ss_calloc((size_t)n, sizeof *n_ids, err);
    ss_gen_result *jr = ss_calloc((size_t)n, sizeof *jr, err);
    int rc = -1;
    if (!ids || !n_ids || !jr)
        goto out;
    for (int i = 0; i < n; i++) {
        char *text = ss_eval_judge_prompt(c->judge_kind, s->data.eval[cat[i]].text[j[i]],
                                          g[i].text ? g[i].text : "");
        if (!text) {
            ss_fail(err, "out of memory");
            goto out;
        }
        int r = s->jm ? ss_encode_prompt(s->jm, s->jtok, s->jfamily, NULL, text, &ids[i],
                                         &n_ids[i], err)
                      : ss_encode_prompt(s->m, s->tok, s->family, NULL, text, &ids[i], &n_ids[i],
                                         err);
        free(text);
        if (r < 0 || (prefix && append_text_tokens(jt, prefix, &ids[i], &n_ids[i], err) < 0))
            goto out;
        if (n_ids[i] + c->judge_max_new > ss_engine_max_ctx(s->je)) {
            ss_fail(err, "judge prompt of %d tokens does not fit the judge context of %d",
                    n_ids[i], ss_engine_max_ctx(s->je));
            goto out;
        }
    }
    for (int i = 0; i < n; i++)
        if (ss_engine_set_steering(s->je, i, NULL, err) < 0)
            goto out;
    ss_gen_params gp = {.max_new = c->judge_max_new, .sampler = {.temperature = 0, .top_p = 1},
                        .logprobs_k = prefix ? JUDGE_TOP_K : 0};
    ss_gen_timing tm;
    if (ss_generate(s->je, jt, n, (const int32_t *const *)ids, n_ids, &gp, NULL, NULL, jr, &tm,
                    err) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        const char *said = jr[i].text ? jr[i].text : "";
        size_t len = (prefix ? strlen(prefix) : 0) + strlen(said) + 1;
        out[i] = malloc(len);
        if (!out[i]) {
            ss_fail(err, "out of memory");
            goto out;
        }
        snprintf(out[i], len, "%s%s", prefix ? prefix : "", said);
        verdict[i] = prefix && jr[i].n_steps > 0
                         ? ss_eval_judge_verdict_logprobs(jt, jr[i].top_ids, jr[i].top_logprobs,
                                                          JUDGE_TOP_K)
                         : -1;
        if (verdict[i] < 0)
            verdict[i] = ss_eval_judge_verdict(c->judge_kind, out[i]);
    }
    rc = 0;
out:
    for (int i = 0; ids && i < n; i++) {
        free(ids[i]);
        if (jr)
            ss_gen_result_free(&jr[i]);
    }
    free(ids);
    free(n_ids);
    free(jr);
    return rc;
}

/* Generates and evaluates items [n] (cell and prompt index each) as one
 * batch and appends their records to f. */
static int run_chunk(sweep *s, int n, const int *cell_ids, const int *js, FILE *f, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    int d = s->m->cfg.d_model, L = s->m->cfg.n_layers, rc = -1;
    const int32_t **ids = ss_calloc((size_t)n, sizeof *ids, err);
    int *n_ids = ss_calloc((size_t)n, sizeof *n_ids, err), *cats = ss_calloc((size_t)n, 4, err);
    ss_gen_result *g = ss_calloc((size_t)n, sizeof *g, err);
    const int32_t **resp = ss_calloc((size_t)n, sizeof *resp, err);
    int *n_resp = ss_calloc((size_t)n, sizeof *n_resp, err), *verdict = ss_calloc((size_t)n, 4, err);
    double *ppl = ss_calloc((size_t)n, sizeof *ppl, err), *rel = ss_calloc((size_t)n, 8, err);
    char **jout = ss_calloc((size_t)n, sizeof *jout, err);
    if (!ids || !n_ids || !cats || !g || !resp || !n_resp || !verdict || !ppl || !rel || !jout)
        goto out;
    ss_positions pos;
    if (ss_positions_parse(c->positions, &pos, err) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        const cell *cl = &s->cells[cell_ids[i]];
        cats[i] = cl->cat;
        size_t k = (size_t)cl->cat * c->n_eval + js[i];
        ids[i] = s->ids[k];
        n_ids[i] = s->n_ids[k];
        if (cl->layer < 0) {
            if (ss_engine_set_steering(s->e, i, NULL, err) < 0)
                goto out;
            continue;
        }
        const float *v = NULL;
        ss_steer_plan plan;
        ss_steer_plan_init(&plan, L, d);
        plan.positions = pos;
        int r = vector_of(s, cl, &v, err) < 0 ||
                ss_steer_plan_add(&plan, cl->site, cl->layer, SS_STEER_ADD, (float)cl->strength,
                                  v, err) < 0 ||
                ss_steer_apply(s->e, i, &plan, n_ids[i], err) < 0;
        ss_steer_plan_free(&plan);
        if (r)
            goto out;
    }
    ss_gen_params gp = {.max_new = c->max_new,
                        .sampler = {.temperature = (float)c->temperature,
                                    .top_p = (float)c->top_p, .seed = c->gen_seed}};
    ss_gen_timing tm;
    if (ss_generate(s->e, s->tok, n, ids, n_ids, &gp, NULL, NULL, g, &tm, err) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        resp[i] = g[i].ids;
        n_resp[i] = g[i].n_ids;
        verdict[i] = -1;
    }
    if (ss_eval_quality(s->e, n, ids, n_ids, resp, n_resp, c->relevance_layer, ppl, rel, err) < 0)
        goto out;
    if (c->judge_kind != SS_JUDGE_NONE && judge(s, n, cats, js, g, verdict, jout, err) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        int refused = ss_eval_refused(g[i].text ? g[i].text : "", c->refusal_phrases,
                                      c->n_refusal_phrases);
        if (write_record(f, s, &s->cells[cell_ids[i]], cell_ids[i], js[i], &g[i], refused,
                         verdict[i], jout[i], ppl[i], rel[i], err) < 0)
            goto out;
    }
    rc = 0;
out:
    for (int i = 0; g && i < n; i++)
        ss_gen_result_free(&g[i]);
    for (int i = 0; jout && i < n; i++)
        free(jout[i]);
    free(ids);
    free(n_ids);
    free(cats);
    free(g);
    free(resp);
    free(n_resp);
    free(verdict);
    free(ppl);
    free(rel);
    free(jout);
    return rc;
}

/* Runs the cells [c0, c1) of one unit, then marks them done. */
static int run_unit(sweep *s, int c0, int c1, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    int B = c->batch, n = 0, rc = -1;
    int *cell_ids = ss_calloc((size_t)B, sizeof(int), err), *js = ss_calloc((size_t)B, 4, err);
    char path[2048];
    join(path, sizeof path, s->dir, "generations.jsonl");
    FILE *f = fopen(path, "ab");
    if (!f) {
        ss_fail(err, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (!cell_ids || !js)
        goto out;
    for (int ci = c0; ci < c1; ci++)
        for (int j = 0; j < c->n_eval; j++) {
            cell_ids[n] = ci;
            js[n++] = j;
            int last = ci == c1 - 1 && j == c->n_eval - 1;
            if (n == B || last) {
                if (run_chunk(s, n, cell_ids, js, f, err) < 0)
                    goto out;
                s->finished += n;
                n = 0;
                show_progress(s);
            }
        }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ss_fail(err, "%s: %s", path, strerror(errno));
        goto out;
    }
    char line[64], done_path[2048];
    join(done_path, sizeof done_path, s->dir, "cells_done.txt");
    size_t cap = (size_t)(c1 - c0) * 12 + 1, len = 0;
    char *buf = ss_malloc(cap, err);
    if (!buf)
        goto out;
    buf[0] = 0;
    for (int ci = c0; ci < c1; ci++) {
        snprintf(line, sizeof line, "%d\n", ci);
        memcpy(buf + len, line, strlen(line) + 1);
        len += strlen(line);
    }
    rc = append_text(done_path, buf, err);
    free(buf);
out:
    if (f)
        fclose(f);
    free(cell_ids);
    free(js);
    return rc;
}

static int open_models(sweep *s, const ss_sweep_opts *o, ss_sweep_config *c, ss_error *err)
{
    const char *model = o->model ? o->model : c->model;
    if (!model)
        return ss_fail(err, "%s: no model (set model: in the config or pass --model)", c->path);
    if (ss_model_load(model, &s->m, err) < 0 || ss_tokenizer_load(s->m, &s->tok, err) < 0)
        return -1;
    if (ss_config_check_model(c, s->m->cfg.n_layers, err) < 0)
        return -1;
    if (c->relevance_layer < 0)
        c->relevance_layer = s->m->cfg.n_layers / 2;
    if (!strcmp(c->chat_template, "none"))
        s->family = SS_CHAT_NONE;
    else if (ss_chat_family_for_model(s->m, strcmp(c->chat_template, "auto") ? c->chat_template
                                                                            : NULL,
                                      &s->family, err) < 0)
        return -1;
    if (ss_sha256_model(model, s->sha, err) < 0)
        return -1;
    if (c->judge_kind != SS_JUDGE_NONE && strcmp(c->judge_model, "self")) {
        if (ss_model_load(c->judge_model, &s->jm, err) < 0 ||
            ss_tokenizer_load(s->jm, &s->jtok, err) < 0 ||
            ss_chat_family_for_model(s->jm, NULL, &s->jfamily, err) < 0)
            return ss_fail_context(err, "%s:%d: judges.llm.model", c->path, c->judge_model_line);
    }
    return 0;
}

/* Longest judge prompt: the judge text around the longest prompt and a
 * response of max_new tokens (a re-encoded response is about as long). */
static int judge_ctx(sweep *s, ss_model *jm, ss_tokenizer *jt, int jfam, int longest_prompt,
                     int *ctx, ss_error *err)
{
    char *text = ss_eval_judge_prompt(s->c->judge_kind, "", "");
    int32_t *ids = NULL;
    int n = 0;
    if (!text)
        return ss_fail(err, "out of memory");
    int r = ss_encode_prompt(jm, jt, jfam, NULL, text, &ids, &n, err);
    free(text);
    free(ids);
    if (r < 0)
        return -1;
    *ctx = n + 2 * (longest_prompt + s->c->max_new) + s->c->judge_max_new + 16;
    return 0;
}

static int open_engines(sweep *s, const ss_sweep_opts *o, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    int nc = s->data.n_categories, longest = 0;
    s->ids = ss_calloc((size_t)nc * c->n_eval, sizeof *s->ids, err);
    s->n_ids = ss_calloc((size_t)nc * c->n_eval, sizeof *s->n_ids, err);
    if (!s->ids || !s->n_ids)
        return -1;
    for (int k = 0; k < nc; k++)
        for (int j = 0; j < c->n_eval; j++) {
            size_t i = (size_t)k * c->n_eval + j;
            if (ss_encode_prompt(s->m, s->tok, s->family, c->system, s->data.eval[k].text[j],
                                 &s->ids[i], &s->n_ids[i], err) < 0)
                return -1;
            if (s->n_ids[i] > longest)
                longest = s->n_ids[i];
        }
    for (int i = 0; i < s->data.fit.n; i++) {
        int32_t *ids;
        int n;
        if (ss_encode_prompt(s->m, s->tok, s->family, c->system, s->data.fit.text[i], &ids, &n,
                             err) < 0)
            return -1;
        free(ids);
        if (n > longest)
            longest = n;
    }
    int ctx = longest + c->max_new + 2, jctx = 0;
    if (c->judge_kind != SS_JUDGE_NONE) {
        int self = !s->jm;
        if (judge_ctx(s, self ? s->m : s->jm, self ? s->tok : s->jtok,
                      self ? s->family : s->jfamily, longest, &jctx, err) < 0)
            return -1;
        if (self && jctx > ctx)
            ctx = jctx;
    }
    ss_engine_opts eo;
    ss_engine_opts_default(&eo);
    eo.device = o->device >= 0 ? o->device : c->device;
    eo.threads = o->threads >= 0 ? o->threads : c->threads;
    eo.max_seqs = c->batch;
    eo.max_ctx = ctx;
    if (ss_engine_create(s->m, &eo, &s->e, err) < 0)
        return -1;
    if (s->jm) {
        eo.max_ctx = jctx;
        if (ss_engine_create(s->jm, &eo, &s->je, err) < 0)
            return -1;
    } else {
        s->je = s->e;   /* judge "self": the steered model, run unsteered */
    }
    return 0;
}

void ss_sweep_opts_default(ss_sweep_opts *o)
{
    memset(o, 0, sizeof *o);
    o->shard_n = 1;
    o->threads = -1;
    o->device = -1;
    o->progress = 1;
}

/* The run folder: fresh (no cells_done.txt) unless resuming, in which case
 * its resolved config must equal this one. */
static int prepare_dir(const char *dir, const char *resolved, const ss_sweep_opts *o,
                       ss_error *err)
{
    char path[2048];
    if (make_dirs(dir, err) < 0)
        return -1;
    join(path, sizeof path, dir, "config.resolved.yaml");
    if (access(path, F_OK) == 0) {
        if (!o->resume)
            return ss_fail(err, "%s already holds a run; pass --resume to continue it or "
                                "choose another --out", dir);
        char *old = read_text(path, err);
        if (!old)
            return -1;
        int same = !strcmp(old, resolved);
        free(old);
        if (!same)
            return ss_fail(err, "%s was run with a different configuration (%s); --resume "
                                "needs the same one", dir, path);
        return 0;
    }
    return write_text(path, resolved, err);
}

static char *resolved_text(const ss_sweep_config *c, ss_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        ss_fail(err, "out of memory");
        return NULL;
    }
    int r = ss_config_write(c, f, err);
    fclose(f);
    if (r < 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void sweep_free(sweep *s)
{
    const ss_sweep_config *c = s->c;
    if (s->ids)
        for (int i = 0; i < s->data.n_categories * c->n_eval; i++)
            free(s->ids[i]);
    free(s->ids);
    free(s->n_ids);
    if (s->vsets)
        for (int i = 0; i < c->n_sites * c->n_methods; i++)
            ss_vectors_free(&s->vsets[i]);
    free(s->vsets);
    free(s->cells);
    if (s->je && s->je != s->e)
        ss_engine_free(s->je);
    if (s->e)
        ss_engine_free(s->e);
    ss_tokenizer_free(s->jtok);
    ss_tokenizer_free(s->tok);
    ss_model_free(s->jm);
    ss_model_free(s->m);
    ss_sweep_data_free(&s->data);
}

int ss_sweep_run(ss_sweep_config *c, const ss_sweep_opts *o, ss_error *err)
{
    sweep s = {.c = c, .dir = o->out_dir, .progress = o->progress};
    char *resolved = NULL;
    uint8_t *done = NULL;
    int *unit_of = NULL, rc = -1;
    if (o->shard_n < 1 || o->shard_i < 0 || o->shard_i >= o->shard_n)
        return ss_fail(err, "shard %d/%d: need 0 <= i < N", o->shard_i, o->shard_n);
    if (ss_sweep_load_data(c, &s.data, err) < 0 || open_models(&s, o, c, err) < 0 ||
        !(resolved = resolved_text(c, err)) || prepare_dir(o->out_dir, resolved, o, err) < 0 ||
        make_cells(c, &s.cells, &s.n_cells, err) < 0)
        goto out;
    char path[2048];
    join(path, sizeof path, o->out_dir, "run.json");
    json_t *info = json_pack("{s:s, s:s, s:i, s:i, s:i}", "model_name", s.m->name,
                             "model_sha256", s.sha, "n_cells", s.n_cells, "shard", o->shard_i,
                             "shards", o->shard_n);
    int w = write_json(path, info, err);
    json_decref(info);
    if (w < 0)
        goto out;
    done = ss_calloc((size_t)s.n_cells, 1, err);
    unit_of = ss_calloc((size_t)s.n_cells, sizeof *unit_of, err);
    s.vsets = ss_calloc((size_t)c->n_sites * c->n_methods, sizeof *s.vsets, err);
    if (!done || !unit_of || !s.vsets || read_done(o->out_dir, s.n_cells, done, err) < 0)
        goto out;
    /* drop records of units a kill interrupted before they were marked done */
    rec_list r = {0};
    join(path, sizeof path, o->out_dir, "generations.jsonl");
    int rr = recs_read(path, done, s.n_cells, &r, err) < 0 || recs_write(path, &r, err) < 0;
    recs_free(&r);
    if (rr || open_engines(&s, o, err) < 0 || capture_and_vectors(&s, o->resume, err) < 0)
        goto out;
    int n_units = make_units(s.n_cells, c->n_eval, c->batch, unit_of), expected = 0;
    for (int i = 0; i < s.n_cells; i++)
        if (unit_of[i] % o->shard_n == o->shard_i) {
            expected++;
            s.todo += done[i] ? 0 : c->n_eval;
        }
    s.t0 = ss_seconds();
    for (int u = 0, c0 = 0; u < n_units; u++) {
        int c1 = c0;
        while (c1 < s.n_cells && unit_of[c1] == u)
            c1++;
        if (u % o->shard_n == o->shard_i && !done[c0] && run_unit(&s, c0, c1, err) < 0)
            goto out;
        c0 = c1;
    }
    rc = finalize(o->out_dir, expected, err);
out:
    free(resolved);
    free(done);
    free(unit_of);
    sweep_free(&s);
    return rc;
}

/* ---------------------------------------------------------------- merge */

static int copy_file(const char *src, const char *dst, ss_error *err)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return ss_fail(err, "%s: %s", src, strerror(errno));
    ss_outfile o;
    FILE *out = ss_outfile_fopen(&o, dst, err);
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, k, out);
    int bad = ferror(in) ? ss_fail(err, "%s: read failed", src) : 0;
    fclose(in);
    return ss_outfile_fclose(&o, out, bad, err);
}

/* Copies the capture and vector files (the same in every shard) from dir. */
static int copy_artifacts(const char *dir, const char *out_dir, ss_error *err)
{
    for (int si = 0; si < SS_SITE_COUNT; si++)
        for (int m = -1; m <= SS_VEC_PCA; m++) {
            char name[256], src[2400], dst[2400];
            if (m < 0)
                snprintf(name, sizeof name, "capture_%s.h5", ss_site_name(si));
            else
                snprintf(name, sizeof name, "vectors_%s_%s.h5", ss_site_name(si),
                         ss_vec_method_name(m));
            snprintf(src, sizeof src, "%s/%s", dir, name);
            snprintf(dst, sizeof dst, "%s/%s", out_dir, name);
            if (access(src, F_OK) == 0 && copy_file(src, dst, err) < 0)
                return -1;
        }
    return 0;
}

int ss_sweep_merge(const char *out_dir, const char *const *shards, int n_shards, ss_error *err)
{
    char path[2048];
    char *config = NULL;
    json_t *info0 = NULL;
    uint8_t *done = NULL, *seen = NULL;
    rec_list r = {0};
    int rc = -1, n_cells = 0;
    if (n_shards < 1)
        return ss_fail(err, "no shard folders given");
    for (int k = 0; k < n_shards; k++) {
        json_t *info;
        join(path, sizeof path, shards[k], "config.resolved.yaml");
        char *cfg = read_text(path, err);
        if (!cfg || read_run_info(shards[k], &info, err) < 0) {
            free(cfg);
            goto out;
        }
        if (k == 0) {
            config = cfg;
            info0 = info;
            n_cells = (int)json_integer_value(json_object_get(info, "n_cells"));
            done = ss_calloc((size_t)n_cells + 1, 1, err);
            seen = ss_calloc((size_t)n_cells + 1, 1, err);
            if (!done || !seen)
                goto out;
        } else {
            int same = !strcmp(cfg, config) &&
                       !strcmp(json_string_value(json_object_get(info, "model_sha256")),
                               json_string_value(json_object_get(info0, "model_sha256")));
            free(cfg);
            json_decref(info);
            if (!same) {
                ss_fail(err, "%s: its config or model differs from %s's", shards[k], shards[0]);
                goto out;
            }
        }
        memset(done, 0, (size_t)n_cells);
        if (read_done(shards[k], n_cells, done, err) < 0)
            goto out;
        for (int i = 0; i < n_cells; i++) {
            if (done[i] && seen[i]) {
                ss_fail(err, "%s: cell %d is also in an earlier shard", shards[k], i);
                goto out;
            }
            seen[i] |= done[i];
        }
        join(path, sizeof path, shards[k], "generations.jsonl");
        if (recs_read(path, done, n_cells, &r, err) < 0)
            goto out;
    }
    for (int i = 0; i < n_cells; i++)
        if (!seen[i]) {
            ss_fail(err, "cell %d is in no shard (are all shards finished?)", i);
            goto out;
        }
    join(path, sizeof path, out_dir, "config.resolved.yaml");
    if (access(path, F_OK) == 0) {
        ss_fail(err, "%s already holds a run; merge into a new folder", out_dir);
        goto out;
    }
    if (make_dirs(out_dir, err) < 0 || write_text(path, config, err) < 0)
        goto out;
    json_object_set_new(info0, "shard", json_integer(0));
    json_object_set_new(info0, "shards", json_integer(1));
    join(path, sizeof path, out_dir, "run.json");
    if (write_json(path, info0, err) < 0)
        goto out;
    size_t cap = (size_t)n_cells * 12 + 1, len = 0;
    char *buf = ss_malloc(cap, err);
    if (!buf)
        goto out;
    for (int i = 0; i < n_cells; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%d\n", i);
    join(path, sizeof path, out_dir, "cells_done.txt");
    int w = write_text(path, buf, err);
    free(buf);
    join(path, sizeof path, out_dir, "generations.jsonl");
    if (w < 0 || recs_write(path, &r, err) < 0 || copy_artifacts(shards[0], out_dir, err) < 0)
        goto out;
    rc = finalize(out_dir, n_cells, err);
out:
    free(config);
    json_decref(info0);
    free(done);
    free(seen);
    recs_free(&r);
    return rc;
}
