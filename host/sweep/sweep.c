/* sweep.c - config-driven steering sweeps: data split, capture, vectors,
 * the cell grid run in packed batches, evaluation and resumable per-unit
 * records (see sweep.h); the records and results tables are in results.c,
 * the shard merge in merge.c. */
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

#include "sweep/sweep_internal.h"
#include "safesteer/util.h"
#include "safesteer/capture.h"
#include "safesteer/dataset.h"
#include "safesteer/eval.h"
#include "safesteer/generate.h"
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

/* ---------------------------------------------------------------- run */

typedef struct {
    const ss_sweep_config *c;
    ss_sweep_data data;
    ss_model *m, *jm;
    ss_tokenizer *tok, *jtok;
    ss_engine *e, *je;
    int family, jfamily;
    ss_judge judge;         /* kind SS_JUDGE_NONE: no LLM judge */
    char sha[65];
    int32_t **ids;          /* [n_cat][n_eval] encoded evaluation prompts */
    int *n_ids;             /* [n_cat][n_eval] */
    ss_vector_set *vsets;   /* [n_sites][n_methods] */
    ss_positions positions; /* where cells steer */
    cell *cells;
    int n_cells;
    const char *dir;
    int ctx, jctx;          /* positions per slot: steered model, separate judge (0: none) */
    int trace_tokens;       /* records carry token_ids and top2_gap */
    ss_progress progress;   /* generations of this run */
    long finished;
    ss_sweep_throughput tp; /* this invocation's work */
} sweep;

static int encode_fit(void *user, int i, int32_t **ids, int *n_ids, int *n_prompt, ss_error *err)
{
    sweep *s = user;
    if (ss_encode_prompt(s->m, s->tok, s->family, s->c->system, s->data.fit.text[i], ids, n_ids,
                         err) < 0)
        return -1;
    *n_prompt = *n_ids;
    return 0;
}

static int capture_and_vectors(sweep *s, int resume, ss_progress_sink progress, ss_error *err)
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
        ss_capture_opts_set_source(&o, s->m, s->tok, s->sha, s->family, c->unsafe.file);
        o.site = c->sites[si];
        o.n_layers = L;
        o.layers = layers;
        o.pool = c->pool;
        o.batch = c->batch;
        o.resume = resume;
        o.force = !resume;
        o.progress = progress;
        if (ss_capture_run(s->e, &src, &o, cap_path, NULL, err) < 0)
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
            vo.progress = progress;
            ss_vector_set *v = &s->vsets[si * c->n_methods + mi];
            if (ss_vectors_compute(&vo, v, err) < 0 || ss_vectors_write(vec_path, v, err) < 0)
                return -1;
            if (strlen(vec_path) >= sizeof v->path)
                return ss_fail(err, "%s: path too long (%zu bytes at most)", vec_path,
                               sizeof v->path - 1);
            memcpy(v->path, vec_path, strlen(vec_path) + 1);
        }
    }
    return 0;
}

/* The steering plan of a cell: its category's vector at its layer and
 * strength (an empty plan for the baseline). */
static int plan_of(sweep *s, const cell *cl, ss_steer_plan *plan, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    ss_steer_plan_init(plan, s->m->cfg.n_layers, s->m->cfg.d_model);
    plan->positions = s->positions;
    if (cl->layer < 0)
        return 0;
    int si = 0, mi = 0;
    while (c->sites[si] != cl->site)
        si++;
    while (c->methods[mi] != cl->method)
        mi++;
    float strength = (float)cl->strength;
    ss_steer_source src = {.vectors = &s->vsets[si * c->n_methods + mi],
                           .category = c->unsafe.categories[cl->cat], .site = cl->site,
                           .layers = &cl->layer, .n_layers = 1, .strengths = &strength,
                           .n_strengths = 1, .op = SS_STEER_ADD};
    return ss_steer_plan_add_vectors(plan, &src, err);
}

/* One generation's record line. */
/* --trace-tokens: the generated ids and, for each step, the gap between
 * the top two log-probabilities (scripts/device/compare_sweeps.py
 * tells a near-tie divergence between engines from a real one by it). */
static int add_token_trace(json_t *o, const ss_gen_result *g)
{
    json_t *ids = json_array(), *gaps = json_array();
    int bad = !ids || !gaps;
    for (int t = 0; !bad && t < g->n_ids; t++)
        bad = json_array_append_new(ids, json_integer(g->ids[t])) < 0;
    /* every step, the one that chose a stop token too */
    for (int t = 0; !bad && t < g->n_steps; t++) {
        double gap = g->top_logprobs[2 * t] - g->top_logprobs[2 * t + 1];
        bad = json_array_append_new(gaps, isfinite(gap) ? json_real(round(gap * 1e4) / 1e4)
                                                        : json_null()) < 0;
    }
    if (bad) {
        json_decref(ids);
        json_decref(gaps);
        return -1;
    }
    json_object_set_new(o, "token_ids", ids);
    json_object_set_new(o, "top2_gap", gaps);
    return 0;
}

static int write_record(FILE *f, sweep *s, const cell *cl, int cell_id, int j,
                        const ss_gen_result *g, int refused, const ss_judge_verdict *jv,
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
    json_object_set_new(o, "unsafe", jv->unsafe < 0 ? json_null() : json_boolean(jv->unsafe));
    json_object_set_new(o, "judge_output", jv->output ? json_string(jv->output) : json_null());
    json_object_set_new(o, "judge_contradiction",
                        jv->contradiction < 0 ? json_null() : json_boolean(jv->contradiction));
    json_object_set_new(o, "perplexity",
                        isnan(ppl) || !c->perplexity ? json_null() : json_real(ppl));
    json_object_set_new(o, "relevance", isnan(rel) ? json_null() : json_real(rel));
    double d1 = ss_eval_distinct(g->ids, g->n_ids, 1), d2 = ss_eval_distinct(g->ids, g->n_ids, 2);
    json_object_set_new(o, "distinct_1", isnan(d1) ? json_null() : json_real(d1));
    json_object_set_new(o, "distinct_2", isnan(d2) ? json_null() : json_real(d2));
    json_object_set_new(o, "n_tokens", json_integer(g->n_ids));
    json_object_set_new(o, "degenerate", json_boolean(ss_eval_degenerate(g->ids, g->n_ids)));
    if (s->trace_tokens && add_token_trace(o, g) < 0) {
        json_decref(o);
        return ss_fail(err, "out of memory");
    }
    int rc = json_dumpf(o, f, JSON_COMPACT | JSON_PRESERVE_ORDER) < 0 || fputc('\n', f) == EOF;
    json_decref(o);
    return rc ? ss_fail(err, "writing generations.jsonl failed") : 0;
}

/* Per-item arrays of one chunk (cell and prompt index each). */
typedef struct {
    const int32_t **ids;            /* [n] prompt tokens */
    int *n_ids;
    ss_steer_plan *plans;           /* [n] */
    const ss_steer_plan **plan_of;  /* [n] -> plans[i] */
    ss_gen_result *g;               /* [n] */
    const int32_t **resp;           /* [n] generated tokens */
    int *n_resp;
    const char **prompt_text, **resp_text; /* [n] for the judge */
    ss_judge_verdict *verdict;      /* [n] */
    double *ppl, *rel;              /* [n] */
} chunk_buf;

static int chunk_alloc(chunk_buf *b, int n, ss_error *err)
{
    memset(b, 0, sizeof *b);
    size_t k = (size_t)n;
    b->ids = ss_calloc(k, sizeof *b->ids, err);
    b->n_ids = ss_calloc(k, sizeof *b->n_ids, err);
    b->plans = ss_calloc(k, sizeof *b->plans, err);
    b->plan_of = ss_calloc(k, sizeof *b->plan_of, err);
    b->g = ss_calloc(k, sizeof *b->g, err);
    b->resp = ss_calloc(k, sizeof *b->resp, err);
    b->n_resp = ss_calloc(k, sizeof *b->n_resp, err);
    b->prompt_text = ss_calloc(k, sizeof *b->prompt_text, err);
    b->resp_text = ss_calloc(k, sizeof *b->resp_text, err);
    b->verdict = ss_calloc(k, sizeof *b->verdict, err);
    b->ppl = ss_calloc(k, sizeof *b->ppl, err);
    b->rel = ss_calloc(k, sizeof *b->rel, err);
    return b->ids && b->n_ids && b->plans && b->plan_of && b->g && b->resp && b->n_resp &&
                   b->prompt_text && b->resp_text && b->verdict && b->ppl && b->rel
               ? 0
               : -1;
}

static void chunk_free(chunk_buf *b, int n)
{
    for (int i = 0; i < n; i++) {
        if (b->plans)
            ss_steer_plan_free(&b->plans[i]);
        if (b->g)
            ss_gen_result_free(&b->g[i]);
        if (b->verdict)
            ss_judge_verdict_free(&b->verdict[i]);
    }
    free(b->ids), free(b->n_ids), free(b->plans), free(b->plan_of), free(b->g);
    free(b->resp), free(b->n_resp), free(b->prompt_text), free(b->resp_text);
    free(b->verdict), free(b->ppl), free(b->rel);
}

/* Generates and evaluates items [n] (cell and prompt index each) as one
 * batch, every item with its cell's plan, and appends their records to f. */
static int run_chunk(sweep *s, int n, const int *cell_ids, const int *js, FILE *f, ss_error *err)
{
    const ss_sweep_config *c = s->c;
    chunk_buf b;
    int rc = -1;
    if (chunk_alloc(&b, n, err) < 0)
        goto out;
    for (int i = 0; i < n; i++) {
        const cell *cl = &s->cells[cell_ids[i]];
        size_t k = (size_t)cl->cat * c->n_eval + js[i];
        b.ids[i] = s->ids[k];
        b.n_ids[i] = s->n_ids[k];
        b.prompt_text[i] = s->data.eval[cl->cat].text[js[i]];
        b.verdict[i].unsafe = b.verdict[i].contradiction = -1;
        if (plan_of(s, cl, &b.plans[i], err) < 0)
            goto out;
        b.plan_of[i] = &b.plans[i];
    }
    ss_gen_request req = {.n = n, .prompts = b.ids, .n_prompt = b.n_ids, .plans = b.plan_of,
                          .params = {.max_new = c->max_new,
                                     .logprobs_k = s->trace_tokens ? 2 : 0,
                                     .sampler = {.temperature = (float)c->temperature,
                                                 .top_p = (float)c->top_p, .seed = c->gen_seed}}};
    ss_gen_timing tm;
    double t0 = ss_seconds();
    if (ss_generate(s->e, s->tok, &req, b.g, &tm, err) < 0)
        goto out;
    double t1 = ss_seconds();
    for (int i = 0; i < n; i++) {
        b.resp[i] = b.g[i].ids;
        b.n_resp[i] = b.g[i].n_ids;
        b.resp_text[i] = b.g[i].text ? b.g[i].text : "";
        s->tp.prompt_tokens += b.n_ids[i];
        s->tp.generated_tokens += b.n_resp[i];
    }
    if (ss_eval_quality(s->e, n, b.ids, b.n_ids, b.resp, b.n_resp, c->relevance_layer, b.ppl,
                        b.rel, err) < 0)
        goto out;
    double t2 = ss_seconds();
    if (s->judge.kind != SS_JUDGE_NONE) {
        if (ss_eval_judge(&s->judge, n, b.prompt_text, b.resp_text, b.verdict, err) < 0)
            goto out;
        s->tp.judge_seconds += ss_seconds() - t2;
    }
    s->tp.generations += n;
    s->tp.generate_seconds += t1 - t0;
    s->tp.quality_seconds += t2 - t1;
    for (int i = 0; i < n; i++) {
        int refused = ss_eval_refused(b.resp_text[i], c->refusal_phrases, c->n_refusal_phrases);
        if (write_record(f, s, &s->cells[cell_ids[i]], cell_ids[i], js[i], &b.g[i], refused,
                         &b.verdict[i], b.ppl[i], b.rel[i], err) < 0)
            goto out;
    }
    rc = 0;
out:
    chunk_free(&b, n);
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
                if (ss_progress_update(&s->progress, s->finished, err) < 0)
                    goto out;
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
    /* the caller's, else the config's, else the default model */
    const char *model = o->model ? o->model : c->model ? c->model : ss_default_model_path();
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
    if (ss_model_sha256(model, s->sha, err) < 0)
        return -1;
    if (c->judge_kind != SS_JUDGE_NONE && strcmp(c->judge_model, "self")) {
        if (ss_model_load(c->judge_model, &s->jm, err) < 0 ||
            ss_tokenizer_load(s->jm, &s->jtok, err) < 0 ||
            ss_chat_family_for_model(s->jm, NULL, &s->jfamily, err) < 0)
            return ss_fail_context(err, "%s:%d: judges.llm.model", c->path, c->judge_model_line);
    }
    /* judge "self": the steered model, run unsteered (its engine is set later) */
    s->judge = (ss_judge){.kind = c->judge_kind, .model = s->jm ? s->jm : s->m,
                          .tok = s->jm ? s->jtok : s->tok,
                          .chat_family = s->jm ? s->jfamily : s->family,
                          .max_new = c->judge_max_new};
    return 0;
}

/* Encodes the evaluation prompts and sizes the contexts: the longest
 * prompt (fitting or evaluation) + max_new, or the judge's prompt when
 * the steered model judges itself. */
static int encode_prompts(sweep *s, ss_error *err)
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
    s->ctx = longest + c->max_new + 2;
    s->jctx = 0;
    if (c->judge_kind != SS_JUDGE_NONE) {
        int jctx;
        if (ss_eval_judge_context(&s->judge, longest, c->max_new, &jctx, err) < 0)
            return -1;
        if (s->jm)
            s->jctx = jctx;
        else if (jctx > s->ctx)
            s->ctx = jctx;
    }
    return 0;
}

static void engine_opts(const sweep *s, const ss_sweep_opts *o, int batch, int ctx,
                        ss_engine_opts *eo)
{
    ss_engine_opts_default(eo);
    eo->device = o->device >= 0 ? o->device : s->c->device;
    eo->threads = o->threads >= 0 ? o->threads : s->c->threads;
    eo->max_seqs = batch;
    eo->max_ctx = ctx;
}

/* Sequences per batch when the config gives none: on the CPU 16 (its
 * throughput stops growing well before); on a GPU as many as fit in 90% of
 * the free memory beside the weights (of the judge model too), at most
 * 256.  Never more than the sweep's generations. */
static int auto_batch(const sweep *s, const ss_sweep_opts *o, int *batch, ss_error *err)
{
    const int cpu_batch = 16, gpu_max = 256;
    long gens = (long)s->n_cells * s->c->n_eval;
    ss_engine_opts eo;
    engine_opts(s, o, 1, s->ctx, &eo);
    int b = cpu_batch;
    if (eo.device == SS_DEVICE_CUDA) {
        ss_engine_footprint f, jf = {0};
        if (ss_engine_footprint_of(s->m, &eo, &f, err) < 0)
            return -1;
        if (s->jm) {
            eo.max_ctx = s->jctx;
            if (ss_engine_footprint_of(s->jm, &eo, &jf, err) < 0)
                return -1;
        }
        double room = 0.9 * (double)f.device_free - (double)f.fixed - (double)jf.fixed;
        double fit = room / (double)(f.per_slot + jf.per_slot);
        if (fit < 1)
            return ss_fail(err, "generation.batch auto: not even one sequence of %d positions "
                                "fits: the model%s need%s %.2f GiB, the GPU has %.2f GiB free",
                           s->ctx, s->jm ? " and the judge" : "", s->jm ? "" : "s",
                           (double)(f.fixed + jf.fixed + f.per_slot + jf.per_slot) / (1 << 30),
                           (double)f.device_free / (1 << 30));
        b = fit > gpu_max ? gpu_max : (int)fit;
    }
    *batch = gens < b ? (int)(gens > 0 ? gens : 1) : b;
    return 0;
}

/* generation.batch: the config's; when it gives none, the one a resumed
 * folder was run with (so its units and resolved config stay the same),
 * else auto_batch.  Written into the config, so config.resolved.yaml and
 * everything after see the number. */
static int choose_batch(sweep *s, ss_sweep_config *c, const ss_sweep_opts *o, ss_error *err)
{
    if (c->batch > 0)
        return 0;
    char path[2048];
    join(path, sizeof path, o->out_dir, "config.resolved.yaml");
    if (o->resume && access(path, F_OK) == 0) {
        ss_sweep_config old;
        int rc = ss_config_load(path, &old, err);
        int b = old.batch;
        ss_config_free(&old);
        if (rc < 0)
            return -1;
        if (b > 0) {
            c->batch = b;
            s->tp.batch_auto = 1;
            return 0;
        }
    }
    s->tp.batch_auto = 1;
    return auto_batch(s, o, &c->batch, err);
}

static int open_engines(sweep *s, const ss_sweep_opts *o, ss_error *err)
{
    ss_engine_opts eo;
    engine_opts(s, o, s->c->batch, s->ctx, &eo);
    if (ss_engine_create(s->m, &eo, &s->e, err) < 0)
        return -1;
    if (s->jm) {
        eo.max_ctx = s->jctx;
        if (ss_engine_create(s->jm, &eo, &s->je, err) < 0)
            return -1;
    } else {
        s->je = s->e;
    }
    s->judge.engine = s->je;
    return 0;
}

/* throughput.json: this invocation's generations and where their time
 * went (a resumed run counts only what it ran). */
static int write_throughput(const char *dir, const ss_sweep_throughput *t, ss_error *err)
{
    char path[2048];
    join(path, sizeof path, dir, "throughput.json");
    json_t *j = json_pack(
        "{s:i, s:b, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "batch", t->batch,
        "batch_auto", t->batch_auto, "generations", (json_int_t)t->generations, "prompt_tokens",
        (json_int_t)t->prompt_tokens, "generated_tokens", (json_int_t)t->generated_tokens,
        "capture_seconds", t->capture_seconds, "generate_seconds", t->generate_seconds,
        "quality_seconds", t->quality_seconds, "judge_seconds", t->judge_seconds,
        "loop_seconds", t->loop_seconds, "generated_tokens_per_second",
        t->loop_seconds > 0 ? (double)t->generated_tokens / t->loop_seconds : 0.0);
    int rc = write_json(path, j, err);
    json_decref(j);
    return rc;
}

void ss_sweep_opts_default(ss_sweep_opts *o)
{
    memset(o, 0, sizeof *o);
    o->shard_n = 1;
    o->threads = -1;
    o->device = -1;
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
            return ss_fail_kind(err, SS_ERR_EXISTS, "%s already holds a run", dir);
        char *old;
        if (ss_read_file(path, &old, NULL, err) < 0)
            return -1;
        int same = !strcmp(old, resolved);
        free(old);
        if (!same)
            return ss_fail(err, "%s was run with a different configuration (%s); resuming "
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
    sweep s = {.c = c, .dir = o->out_dir, .trace_tokens = o->trace_tokens};
    char *resolved = NULL;
    uint8_t *done = NULL;
    int *unit_of = NULL, rc = -1;
    if (o->shard_n < 1 || o->shard_i < 0 || o->shard_i >= o->shard_n)
        return ss_fail(err, "shard %d/%d: need 0 <= i < N", o->shard_i, o->shard_n);
    if (ss_sweep_load_data(c, &s.data, err) < 0 || open_models(&s, o, c, err) < 0 ||
        make_cells(c, &s.cells, &s.n_cells, err) < 0 || encode_prompts(&s, err) < 0 ||
        choose_batch(&s, c, o, err) < 0 || !(resolved = resolved_text(c, err)) ||
        prepare_dir(o->out_dir, resolved, o, err) < 0 ||
        ss_positions_parse(c->positions, &s.positions, err) < 0)
        goto out;
    s.tp.batch = c->batch;
    char path[2048];
    join(path, sizeof path, o->out_dir, "run.json");
    json_t *info = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:b}", "model_name",
                             s.m->name, "model_path", s.m->path, "model_sha256", s.sha,
                             "n_cells", s.n_cells, "shard", o->shard_i, "shards", o->shard_n,
                             "batch", c->batch, "batch_auto", s.tp.batch_auto);
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
    double t_cap = ss_seconds();
    if (rr || open_engines(&s, o, err) < 0 ||
        capture_and_vectors(&s, o->resume, o->progress, err) < 0)
        goto out;
    s.tp.capture_seconds = ss_seconds() - t_cap;
    int n_units = make_units(s.n_cells, c->n_eval, c->batch, unit_of), expected = 0;
    long todo = 0;
    for (int i = 0; i < s.n_cells; i++)
        if (unit_of[i] % o->shard_n == o->shard_i) {
            expected++;
            todo += done[i] ? 0 : c->n_eval;
        }
    ss_progress_begin(&s.progress, &o->progress, "sweep", "generations", 0, todo, 0);
    double t_loop = ss_seconds();
    for (int u = 0, c0 = 0; u < n_units; u++) {
        int c1 = c0;
        while (c1 < s.n_cells && unit_of[c1] == u)
            c1++;
        if (u % o->shard_n == o->shard_i && !done[c0] && run_unit(&s, c0, c1, err) < 0)
            goto out;
        c0 = c1;
    }
    s.tp.loop_seconds = ss_seconds() - t_loop;
    if (o->throughput)
        *o->throughput = s.tp;
    if (write_throughput(o->out_dir, &s.tp, err) < 0)
        goto out;
    rc = finalize(o->out_dir, expected, err);
out:
    free(resolved);
    free(done);
    free(unit_of);
    sweep_free(&s);
    return rc;
}
