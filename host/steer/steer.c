/* steer.c - steering plans: positions, entries, the plan builder over
 * vector sets, and compilation into engine slots. */
#include "safesteer/steer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/capture.h"
#include "safesteer/model.h"

/* ---------------------------------------------------------------- positions */

int ss_positions_parse(const char *s, ss_positions *p, ss_error *err)
{
    p->k = 0;
    if (!strcmp(s, "all"))
        p->rule = SS_POS_ALL;
    else if (!strcmp(s, "prompt"))
        p->rule = SS_POS_PROMPT;
    else if (!strcmp(s, "generated"))
        p->rule = SS_POS_GENERATED;
    else if (!strncmp(s, "from:", 5)) {
        char *end;
        errno = 0;
        long k = strtol(s + 5, &end, 10);
        if (!s[5] || *end || errno || k < 0 || k > 1 << 30)
            return ss_fail(err, "\"%s\": from:K needs K a token index >= 0", s);
        p->rule = SS_POS_FROM;
        p->k = (int)k;
    } else {
        return ss_fail(err, "unknown position rule \"%s\" (expected all, prompt, "
                            "generated or from:K)", s);
    }
    return 0;
}

void ss_positions_range(const ss_positions *p, int n_prompt, int *begin, int *end)
{
    switch (p->rule) {
    case SS_POS_PROMPT: *begin = 0, *end = n_prompt; break;
    case SS_POS_GENERATED: *begin = n_prompt, *end = -1; break;
    case SS_POS_FROM: *begin = p->k, *end = -1; break;
    default: *begin = 0, *end = -1; break;
    }
}

/* ---------------------------------------------------------------- plan */

void ss_steer_plan_init(ss_steer_plan *p, int n_layers, int d_model)
{
    memset(p, 0, sizeof *p);
    p->n_layers = n_layers;
    p->d_model = d_model;
    p->positions.rule = SS_POS_ALL;
}

void ss_steer_plan_free(ss_steer_plan *p)
{
    for (int i = 0; i < p->n_entries; i++)
        free(p->entries[i].vector);
    free(p->entries);
    p->entries = NULL;
    p->n_entries = 0;
}

int ss_steer_plan_add(ss_steer_plan *p, int site, int layer, int op, float strength,
                      const float *vector, ss_error *err)
{
    int d = p->d_model;
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "steering entry: site %d out of range", site);
    if (layer < 0 || layer >= p->n_layers)
        return ss_fail(err, "steering entry: layer %d out of range (model has layers 0..%d)",
                       layer, p->n_layers - 1);
    if (op != SS_STEER_ADD && op != SS_STEER_ABLATE)
        return ss_fail(err, "steering entry: op %d is neither add nor ablate", op);
    if (!isfinite(strength))
        return ss_fail(err, "steering entry (layer %d): strength %g is not finite", layer,
                       (double)strength);
    double nn = 0;
    for (int j = 0; j < d; j++) {
        if (!isfinite(vector[j]))
            return ss_fail(err, "steering entry (layer %d): vector has %g at index %d", layer,
                           (double)vector[j], j);
        nn += (double)vector[j] * vector[j];
    }
    if (op == SS_STEER_ABLATE && nn == 0)
        return ss_fail(err, "steering entry (layer %d): cannot ablate a zero vector", layer);
    ss_steer_entry *ne = realloc(p->entries, (size_t)(p->n_entries + 1) * sizeof *ne);
    if (!ne)
        return ss_fail(err, "out of memory adding a steering entry");
    p->entries = ne;
    float *v = ss_malloc((size_t)d * sizeof(float), err);
    if (!v)
        return -1;
    /* ablation projects out a unit direction: the engine requires |v| = 1 */
    double scale = op == SS_STEER_ABLATE ? 1.0 / sqrt(nn) : 1.0;
    for (int j = 0; j < d; j++)
        v[j] = (float)(vector[j] * scale);
    p->entries[p->n_entries++] = (ss_steer_entry){site, layer, op, strength, v};
    return 0;
}

void ss_steer_compiled_free(ss_steer_compiled *c)
{
    free(c->alpha);
    free(c->ops);
    free(c->vectors);
    c->alpha = c->vectors = NULL;
    c->ops = NULL;
}

/* Zeroed arrays for every (site, layer) pair, wired into out->slot. */
static int compiled_alloc(int n_layers, int d_model, ss_steer_compiled *out, ss_error *err)
{
    memset(out, 0, sizeof *out);
    size_t n = (size_t)SS_SITE_COUNT * n_layers;
    out->alpha = ss_calloc(n, sizeof(float), err);
    out->ops = out->alpha ? ss_calloc(n, 1, err) : NULL;
    out->vectors = out->ops ? ss_calloc(n * d_model, sizeof(float), err) : NULL;
    if (!out->vectors) {
        ss_steer_compiled_free(out);
        return -1;
    }
    out->slot.alpha = out->alpha;
    out->slot.ops = out->ops;
    out->slot.vectors = out->vectors;
    return 0;
}

int ss_steer_compile_site(int n_layers, int d_model, int site, int op, const float *alpha,
                          const float *vectors, int pos_begin, int pos_end,
                          ss_steer_compiled *out, ss_error *err)
{
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "steering: site %d out of range", site);
    if (compiled_alloc(n_layers, d_model, out, err) < 0)
        return -1;
    size_t at = (size_t)site * n_layers;
    memcpy(out->alpha + at, alpha, (size_t)n_layers * sizeof(float));
    memset(out->ops + at, op, (size_t)n_layers); /* the engine checks op */
    memcpy(out->vectors + at * d_model, vectors, (size_t)n_layers * d_model * sizeof(float));
    out->slot.pos_begin = pos_begin;
    out->slot.pos_end = pos_end;
    return 0;
}

int ss_steer_compile(const ss_steer_plan *p, int n_prompt, ss_steer_compiled *out,
                     ss_error *err)
{
    memset(out, 0, sizeof *out);
    int L = p->n_layers, d = p->d_model;
    size_t n = (size_t)SS_SITE_COUNT * L; /* (site, layer) pairs */
    if (p->n_entries == 0)
        return ss_fail(err, "steering plan has no entries");
    if (compiled_alloc(L, d, out, err) < 0)
        return -1;
    /* entries per (site, layer): how many, and the first two */
    int *count = ss_calloc(n, sizeof(int), err);
    int *two = count ? ss_malloc(2 * n * sizeof(int), err) : NULL;
    if (!two) {
        free(count);
        ss_steer_compiled_free(out);
        return -1;
    }
    for (int i = 0; i < p->n_entries; i++) {
        size_t at = (size_t)p->entries[i].site * L + p->entries[i].layer;
        if (count[at] < 2)
            two[2 * at + count[at]] = i;
        count[at]++;
    }
    int rc = 0;
    for (int i = 0; i < p->n_entries && !rc; i++) {
        const ss_steer_entry *e = &p->entries[i];
        size_t at = (size_t)e->site * L + e->layer;
        float *v = out->vectors + at * d;
        if (e->op == SS_STEER_ABLATE && count[at] > 1) {
            rc = ss_fail(err,
                         "steering plan entries %d and %d both steer %s at layer %d, and entry "
                         "%d ablates: an ablation must be the only entry at its site and layer",
                         two[2 * at], two[2 * at + 1], ss_site_name(e->site), e->layer, i);
        } else if (e->op == SS_STEER_ABLATE) {
            memcpy(v, e->vector, (size_t)d * sizeof(float));
            out->alpha[at] = e->strength != 0.0f ? 1.0f : 0.0f;
            out->ops[at] = SS_STEER_ABLATE;
        } else if (count[at] == 1) {
            /* keep alpha and v apart: the engine adds alpha * v exactly */
            memcpy(v, e->vector, (size_t)d * sizeof(float));
            out->alpha[at] = e->strength;
        } else {
            for (int j = 0; j < d; j++)
                v[j] += e->strength * e->vector[j];
            out->alpha[at] = 1.0f;
        }
    }
    free(count);
    free(two);
    if (rc) {
        ss_steer_compiled_free(out);
        return -1;
    }
    ss_positions_range(&p->positions, n_prompt, &out->slot.pos_begin, &out->slot.pos_end);
    return 0;
}

int ss_steer_apply(ss_engine *e, int slot, const ss_steer_plan *p, int n_prompt, ss_error *err)
{
    if (!p || p->n_entries == 0)
        return ss_engine_set_steering(e, slot, NULL, err);
    const ss_config *c = ss_engine_config(e);
    if (p->n_layers != c->n_layers || p->d_model != c->d_model)
        return ss_fail(err, "steering plan is for %d layers x %d, the engine's model has %d x %d",
                       p->n_layers, p->d_model, c->n_layers, c->d_model);
    ss_steer_compiled comp;
    if (ss_steer_compile(p, n_prompt, &comp, err) < 0)
        return -1;
    int rc = ss_engine_set_steering(e, slot, &comp.slot, err);
    ss_steer_compiled_free(&comp);
    return rc;
}

/* ---------------------------------------------------------------- plans from vector sets */

/* The layers a source steers: its own list, or every layer of the set that
 * the plan's model has.  *layers is malloc'd. */
static int source_layers(const ss_steer_plan *p, const ss_steer_source *s, int **layers, int *n,
                         ss_error *err)
{
    const ss_vector_set *v = s->vectors;
    int count = s->layers ? s->n_layers : v->n_layers;
    *n = 0;
    if (!(*layers = ss_malloc((size_t)(count > 0 ? count : 1) * sizeof(int), err)))
        return -1;
    for (int i = 0; i < count; i++) {
        int l = s->layers ? s->layers[i] : v->layers[i];
        if (l >= 0 && l < p->n_layers)
            (*layers)[(*n)++] = l;
        else if (s->layers)
            return ss_fail(err, "layer %d out of range (model has layers 0..%d)", l,
                           p->n_layers - 1);
    }
    if (*n == 0)
        return ss_fail(err, "%s: none of its layers exists in the model (%d layers)", v->path,
                       p->n_layers);
    return 0;
}

/* vec scaled to unit length times the mean activation norm that the capture
 * acts recorded at layer. */
static int normalize_to(const ss_capture_file *acts, const ss_vector_set *v, int layer,
                        float *vec, ss_error *err)
{
    int d = v->d_model;
    double nn = 0;
    for (int j = 0; j < d; j++)
        nn += (double)vec[j] * vec[j];
    if (nn == 0)
        return ss_fail(err, "%s: vector of layer %d is zero; cannot normalise", v->path, layer);
    float norm;
    if (ss_capture_layer_norm(acts, layer, d, &norm, err) < 0)
        return -1;
    for (int j = 0; j < d; j++)
        vec[j] = (float)(vec[j] / sqrt(nn) * norm);
    return 0;
}

int ss_steer_plan_add_vectors(ss_steer_plan *p, const ss_steer_source *s, ss_error *err)
{
    const ss_vector_set *v = s->vectors;
    int d = p->d_model, cat, n = 0, *layers = NULL, rc = -1;
    ss_capture_file *acts = NULL;
    if (v->d_model != d)
        return ss_fail(err, "%s: vectors have d_model %d, the model %d", v->path, v->d_model, d);
    if (s->op == SS_STEER_ABLATE && s->normalize_acts)
        return ss_fail(err, "%s: normalising scales added vectors; an ablation uses unit "
                            "directions", v->path);
    if (ss_vectors_category(v, s->category, &cat, err) < 0 ||
        source_layers(p, s, &layers, &n, err) < 0)
        goto out;
    if (s->strengths && s->n_strengths != 1 && s->n_strengths != n) {
        ss_fail(err, "strengths: %d values for %d layers (give one, or one per layer)",
                s->n_strengths, n);
        goto out;
    }
    /* the capture is opened once for all layers: opening reads its prompt tables */
    if (s->normalize_acts && ss_capture_open(s->normalize_acts, &acts, err) < 0)
        goto out;
    float *vec = ss_malloc((size_t)d * sizeof(float), err);
    if (!vec)
        goto out;
    rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int row = ss_vectors_layer_row(v, layers[i], err);
        float strength = !s->strengths ? 1.0f : s->strengths[s->n_strengths == 1 ? 0 : i];
        if (row < 0) {
            rc = -1;
            break;
        }
        memcpy(vec, ss_vectors_row(v, cat, row), (size_t)d * sizeof(float));
        rc = (acts && normalize_to(acts, v, layers[i], vec, err) < 0) ||
                     ss_steer_plan_add(p, s->site >= 0 ? s->site : v->site, layers[i], s->op,
                                       strength, vec, err) < 0
                 ? -1
                 : 0;
    }
    free(vec);
out:
    ss_capture_close(acts);
    free(layers);
    return rc;
}
