/* test_cluster.c - purity / NMI / ARI / silhouette on hand-computed
 * examples, and k-means recovering labelled Gaussian blobs. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/cluster.h"

/* clusters {0,0,0,1,1,1} vs classes {0,0,1,1,1,1}: table [[2,1],[0,3]] */
static const int32_t U[6] = {0, 0, 0, 1, 1, 1};
static const int32_t V[6] = {0, 0, 1, 1, 1, 1};

Test(metrics, purity_hand_example)
{
    cr_assert_float_eq(ss_purity(U, 2, V, 2, 6), 5.0 / 6.0, 1e-12);
}

Test(metrics, ari_hand_example)
{
    /* sum C(n_ij,2) = 1 + 0 + 3 = 4; rows C(3,2)*2 = 6; cols C(2,2)+C(4,2) = 7;
     * expected 6*7/C(6,2) = 2.8; max (6+7)/2 = 6.5 */
    cr_assert_float_eq(ss_ari(U, 2, V, 2, 6), (4 - 2.8) / (6.5 - 2.8), 1e-12);
}

Test(metrics, nmi_hand_example)
{
    double mi = 2.0 / 6 * log(6.0 * 2 / (3 * 2)) + 1.0 / 6 * log(6.0 * 1 / (3 * 4)) +
                3.0 / 6 * log(6.0 * 3 / (3 * 4));
    double hu = log(2.0), hv = -(1.0 / 3 * log(1.0 / 3) + 2.0 / 3 * log(2.0 / 3));
    cr_assert_float_eq(ss_nmi(U, 2, V, 2, 6), mi / (0.5 * (hu + hv)), 1e-12);
}

Test(metrics, permuted_labels_agree_perfectly)
{
    int32_t a[6] = {0, 0, 1, 1, 2, 2}, b[6] = {2, 2, 0, 0, 1, 1};
    cr_assert_float_eq(ss_purity(a, 3, b, 3, 6), 1.0, 1e-12);
    cr_assert_float_eq(ss_nmi(a, 3, b, 3, 6), 1.0, 1e-12);
    cr_assert_float_eq(ss_ari(a, 3, b, 3, 6), 1.0, 1e-12);
    /* crossed labelings: sum C(n_ij,2) = 0, expected 2*2/6, max 2 */
    int32_t c[4] = {0, 0, 1, 1}, d[4] = {0, 1, 0, 1};
    cr_assert_float_eq(ss_ari(c, 2, d, 2, 4), (0 - 4.0 / 6) / (2 - 4.0 / 6), 1e-12);
    cr_assert_float_eq(ss_nmi(c, 2, d, 2, 4), 0.0, 1e-12);
}

Test(silhouette, l2_hand_example)
{
    /* 1-D points 0,1 | 4,5: s = 1 - 1/4.5 for the outer pair, 1 - 1/3.5 inner */
    float x[8] = {0, 0, 1, 0, 4, 0, 5, 0};
    int32_t a[4] = {0, 0, 1, 1};
    double want = 0.5 * ((1 - 1 / 4.5) + (1 - 1 / 3.5));
    cr_assert_float_eq(ss_silhouette(x, 4, 2, a, 2, SS_METRIC_L2, 100, 0), want, 1e-6);
}

Test(silhouette, cosine_hand_example)
{
    float x[8] = {1, 0, 1, 1, -1, 0, -1, -1};
    int32_t a[4] = {0, 0, 1, 1};
    double in = 1 - 1 / sqrt(2.0), out = (2 + 1 + 1 / sqrt(2.0)) / 2;
    cr_assert_float_eq(ss_silhouette(x, 4, 2, a, 2, SS_METRIC_COSINE, 100, 0), 1 - in / out,
                       1e-6);
}

Test(silhouette, singleton_scores_zero)
{
    float x[6] = {0, 1, 10};
    int32_t a[3] = {0, 0, 1};
    /* points 0 and 1: a = 1, b = 10 and 9; the singleton contributes 0 */
    double want = ((1 - 1 / 10.0) + (1 - 1 / 9.0)) / 3;
    cr_assert_float_eq(ss_silhouette(x, 3, 1, a, 2, SS_METRIC_L2, 100, 0), want, 1e-6);
}

/* Box-Muller normals from a fixed LCG, so the blobs are the same every run. */
static double normal(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    double u1 = ((*s >> 11) + 1.0) * 0x1.0p-53;
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    double u2 = (*s >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2);
}

enum { NB = 5, PER = 60, D = 16 };

static void blobs(float *x, int32_t *lab, uint64_t seed)
{
    double centre[NB][D];
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < D; t++)
            centre[b][t] = 4 * normal(&seed);
    for (int i = 0; i < NB * PER; i++) {
        int b = (i * 7) % NB; /* interleaved so clusters are not contiguous */
        lab[i] = b;
        for (int t = 0; t < D; t++)
            x[i * D + t] = (float)(centre[b][t] + normal(&seed));
    }
}

Test(kmeans, recovers_gaussian_blobs)
{
    static float x[NB * PER * D];
    static int32_t lab[NB * PER];
    blobs(x, lab, 42);
    ss_kmeans km;
    ss_error err;
    cr_assert_eq(ss_kmeans_fit(x, NB * PER, D, NB, 7, 5, 300, &km, &err), 0, "%s", err.msg);
    double ari = ss_ari(km.assign, NB, lab, NB, NB * PER);
    cr_assert_gt(ari, 0.95, "ARI %g", ari);
    cr_assert_float_eq(ss_purity(km.assign, NB, lab, NB, NB * PER), 1.0, 1e-12);
    /* silhouette prefers the true k over its neighbours */
    double s5 = ss_silhouette(x, NB * PER, D, km.assign, NB, SS_METRIC_L2, 1000, 1);
    ss_kmeans k3;
    cr_assert_eq(ss_kmeans_fit(x, NB * PER, D, 3, 7, 5, 300, &k3, &err), 0);
    cr_assert_gt(s5, ss_silhouette(x, NB * PER, D, k3.assign, 3, SS_METRIC_L2, 1000, 1));
    /* same seed, same answer */
    ss_kmeans again;
    cr_assert_eq(ss_kmeans_fit(x, NB * PER, D, NB, 7, 5, 300, &again, &err), 0);
    cr_assert_eq(memcmp(km.assign, again.assign, sizeof lab), 0);
    cr_assert_eq(memcmp(km.centroids, again.centroids, NB * D * sizeof(float)), 0);
    ss_kmeans_free(&km);
    ss_kmeans_free(&k3);
    ss_kmeans_free(&again);
}

Test(kmeans, rejects_bad_k)
{
    float x[4] = {0, 1, 2, 3};
    ss_kmeans km;
    ss_error err;
    cr_assert_eq(ss_kmeans_fit(x, 4, 1, 5, 0, 1, 10, &km, &err), -1);
    cr_assert(strstr(err.msg, "k = 5"), "%s", err.msg);
}

Test(metrics, metric_names)
{
    int m;
    ss_error err;
    cr_assert_eq(ss_metric_parse("cosine", &m, &err), 0);
    cr_assert_eq(m, SS_METRIC_COSINE);
    cr_assert_eq(ss_metric_parse("manhattan", &m, &err), -1);
    cr_assert(strstr(err.msg, "manhattan"));
}
