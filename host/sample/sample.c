/* sample.c - next-token choice from logits: greedy, temperature, top-p.
 *
 * Sampling is seeded and reproducible: the same seed, logits and params
 * always give the same token (splitmix64 stream, no global state). */
#define _GNU_SOURCE /* qsort_r */
#include "safesteer/sample.h"

#include <math.h>
#include <stdlib.h>

int ss_sampler_init(ss_sampler *s, const ss_sampler_params *p, int vocab, ss_error *err)
{
    if (!(p->temperature >= 0.0f))
        return ss_fail(err, "temperature must be >= 0 (got %g)", (double)p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ss_fail(err, "top-p must be in (0, 1] (got %g)", (double)p->top_p);
    s->p = *p;
    s->rng = p->seed;
    s->vocab = vocab;
    s->scratch = ss_malloc(sizeof(float) * (size_t)vocab, err);
    s->order = ss_malloc(sizeof(int) * (size_t)vocab, err);
    if (!s->scratch || !s->order) {
        ss_sampler_free(s);
        return -1;
    }
    return 0;
}

void ss_sampler_free(ss_sampler *s)
{
    free(s->scratch);
    free(s->order);
    s->scratch = NULL;
    s->order = NULL;
}

int ss_argmax(const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

void ss_log_softmax(const float *logits, float *out, int n)
{
    float mx = logits[ss_argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((double)(logits[i] - mx));
    float lse = mx + (float)log(sum);
    for (int i = 0; i < n; i++)
        out[i] = logits[i] - lse;
}

/* Orders indices by descending value; ties by ascending index (stable). */
static int cmp_desc(const void *a, const void *b, void *vals)
{
    int ia = *(const int *)a, ib = *(const int *)b;
    float va = ((const float *)vals)[ia], vb = ((const float *)vals)[ib];
    if (va != vb)
        return va > vb ? -1 : 1;
    return ia - ib;
}

void ss_top_k(const float *v, int n, int k, int *ids, float *vals)
{
    /* Insertion into a sorted list of k: vocabularies are ~50k-128k and k is
     * small, so this beats sorting the whole vector. */
    int filled = 0;
    for (int i = 0; i < n; i++) {
        if (filled == k && !(v[i] > vals[k - 1]))
            continue;
        int j = filled < k ? filled++ : k - 1;
        while (j > 0 && v[i] > vals[j - 1]) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = i;
        vals[j] = v[i];
    }
}

int ss_sample(ss_sampler *s, const float *logits)
{
    int n = s->vocab;
    if (s->p.temperature == 0.0f)
        return ss_argmax(logits, n);

    float mx = logits[ss_argmax(logits, n)];
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        s->scratch[i] = expf((logits[i] - mx) / s->p.temperature);
        sum += s->scratch[i];
    }
    int n_keep = n;
    if (s->p.top_p < 1.0f) {
        /* Smallest prefix of the sorted distribution whose mass reaches top_p. */
        for (int i = 0; i < n; i++)
            s->order[i] = i;
        qsort_r(s->order, (size_t)n, sizeof(int), cmp_desc, s->scratch);
        double acc = 0.0, target = s->p.top_p * sum;
        n_keep = 0;
        while (n_keep < n) {
            acc += s->scratch[s->order[n_keep++]];
            if (acc >= target)
                break;
        }
        sum = acc;
    }
    double r = ss_splitmix64_unit(&s->rng) * sum, acc = 0.0;
    for (int i = 0; i < n_keep; i++) {
        int id = s->p.top_p < 1.0f ? s->order[i] : i;
        acc += s->scratch[id];
        if (r < acc)
            return id;
    }
    return s->p.top_p < 1.0f ? s->order[n_keep - 1] : ss_argmax(logits, n);
}
