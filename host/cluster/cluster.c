/* cluster.c - k-means++ with GEMM distances, silhouette, purity / NMI / ARI,
 * and the `cluster` pipeline over one captured layer (docs/vectors.md). */
#include "safesteer/cluster.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/h5io.h"
#include "safesteer/util.h"
#include "safesteer/capture.h"

static const char *const metric_names[] = {"l2", "cosine"};

const char *ss_metric_name(int metric)
{
    return metric == SS_METRIC_COSINE ? metric_names[1] : metric_names[0];
}

int ss_metric_parse(const char *s, int *metric, ss_error *err)
{
    for (int m = 0; m < 2; m++)
        if (!strcmp(s, metric_names[m])) {
            *metric = m;
            return 0;
        }
    return ss_fail(err, "unknown metric \"%s\" (expected cosine or l2)", s);
}

void ss_kmeans_free(ss_kmeans *km)
{
    free(km->assign);
    free(km->centroids);
    memset(km, 0, sizeof *km);
}

/* dist[n][k] = |x_i|^2 - 2 x_i . c_j + |c_j|^2 (one GEMM), clamped at 0. */
static void sq_dists(const float *x, const float *xx, int64_t n, int d, const float *c, int k,
                     float *cc, float *dist)
{
    for (int j = 0; j < k; j++)
        cc[j] = cblas_sdot(d, c + (size_t)j * d, 1, c + (size_t)j * d, 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, k, d, -2.0f, x, d, c, d, 0.0f,
                dist, k);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < k; j++) {
            float v = dist[(size_t)i * k + j] + xx[i] + cc[j];
            dist[(size_t)i * k + j] = v > 0 ? v : 0;
        }
}

/* k-means++: first centre uniform, then each with probability ~ D^2. */
static void seed_pp(const float *x, const float *xx, int64_t n, int d, int k, uint64_t *rng,
                    float *c, float *cc, float *dist, double *dmin)
{
    int64_t first = (int64_t)(ss_splitmix64_unit(rng) * (double)n);
    memcpy(c, x + (size_t)first * d, (size_t)d * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        dmin[i] = DBL_MAX;
    for (int j = 1; j <= k; j++) {
        sq_dists(x, xx, n, d, c + (size_t)(j - 1) * d, 1, cc, dist);
        double total = 0;
        for (int64_t i = 0; i < n; i++) {
            if (dist[i] < dmin[i])
                dmin[i] = dist[i];
            total += dmin[i];
        }
        if (j == k)
            break;
        double r = ss_splitmix64_unit(rng) * total, acc = 0;
        int64_t pick = n - 1;
        for (int64_t i = 0; i < n; i++) {
            acc += dmin[i];
            if (acc > r && dmin[i] > 0) {
                pick = i;
                break;
            }
        }
        memcpy(c + (size_t)j * d, x + (size_t)pick * d, (size_t)d * sizeof(float));
    }
}

/* One seeded k-means run; returns inertia. */
static double lloyd(const float *x, const float *xx, int64_t n, int d, int k, int max_iter,
                    uint64_t *rng, float *c, int32_t *assign, int *iters, float *dist,
                    double *dmin, double *sum, int64_t *cnt, float *cc)
{
    seed_pp(x, xx, n, d, k, rng, c, cc, dist, dmin);
    for (int64_t i = 0; i < n; i++)
        assign[i] = -1;
    double inertia = 0;
    int it;
    for (it = 0; it < max_iter; it++) {
        sq_dists(x, xx, n, d, c, k, cc, dist);
        int64_t changed = 0;
        inertia = 0;
        for (int64_t i = 0; i < n; i++) {
            const float *di = dist + (size_t)i * k;
            int best = 0;
            for (int j = 1; j < k; j++)
                if (di[j] < di[best])
                    best = j;
            changed += assign[i] != best;
            assign[i] = best;
            dmin[i] = di[best];
            inertia += di[best];
        }
        if (!changed)
            break;
        memset(sum, 0, (size_t)k * d * sizeof(double));
        memset(cnt, 0, (size_t)k * sizeof(int64_t));
        for (int64_t i = 0; i < n; i++) {
            double *s = sum + (size_t)assign[i] * d;
            const float *xi = x + (size_t)i * d;
            for (int t = 0; t < d; t++)
                s[t] += xi[t];
            cnt[assign[i]]++;
        }
        for (int j = 0; j < k; j++) {
            if (cnt[j] == 0) {
                /* empty cluster: restart it at the point farthest from its centre */
                int64_t far = 0;
                for (int64_t i = 1; i < n; i++)
                    if (dmin[i] > dmin[far])
                        far = i;
                memcpy(c + (size_t)j * d, x + (size_t)far * d, (size_t)d * sizeof(float));
                dmin[far] = 0;
                continue;
            }
            for (int t = 0; t < d; t++)
                c[(size_t)j * d + t] = (float)(sum[(size_t)j * d + t] / (double)cnt[j]);
        }
    }
    *iters = it;
    return inertia;
}

int ss_kmeans_fit(const float *x, int64_t n, int d, int k, uint64_t seed, int restarts,
                  int max_iter, ss_kmeans *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    if (k < 1 || (int64_t)k > n)
        return ss_fail(err, "k-means: k = %d needs 1 <= k <= %lld points", k, (long long)n);
    if (restarts < 1 || max_iter < 1)
        return ss_fail(err, "k-means: restarts %d and max_iter %d must be >= 1", restarts,
                       max_iter);
    size_t N = (size_t)n, K = (size_t)k, D = (size_t)d;
    float *xx = ss_malloc(N * sizeof(float), err), *dist = ss_malloc(N * K * sizeof(float), err);
    float *c = ss_malloc(K * D * sizeof(float), err), *cc = ss_malloc(K * sizeof(float), err);
    double *dmin = ss_malloc(N * sizeof(double), err), *sum = ss_malloc(K * D * sizeof(double), err);
    int64_t *cnt = ss_malloc(K * sizeof(int64_t), err);
    int32_t *assign = ss_malloc(N * sizeof(int32_t), err);
    out->assign = ss_malloc(N * sizeof(int32_t), err);
    out->centroids = ss_malloc(K * D * sizeof(float), err);
    int rc = -1;
    if (!xx || !dist || !c || !cc || !dmin || !sum || !cnt || !assign || !out->assign ||
        !out->centroids)
        goto out;
    for (size_t i = 0; i < N; i++)
        xx[i] = cblas_sdot(d, x + i * D, 1, x + i * D, 1);
    uint64_t rng = seed;
    out->k = k;
    out->inertia = INFINITY;
    for (int r = 0; r < restarts; r++) {
        int iters;
        double in = lloyd(x, xx, n, d, k, max_iter, &rng, c, assign, &iters, dist, dmin, sum,
                          cnt, cc);
        if (in < out->inertia) {
            out->inertia = in;
            out->iterations = iters;
            memcpy(out->assign, assign, N * sizeof(int32_t));
            memcpy(out->centroids, c, K * D * sizeof(float));
        }
    }
    rc = 0;
out:
    free(xx), free(dist), free(c), free(cc), free(dmin), free(sum), free(cnt), free(assign);
    if (rc)
        ss_kmeans_free(out);
    return rc;
}

/* ---------------------------------------------------------------- silhouette */

double ss_silhouette(const float *x, int64_t n, int d, const int32_t *assign, int k,
                     int metric, int64_t max_samples, uint64_t seed)
{
    if (k < 2 || n < 2)
        return NAN;
    int64_t m = n <= max_samples ? n : max_samples;
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    float *s = malloc((size_t)m * d * sizeof *s), *nrm = malloc((size_t)m * sizeof *nrm);
    int32_t *lab = malloc((size_t)m * sizeof *lab);
    const int64_t B = 256;
    float *g = malloc((size_t)B * m * sizeof *g);
    double *csum = malloc((size_t)k * sizeof *csum);
    int64_t *csize = calloc((size_t)k, sizeof *csize);
    double total = NAN;
    if (!idx || !s || !nrm || !lab || !g || !csum || !csize)
        goto out;
    /* seeded partial Fisher-Yates picks the sample */
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    uint64_t rng = seed ^ 0x5115E77EULL;
    for (int64_t i = 0; i < m && m < n; i++) {
        int64_t j = i + (int64_t)(ss_splitmix64_unit(&rng) * (double)(n - i));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    for (int64_t i = 0; i < m; i++) {
        memcpy(s + (size_t)i * d, x + (size_t)idx[i] * d, (size_t)d * sizeof(float));
        lab[i] = assign[idx[i]];
        csize[lab[i]]++;
        nrm[i] = cblas_sdot(d, s + (size_t)i * d, 1, s + (size_t)i * d, 1);
    }
    total = 0;
    for (int64_t b0 = 0; b0 < m; b0 += B) {
        int64_t nb = m - b0 < B ? m - b0 : B;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)m, d, 1.0f,
                    s + (size_t)b0 * d, d, s, d, 0.0f, g, (int)m);
        for (int64_t i = 0; i < nb; i++) {
            int64_t a = b0 + i;
            memset(csum, 0, (size_t)k * sizeof *csum);
            for (int64_t j = 0; j < m; j++) {
                if (j == a)
                    continue;
                double dot = g[(size_t)i * m + j], dist;
                if (metric == SS_METRIC_COSINE) {
                    double den = sqrt((double)nrm[a] * nrm[j]);
                    dist = den > 0 ? 1 - dot / den : 1;
                } else {
                    double sq = (double)nrm[a] + nrm[j] - 2 * dot;
                    dist = sq > 0 ? sqrt(sq) : 0;
                }
                csum[lab[j]] += dist;
            }
            int own = lab[a];
            if (csize[own] < 2)
                continue; /* singleton: silhouette 0 */
            double in = csum[own] / (double)(csize[own] - 1), out_d = INFINITY;
            for (int c = 0; c < k; c++)
                if (c != own && csize[c] > 0 && csum[c] / (double)csize[c] < out_d)
                    out_d = csum[c] / (double)csize[c];
            double mx = in > out_d ? in : out_d;
            total += mx > 0 && isfinite(out_d) ? (out_d - in) / mx : 0;
        }
    }
    total /= (double)m;
out:
    free(idx), free(s), free(nrm), free(lab), free(g), free(csum), free(csize);
    return total;
}

/* ---------------------------------------------------------------- label agreement */

/* Contingency table t[k][m] with row sums a[k] and column sums b[m]. */
static int64_t *contingency(const int32_t *u, int k, const int32_t *v, int m, int64_t n,
                            int64_t **a, int64_t **b)
{
    int64_t *t = calloc((size_t)k * m + k + m, sizeof *t);
    if (!t)
        return NULL;
    *a = t + (size_t)k * m;
    *b = *a + k;
    for (int64_t i = 0; i < n; i++) {
        t[(size_t)u[i] * m + v[i]]++;
        (*a)[u[i]]++;
        (*b)[v[i]]++;
    }
    return t;
}

double ss_purity(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n)
{
    int64_t *a, *b, *t = contingency(clusters, k, classes, m, n, &a, &b), hit = 0;
    if (!t || n == 0) {
        free(t);
        return NAN;
    }
    for (int i = 0; i < k; i++) {
        int64_t best = 0;
        for (int j = 0; j < m; j++)
            if (t[(size_t)i * m + j] > best)
                best = t[(size_t)i * m + j];
        hit += best;
    }
    free(t);
    return (double)hit / (double)n;
}

static double entropy(const int64_t *c, int k, int64_t n)
{
    double h = 0;
    for (int i = 0; i < k; i++)
        if (c[i] > 0)
            h -= (double)c[i] / (double)n * log((double)c[i] / (double)n);
    return h;
}

double ss_nmi(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n)
{
    int64_t *a, *b, *t = contingency(clusters, k, classes, m, n, &a, &b);
    if (!t || n == 0) {
        free(t);
        return NAN;
    }
    double mi = 0;
    for (int i = 0; i < k; i++)
        for (int j = 0; j < m; j++) {
            double nij = (double)t[(size_t)i * m + j];
            if (nij > 0)
                mi += nij / (double)n * log((double)n * nij / ((double)a[i] * (double)b[j]));
        }
    double hu = entropy(a, k, n), hv = entropy(b, m, n);
    free(t);
    if (hu == 0 && hv == 0)
        return 1.0;
    return mi / (0.5 * (hu + hv));
}

static double comb2(double x) { return x * (x - 1) / 2; }

double ss_ari(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n)
{
    int64_t *a, *b, *t = contingency(clusters, k, classes, m, n, &a, &b);
    if (!t || n < 2) {
        free(t);
        return NAN;
    }
    double sij = 0, sa = 0, sb = 0;
    for (size_t i = 0; i < (size_t)k * m; i++)
        sij += comb2((double)t[i]);
    for (int i = 0; i < k; i++)
        sa += comb2((double)a[i]);
    for (int j = 0; j < m; j++)
        sb += comb2((double)b[j]);
    free(t);
    double expected = sa * sb / comb2((double)n), mx = 0.5 * (sa + sb);
    if (mx == expected)
        return 1.0;
    return (sij - expected) / (mx - expected);
}

/* ---------------------------------------------------------------- pipeline */

void ss_cluster_options_init(ss_cluster_options *o)
{
    memset(o, 0, sizeof *o);
    o->k_min = o->k_max = 0;
    o->metric = SS_METRIC_COSINE;
    o->restarts = 10;
    o->max_iter = 300;
    o->silhouette_samples = 5000;
    o->safe_label = "safe";
    o->chunk_rows = 256;
}

typedef struct {
    int64_t n;            /* clustered prompts */
    int d;
    float *raw;           /* [n][d] activations */
    float *x;             /* [n][d] what k-means sees (unit rows for cosine) */
    int64_t *prompt;      /* [n] prompt index in the file */
    int32_t *cls;         /* [n] category index */
    char **cls_names;     /* [m] (points into the file's strings) */
    int m;
    double *safe_mean;    /* [d] or NULL without safe prompts */
    int64_t n_safe;
} cl_data;

static void cl_data_free(cl_data *c)
{
    free(c->raw), free(c->x), free(c->prompt), free(c->cls), free(c->cls_names);
    free(c->safe_mean);
}

/* Reads the layer for every prompt: clustered ones kept, safe ones averaged. */
static int load_layer(const ss_cluster_options *o, ss_capture_file *a, int row, cl_data *c,
                      ss_error *err)
{
    const ss_capture_info *in = ss_capture_info_of(a);
    size_t d = (size_t)in->d_model, N = (size_t)in->n_prompts;
    c->d = in->d_model;
    for (size_t i = 0; i < N; i++)
        c->n += strcmp(in->labels[i], o->safe_label) != 0;
    c->n_safe = (int64_t)N - c->n;
    if (c->n < 2)
        return ss_fail(err, "%s: %lld prompts not labelled \"%s\"; nothing to cluster",
                       in->path, (long long)c->n, o->safe_label);
    c->raw = ss_malloc((size_t)c->n * d * sizeof(float), err);
    c->prompt = ss_malloc((size_t)c->n * sizeof(int64_t), err);
    c->cls = ss_malloc((size_t)c->n * sizeof(int32_t), err);
    c->cls_names = ss_calloc(N + 1, sizeof(char *), err);
    c->safe_mean = c->n_safe ? ss_calloc(d, sizeof(double), err) : NULL;
    float *buf = ss_malloc((size_t)o->chunk_rows * d * sizeof(float), err);
    int rc = -1;
    if (!c->raw || !c->prompt || !c->cls || !c->cls_names || (c->n_safe && !c->safe_mean) ||
        !buf)
        goto out;
    int64_t k = 0;
    for (int64_t p0 = 0; p0 < (int64_t)N; p0 += o->chunk_rows) {
        int64_t nb = (int64_t)N - p0 < o->chunk_rows ? (int64_t)N - p0 : o->chunk_rows;
        if (ss_capture_read(a, p0, nb, &row, 1, buf, err) < 0)
            goto out;
        for (int64_t i = 0; i < nb; i++) {
            const float *xi = buf + (size_t)i * d;
            int64_t p = p0 + i;
            if (!strcmp(in->labels[p], o->safe_label)) {
                for (size_t t = 0; t < d; t++)
                    c->safe_mean[t] += xi[t];
                continue;
            }
            memcpy(c->raw + (size_t)k * d, xi, d * sizeof(float));
            c->prompt[k] = p;
            int j;
            for (j = 0; j < c->m && strcmp(c->cls_names[j], in->categories[p]); j++)
                ;
            if (j == c->m)
                c->cls_names[c->m++] = in->categories[p];
            c->cls[k++] = j;
        }
    }
    for (size_t t = 0; t < d && c->n_safe; t++)
        c->safe_mean[t] /= (double)c->n_safe;
    rc = 0;
out:
    free(buf);
    return rc;
}

static int prepare_metric(const ss_cluster_options *o, const ss_capture_info *in, cl_data *c,
                          ss_error *err)
{
    size_t d = (size_t)c->d;
    c->x = ss_malloc((size_t)c->n * d * sizeof(float), err);
    if (!c->x)
        return -1;
    memcpy(c->x, c->raw, (size_t)c->n * d * sizeof(float));
    if (o->metric != SS_METRIC_COSINE)
        return 0;
    for (int64_t i = 0; i < c->n; i++) {
        float *xi = c->x + (size_t)i * d;
        float nn = cblas_snrm2((int)d, xi, 1);
        if (!(nn > 0))
            return ss_fail(err, "%s: prompt %lld (id %s) has a zero activation vector; the "
                                "cosine metric is undefined for it", in->path,
                           (long long)c->prompt[i], in->ids[c->prompt[i]]);
        cblas_sscal((int)d, 1.0f / nn, xi, 1);
    }
    return 0;
}

typedef struct {
    int nk;
    int32_t *ks;          /* [nk] */
    float *sil, *inertia; /* [nk] */
    int best;             /* index into ks */
    ss_kmeans km;         /* fit of the chosen k */
    double purity, nmi, ari;
    float *vectors;       /* [k][d] or NULL */
    int64_t *sizes;       /* [k] */
    int64_t *table;       /* [k][m] */
} cl_result;

static int write_clusters(const char *path, const ss_cluster_options *o,
                          const ss_capture_info *in, const cl_data *c, const cl_result *r,
                          ss_error *err)
{
    char sha[65];
    if (ss_sha256_file(in->path, sha, err) < 0)
        return -1;
    ss_outfile out;
    hid_t f = ss_h5_out_create(&out, path, err);
    if (f < 0)
        return -1;
    int K = r->km.k, N = (int)in->n_prompts;
    int32_t *assign = ss_malloc((size_t)(N ? N : 1) * sizeof(int32_t), err);
    int rc = assign ? 0 : -1;
    for (int i = 0; i < N && !rc; i++)
        assign[i] = -1;
    for (int64_t i = 0; i < c->n && !rc; i++)
        assign[c->prompt[i]] = r->km.assign[i];
    hsize_t dn = (hsize_t)N, dk[2] = {(hsize_t)K, (hsize_t)c->d}, dnk = (hsize_t)r->nk,
            dt[2] = {(hsize_t)K, (hsize_t)c->m}, dm = (hsize_t)c->m;
    hid_t st = ss_h5_vlen_str_type();
    hid_t cd = -1;
    if (!rc)
        rc = ss_h5_attr_set_str(f, "format", "safesteer.clusters", err) ||
             ss_h5_attr_set_i64(f, "format_version", 1, err) ||
             ss_h5_attr_set_str(f, "toolkit_version", SAFESTEER_VERSION, err) ||
             ss_h5_attr_set_str(f, "source_sha256", sha, err) ||
             ss_h5_attr_set_str(f, "model_name", in->model_name, err) ||
             ss_h5_attr_set_str(f, "model_sha256", in->model_sha256, err) ||
             ss_h5_attr_set_str(f, "site", in->site, err) ||
             ss_h5_attr_set_i64(f, "layer", o->layer, err) ||
             ss_h5_attr_set_i64(f, "d_model", c->d, err) ||
             ss_h5_attr_set_str(f, "metric", ss_metric_name(o->metric), err) ||
             ss_h5_attr_set_i64(f, "k", K, err) ||
             ss_h5_attr_set_i64(f, "seed", (int64_t)o->seed, err) ||
             ss_h5_attr_set_i64(f, "restarts", o->restarts, err) ||
             ss_h5_attr_set_str(f, "safe_label", o->safe_label, err) ||
             ss_h5_attr_set_i64(f, "n_clustered", c->n, err) ||
             ss_h5_attr_set_i64(f, "n_safe", c->n_safe, err) ||
             ss_h5_attr_set_f64(f, "inertia", r->km.inertia, err) ||
             ss_h5_attr_set_f64(f, "silhouette", r->sil[r->best], err) ||
             ss_h5_attr_set_f64(f, "purity", r->purity, err) ||
             ss_h5_attr_set_f64(f, "nmi", r->nmi, err) ||
             ss_h5_attr_set_f64(f, "ari", r->ari, err) ||
             ss_h5_write_all(f, "/assignments", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &dn, assign,
                             err) ||
             ss_h5_write_all(f, "/centroids", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dk,
                             r->km.centroids, err) ||
             ss_h5_write_all(f, "/k_values", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &dnk, r->ks,
                             err) ||
             ss_h5_write_all(f, "/silhouette", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &dnk,
                             r->sil, err) ||
             ss_h5_write_all(f, "/inertia", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1, &dnk,
                             r->inertia, err) ||
             ss_h5_write_all(f, "/cluster_sizes", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dk,
                             r->sizes, err) ||
             ss_h5_write_all(f, "/contingency", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, dt,
                             r->table, err)
                 ? -1
                 : 0;
    if (!rc && (cd = ss_h5_create(f, "/categories", st, 1, &dm, 0, dm ? dm : 1, err)) < 0)
        rc = -1;
    if (!rc)
        rc = ss_h5_write_strs(cd, 0, dm, (const char *const *)c->cls_names, err);
    if (!rc && r->vectors)
        rc = ss_h5_write_all(f, "/vectors", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dk, r->vectors,
                             err);
    if (cd >= 0)
        H5Dclose(cd);
    H5Tclose(st);
    free(assign);
    return ss_h5_out_close(&out, f, rc, err);
}

/* Sizes, contingency, label metrics and cluster-vs-safe-pool vectors. */
static int describe(const cl_data *c, cl_result *r, ss_error *err)
{
    int K = r->km.k;
    size_t d = (size_t)c->d;
    r->sizes = ss_calloc((size_t)K, sizeof(int64_t), err);
    r->table = ss_calloc((size_t)K * (c->m ? c->m : 1), sizeof(int64_t), err);
    if (!r->sizes || !r->table)
        return -1;
    for (int64_t i = 0; i < c->n; i++) {
        r->sizes[r->km.assign[i]]++;
        r->table[(size_t)r->km.assign[i] * c->m + c->cls[i]]++;
    }
    r->purity = ss_purity(r->km.assign, K, c->cls, c->m, c->n);
    r->nmi = ss_nmi(r->km.assign, K, c->cls, c->m, c->n);
    r->ari = ss_ari(r->km.assign, K, c->cls, c->m, c->n);
    if (!c->safe_mean)
        return 0;
    double *sum = ss_calloc((size_t)K * d, sizeof(double), err);
    r->vectors = ss_malloc((size_t)K * d * sizeof(float), err);
    if (!sum || !r->vectors) {
        free(sum);
        return -1;
    }
    for (int64_t i = 0; i < c->n; i++)
        for (size_t t = 0; t < d; t++)
            sum[(size_t)r->km.assign[i] * d + t] += c->raw[(size_t)i * d + t];
    for (int j = 0; j < K; j++)
        for (size_t t = 0; t < d; t++)
            r->vectors[(size_t)j * d + t] =
                r->sizes[j] ? (float)(c->safe_mean[t] - sum[(size_t)j * d + t] / (double)r->sizes[j])
                            : 0.0f;
    free(sum);
    return 0;
}

void ss_cluster_summary_free(ss_cluster_summary *s)
{
    for (int j = 0; s->top_category && j < s->k; j++)
        free(s->top_category[j]);
    free(s->k_values), free(s->silhouette), free(s->inertia), free(s->sizes);
    free(s->top_category), free(s->top_count);
    memset(s, 0, sizeof *s);
}

/* The caller's copy of what was found: every k tried, the chosen fit, and
 * each cluster's size and most frequent category. */
static int summarise(const cl_data *c, const cl_result *r, ss_cluster_summary *s, ss_error *err)
{
    int K = r->km.k;
    memset(s, 0, sizeof *s);
    s->n_k = r->nk;
    s->best = r->best;
    s->k = K;
    s->n_clustered = c->n;
    s->n_safe = c->n_safe;
    s->n_categories = c->m;
    s->purity = r->purity, s->nmi = r->nmi, s->ari = r->ari;
    s->k_values = ss_malloc((size_t)r->nk * sizeof(int32_t), err);
    s->silhouette = ss_malloc((size_t)r->nk * sizeof(float), err);
    s->inertia = ss_malloc((size_t)r->nk * sizeof(float), err);
    s->sizes = ss_malloc((size_t)K * sizeof(int64_t), err);
    s->top_category = ss_calloc((size_t)K, sizeof(char *), err);
    s->top_count = ss_malloc((size_t)K * sizeof(int64_t), err);
    if (!s->k_values || !s->silhouette || !s->inertia || !s->sizes || !s->top_category ||
        !s->top_count)
        return -1;
    memcpy(s->k_values, r->ks, (size_t)r->nk * sizeof(int32_t));
    memcpy(s->silhouette, r->sil, (size_t)r->nk * sizeof(float));
    memcpy(s->inertia, r->inertia, (size_t)r->nk * sizeof(float));
    memcpy(s->sizes, r->sizes, (size_t)K * sizeof(int64_t));
    for (int j = 0; j < K; j++) {
        int top = 0;
        for (int t = 1; t < c->m; t++)
            if (r->table[(size_t)j * c->m + t] > r->table[(size_t)j * c->m + top])
                top = t;
        s->top_count[j] = r->table[(size_t)j * c->m + top];
        if (!(s->top_category[j] = strdup(c->cls_names[top])))
            return ss_fail(err, "out of memory");
    }
    return 0;
}

int ss_cluster_run(const ss_cluster_options *o, const char *out_path, ss_cluster_summary *sum,
                   ss_error *err)
{
    memset(sum, 0, sizeof *sum);
    if (o->k_min < 2 || o->k_max < o->k_min)
        return ss_fail(err, "k range: need 2 <= k_min <= k_max, got %d..%d", o->k_min,
                       o->k_max);
    ss_capture_file *a;
    if (ss_capture_open(o->acts_path, &a, err) < 0)
        return -1;
    if (ss_capture_require_complete(a, err) < 0) {
        ss_capture_close(a);
        return -1;
    }
    const ss_capture_info *in = ss_capture_info_of(a);
    cl_data c;
    cl_result r;
    memset(&c, 0, sizeof c);
    memset(&r, 0, sizeof r);
    int rc = -1, row = ss_capture_layer_row(a, o->layer, err);
    if (row < 0 || load_layer(o, a, row, &c, err) < 0 || prepare_metric(o, in, &c, err) < 0)
        goto out;
    if (c.n < o->k_max) {
        ss_fail(err, "%s: k up to %d needs at least that many prompts; %lld are clustered",
                in->path, o->k_max, (long long)c.n);
        goto out;
    }
    r.nk = o->k_max - o->k_min + 1;
    r.ks = ss_malloc((size_t)r.nk * sizeof(int32_t), err);
    r.sil = ss_malloc((size_t)r.nk * sizeof(float), err);
    r.inertia = ss_malloc((size_t)r.nk * sizeof(float), err);
    if (!r.ks || !r.sil || !r.inertia)
        goto out;
    ss_progress prog;
    ss_progress_begin(&prog, &o->progress, "cluster", "k values", 0, r.nk, 1);
    for (int i = 0; i < r.nk; i++) {
        ss_kmeans km;
        r.ks[i] = o->k_min + i;
        if (ss_kmeans_fit(c.x, c.n, c.d, r.ks[i], o->seed, o->restarts, o->max_iter, &km,
                          err) < 0)
            goto out;
        r.inertia[i] = (float)km.inertia;
        r.sil[i] = (float)ss_silhouette(c.x, c.n, c.d, km.assign, km.k, o->metric,
                                        o->silhouette_samples, o->seed);
        if (i == 0 || r.sil[i] > r.sil[r.best]) {
            r.best = i;
            ss_kmeans_free(&r.km);
            r.km = km;
        } else {
            ss_kmeans_free(&km);
        }
        if (ss_progress_update(&prog, i + 1, err) < 0)
            goto out;
    }
    if (describe(&c, &r, err) < 0 || write_clusters(out_path, o, in, &c, &r, err) < 0 ||
        summarise(&c, &r, sum, err) < 0)
        goto out;
    rc = 0;
out:
    ss_kmeans_free(&r.km);
    free(r.ks), free(r.sil), free(r.inertia), free(r.vectors), free(r.sizes), free(r.table);
    cl_data_free(&c);
    ss_capture_close(a);
    return rc;
}
