/* cluster.h - unsupervised view of captured activations: k-means++ (seeded,
 * with restarts, distances as GEMM), silhouette over a k range, and purity /
 * NMI / ARI against the labelled categories; per-cluster mean-diff vectors
 * against the safe pool.  CLUSTERS.h5 layout: docs/vectors.md. */
#ifndef SAFESTEER_CLUSTER_H
#define SAFESTEER_CLUSTER_H

#include <stdint.h>

#include "safesteer/util.h"

typedef enum { SS_METRIC_L2 = 0, SS_METRIC_COSINE = 1 } ss_metric;

const char *ss_metric_name(int metric);
int ss_metric_parse(const char *s, int *metric, ss_error *err);

typedef struct {
    int k, iterations;
    double inertia;       /* sum of squared distances to the assigned centroid */
    int32_t *assign;      /* [n] */
    float *centroids;     /* [k][d] */
} ss_kmeans;

/* k-means++ seeding and Lloyd iterations on x[n][d] (squared Euclidean; for
 * the cosine metric pass unit rows); the best of `restarts` runs by inertia.
 * The same seed gives the same result. */
int ss_kmeans_fit(const float *x, int64_t n, int d, int k, uint64_t seed, int restarts,
                  int max_iter, ss_kmeans *out, ss_error *err);
void ss_kmeans_free(ss_kmeans *km);

/* Mean silhouette of assign[n] (k clusters) with distance |a-b| (L2) or
 * 1 - cos(a, b) (COSINE), over at most max_samples points drawn with seed
 * (all points when n <= max_samples).  Singletons score 0.  NAN on failure. */
double ss_silhouette(const float *x, int64_t n, int d, const int32_t *assign, int k,
                     int metric, int64_t max_samples, uint64_t seed);

/* Agreement of clusters[n] (0..k-1) with classes[n] (0..m-1). */
double ss_purity(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n);
/* Mutual information over the arithmetic mean of the two entropies
 * (scikit-learn's default); 1 when both labelings are a single group. */
double ss_nmi(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n);
/* Adjusted Rand index (Hubert & Arabie); 1 when both are trivial alike. */
double ss_ari(const int32_t *clusters, int k, const int32_t *classes, int m, int64_t n);

typedef struct {
    const char *acts_path;
    int layer;                /* model layer */
    int k_min, k_max;         /* k range (equal for a single k) */
    int metric;               /* ss_metric */
    uint64_t seed;
    int restarts, max_iter;
    int64_t silhouette_samples;
    const char *safe_label;   /* prompts with this label are the safe pool, not clustered */
    int chunk_rows;
    ss_progress_sink progress; /* one report per k when the run is slow */
} ss_cluster_options;

void ss_cluster_options_init(ss_cluster_options *o);

/* What a clustering run found, for the caller to report. */
typedef struct {
    int n_k, best;            /* k values tried; index of the chosen one */
    int32_t *k_values;        /* [n_k] */
    float *silhouette, *inertia; /* [n_k] */
    int k;                    /* the chosen k */
    int64_t n_clustered, n_safe;
    int n_categories;         /* categories the clusters are scored against */
    double purity, nmi, ari;
    int64_t *sizes;           /* [k] */
    char **top_category;      /* [k] most frequent category of each cluster */
    int64_t *top_count;       /* [k] its prompts in the cluster */
} ss_cluster_summary;

/* Runs the clustering, writes CLUSTERS.h5 and fills *summary (free it with
 * ss_cluster_summary_free). */
int ss_cluster_run(const ss_cluster_options *o, const char *out_path,
                   ss_cluster_summary *summary, ss_error *err);
void ss_cluster_summary_free(ss_cluster_summary *s);

#endif
