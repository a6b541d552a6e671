/* capture.c - streamed, resumable activation capture to HDF5. */
#include "safesteer/capture.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/h5io.h"
#include "util/progress.h"
#include "safesteer/sha256.h"

#define SS_CAPTURE_FORMAT "safesteer.capture"
#define SS_CAPTURE_VERSION 1

static const char *const pool_names[] = {"mean", "last", "all", "gen_mean"};

const char *ss_pool_name(int pool)
{
    return pool >= 0 && pool < 4 ? pool_names[pool] : "unknown-pool";
}

int ss_pool_parse(const char *name, int *pool, ss_error *err)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, pool_names[i])) {
            *pool = i;
            return 0;
        }
    return ss_fail(err, "--pool: unknown pooling \"%s\" (expected mean, last, all or gen_mean)",
                   name);
}

static int parse_layer_num(const char *s, const char *spec, int n_layers, int *out,
                           ss_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return ss_fail(err, "--layers \"%s\": \"%s\" is not a layer number", spec, s);
    if (v < 0 || v >= n_layers)
        return ss_fail(err, "--layers \"%s\": layer %ld out of range (model has layers 0..%d)",
                       spec, v, n_layers - 1);
    *out = (int)v;
    return 0;
}

int ss_layers_parse(const char *spec, int n_layers, int **layers, int *n, ss_error *err)
{
    *layers = NULL;
    *n = 0;
    uint8_t *mask = ss_calloc((size_t)n_layers, 1, err);
    char *copy = strdup(spec);
    if (!mask || !copy) {
        free(mask);
        free(copy);
        return ss_fail(err, "out of memory parsing --layers");
    }
    int rc = 0;
    if (!strcmp(spec, "all")) {
        memset(mask, 1, (size_t)n_layers);
    } else {
        char *save = NULL;
        for (char *it = strtok_r(copy, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save)) {
            char *dash = strchr(it, '-');
            int a, b;
            if (dash) {
                *dash = '\0';
                rc = parse_layer_num(it, spec, n_layers, &a, err) ||
                     parse_layer_num(dash + 1, spec, n_layers, &b, err);
                if (!rc && b < a)
                    rc = ss_fail(err, "--layers \"%s\": range %d-%d is reversed", spec, a, b);
            } else {
                rc = parse_layer_num(it, spec, n_layers, &a, err);
                b = a;
            }
            for (int l = a; !rc && l <= b; l++)
                mask[l] = 1;
        }
    }
    int count = 0;
    for (int l = 0; l < n_layers; l++)
        count += mask[l];
    if (!rc && count == 0)
        rc = ss_fail(err, "--layers \"%s\" selects no layer", spec);
    if (!rc && !(*layers = ss_malloc((size_t)count * sizeof(int), err)))
        rc = -1;
    if (!rc)
        for (int l = 0; l < n_layers; l++)
            if (mask[l])
                (*layers)[(*n)++] = l;
    free(mask);
    free(copy);
    return rc ? -1 : 0;
}

void ss_capture_opts_default(ss_capture_opts *o)
{
    memset(o, 0, sizeof *o);
    o->site = SS_SITE_RESID_POST;
    o->pool = SS_POOL_MEAN;
    o->batch = 1;
    o->gen.max_new = 64;
    o->gen.sampler.top_p = 1.0f;
    o->chat_template = "none";
    o->model_name = o->model_path = o->model_sha256 = o->data_path = "";
}

/* ---------------------------------------------------------------- encoding */

static int concat_ids(const int32_t *a, int na, const int32_t *b, int nb, int32_t **ids,
                      int *n_ids, ss_error *err)
{
    int32_t *o = ss_malloc((size_t)(na + nb + 1) * sizeof(int32_t), err);
    if (!o)
        return -1;
    memcpy(o, a, (size_t)na * sizeof(int32_t));
    memcpy(o + na, b, (size_t)nb * sizeof(int32_t));
    *ids = o;
    *n_ids = na + nb;
    return 0;
}

int ss_capture_encode(const ss_model *m, const ss_tokenizer *t, int chat_family,
                      const char *text, const char *response, int32_t **ids, int *n_ids,
                      int *n_prompt, ss_error *err)
{
    int32_t *p = NULL, *r = NULL;
    int np = 0, nr = 0, rc = -1;
    char *sys = NULL, *full = NULL, *head = NULL;
    if (ss_encode_prompt(m, t, chat_family, NULL, text, &p, &np, err) < 0)
        return -1;
    *n_prompt = np;
    if (!response) {
        *ids = p;
        *n_ids = np;
        return 0;
    }
    if (chat_family == SS_CHAT_NONE) {
        if (ss_tokenize(t, response, strlen(response), 0, &r, &nr, err) < 0)
            goto out;
    } else {
        /* render with and without the assistant turn; the response's tokens
         * are those of the text after the prompt's rendering */
        sys = m->chat_template ? ss_chat_default_system(m->chat_template) : NULL;
        ss_chat_msg msgs[3];
        int n = 0;
        if (sys)
            msgs[n++] = (ss_chat_msg){"system", sys};
        msgs[n++] = (ss_chat_msg){"user", text};
        if (ss_chat_render(chat_family, msgs, n, 1, NULL, &head, err) < 0)
            goto out;
        msgs[n++] = (ss_chat_msg){"assistant", response};
        if (ss_chat_render(chat_family, msgs, n, 0, NULL, &full, err) < 0)
            goto out;
        size_t hl = strlen(head);
        if (strncmp(full, head, hl)) {
            ss_fail(err, "chat template %s: the rendered assistant turn does not extend the "
                         "rendered prompt; cannot separate prompt and response tokens",
                    ss_chat_family_name(chat_family));
            goto out;
        }
        if (ss_tokenize(t, full + hl, strlen(full + hl), 1, &r, &nr, err) < 0)
            goto out;
    }
    if (concat_ids(p, np, r, nr, ids, n_ids, err) < 0)
        goto out;
    rc = 0;
out:
    free(p);
    free(r);
    free(sys);
    free(full);
    free(head);
    return rc;
}

/* ---------------------------------------------------------------- state */

/* Per-slot accumulation for the sequence being captured there. */
typedef struct {
    int n_prompt, n_total;   /* prompt tokens; tokens fed (prompt + response) */
    int scope_begin;         /* positions [scope_begin, scope_end) are captured */
    int scope_end;           /* INT32_MAX during generation */
    int64_t row0;            /* pool all: first row of this sequence in rows[] */
    double *sum;             /* [n_layers][d_model] mean pools */
    int64_t *count;          /* [n_layers] tokens summed */
} slot_acc;

typedef struct {
    const ss_capture_opts *o;
    int d, L, nb_max;
    int *lidx;               /* [model n_layers] index into o->layers or -1 */
    slot_acc *slots;         /* [nb_max] */
    float *pooled;           /* [nb_max][L][d] last-token rows / means */
    float *rows;             /* [cap_rows][L][d] pool all */
    int64_t cap_rows;
    double *norms;           /* [L] sum of per-token L2 norms (whole run) */
    int64_t *norm_count;     /* [L] tokens counted (whole run) */
    uint16_t *half;          /* [rows][L][d] f16 staging */
} cap_ctx;

static void on_capture(void *user, int slot, int site, int layer, int pos, const float *h,
                       int n_tok, int d)
{
    (void)site;
    cap_ctx *c = user;
    int li = c->lidx[layer];
    if (li < 0 || slot >= c->nb_max)
        return;
    slot_acc *s = &c->slots[slot];
    int pool = c->o->pool;
    for (int t = 0; t < n_tok; t++) {
        int p = pos + t;
        if (p < s->scope_begin || p >= s->scope_end)
            continue;
        const float *x = h + (size_t)t * d;
        if (pool == SS_POOL_LAST && p != s->n_prompt - 1)
            continue;
        double nn = 0;
        for (int j = 0; j < d; j++)
            nn += (double)x[j] * x[j];
        c->norms[li] += sqrt(nn);
        c->norm_count[li]++;
        if (pool == SS_POOL_LAST) {
            memcpy(c->pooled + ((size_t)slot * c->L + li) * d, x, (size_t)d * sizeof(float));
        } else if (pool == SS_POOL_ALL) {
            memcpy(c->rows + ((size_t)(s->row0 + p - s->scope_begin) * c->L + li) * d, x,
                   (size_t)d * sizeof(float));
        } else {
            double *acc = s->sum + (size_t)li * d;
            for (int j = 0; j < d; j++)
                acc[j] += x[j];
            s->count[li]++;
        }
    }
}

/* ---------------------------------------------------------------- file */

typedef struct {
    hid_t f;
    hid_t acts, n_tokens, offsets, response, n_extra;
    hid_t half_t;
} cap_file;

static void file_close(cap_file *cf)
{
    hid_t ds[] = {cf->acts, cf->n_tokens, cf->offsets, cf->response, cf->n_extra};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++)
        if (ds[i] > 0)
            H5Dclose(ds[i]);
    if (cf->half_t > 0)
        H5Tclose(cf->half_t);
    if (cf->f > 0)
        H5Fclose(cf->f);
    memset(cf, 0, sizeof *cf);
}

static const char *mean_scope_name(const ss_capture_opts *o, int has_response)
{
    if (o->pool == SS_POOL_GEN_MEAN)
        return "generated";
    if (o->pool == SS_POOL_LAST)
        return "last_prompt_token";
    return has_response && o->mean_response ? "prompt+response" : "prompt";
}

/* Fingerprint of the selected records, in order: resuming must see the
 * same prompts, ids and responses. */
static void prompts_sha(const ss_capture_source *src, char hex[65])
{
    ss_sha256 s;
    ss_sha256_init(&s);
    for (int i = 0; i < src->n; i++) {
        const char *parts[5] = {src->id[i], src->text[i], src->category[i], src->label[i],
                                src->response ? src->response[i] : "\x01"};
        for (int k = 0; k < 5; k++)
            ss_sha256_update(&s, parts[k] ? parts[k] : "", strlen(parts[k] ? parts[k] : "") + 1);
    }
    ss_sha256_final_hex(&s, hex);
}

/* The settings a resumed run must share with the file, as strings. */
typedef struct {
    const char *key;
    char value[160];
} setting;

static int settings_of(const ss_capture_opts *o, const ss_capture_source *src, int d_model,
                       setting *st)
{
    char hex[65];
    prompts_sha(src, hex);
    int n = 0;
    st[n].key = "model_sha256", snprintf(st[n++].value, 160, "%s", o->model_sha256);
    st[n].key = "prompts_sha256", snprintf(st[n++].value, 160, "%s", hex);
    st[n].key = "site", snprintf(st[n++].value, 160, "%s", ss_site_name(o->site));
    st[n].key = "pooling", snprintf(st[n++].value, 160, "%s", ss_pool_name(o->pool));
    st[n].key = "mean_scope",
    snprintf(st[n++].value, 160, "%s", mean_scope_name(o, src->response != NULL));
    st[n].key = "dtype", snprintf(st[n++].value, 160, "%s", o->f16 ? "f16" : "f32");
    st[n].key = "chat_template", snprintf(st[n++].value, 160, "%s", o->chat_template);
    st[n].key = "generation",
    snprintf(st[n++].value, 160, "max_new=%d temperature=%g top_p=%g seed=%llu",
             o->pool == SS_POOL_GEN_MEAN ? o->gen.max_new : 0,
             o->pool == SS_POOL_GEN_MEAN ? (double)o->gen.sampler.temperature : 0.0,
             o->pool == SS_POOL_GEN_MEAN ? (double)o->gen.sampler.top_p : 0.0,
             o->pool == SS_POOL_GEN_MEAN ? (unsigned long long)o->gen.sampler.seed : 0ULL);
    st[n].key = "d_model", snprintf(st[n++].value, 160, "%d", d_model);
    return n;
}

static hsize_t chunk_rows_for(size_t row_bytes, hsize_t max_rows)
{
    hsize_t r = (hsize_t)((1u << 20) / (row_bytes ? row_bytes : 1));
    if (r < 1)
        r = 1;
    if (max_rows && r > max_rows)
        r = max_rows;
    return r;
}

static int write_strings(hid_t f, const char *name, const char *const *strs, int n,
                         ss_error *err)
{
    hid_t t = ss_h5_vlen_str_type();
    hsize_t dims[1] = {(hsize_t)n};
    hid_t d = ss_h5_create(f, name, t, 1, dims, 0, chunk_rows_for(64, (hsize_t)n), err);
    H5Tclose(t);
    if (d < 0)
        return -1;
    int rc = ss_h5_write_strs(d, 0, (hsize_t)n, strs, err);
    H5Dclose(d);
    return rc;
}

static int create_file(const char *path, const ss_capture_source *src, const ss_capture_opts *o,
                       const ss_config *cfg, const setting *st, int n_st, cap_file *cf,
                       ss_error *err)
{
    int N = src->n, L = o->n_layers, d = cfg->d_model;
    /* no free-space reuse: space the last flushed metadata points to is
     * never handed out again, so a run killed between flushes leaves the
     * flushed state readable */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_file_space_strategy(fcpl, H5F_FSPACE_STRATEGY_NONE, 0, 1);
    cf->f = H5Fcreate(path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (cf->f < 0)
        return ss_fail(err, "%s: cannot create the HDF5 file", path);
    hid_t f = cf->f;
    cf->half_t = ss_h5_f16_type();
    char ver[32];
    snprintf(ver, sizeof ver, "%s", SAFESTEER_VERSION);
    if (ss_h5_attr_set_str(f, "format", SS_CAPTURE_FORMAT, err) ||
        ss_h5_attr_set_i64(f, "format_version", SS_CAPTURE_VERSION, err) ||
        ss_h5_attr_set_str(f, "toolkit_version", ver, err) ||
        ss_h5_attr_set_str(f, "model_name", o->model_name, err) ||
        ss_h5_attr_set_str(f, "model_path", o->model_path, err) ||
        ss_h5_attr_set_str(f, "data_path", o->data_path, err) ||
        ss_h5_attr_set_i64(f, "d_model", d, err) ||
        ss_h5_attr_set_i64(f, "n_layers_model", cfg->n_layers, err) ||
        ss_h5_attr_set_i64(f, "chat", o->chat, err) ||
        ss_h5_attr_set_i64(f, "n_prompts", N, err) ||
        ss_h5_attr_set_i64(f, "n_done", 0, err) || ss_h5_attr_set_i64(f, "complete", 0, err) ||
        ss_h5_attr_set_i64(f, "norm_tokens", 0, err))
        return -1;
    for (int i = 0; i < n_st; i++)
        if (strcmp(st[i].key, "d_model") && ss_h5_attr_set_str(f, st[i].key, st[i].value, err))
            return -1;
    int32_t *lay = ss_malloc((size_t)L * sizeof(int32_t), err);
    if (!lay)
        return -1;
    for (int i = 0; i < L; i++)
        lay[i] = o->layers[i];
    hsize_t dl[1] = {(hsize_t)L};
    int rc = ss_h5_write_all(f, "/layers", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dl, lay, err);
    free(lay);
    if (rc || write_strings(f, "/prompts/text", src->text, N, err) ||
        write_strings(f, "/prompts/id", src->id, N, err) ||
        write_strings(f, "/prompts/category", src->category, N, err) ||
        write_strings(f, "/prompts/label", src->label, N, err) ||
        (src->response && write_strings(f, "/prompts/response", src->response, N, err)))
        return -1;
    hsize_t dn[1] = {(hsize_t)N};
    if ((cf->n_tokens = ss_h5_create(f, "/prompts/n_tokens", H5T_STD_I32LE, 1, dn, 0,
                                     chunk_rows_for(4, dn[0]), err)) < 0)
        return -1;
    if (src->response &&
        (cf->n_extra = ss_h5_create(f, "/prompts/n_response_tokens", H5T_STD_I32LE, 1, dn, 0,
                                    chunk_rows_for(4, dn[0]), err)) < 0)
        return -1;
    if (o->pool == SS_POOL_GEN_MEAN) {
        hid_t t = ss_h5_vlen_str_type();
        cf->response = ss_h5_create(f, "/prompts/response", t, 1, dn, 0,
                                    chunk_rows_for(256, dn[0]), err);
        H5Tclose(t);
        if (cf->response < 0 ||
            (cf->n_extra = ss_h5_create(f, "/prompts/n_generated", H5T_STD_I32LE, 1, dn, 0,
                                        chunk_rows_for(4, dn[0]), err)) < 0)
            return -1;
    }
    size_t row_bytes = (size_t)L * d * (o->f16 ? 2 : 4);
    hid_t at = o->f16 ? cf->half_t : H5T_IEEE_F32LE;
    if (o->pool == SS_POOL_ALL) {
        hsize_t da[3] = {0, (hsize_t)L, (hsize_t)d}, doff[1] = {(hsize_t)N + 1};
        int64_t zero = 0;
        if ((cf->acts = ss_h5_create(f, "/acts", at, 3, da, 1, chunk_rows_for(row_bytes, 0),
                                     err)) < 0 ||
            (cf->offsets = ss_h5_create(f, "/offsets", H5T_STD_I64LE, 1, doff, 0,
                                        chunk_rows_for(8, doff[0]), err)) < 0 ||
            ss_h5_write_rows(cf->offsets, H5T_NATIVE_INT64, 0, 1, &zero, err) < 0)
            return -1;
    } else {
        hsize_t da[3] = {(hsize_t)N, (hsize_t)L, (hsize_t)d};
        if ((cf->acts = ss_h5_create(f, "/acts", at, 3, da, 0, chunk_rows_for(row_bytes, da[0]),
                                     err)) < 0)
            return -1;
    }
    float *zf = ss_calloc((size_t)L, sizeof(float), err);
    double *zd = ss_calloc((size_t)L, sizeof(double), err);
    rc = !zf || !zd ||
         ss_h5_write_all(f, "/layer_norms", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, dl, zf, err) ||
         ss_h5_write_all(f, "/layer_norm_sum", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dl, zd,
                         err);
    free(zf);
    free(zd);
    if (rc)
        return -1;
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0)
        return ss_fail(err, "%s: flush failed", path);
    return 0;
}

static hid_t open_ds(hid_t f, const char *name, const char *path, ss_error *err)
{
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        ss_fail(err, "%s: dataset %s is missing", path, name);
        return -1;
    }
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        ss_fail(err, "%s: cannot open dataset %s", path, name);
    return d;
}

/* Reads a dataset of at most cap numbers (int32/int64/f32/f64 via mtype). */
static int read_small(hid_t f, const char *name, const char *path, hid_t mtype, void *buf,
                      hsize_t want, ss_error *err)
{
    hid_t d = open_ds(f, name, path, err);
    if (d < 0)
        return -1;
    int rank;
    hsize_t dims[8];
    int rc = ss_h5_shape(d, &rank, dims, err);
    if (!rc && (rank != 1 || dims[0] < want))
        rc = ss_fail(err, "%s: %s has %llu entries, expected %llu", path, name,
                     (unsigned long long)dims[0], (unsigned long long)want);
    if (!rc)
        rc = ss_h5_read_rows(d, mtype, 0, want, buf, err);
    H5Dclose(d);
    return rc;
}

/* Opens an existing capture for resuming after checking every setting. */
static int open_for_resume(const char *path, const ss_capture_source *src,
                           const ss_capture_opts *o, const setting *st, int n_st, cap_file *cf,
                           int64_t *n_done, ss_error *err)
{
    cf->f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (cf->f < 0)
        return ss_fail(err, "%s: cannot open for --resume (damaged by a killed run?); delete it "
                            "or pass --force to start over", path);
    cf->half_t = ss_h5_f16_type();
    hid_t f = cf->f;
    for (int i = 0; i < n_st; i++) {
        char *v = NULL;
        int rc;
        if (!strcmp(st[i].key, "d_model")) {
            int64_t dm;
            rc = ss_h5_attr_get_i64(f, "d_model", &dm, err);
            if (!rc && atoll(st[i].value) != dm)
                rc = ss_fail(err, "%s: --resume: file has d_model %lld, this model %s", path,
                             (long long)dm, st[i].value);
            if (rc)
                return -1;
            continue;
        }
        if (ss_h5_attr_get_str(f, st[i].key, &v, err) < 0)
            return ss_fail_context(err, "%s: --resume", path);
        rc = strcmp(v, st[i].value);
        if (rc)
            ss_fail(err, "%s: --resume: %s differs (file \"%s\", this run \"%s\"); use the same "
                         "model, data and settings, or --force to start over",
                    path, st[i].key, v, st[i].value);
        free(v);
        if (rc)
            return -1;
    }
    int64_t np;
    if (ss_h5_attr_get_i64(f, "n_prompts", &np, err) || ss_h5_attr_get_i64(f, "n_done", n_done, err))
        return -1;
    if (np != src->n || *n_done < 0 || *n_done > np)
        return ss_fail(err, "%s: --resume: file holds %lld of %lld prompts, this run selects %d",
                       path, (long long)*n_done, (long long)np, src->n);
    int32_t *lay = ss_malloc((size_t)o->n_layers * sizeof(int32_t), err);
    if (!lay || read_small(f, "/layers", path, H5T_NATIVE_INT32, lay, (hsize_t)o->n_layers, err)) {
        free(lay);
        return -1;
    }
    for (int i = 0; i < o->n_layers; i++)
        if (lay[i] != o->layers[i]) {
            free(lay);
            return ss_fail(err, "%s: --resume: the file's layers differ from --layers", path);
        }
    free(lay);
    if ((cf->acts = open_ds(f, "/acts", path, err)) < 0 ||
        (cf->n_tokens = open_ds(f, "/prompts/n_tokens", path, err)) < 0)
        return -1;
    if (src->response && (cf->n_extra = open_ds(f, "/prompts/n_response_tokens", path, err)) < 0)
        return -1;
    if (o->pool == SS_POOL_GEN_MEAN &&
        ((cf->response = open_ds(f, "/prompts/response", path, err)) < 0 ||
         (cf->n_extra = open_ds(f, "/prompts/n_generated", path, err)) < 0))
        return -1;
    if (o->pool == SS_POOL_ALL && (cf->offsets = open_ds(f, "/offsets", path, err)) < 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- run */

typedef struct {
    int32_t *tokens;         /* [sum n_ids] of the batch */
    int32_t **ids;           /* [nb] */
    int *n_ids, *n_prompt;   /* [nb] */
    int32_t *n_tok32, *n_extra32; /* [nb] */
    int64_t *offs;           /* [nb] pool all: offsets after each sequence */
    char **gen_text;         /* [nb] gen_mean */
    float *logits;           /* [nb][vocab] */
} batch_buf;

static int ensure_rows(cap_ctx *c, int64_t rows, ss_error *err)
{
    if (rows <= c->cap_rows)
        return 0;
    size_t bytes = (size_t)rows * c->L * c->d * sizeof(float);
    float *r = realloc(c->rows, bytes);
    uint16_t *h = c->o->f16 ? realloc(c->half, (size_t)rows * c->L * c->d * 2) : NULL;
    if (r)
        c->rows = r;
    if (h)
        c->half = h;
    if (!r || (c->o->f16 && !h))
        return ss_fail(err, "out of memory for %lld captured token rows", (long long)rows);
    c->cap_rows = rows;
    return 0;
}

static int write_acts(cap_ctx *c, cap_file *cf, int64_t row0, int64_t n, const float *src,
                      ss_error *err)
{
    if (!c->o->f16)
        return ss_h5_write_rows(cf->acts, H5T_NATIVE_FLOAT, (hsize_t)row0, (hsize_t)n, src, err);
    size_t cnt = (size_t)n * c->L * c->d;
    for (size_t i = 0; i < cnt; i++)
        c->half[i] = ss_f32_to_f16(src[i]);
    return ss_h5_write_rows(cf->acts, cf->half_t, (hsize_t)row0, (hsize_t)n, c->half, err);
}

/* Runs one batch of nb prompts (items i0..i0+nb-1) through the engine. */
static int run_batch(ss_engine *e, const ss_capture_source *src, cap_ctx *c, batch_buf *bb,
                     int i0, int nb, int64_t *row_next, ss_error *err)
{
    const ss_capture_opts *o = c->o;
    int64_t total = 0;
    for (int k = 0; k < nb; k++) {
        free(bb->ids[k]);
        bb->ids[k] = NULL;
        if (src->encode(src->user, i0 + k, &bb->ids[k], &bb->n_ids[k], &bb->n_prompt[k], err) < 0)
            return ss_fail_context(err, "prompt %d (id %s)", i0 + k, src->id[i0 + k]);
        if (bb->n_prompt[k] < 1 || bb->n_ids[k] > ss_engine_max_ctx(e))
            return ss_fail(err, "prompt %d (id %s): %d tokens (prompt %d) do not fit the context "
                                "of %d", i0 + k, src->id[i0 + k], bb->n_ids[k], bb->n_prompt[k],
                           ss_engine_max_ctx(e));
        total += bb->n_ids[k];
    }
    int64_t rows = 0;
    for (int k = 0; k < nb; k++) {
        slot_acc *s = &c->slots[k];
        s->n_prompt = bb->n_prompt[k];
        s->n_total = bb->n_ids[k];
        s->scope_begin = 0;
        s->scope_end = o->mean_response ? bb->n_ids[k] : bb->n_prompt[k];
        if (o->pool == SS_POOL_GEN_MEAN) {
            s->scope_begin = bb->n_prompt[k] - 1;
            s->scope_end = INT32_MAX;
        }
        s->row0 = rows;
        if (o->pool == SS_POOL_ALL)
            rows += s->scope_end - s->scope_begin;
        memset(s->sum, 0, (size_t)c->L * c->d * sizeof(double));
        memset(s->count, 0, (size_t)c->L * sizeof(int64_t));
        ss_engine_reset_slot(e, k);
    }
    if (o->pool == SS_POOL_ALL && ensure_rows(c, rows, err) < 0)
        return -1;
    if (o->pool == SS_POOL_GEN_MEAN) {
        ss_gen_result *res = ss_calloc((size_t)nb, sizeof *res, err);
        if (!res)
            return -1;
        ss_gen_timing tm;
        int rc = ss_generate(e, o->tok, nb, (const int32_t *const *)bb->ids, bb->n_prompt,
                             &o->gen, NULL, NULL, res, &tm, err);
        for (int k = 0; k < nb; k++) {
            free(bb->gen_text[k]);
            bb->gen_text[k] = rc == 0 ? res[k].text : NULL;
            res[k].text = rc == 0 ? NULL : res[k].text;
            bb->n_extra32[k] = res[k].n_ids;
            ss_gen_result_free(&res[k]);
        }
        free(res);
        if (rc < 0)
            return ss_fail_context(err, "generating for prompts %d..%d", i0, i0 + nb - 1);
    } else {
        int *slots = ss_malloc((size_t)nb * sizeof(int), err);
        int32_t *tok = ss_malloc((size_t)total * sizeof(int32_t), err);
        int rc = slots && tok ? 0 : -1;
        int64_t at = 0;
        for (int k = 0; !rc && k < nb; k++) {
            slots[k] = k;
            memcpy(tok + at, bb->ids[k], (size_t)bb->n_ids[k] * sizeof(int32_t));
            at += bb->n_ids[k];
        }
        ss_batch b = {.n_seqs = nb, .slots = slots, .n_tokens = bb->n_ids, .tokens = tok};
        if (!rc)
            rc = ss_engine_forward(e, &b, bb->logits, err);
        free(slots);
        free(tok);
        if (rc < 0)
            return ss_fail_context(err, "prompts %d..%d", i0, i0 + nb - 1);
    }
    for (int k = 0; k < nb; k++) {
        slot_acc *s = &c->slots[k];
        bb->n_tok32[k] = bb->n_prompt[k];
        if (src->response)
            bb->n_extra32[k] = bb->n_ids[k] - bb->n_prompt[k];
        if (o->pool == SS_POOL_MEAN || o->pool == SS_POOL_GEN_MEAN) {
            for (int li = 0; li < c->L; li++) {
                if (s->count[li] == 0)
                    return ss_fail(err, "prompt %d (id %s): no token in the pooling scope at "
                                        "layer %d", i0 + k, src->id[i0 + k], o->layers[li]);
                float *dst = c->pooled + ((size_t)k * c->L + li) * c->d;
                const double *acc = s->sum + (size_t)li * c->d;
                for (int j = 0; j < c->d; j++)
                    dst[j] = (float)(acc[j] / (double)s->count[li]);
            }
        }
        if (o->pool == SS_POOL_ALL)
            bb->offs[k] = *row_next + s->row0 + (s->scope_end - s->scope_begin);
    }
    if (o->pool == SS_POOL_ALL)
        *row_next += rows;
    return 0;
}

static int flush_batch(cap_ctx *c, cap_file *cf, batch_buf *bb, int i0, int nb, int64_t rows_before, int64_t rows_after, ss_error *err)
{
    const ss_capture_opts *o = c->o;
    int rc = o->pool == SS_POOL_ALL
                 ? write_acts(c, cf, rows_before, rows_after - rows_before, c->rows, err) ||
                       ss_h5_write_rows(cf->offsets, H5T_NATIVE_INT64, (hsize_t)i0 + 1,
                                        (hsize_t)nb, bb->offs, err)
                 : write_acts(c, cf, i0, nb, c->pooled, err);
    if (rc || ss_h5_write_rows(cf->n_tokens, H5T_NATIVE_INT32, (hsize_t)i0, (hsize_t)nb,
                               bb->n_tok32, err))
        return -1;
    if (cf->n_extra > 0 && ss_h5_write_rows(cf->n_extra, H5T_NATIVE_INT32, (hsize_t)i0,
                                            (hsize_t)nb, bb->n_extra32, err))
        return -1;
    if (cf->response > 0 && ss_h5_write_strs(cf->response, (hsize_t)i0, (hsize_t)nb,
                                             (const char *const *)bb->gen_text, err))
        return -1;
    /* the norms so far, then n_done last: a kill before the flush leaves the
     * previous n_done, whose rows are all on disk */
    float *means = ss_malloc((size_t)c->L * sizeof(float), err);
    if (!means)
        return -1;
    for (int li = 0; li < c->L; li++)
        means[li] = c->norm_count[li] ? (float)(c->norms[li] / (double)c->norm_count[li]) : 0;
    hid_t dn = H5Dopen2(cf->f, "/layer_norms", H5P_DEFAULT);
    hid_t ds = H5Dopen2(cf->f, "/layer_norm_sum", H5P_DEFAULT);
    rc = dn < 0 || ds < 0 ||
         H5Dwrite(dn, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, means) < 0 ||
         H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, c->norms) < 0;
    if (dn >= 0)
        H5Dclose(dn);
    if (ds >= 0)
        H5Dclose(ds);
    free(means);
    if (rc)
        return ss_fail(err, "cannot write /layer_norms");
    if (ss_h5_attr_set_i64(cf->f, "norm_tokens", c->norm_count[0], err) ||
        ss_h5_attr_set_i64(cf->f, "n_done", i0 + nb, err))
        return -1;
    if (H5Fflush(cf->f, H5F_SCOPE_GLOBAL) < 0)
        return ss_fail(err, "HDF5 flush failed after prompt %d", i0 + nb);
    return 0;
}

/* Decides what to do with an existing file at path: *resume_it = 1 to
 * continue it, 0 to (re)create it; errors for files that must be kept. */
static int check_existing(const char *path, const ss_capture_opts *o, int *resume_it,
                          int *already_complete, ss_error *err)
{
    *resume_it = 0;
    *already_complete = 0;
    struct stat st;
    if (stat(path, &st) < 0)
        return 0;
    if (o->force)
        return 0;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return ss_fail(err, "%s exists and is not a readable HDF5 file (a capture killed "
                            "mid-write?); delete it or pass --force", path);
    int64_t done = 0, n = 0, complete = 0;
    char *fmt = NULL;
    int rc = ss_h5_attr_get_str(f, "format", &fmt, err) || ss_h5_attr_get_i64(f, "n_done", &done, err) ||
             ss_h5_attr_get_i64(f, "n_prompts", &n, err) ||
             ss_h5_attr_get_i64(f, "complete", &complete, err);
    H5Fclose(f);
    if (!rc && strcmp(fmt, SS_CAPTURE_FORMAT))
        rc = ss_fail(err, "%s exists and is not a capture file (format \"%s\"); pass --force to "
                          "overwrite it", path, fmt);
    free(fmt);
    if (rc)
        return ss_fail_context(err, "%s exists; pass --force to overwrite it", path);
    if (complete && !o->resume)
        return ss_fail(err, "%s is a complete capture (%lld prompts); pass --force to "
                            "overwrite it", path, (long long)n);
    if (!complete && !o->resume)
        return ss_fail(err, "%s: incomplete capture (%lld of %lld prompts); rerun with --resume "
                            "or delete it", path, (long long)done, (long long)n);
    *resume_it = 1;
    *already_complete = (int)complete;
    return 0;
}

static void batch_free(batch_buf *bb, int nb)
{
    if (bb->ids)
        for (int k = 0; k < nb; k++)
            free(bb->ids[k]);
    if (bb->gen_text)
        for (int k = 0; k < nb; k++)
            free(bb->gen_text[k]);
    free(bb->ids);
    free(bb->gen_text);
    free(bb->n_ids);
    free(bb->n_prompt);
    free(bb->n_tok32);
    free(bb->n_extra32);
    free(bb->offs);
    free(bb->logits);
}

static void ctx_free(cap_ctx *c)
{
    if (c->slots)
        for (int k = 0; k < c->nb_max; k++) {
            free(c->slots[k].sum);
            free(c->slots[k].count);
        }
    free(c->slots);
    free(c->lidx);
    free(c->pooled);
    free(c->rows);
    free(c->half);
    free(c->norms);
    free(c->norm_count);
}

static int ctx_init(cap_ctx *c, const ss_capture_opts *o, const ss_config *cfg, ss_error *err)
{
    memset(c, 0, sizeof *c);
    c->o = o;
    c->d = cfg->d_model;
    c->L = o->n_layers;
    c->nb_max = o->batch;
    size_t Ld = (size_t)c->L * c->d;
    c->lidx = ss_malloc((size_t)cfg->n_layers * sizeof(int), err);
    c->slots = ss_calloc((size_t)c->nb_max, sizeof *c->slots, err);
    c->pooled = ss_calloc((size_t)c->nb_max * Ld, sizeof(float), err);
    c->norms = ss_calloc((size_t)c->L, sizeof(double), err);
    c->norm_count = ss_calloc((size_t)c->L, sizeof(int64_t), err);
    if (o->f16 && o->pool != SS_POOL_ALL)
        c->half = ss_malloc((size_t)c->nb_max * Ld * 2, err);
    if (!c->lidx || !c->slots || !c->pooled || !c->norms || !c->norm_count ||
        (o->f16 && o->pool != SS_POOL_ALL && !c->half))
        return -1;
    for (int l = 0; l < cfg->n_layers; l++)
        c->lidx[l] = -1;
    for (int i = 0; i < c->L; i++)
        c->lidx[o->layers[i]] = i;
    for (int k = 0; k < c->nb_max; k++)
        if (!(c->slots[k].sum = ss_calloc(Ld, sizeof(double), err)) ||
            !(c->slots[k].count = ss_calloc((size_t)c->L, sizeof(int64_t), err)))
            return -1;
    return 0;
}

static int batch_init(batch_buf *bb, int nb, int vocab, ss_error *err)
{
    memset(bb, 0, sizeof *bb);
    bb->ids = ss_calloc((size_t)nb, sizeof *bb->ids, err);
    bb->gen_text = ss_calloc((size_t)nb, sizeof *bb->gen_text, err);
    bb->n_ids = ss_calloc((size_t)nb, sizeof(int), err);
    bb->n_prompt = ss_calloc((size_t)nb, sizeof(int), err);
    bb->n_tok32 = ss_calloc((size_t)nb, sizeof(int32_t), err);
    bb->n_extra32 = ss_calloc((size_t)nb, sizeof(int32_t), err);
    bb->offs = ss_calloc((size_t)nb, sizeof(int64_t), err);
    bb->logits = ss_malloc((size_t)nb * vocab * sizeof(float), err);
    return bb->ids && bb->gen_text && bb->n_ids && bb->n_prompt && bb->n_tok32 &&
                   bb->n_extra32 && bb->offs && bb->logits
               ? 0
               : -1;
}

static int check_opts(ss_engine *e, const ss_capture_source *src, const ss_capture_opts *o,
                      ss_error *err)
{
    const ss_config *cfg = ss_engine_config(e);
    if (src->n < 1)
        return ss_fail(err, "capture: no prompts");
    if (o->site < 0 || o->site >= SS_SITE_COUNT)
        return ss_fail(err, "capture: site %d out of range", o->site);
    if (o->n_layers < 1)
        return ss_fail(err, "capture: no layers selected");
    for (int i = 0; i < o->n_layers; i++)
        if (o->layers[i] < 0 || o->layers[i] >= cfg->n_layers ||
            (i && o->layers[i] <= o->layers[i - 1]))
            return ss_fail(err, "capture: layers must be sorted, unique and in 0..%d (got %d)",
                           cfg->n_layers - 1, o->layers[i]);
    if (o->batch < 1 || o->batch > ss_engine_max_seqs(e))
        return ss_fail(err, "capture: batch %d must be 1..%d (the engine's slots)", o->batch,
                       ss_engine_max_seqs(e));
    if (o->pool == SS_POOL_GEN_MEAN && (!o->tok || o->gen.max_new < 1))
        return ss_fail(err, "capture: gen_mean needs a tokenizer and --max-new >= 1");
    if (o->pool == SS_POOL_GEN_MEAN && src->response)
        return ss_fail(err, "capture: gen_mean generates the responses; --with-response does "
                            "not apply");
    if (o->mean_response && !src->response)
        return ss_fail(err, "capture: pooling over the response needs responses");
    return 0;
}

int ss_capture_run(ss_engine *e, const ss_capture_source *src, const ss_capture_opts *o,
                   const char *path, ss_error *err)
{
    if (check_opts(e, src, o, err) < 0)
        return -1;
    ss_h5_quiet();
    const ss_config *cfg = ss_engine_config(e);
    setting st[12];
    int n_st = settings_of(o, src, cfg->d_model, st);
    int resume_it, already;
    if (check_existing(path, o, &resume_it, &already, err) < 0)
        return -1;
    cap_ctx c = {0};
    batch_buf bb = {0};
    cap_file cf = {0};
    int rc = -1;
    int64_t done = 0, row_next = 0;
    if (ctx_init(&c, o, cfg, err) < 0 || batch_init(&bb, o->batch, cfg->vocab_size, err) < 0)
        goto out;
    if (resume_it) {
        if (open_for_resume(path, src, o, st, n_st, &cf, &done, err) < 0)
            goto out;
        int64_t ntok = 0;
        if (read_small(cf.f, "/layer_norm_sum", path, H5T_NATIVE_DOUBLE, c.norms,
                       (hsize_t)c.L, err) ||
            ss_h5_attr_get_i64(cf.f, "norm_tokens", &ntok, err))
            goto out;
        for (int li = 0; li < c.L; li++)
            c.norm_count[li] = ntok;
        if (o->pool == SS_POOL_ALL) {
            if (ss_h5_read_rows(cf.offsets, H5T_NATIVE_INT64, (hsize_t)done, 1, &row_next, err) ||
                ss_h5_set_rows(cf.acts, (hsize_t)row_next, err))
                goto out;
        }
        if (already)
            fprintf(stderr, "capture: %s is already complete (%d prompts); nothing to do\n",
                    path, src->n);
        else
            fprintf(stderr, "capture: resuming %s at prompt %lld of %d\n", path,
                    (long long)done, src->n);
    } else if (create_file(path, src, o, cfg, st, n_st, &cf, err) < 0) {
        goto out;
    }
    uint8_t *mask = ss_calloc((size_t)cfg->n_layers, 1, err);
    if (!mask)
        goto out;
    for (int i = 0; i < c.L; i++)
        mask[o->layers[i]] = 1;
    int hook = ss_engine_set_capture(e, o->site, mask, on_capture, &c, err);
    free(mask);
    if (hook < 0)
        goto out;
    ss_progress prog;
    ss_progress_begin(&prog, "capture", "prompts", done, src->n, 0);
    for (int i0 = (int)done; i0 < src->n; i0 += o->batch) {
        int nb = src->n - i0 < o->batch ? src->n - i0 : o->batch;
        int64_t before = row_next;
        if (run_batch(e, src, &c, &bb, i0, nb, &row_next, err) < 0 ||
            flush_batch(&c, &cf, &bb, i0, nb, before, row_next, err) < 0)
            goto unhook;
        if (o->progress)
            ss_progress_update(&prog, i0 + nb);
    }
    if (ss_h5_attr_set_i64(cf.f, "complete", 1, err) < 0)
        goto unhook;
    if (H5Fflush(cf.f, H5F_SCOPE_GLOBAL) < 0) {
        ss_fail(err, "%s: final flush failed", path);
        goto unhook;
    }
    rc = 0;
unhook:
    ss_engine_set_capture(e, o->site, NULL, NULL, NULL, NULL);
out:
    file_close(&cf);
    batch_free(&bb, o->batch);
    ctx_free(&c);
    if (rc < 0)
        ss_fail_context(err, "%s", path);
    return rc;
}

/* ---------------------------------------------------------------- reading */

void ss_capture_data_free(ss_capture_data *d)
{
    free(d->layers);
    free(d->acts);
    free(d->offsets);
    free(d->n_tokens);
    free(d->layer_norms);
    memset(d, 0, sizeof *d);
}

static int open_capture(const char *path, int allow_incomplete, hid_t *fout, int64_t *n,
                        int64_t *done, int64_t *complete, ss_error *err)
{
    hid_t f = ss_h5_open(path, H5F_ACC_RDONLY, err);
    if (f < 0)
        return -1;
    char *fmt = NULL;
    int rc = ss_h5_attr_get_str(f, "format", &fmt, err) ||
             ss_h5_attr_get_i64(f, "n_prompts", n, err) ||
             ss_h5_attr_get_i64(f, "n_done", done, err) ||
             ss_h5_attr_get_i64(f, "complete", complete, err);
    if (!rc && strcmp(fmt, SS_CAPTURE_FORMAT))
        rc = ss_fail(err, "%s: format is \"%s\", expected \"%s\"", path, fmt, SS_CAPTURE_FORMAT);
    free(fmt);
    if (!rc && !*complete && !allow_incomplete)
        rc = ss_fail(err, "%s: incomplete capture (%lld of %lld prompts); rerun with --resume "
                          "or delete it", path, (long long)*done, (long long)*n);
    if (rc) {
        ss_h5_fail_in(err, path);
        H5Fclose(f);
        return -1;
    }
    *fout = f;
    return 0;
}

int ss_capture_load(const char *path, int allow_incomplete, ss_capture_data *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    hid_t f;
    int64_t n, done, complete, dm;
    if (open_capture(path, allow_incomplete, &f, &n, &done, &complete, err) < 0)
        return -1;
    int rc = -1, rank;
    hsize_t dims[8];
    char *pool = NULL, *site = NULL;
    hid_t acts = -1;
    if (ss_h5_attr_get_i64(f, "d_model", &dm, err) || ss_h5_attr_get_str(f, "pooling", &pool, err) ||
        ss_h5_attr_get_str(f, "site", &site, err) || ss_pool_parse(pool, &out->pool, err) ||
        ss_site_parse(site, &out->site, err))
        goto out;
    /* sizes below come from the file: bounded before they size allocations */
    if (n < 0 || n > INT32_MAX || done < 0 || done > n || dm < 1 || dm > 1 << 20) {
        ss_fail(err, "%s: attributes n_prompts %lld, n_done %lld, d_model %lld are out of range",
                path, (long long)n, (long long)done, (long long)dm);
        goto out;
    }
    out->n_prompts = (int)n;
    out->n_done = (int)done;
    out->complete = (int)complete;
    out->d_model = (int)dm;
    if ((acts = open_ds(f, "/acts", path, err)) < 0 || ss_h5_shape(acts, &rank, dims, err))
        goto out;
    if (rank != 3 || (int64_t)dims[2] != dm || dims[1] < 1 || dims[1] > 1 << 16) {
        ss_fail(err, "%s: /acts must be [rows][L][%lld]", path, (long long)dm);
        goto out;
    }
    out->n_layers = (int)dims[1];
    out->layers = ss_malloc(dims[1] * sizeof(int32_t), err);
    out->layer_norms = ss_malloc(dims[1] * sizeof(float), err);
    out->n_tokens = ss_malloc((size_t)(done ? done : 1) * sizeof(int32_t), err);
    if (!out->layers || !out->layer_norms || !out->n_tokens ||
        read_small(f, "/layers", path, H5T_NATIVE_INT32, out->layers, dims[1], err) ||
        read_small(f, "/layer_norms", path, H5T_NATIVE_FLOAT, out->layer_norms, dims[1], err) ||
        read_small(f, "/prompts/n_tokens", path, H5T_NATIVE_INT32, out->n_tokens, (hsize_t)done,
                   err))
        goto out;
    out->n_rows = done;
    if (out->pool == SS_POOL_ALL) {
        out->offsets = ss_malloc((size_t)(done + 1) * sizeof(int64_t), err);
        if (!out->offsets ||
            read_small(f, "/offsets", path, H5T_NATIVE_INT64, out->offsets, (hsize_t)done + 1, err))
            goto out;
        for (int64_t i = 0; i <= done; i++)
            if (out->offsets[i] < (i ? out->offsets[i - 1] : 0) || (!i && out->offsets[0])) {
                ss_fail(err, "%s: /offsets[%lld] = %lld is not a token count after %lld", path,
                        (long long)i, (long long)out->offsets[i],
                        (long long)(i ? out->offsets[i - 1] : 0));
                goto out;
            }
        out->n_rows = out->offsets[done];
    }
    if ((hsize_t)out->n_rows > dims[0]) {
        ss_fail(err, "%s: /acts has %llu rows, n_done needs %lld", path,
                (unsigned long long)dims[0], (long long)out->n_rows);
        goto out;
    }
    out->acts = ss_malloc((size_t)(out->n_rows ? out->n_rows : 1) * dims[1] * dims[2] *
                              sizeof(float), err);
    if (!out->acts ||
        ss_h5_read_rows(acts, H5T_NATIVE_FLOAT, 0, (hsize_t)out->n_rows, out->acts, err))
        goto out;
    rc = 0;
out:
    if (acts >= 0)
        H5Dclose(acts);
    free(pool);
    free(site);
    H5Fclose(f);
    if (rc) {
        ss_h5_fail_in(err, path);
        ss_capture_data_free(out);
    }
    return rc;
}

int ss_capture_layer_norm(const char *path, int layer, int d_model, float *norm, ss_error *err)
{
    hid_t f;
    int64_t n, done, complete, dm;
    if (open_capture(path, 0, &f, &n, &done, &complete, err) < 0)
        return -1;
    int rc = -1;
    int32_t *lay = NULL;
    float *nrm = NULL;
    hid_t d = open_ds(f, "/layers", path, err);
    int rank;
    hsize_t dims[8];
    if (d < 0 || ss_h5_shape(d, &rank, dims, err) || ss_h5_attr_get_i64(f, "d_model", &dm, err))
        goto out;
    if (dm != d_model) {
        ss_fail(err, "%s: captured with d_model %lld, the steered model has %d", path,
                (long long)dm, d_model);
        goto out;
    }
    lay = ss_malloc(dims[0] * sizeof(int32_t), err);
    nrm = ss_malloc(dims[0] * sizeof(float), err);
    if (!lay || !nrm || read_small(f, "/layers", path, H5T_NATIVE_INT32, lay, dims[0], err) ||
        read_small(f, "/layer_norms", path, H5T_NATIVE_FLOAT, nrm, dims[0], err))
        goto out;
    for (hsize_t i = 0; i < dims[0]; i++)
        if (lay[i] == layer) {
            *norm = nrm[i];
            rc = 0;
        }
    if (rc)
        ss_fail(err, "%s: layer %d was not captured (capture it to use --normalize)", path,
                layer);
out:
    if (d >= 0)
        H5Dclose(d);
    free(lay);
    free(nrm);
    H5Fclose(f);
    return rc ? ss_h5_fail_in(err, path) : 0;
}
