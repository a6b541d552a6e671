/* vectors.c - category steering vectors (mean-diff, pruned, pca) computed
 * by streaming a capture file in row blocks through the capture reader;
 * layout and pass counts in docs/vectors.md. */
#include "safesteer/vectors.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/capture.h"
#include "safesteer/engine.h"
#include "util/h5io.h"
#include "safesteer/util.h"

/* ================================================================ vectors */

static const char *const method_names[] = {"mean-diff", "pruned", "pca"};

const char *ss_vec_method_name(int method)
{
    return method >= 0 && method <= SS_VEC_PCA ? method_names[method] : "unknown";
}

int ss_vec_method_parse(const char *s, int *method, ss_error *err)
{
    for (int m = 0; m <= SS_VEC_PCA; m++)
        if (!strcmp(s, method_names[m])) {
            *method = m;
            return 0;
        }
    return ss_fail(err, "unknown method \"%s\" (expected mean-diff, pruned or pca)", s);
}

void ss_vec_options_init(ss_vec_options *o)
{
    memset(o, 0, sizeof *o);
    o->unsafe_label = "unsafe";
    o->safe_label = "safe";
    o->method = SS_VEC_MEAN_DIFF;
    o->pca_iters = 200;
    o->chunk_rows = 64;
}

/* One source file being streamed, with every prompt's role. */
typedef struct {
    ss_capture_file *a;
    int *rows;        /* [L] captured-layer rows of the selected layers */
    int64_t n;
    int8_t *held;     /* [n] 1 = held out */
    int *ucat;        /* [n] category of an unsafe prompt, -1 otherwise */
    int *cpool;       /* [n] category whose own safe pool holds the prompt, -1 otherwise */
    int8_t *global;   /* [n] member of the shared safe pool */
} vsrc;

/* Whole computation state; pool index C is the shared pool. */
typedef struct vctx {
    const ss_vec_options *o;
    int C, L, d;
    vsrc src[2];
    int n_src;
    int *pool_of;           /* [C] pool each category uses (c or C) */
    int64_t *nu, *np;       /* [C], [C+1] training counts */
    int64_t *nu_all, *np_all; /* same including held-out prompts */
    double *sum_u, *sum_p;  /* [C][L][d], [C+1][L][d] sums, then means */
    double *w;              /* [C][L][d] result in double */
    double *nrm;            /* [n][L] pruned: |mean_safe - a_i| of unsafe training prompts */
    double *med;            /* [C][L] median norms */
    double *kept_sum;       /* [C][L][d] */
    int64_t *kept;          /* [C][L] */
    double *pv, *pacc;      /* [C][L][d] power-iteration vector and accumulator */
    float *fw;              /* [C][L][d] float vectors for projections */
    float *proj;            /* [chunk][C] projection block */
    /* separability samples per category */
    float **sc;             /* [C] -> [cap][L] scores */
    int8_t **lab, **hld;    /* [C] -> [cap] */
    int64_t *fill;          /* [C] */
    ss_progress progress;   /* over all passes */
    int64_t progress_done;  /* prompts read so far, all passes */
    int n_passes, max_passes;
    void (*unsafe_row)(struct vctx *v, int c, int64_t i, size_t l, const float *xl);
} vctx;

typedef int (*block_fn)(vctx *v, vsrc *s, int64_t p0, int64_t nb, const float *x,
                        ss_error *err);

/* Progress over all passes: prompts read so far out of prompts times the
 * most passes the method can take (PCA may converge early). */
static void progress_begin(vctx *v)
{
    int64_t n = 0;
    for (int k = 0; k < v->n_src; k++)
        n += v->src[k].n;
    int method = v->o->method;
    v->max_passes = method == SS_VEC_PCA      ? v->o->pca_iters + 2
                    : method == SS_VEC_PRUNED ? 4
                                              : 2;
    ss_progress_begin(&v->progress, &v->o->progress, "vectors", "prompt reads", 0,
                      n * v->max_passes, 1);
}

/* Streams every source in blocks of chunk_rows prompts through fn, the
 * pass called `name` in progress lines. */
static int stream(vctx *v, block_fn fn, const char *name, ss_error *err)
{
    size_t L = (size_t)v->L, d = (size_t)v->d, chunk = (size_t)v->o->chunk_rows;
    float *x = ss_malloc(chunk * L * d * sizeof(float), err);
    if (!x)
        return -1;
    snprintf(v->progress.task, sizeof v->progress.task, "vectors: pass %d of at most %d (%s)",
             ++v->n_passes, v->max_passes, name);
    int rc = 0;
    for (int k = 0; k < v->n_src && !rc; k++) {
        vsrc *s = &v->src[k];
        for (int64_t p0 = 0; p0 < s->n && !rc; p0 += (int64_t)chunk) {
            int64_t nb = s->n - p0 < (int64_t)chunk ? s->n - p0 : (int64_t)chunk;
            rc = ss_capture_read(s->a, p0, nb, s->rows, v->L, x, err) < 0 ||
                 fn(v, s, p0, nb, x, err) < 0 ? -1 : 0;
            v->progress_done += nb;
            if (!rc)
                rc = ss_progress_update(&v->progress, v->progress_done, err);
        }
    }
    free(x);
    return rc;
}

static void add_row(double *dst, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++)
        dst[j] += x[j];
}

static int pass_means(vctx *v, vsrc *s, int64_t p0, int64_t nb, const float *x, ss_error *err)
{
    (void)err;
    size_t Ld = (size_t)v->L * v->d;
    for (int64_t k = 0; k < nb; k++) {
        int64_t i = p0 + k;
        if (s->held[i])
            continue;
        const float *xi = x + (size_t)k * Ld;
        if (s->ucat[i] >= 0)
            add_row(v->sum_u + (size_t)s->ucat[i] * Ld, xi, Ld);
        if (s->cpool[i] >= 0)
            add_row(v->sum_p + (size_t)s->cpool[i] * Ld, xi, Ld);
        if (s->global[i])
            add_row(v->sum_p + (size_t)v->C * Ld, xi, Ld);
    }
    return 0;
}

/* One layer row xl[d] of unsafe training prompt i (category c). */
typedef void (*unsafe_row_fn)(vctx *v, int c, int64_t i, size_t l, const float *xl);

/* The rows of a block's unsafe training prompts through v->unsafe_row (the
 * block function of the pruned and PCA passes). */
static int pass_unsafe_rows(vctx *v, vsrc *s, int64_t p0, int64_t nb, const float *x,
                            ss_error *err)
{
    (void)err;
    size_t L = (size_t)v->L, d = (size_t)v->d;
    for (int64_t k = 0; k < nb; k++) {
        int64_t i = p0 + k;
        int c = s->ucat[i];
        if (c < 0 || s->held[i])
            continue;
        for (size_t l = 0; l < L; l++)
            v->unsafe_row(v, c, i, l, x + ((size_t)k * L + l) * d);
    }
    return 0;
}

/* |mean_safe - a_i| at each layer (pruned, first pass). */
static void norm_row(vctx *v, int c, int64_t i, size_t l, const float *xl)
{
    size_t L = (size_t)v->L, d = (size_t)v->d;
    const double *m = v->sum_p + ((size_t)v->pool_of[c] * L + l) * d;
    double ss = 0;
    for (size_t j = 0; j < d; j++)
        ss += (m[j] - xl[j]) * (m[j] - xl[j]);
    v->nrm[(size_t)i * L + l] = sqrt(ss);
}

/* The differences whose norm is above the category's median (pruned,
 * second pass). */
static void kept_row(vctx *v, int c, int64_t i, size_t l, const float *xl)
{
    size_t L = (size_t)v->L, d = (size_t)v->d;
    if (!(v->nrm[(size_t)i * L + l] > v->med[(size_t)c * L + l]))
        return;
    const double *m = v->sum_p + ((size_t)v->pool_of[c] * L + l) * d;
    double *acc = v->kept_sum + ((size_t)c * L + l) * d;
    for (size_t j = 0; j < d; j++)
        acc[j] += m[j] - xl[j];
    v->kept[(size_t)c * L + l]++;
}

/* acc += ((x - mu) . v) (x - mu) over unsafe training prompts: the centred
 * differences mean_safe - a_i - (mean_safe - mean_unsafe) are mean_unsafe - a_i,
 * so their covariance is the unsafe activations' covariance. */
static void power_row(vctx *v, int c, int64_t i, size_t l, const float *xl)
{
    (void)i;
    size_t d = (size_t)v->d, o = ((size_t)c * v->L + l) * d;
    const double *mu = v->sum_u + o, *pv = v->pv + o;
    double t = 0;
    for (size_t j = 0; j < d; j++)
        t += (xl[j] - mu[j]) * pv[j];
    double *acc = v->pacc + o;
    for (size_t j = 0; j < d; j++)
        acc[j] += t * (xl[j] - mu[j]);
}

/* A pass over the unsafe training rows with fn. */
static int stream_unsafe(vctx *v, unsafe_row_fn fn, const char *name, ss_error *err)
{
    v->unsafe_row = fn;
    return stream(v, pass_unsafe_rows, name, err);
}

/* Appends one separability sample of category c. */
static void sep_push(vctx *v, int c, const float *proj_row_l, size_t stride, int8_t label,
                     int8_t held)
{
    int64_t f = v->fill[c]++;
    for (int l = 0; l < v->L; l++)
        v->sc[c][(size_t)f * v->L + l] = proj_row_l[(size_t)l * stride];
    v->lab[c][f] = label;
    v->hld[c][f] = held;
}

static int pass_project(vctx *v, vsrc *s, int64_t p0, int64_t nb, const float *x,
                        ss_error *err)
{
    (void)err;
    int C = v->C, L = v->L, d = v->d;
    /* proj[k][l][c] = x[k][l] . w[c][l], one GEMM per layer */
    for (int l = 0; l < L; l++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, C, d, 1.0f,
                    x + (size_t)l * d, L * d, v->fw + (size_t)l * d, L * d, 0.0f,
                    v->proj + (size_t)l * C, L * C);
    for (int64_t k = 0; k < nb; k++) {
        int64_t i = p0 + k;
        const float *pk = v->proj + (size_t)k * L * C;
        if (s->ucat[i] >= 0)
            sep_push(v, s->ucat[i], pk + s->ucat[i], (size_t)C, 0, s->held[i]);
        if (s->cpool[i] >= 0)
            sep_push(v, s->cpool[i], pk + s->cpool[i], (size_t)C, 1, s->held[i]);
        if (s->global[i])
            for (int c = 0; c < C; c++)
                if (v->pool_of[c] == C)
                    sep_push(v, c, pk + c, (size_t)C, 1, s->held[i]);
    }
    return 0;
}

typedef struct {
    float s;
    int8_t lab;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x > y) - (x < y);
}

double ss_vec_separability(const float *scores, const int8_t *labels, const int8_t *held,
                           int64_t n, float *threshold)
{
    int64_t nt = 0, n_safe = 0;
    for (int64_t i = 0; i < n; i++)
        nt += !held[i];
    if (nt == 0)
        return -1;
    scored *t = malloc((size_t)nt * sizeof *t);
    if (!t)
        return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (!held[i]) {
            t[k++] = (scored){scores[i], labels[i]};
            n_safe += labels[i] == 1;
        }
    qsort(t, (size_t)nt, sizeof *t, cmp_scored);
    /* threshold below everything: all predicted safe */
    int64_t correct = n_safe, best = n_safe;
    float thr = t[0].s - 1.0f;
    for (int64_t i = 0; i < nt; i++) {
        correct += t[i].lab == 1 ? -1 : 1; /* t[i] now predicted unsafe */
        if ((i + 1 == nt || t[i + 1].s > t[i].s) && correct > best) {
            best = correct;
            thr = i + 1 == nt ? t[i].s : 0.5f * (t[i].s + t[i + 1].s);
        }
    }
    free(t);
    int64_t nh = 0, ok = 0;
    for (int64_t i = 0; i < n; i++) {
        if (nt < n && !held[i])
            continue;
        nh++;
        ok += (scores[i] > thr) == (labels[i] == 1);
    }
    if (threshold)
        *threshold = thr;
    return (double)ok / (double)nh;
}

/* ---------------------------------------------------------------- setup */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int find_str(char **list, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], s))
            return i;
    return -1;
}

/* Picks the categories: the requested ones, or every category with unsafe
 * prompts (sorted); each needs unsafe prompts. */
static int choose_categories(const ss_vec_options *o, const ss_capture_info *in, char ***out,
                             int *n_out, ss_error *err)
{
    int cap = (int)in->n_prompts + 1, n = 0;
    char **all = ss_calloc((size_t)cap, sizeof(char *), err);
    if (!all)
        return -1;
    for (int64_t i = 0; i < in->n_prompts; i++)
        if (!strcmp(in->labels[i], o->unsafe_label) && find_str(all, n, in->categories[i]) < 0 &&
            !(o->safe_category && !strcmp(in->categories[i], o->safe_category)))
            all[n++] = in->categories[i];
    qsort(all, (size_t)n, sizeof *all, cmp_str);
    int nc = o->categories ? o->n_categories : n;
    char **cats = ss_calloc((size_t)nc + 1, sizeof(char *), err);
    int rc = cats ? 0 : -1;
    for (int c = 0; c < nc && !rc; c++) {
        const char *name = o->categories ? o->categories[c] : all[c];
        if (o->categories && find_str(all, n, name) < 0) {
            char list[512] = "";
            size_t q = 0;
            for (int k = 0; k < n && q < sizeof list; k++)
                q += (size_t)snprintf(list + q, sizeof list - q, "%s%s", k ? ", " : "", all[k]);
            rc = ss_fail(err, "%s: category \"%s\" has no prompts labelled \"%s\" in "
                              "/prompts/label (categories with such prompts: %s)", in->path,
                         name, o->unsafe_label, n ? list : "none");
        } else if (find_str(cats, c, name) >= 0) {
            rc = ss_fail(err, "categories: \"%s\" is listed twice", name);
        } else if (!(cats[c] = strdup(name))) {
            rc = ss_fail(err, "out of memory");
        }
    }
    if (!rc && nc == 0)
        rc = ss_fail(err, "%s: no prompts labelled \"%s\" in /prompts/label", in->path,
                     o->unsafe_label);
    free(all);
    if (rc) {
        ss_h5_free_strs(cats, (hsize_t)nc);
        return -1;
    }
    *out = cats;
    *n_out = nc;
    return 0;
}

static int src_init(vctx *v, vsrc *s, ss_capture_file *a, int file_no, const int32_t *layers,
                    ss_error *err)
{
    const ss_capture_info *in = ss_capture_info_of(a);
    s->a = a;
    s->n = in->n_prompts;
    size_t n = (size_t)(s->n ? s->n : 1);
    s->rows = ss_malloc((size_t)v->L * sizeof(int), err);
    s->held = ss_calloc(n, 1, err);
    s->ucat = ss_malloc(n * sizeof(int), err);
    s->cpool = ss_malloc(n * sizeof(int), err);
    s->global = ss_calloc(n, 1, err);
    if (!s->rows || !s->held || !s->ucat || !s->cpool || !s->global)
        return -1;
    if (in->d_model != v->d)
        return ss_fail(err, "%s: d_model is %d but %s has %d", in->path, in->d_model,
                       v->src[0].a ? ss_capture_info_of(v->src[0].a)->path : "?", v->d);
    for (int l = 0; l < v->L; l++)
        if ((s->rows[l] = ss_capture_layer_row(a, layers[l], err)) < 0)
            return -1;
    for (int64_t i = 0; i < s->n; i++) {
        s->held[i] = v->o->holdout > 0 &&
                     ss_mix64_unit(v->o->seed * 0x9E3779B97F4A7C15ULL + (uint64_t)file_no * 0xD1B54A32D192ED03ULL +
                            (uint64_t)i) < v->o->holdout;
        s->ucat[i] = s->cpool[i] = -1;
    }
    return 0;
}

static void src_free(vsrc *s)
{
    free(s->rows);
    free(s->held);
    free(s->ucat);
    free(s->cpool);
    free(s->global);
    ss_capture_close(s->a);
    memset(s, 0, sizeof *s);
}

/* Roles of every prompt and each category's safe pool (docs/vectors.md). */
static int assign_roles(vctx *v, ss_vector_set *r, ss_error *err)
{
    const ss_vec_options *o = v->o;
    vsrc *s = &v->src[0];
    const ss_capture_info *in = ss_capture_info_of(s->a);
    int C = v->C;
    for (int64_t i = 0; i < s->n; i++) {
        int c = find_str(r->categories, C, in->categories[i]);
        if (c >= 0 && !strcmp(in->labels[i], o->unsafe_label))
            s->ucat[i] = c;
        else if (c >= 0 && !strcmp(in->labels[i], o->safe_label))
            s->cpool[i] = c;
    }
    char desc[1100];
    if (o->safe_acts_path) {
        for (int64_t i = 0; i < v->src[1].n; i++)
            v->src[1].global[i] = 1;
        snprintf(desc, sizeof desc, "file:%s", o->safe_acts_path);
    } else if (o->safe_category) {
        int64_t m = 0;
        for (int64_t i = 0; i < s->n; i++)
            m += s->global[i] = !strcmp(in->categories[i], o->safe_category);
        if (m == 0)
            return ss_fail(err, "%s: safe category \"%s\" matches no /prompts/category",
                           in->path, o->safe_category);
        snprintf(desc, sizeof desc, "category:%s", o->safe_category);
    } else {
        for (int64_t i = 0; i < s->n; i++)
            s->global[i] = !strcmp(in->labels[i], o->safe_label);
        snprintf(desc, sizeof desc, "label:%s", o->safe_label);
    }
    /* per-category safe data wins unless a pool was named explicitly */
    int64_t *own = ss_calloc((size_t)C, sizeof(int64_t), err);
    if (!own)
        return -1;
    for (int64_t i = 0; i < s->n; i++)
        if (s->cpool[i] >= 0)
            own[s->cpool[i]]++;
    int explicit_pool = o->safe_acts_path || o->safe_category;
    for (int c = 0; c < C; c++) {
        v->pool_of[c] = !explicit_pool && own[c] > 0 ? c : C;
        char buf[1200];
        if (v->pool_of[c] == c)
            snprintf(buf, sizeof buf, "category:%s label:%s", r->categories[c], o->safe_label);
        else
            snprintf(buf, sizeof buf, "%s", desc);
        if (!(r->safe_pool[c] = strdup(buf))) {
            free(own);
            return ss_fail(err, "out of memory");
        }
    }
    free(own);
    /* a category's own safe prompts only count when it uses its own pool */
    for (int64_t i = 0; i < s->n; i++)
        if (s->cpool[i] >= 0 && v->pool_of[s->cpool[i]] != s->cpool[i])
            s->cpool[i] = -1;
    for (int k = 0; k < v->n_src; k++)
        for (int64_t i = 0; i < v->src[k].n; i++) {
            vsrc *t = &v->src[k];
            if (t->ucat[i] >= 0)
                (t->held[i] ? v->nu_all : v->nu)[t->ucat[i]]++;
            if (t->cpool[i] >= 0)
                (t->held[i] ? v->np_all : v->np)[t->cpool[i]]++;
            if (t->global[i])
                (t->held[i] ? v->np_all : v->np)[C]++;
        }
    for (int c = 0; c < C; c++) {
        v->nu_all[c] += v->nu[c];
        if (v->nu[c] == 0)
            return ss_fail(err, "%s: category \"%s\" has no training prompts labelled \"%s\" "
                                "(%lld held out by holdout %g)", in->path, r->categories[c],
                           o->unsafe_label, (long long)v->nu_all[c], o->holdout);
        if (v->np[v->pool_of[c]] == 0)
            return ss_fail(err, "%s: the safe pool of category \"%s\" (%s) has no training "
                                "prompts", in->path, r->categories[c], r->safe_pool[c]);
    }
    for (int p = 0; p <= C; p++)
        v->np_all[p] += v->np[p];
    return 0;
}

/* ---------------------------------------------------------------- methods */

static int run_pruned(vctx *v, ss_vector_set *r, ss_error *err)
{
    size_t C = (size_t)v->C, L = (size_t)v->L, d = (size_t)v->d, n = (size_t)v->src[0].n;
    vsrc *s = &v->src[0];
    v->nrm = ss_malloc((n ? n : 1) * L * sizeof(double), err);
    v->med = ss_malloc(C * L * sizeof(double), err);
    v->kept_sum = ss_calloc(C * L * d, sizeof(double), err);
    v->kept = ss_calloc(C * L, sizeof(int64_t), err);
    double *tmp = ss_malloc((n ? n : 1) * sizeof(double), err);
    int rc = -1;
    if (!v->nrm || !v->med || !v->kept_sum || !v->kept || !tmp)
        goto out;
    if (stream_unsafe(v, norm_row, "norms", err) < 0)
        goto out;
    for (size_t c = 0; c < C; c++)
        for (size_t l = 0; l < L; l++) {
            int64_t m = 0;
            for (size_t i = 0; i < n; i++)
                if (s->ucat[i] == (int)c && !s->held[i])
                    tmp[m++] = v->nrm[i * L + l];
            v->med[c * L + l] = ss_median(tmp, m);
        }
    if (stream_unsafe(v, kept_row, "kept", err) < 0)
        goto out;
    r->passes += 2;
    r->counts_kept = ss_malloc(C * L * sizeof(int64_t), err);
    if (!r->counts_kept)
        goto out;
    for (size_t c = 0; c < C; c++)
        for (size_t l = 0; l < L; l++) {
            int64_t k = v->kept[c * L + l];
            r->counts_kept[c * L + l] = k;
            if (k == 0) {
                ss_fail(err, "category \"%s\" layer %d: pruning keeps none of its %lld unsafe "
                             "training prompts (no difference norm is above the median; "
                             "need at least 2 distinct samples)", r->categories[c],
                        r->layers[l], (long long)v->nu[c]);
                goto out;
            }
            for (size_t j = 0; j < d; j++)
                v->w[(c * L + l) * d + j] = v->kept_sum[(c * L + l) * d + j] / (double)k;
        }
    rc = 0;
out:
    free(tmp);
    return rc;
}

static double dot_d(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t j = 0; j < n; j++)
        s += a[j] * b[j];
    return s;
}

static int run_pca(vctx *v, ss_vector_set *r, ss_error *err)
{
    size_t C = (size_t)v->C, L = (size_t)v->L, d = (size_t)v->d;
    v->pv = ss_malloc(C * L * d * sizeof(double), err);
    v->pacc = ss_malloc(C * L * d * sizeof(double), err);
    if (!v->pv || !v->pacc)
        return -1;
    for (size_t c = 0; c < C; c++)
        if (v->nu[c] < 2)
            return ss_fail(err, "category \"%s\": pca needs at least 2 unsafe training "
                                "prompts, it has %lld", r->categories[c], (long long)v->nu[c]);
    /* fixed pseudo-random start, the same for every (category, layer) */
    for (size_t j = 0; j < d; j++)
        v->pv[j] = ss_mix64_unit(0x5AFE57EE5ULL + j) - 0.5;
    double n0 = sqrt(dot_d(v->pv, v->pv, d));
    for (size_t j = 0; j < d; j++)
        v->pv[j] /= n0;
    for (size_t k = 1; k < C * L; k++)
        memcpy(v->pv + k * d, v->pv, d * sizeof(double));
    int it;
    double worst = 1;
    for (it = 0; it < v->o->pca_iters; it++) {
        memset(v->pacc, 0, C * L * d * sizeof(double));
        if (stream_unsafe(v, power_row, "power iteration", err) < 0)
            return -1;
        r->passes++;
        worst = 0;
        for (size_t k = 0; k < C * L; k++) {
            double *acc = v->pacc + k * d, *pv = v->pv + k * d;
            double nn = sqrt(dot_d(acc, acc, d));
            if (!(nn > 0))
                return ss_fail(err, "category \"%s\" layer %d: the unsafe activations have no "
                                    "variance, pca is undefined", r->categories[k / L],
                               r->layers[k % L]);
            double c = 0;
            for (size_t j = 0; j < d; j++)
                c += acc[j] / nn * pv[j];
            for (size_t j = 0; j < d; j++)
                pv[j] = acc[j] / nn;
            if (1 - fabs(c) > worst)
                worst = 1 - fabs(c);
        }
        if (worst < 1e-12) {
            it++;
            break;
        }
    }
    r->pca_iterations = it;
    r->pca_residual = worst;
    for (size_t k = 0; k < C * L; k++) {
        double *w = v->w + k * d, *pv = v->pv + k * d;
        double md = sqrt(dot_d(w, w, d)), sign = dot_d(pv, w, d) < 0 ? -1 : 1;
        for (size_t j = 0; j < d; j++)
            w[j] = sign * md * pv[j];
    }
    return 0;
}

static int run_separability(vctx *v, ss_vector_set *r, ss_error *err)
{
    size_t C = (size_t)v->C, L = (size_t)v->L;
    v->sc = ss_calloc(C, sizeof(float *), err);
    v->lab = ss_calloc(C, sizeof(int8_t *), err);
    v->hld = ss_calloc(C, sizeof(int8_t *), err);
    v->fill = ss_calloc(C, sizeof(int64_t), err);
    v->proj = ss_malloc((size_t)v->o->chunk_rows * L * C * sizeof(float), err);
    r->separability = ss_malloc(C * L * sizeof(float), err);
    if (!v->sc || !v->lab || !v->hld || !v->fill || !v->proj || !r->separability)
        return -1;
    for (size_t c = 0; c < C; c++) {
        size_t cap = (size_t)(v->nu_all[c] + v->np_all[v->pool_of[c]]);
        v->sc[c] = ss_malloc(cap * L * sizeof(float), err);
        v->lab[c] = ss_malloc(cap, err);
        v->hld[c] = ss_malloc(cap, err);
        if (!v->sc[c] || !v->lab[c] || !v->hld[c])
            return -1;
    }
    if (stream(v, pass_project, "separability", err) < 0)
        return -1;
    r->passes++;
    int64_t maxfill = 1;
    for (size_t c = 0; c < C; c++)
        if (v->fill[c] > maxfill)
            maxfill = v->fill[c];
    float *col = ss_malloc((size_t)maxfill * sizeof(float), err);
    if (!col)
        return -1;
    for (size_t c = 0; c < C; c++)
        for (size_t l = 0; l < L; l++) {
            for (int64_t i = 0; i < v->fill[c]; i++)
                col[i] = v->sc[c][(size_t)i * L + l];
            r->separability[c * L + l] =
                (float)ss_vec_separability(col, v->lab[c], v->hld[c], v->fill[c], NULL);
        }
    free(col);
    return 0;
}

/* ---------------------------------------------------------------- driver */

static void vctx_free(vctx *v)
{
    for (int k = 0; k < 2; k++)
        src_free(&v->src[k]);
    for (int c = 0; c < v->C; c++) {
        if (v->sc)
            free(v->sc[c]);
        if (v->lab)
            free(v->lab[c]);
        if (v->hld)
            free(v->hld[c]);
    }
    free(v->sc), free(v->lab), free(v->hld), free(v->fill), free(v->proj);
    free(v->pool_of), free(v->nu), free(v->np), free(v->nu_all), free(v->np_all);
    free(v->sum_u), free(v->sum_p), free(v->w), free(v->nrm), free(v->med);
    free(v->kept_sum), free(v->kept), free(v->pv), free(v->pacc), free(v->fw);
}

static int open_sources(vctx *v, const ss_vec_options *o, ss_vector_set *r, ss_error *err)
{
    ss_capture_file *a;
    if (ss_capture_open(o->acts_path, &a, err) < 0)
        return -1;
    v->src[0].a = a;
    if (ss_capture_require_complete(a, err) < 0)
        return -1;
    const ss_capture_info *in = ss_capture_info_of(a);
    v->n_src = 1;
    v->d = in->d_model;
    v->L = o->layers ? o->n_layers : in->n_layers;
    if (v->L < 1)
        return ss_fail(err, "layers: none selected");
    if (!(r->layers = ss_malloc((size_t)v->L * sizeof(int32_t), err)))
        return -1;
    for (int l = 0; l < v->L; l++) {
        r->layers[l] = o->layers ? o->layers[l] : in->layers[l];
        for (int k = 0; k < l; k++)
            if (r->layers[k] == r->layers[l])
                return ss_fail(err, "layers: layer %d is listed twice", r->layers[l]);
    }
    if (src_init(v, &v->src[0], a, 0, r->layers, err) < 0)
        return -1;
    if (o->safe_acts_path) {
        if (ss_capture_open(o->safe_acts_path, &a, err) < 0)
            return -1;
        v->src[1].a = a;
        v->n_src = 2;
        if (ss_capture_require_complete(a, err) < 0)
            return -1;
        const ss_capture_info *sn = ss_capture_info_of(a);
        if (strcmp(sn->site, in->site))
            return ss_fail(err, "%s: site is \"%s\" but %s has \"%s\"", sn->path, sn->site,
                           in->path, in->site);
        if (strcmp(sn->model_sha256, in->model_sha256))
            return ss_fail(err, "%s: model_sha256 is %s but %s has %s (captures of different "
                                "models)", sn->path, sn->model_sha256, in->path,
                           in->model_sha256);
        if (src_init(v, &v->src[1], a, 1, r->layers, err) < 0)
            return -1;
    }
    if (ss_site_parse(in->site, &r->site, err) < 0)
        return ss_fail_context(err, "%s: attribute site", in->path);
    snprintf(r->pooling, sizeof r->pooling, "%s", in->pooling);
    snprintf(r->model_name, sizeof r->model_name, "%s", in->model_name);
    snprintf(r->model_sha256, sizeof r->model_sha256, "%s", in->model_sha256);
    if (ss_sha256_file(o->acts_path, r->source_sha256, err) < 0)
        return -1;
    if (o->safe_acts_path && ss_sha256_file(o->safe_acts_path, r->safe_source_sha256, err) < 0)
        return -1;
    return 0;
}

static int check_options(const ss_vec_options *o, ss_error *err)
{
    if (!o->acts_path)
        return ss_fail(err, "no capture file (acts_path) given");
    if (!(o->holdout >= 0 && o->holdout < 1))
        return ss_fail(err, "holdout %g is outside [0, 1)", o->holdout);
    if (o->chunk_rows < 1)
        return ss_fail(err, "chunk_rows %d must be >= 1", o->chunk_rows);
    if (o->method < 0 || o->method > SS_VEC_PCA)
        return ss_fail(err, "method %d is not a method", o->method);
    if (o->safe_acts_path && o->safe_category)
        return ss_fail(err, "safe_acts_path and safe_category both name the safe pool; give one");
    if (o->safe_category && o->categories)
        for (int c = 0; c < o->n_categories; c++)
            if (!strcmp(o->categories[c], o->safe_category))
                return ss_fail(err, "categories: \"%s\" is also the safe category",
                               o->safe_category);
    return 0;
}

int ss_vectors_compute(const ss_vec_options *o, ss_vector_set *r, ss_error *err)
{
    memset(r, 0, sizeof *r);
    vctx v;
    memset(&v, 0, sizeof v);
    v.o = o;
    if (check_options(o, err) < 0 || open_sources(&v, o, r, err) < 0)
        goto fail;
    const ss_capture_info *in = ss_capture_info_of(v.src[0].a);
    if (choose_categories(o, in, &r->categories, &r->n_categories, err) < 0)
        goto fail;
    v.C = r->n_categories;
    size_t C = (size_t)v.C, L = (size_t)v.L, d = (size_t)v.d, Ld = L * d;
    r->n_layers = v.L;
    r->d_model = v.d;
    r->safe_pool = ss_calloc(C, sizeof(char *), err);
    v.pool_of = ss_malloc(C * sizeof(int), err);
    v.nu = ss_calloc(C, sizeof(int64_t), err);
    v.nu_all = ss_calloc(C, sizeof(int64_t), err);
    v.np = ss_calloc(C + 1, sizeof(int64_t), err);
    v.np_all = ss_calloc(C + 1, sizeof(int64_t), err);
    v.sum_u = ss_calloc(C * Ld, sizeof(double), err);
    v.sum_p = ss_calloc((C + 1) * Ld, sizeof(double), err);
    v.w = ss_malloc(C * Ld * sizeof(double), err);
    if (!r->safe_pool || !v.pool_of || !v.nu || !v.nu_all || !v.np || !v.np_all || !v.sum_u ||
        !v.sum_p || !v.w || assign_roles(&v, r, err) < 0)
        goto fail;
    progress_begin(&v);
    if (stream(&v, pass_means, "means", err) < 0)
        goto fail;
    r->passes = 1;
    for (size_t c = 0; c < C; c++)
        for (size_t j = 0; j < Ld; j++)
            v.sum_u[c * Ld + j] /= (double)v.nu[c];
    for (size_t p = 0; p <= C; p++)
        for (size_t j = 0; j < Ld && v.np[p]; j++)
            v.sum_p[p * Ld + j] /= (double)v.np[p];
    for (size_t c = 0; c < C; c++)
        for (size_t j = 0; j < Ld; j++)
            v.w[c * Ld + j] = v.sum_p[(size_t)v.pool_of[c] * Ld + j] - v.sum_u[c * Ld + j];
    if ((o->method == SS_VEC_PRUNED && run_pruned(&v, r, err) < 0) ||
        (o->method == SS_VEC_PCA && run_pca(&v, r, err) < 0))
        goto fail;
    r->vectors = ss_malloc(C * Ld * sizeof(float), err);
    v.fw = r->vectors;
    if (!r->vectors)
        goto fail;
    for (size_t j = 0; j < C * Ld; j++)
        r->vectors[j] = (float)v.w[j];
    if (run_separability(&v, r, err) < 0 || ss_vectors_fill_stats(r, err) < 0)
        goto fail;
    r->counts_unsafe = ss_malloc(C * sizeof(int64_t), err);
    r->counts_safe = ss_malloc(C * sizeof(int64_t), err);
    r->n_prompts = v.src[0].n;
    r->n_safe_prompts = v.n_src > 1 ? v.src[1].n : 0;
    r->split = ss_malloc((size_t)(r->n_prompts ? r->n_prompts : 1), err);
    if (v.n_src > 1)
        r->safe_split = ss_malloc((size_t)(r->n_safe_prompts ? r->n_safe_prompts : 1), err);
    if (!r->counts_unsafe || !r->counts_safe || !r->split || (v.n_src > 1 && !r->safe_split))
        goto fail;
    for (size_t c = 0; c < C; c++) {
        r->counts_unsafe[c] = v.nu[c];
        r->counts_safe[c] = v.np[v.pool_of[c]];
    }
    memcpy(r->split, v.src[0].held, (size_t)r->n_prompts);
    if (v.n_src > 1)
        memcpy(r->safe_split, v.src[1].held, (size_t)r->n_safe_prompts);
    snprintf(r->method, sizeof r->method, "%s", ss_vec_method_name(o->method));
    snprintf(r->unsafe_label, sizeof r->unsafe_label, "%s", o->unsafe_label);
    snprintf(r->safe_label, sizeof r->safe_label, "%s", o->safe_label);
    r->holdout = o->holdout;
    r->seed = o->seed;
    v.fw = NULL;
    vctx_free(&v);
    return 0;
fail:
    v.fw = NULL;
    vctx_free(&v);
    ss_vectors_free(r);
    return -1;
}
