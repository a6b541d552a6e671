/* test_capture.c - capture files from a tiny in-memory model: pooling
 * consistency (mean of `all` == `mean`, `last` == last prompt row), batch
 * independence, f16 storage, overwrite/resume rules, layer norms and the
 * plans they normalise. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/util.h"
#include "safesteer/capture.h"
#include "safesteer/steer.h"
#include "safesteer/vectors.h"
#include "tiny_model.h"

#define N_ITEMS 9

static char tmpdir[256];
static ss_model *tm;
static const char *texts[N_ITEMS], *ids[N_ITEMS], *cats[N_ITEMS], *labels[N_ITEMS];
static const char *responses[N_ITEMS];
static char names[N_ITEMS][16];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ss_test_capture_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    tm = tiny_model_new(77);
    for (int i = 0; i < N_ITEMS; i++) {
        snprintf(names[i], sizeof names[i], "item-%d", i);
        texts[i] = ids[i] = names[i];
        cats[i] = i % 2 ? "a" : "b";
        labels[i] = i % 2 ? "unsafe" : "safe";
        responses[i] = "resp";
    }
}

static void teardown(void) { ss_model_free(tm); }

/* Item i: 3 + (i * 5) % 11 prompt tokens, then 4 response tokens. */
static int encode(void *user, int i, int32_t **out, int *n_ids, int *n_prompt, ss_error *err)
{
    int with_resp = *(int *)user;
    int np = 3 + (i * 5) % 11, n = np + (with_resp ? 4 : 0);
    int32_t *t = ss_malloc((size_t)n * sizeof(int32_t), err);
    if (!t)
        return -1;
    for (int k = 0; k < n; k++)
        t[k] = (int32_t)((i * 31 + k * 7) % 64);
    *out = t;
    *n_ids = n;
    *n_prompt = np;
    return 0;
}

static const int layers[] = {0, 2, 3};

static const char *run_capture(const char *name, int pool, int batch, int with_resp,
                               int mean_resp, int f16, int force)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    ss_engine_opts eo;
    ss_engine_opts_default(&eo);
    eo.threads = 1;
    eo.max_seqs = 4;
    eo.max_ctx = 64;
    ss_engine *e;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_engine_create(tm, &eo, &e, &err), 0, "%s", err.msg);
    ss_capture_source src = {.n = N_ITEMS, .text = texts, .id = ids, .category = cats,
                             .label = labels, .response = with_resp ? responses : NULL,
                             .encode = encode, .user = &with_resp};
    ss_capture_opts o;
    ss_capture_opts_default(&o);
    o.n_layers = 3;
    o.layers = layers;
    o.pool = pool;
    o.batch = batch;
    o.mean_response = mean_resp;
    o.f16 = f16;
    o.force = force;
    o.model_name = "tiny";
    o.model_sha256 = "0";
    int rc = ss_capture_run(e, &src, &o, path, NULL, &err);
    ss_engine_free(e);
    cr_assert_eq(rc, 0, "%s", err.msg);
    return path;
}

static void load(const char *path, ss_capture_data *d)
{
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_capture_load(path, 0, d, &err), 0, "%s", err.msg);
}

TestSuite(capture, .init = setup, .fini = teardown, .timeout = 120);

Test(capture, mean_of_all_equals_mean_and_last_is_last_row)
{
    ss_capture_data all, mean, last;
    load(run_capture("all.h5", SS_POOL_ALL, 4, 0, 0, 0, 0), &all);
    load(run_capture("mean.h5", SS_POOL_MEAN, 3, 0, 0, 0, 0), &mean);
    load(run_capture("last.h5", SS_POOL_LAST, 4, 0, 0, 0, 0), &last); /* same batching as all */
    int L = 3, d = tm->cfg.d_model;
    cr_assert_eq(all.n_done, N_ITEMS);
    cr_assert_eq(mean.n_rows, N_ITEMS);
    cr_assert_eq(all.offsets[0], 0);
    for (int i = 0; i < N_ITEMS; i++) {
        int64_t a = all.offsets[i], b = all.offsets[i + 1];
        cr_assert_eq(b - a, 3 + (i * 5) % 11);
        cr_assert_eq(mean.n_tokens[i], b - a);
        for (int li = 0; li < L; li++)
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int64_t r = a; r < b; r++)
                    s += all.acts[((size_t)r * L + li) * d + j];
                float m = mean.acts[((size_t)i * L + li) * d + j];
                cr_assert_leq(fabs(s / (double)(b - a) - m), 1e-5 * (1 + fabs(m)),
                              "item %d layer %d dim %d", i, li, j);
                /* last prompt token: exactly the last row of the all capture */
                cr_assert_eq(last.acts[((size_t)i * L + li) * d + j],
                             all.acts[((size_t)(b - 1) * L + li) * d + j]);
            }
    }
    /* layer norms: mean per-token L2 norm over the rows of the all capture */
    for (int li = 0; li < L; li++) {
        double s = 0;
        for (int64_t r = 0; r < all.n_rows; r++) {
            double nn = 0;
            for (int j = 0; j < d; j++) {
                double x = all.acts[((size_t)r * L + li) * d + j];
                nn += x * x;
            }
            s += sqrt(nn);
        }
        cr_assert_leq(fabs(s / (double)all.n_rows - all.layer_norms[li]),
                      1e-4 * all.layer_norms[li]);
        cr_assert_leq(fabs(mean.layer_norms[li] - all.layer_norms[li]),
                      1e-4 * all.layer_norms[li]);
    }
    ss_capture_data_free(&all);
    ss_capture_data_free(&mean);
    ss_capture_data_free(&last);
}

Test(capture, batch_size_does_not_change_results)
{
    ss_capture_data a, b;
    load(run_capture("b1.h5", SS_POOL_MEAN, 1, 0, 0, 0, 0), &a);
    load(run_capture("b4.h5", SS_POOL_MEAN, 4, 0, 0, 0, 0), &b);
    size_t n = (size_t)N_ITEMS * 3 * tm->cfg.d_model;
    for (size_t k = 0; k < n; k++)
        cr_assert_leq(fabs(a.acts[k] - b.acts[k]), 1e-4 * (1 + fabs(a.acts[k])), "index %zu", k);
    ss_capture_data_free(&a);
    ss_capture_data_free(&b);
}

Test(capture, response_scope_and_f16)
{
    ss_capture_data pr, full, half, fall;
    load(run_capture("pr.h5", SS_POOL_MEAN, 2, 1, 0, 0, 0), &pr);
    load(run_capture("full.h5", SS_POOL_MEAN, 2, 1, 1, 0, 0), &full);
    load(run_capture("half.h5", SS_POOL_MEAN, 2, 1, 1, 1, 0), &half);
    load(run_capture("fall.h5", SS_POOL_ALL, 2, 1, 1, 0, 0), &fall);
    ss_capture_data plain;
    load(run_capture("plain.h5", SS_POOL_MEAN, 2, 0, 0, 0, 0), &plain);
    size_t n = (size_t)N_ITEMS * 3 * tm->cfg.d_model;
    /* prompt-scope mean with a response appended == plain prompt mean (causal) */
    for (size_t k = 0; k < n; k++)
        cr_assert_leq(fabs(pr.acts[k] - plain.acts[k]), 1e-5 * (1 + fabs(plain.acts[k])));
    int differs = 0;
    for (size_t k = 0; k < n; k++) {
        differs |= full.acts[k] != pr.acts[k];
        cr_assert_leq(fabs(half.acts[k] - full.acts[k]), 1e-3 * (1 + fabs(full.acts[k])),
                      "f16 storage off at %zu", k);
    }
    cr_assert(differs, "prompt+response mean equals the prompt mean");
    for (int i = 0; i < N_ITEMS; i++)
        cr_assert_eq(fall.offsets[i + 1] - fall.offsets[i], 3 + (i * 5) % 11 + 4);
    ss_capture_data_free(&pr);
    ss_capture_data_free(&full);
    ss_capture_data_free(&half);
    ss_capture_data_free(&fall);
    ss_capture_data_free(&plain);
}

Test(capture, existing_outputs_need_force_or_resume)
{
    const char *p = run_capture("keep.h5", SS_POOL_MEAN, 2, 0, 0, 0, 0);
    char path[512];
    snprintf(path, sizeof path, "%s", p);
    ss_engine_opts eo;
    ss_engine_opts_default(&eo);
    eo.threads = 1;
    eo.max_seqs = 2;
    eo.max_ctx = 64;
    ss_engine *e;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_engine_create(tm, &eo, &e, &err), 0, "%s", err.msg);
    int with_resp = 0;
    ss_capture_source src = {.n = N_ITEMS, .text = texts, .id = ids, .category = cats,
                             .label = labels, .encode = encode, .user = &with_resp};
    ss_capture_opts o;
    ss_capture_opts_default(&o);
    o.n_layers = 3;
    o.layers = layers;
    o.batch = 2;
    o.model_sha256 = "0";
    cr_assert_eq(ss_capture_run(e, &src, &o, path, NULL, &err), -1);
    cr_assert(strstr(err.msg, "complete capture") && err.kind == SS_ERR_EXISTS, "%s", err.msg);
    o.resume = 1; /* complete and matching: nothing to do */
    ss_capture_outcome done;
    cr_assert_eq(ss_capture_run(e, &src, &o, path, &done, &err), 0, "%s", err.msg);
    cr_assert(done.was_complete && done.n_before == N_ITEMS);
    o.pool = SS_POOL_LAST; /* a different setting is refused */
    cr_assert_eq(ss_capture_run(e, &src, &o, path, NULL, &err), -1);
    cr_assert(strstr(err.msg, "pooling differs"), "%s", err.msg);
    o.pool = SS_POOL_MEAN;
    src.n = N_ITEMS - 1; /* different prompts too */
    cr_assert_eq(ss_capture_run(e, &src, &o, path, NULL, &err), -1);
    cr_assert(strstr(err.msg, "prompts_sha256"), "%s", err.msg);
    ss_engine_free(e);

    ss_capture_data d;
    cr_assert_eq(ss_capture_load("/nonexistent/x.h5", 0, &d, &err), -1);
    float norm;
    ss_capture_file *a;
    cr_assert_eq(ss_capture_open(path, &a, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_capture_layer_norm(a, 2, tm->cfg.d_model, &norm, &err), 0, "%s", err.msg);
    cr_assert_gt(norm, 0.0f);
    cr_assert_eq(ss_capture_layer_norm(a, 1, tm->cfg.d_model, &norm, &err), -1);
    cr_assert(strstr(err.msg, "layer 1 was not captured"), "%s", err.msg);
    ss_capture_close(a);
}

/* A plan normalised by a capture (--normalize): each added vector is its
 * unit direction times the strength and that layer's /layer_norms value,
 * every layer from one open of the capture; a layer it lacks is named. */
Test(capture, normalised_plan_scales_by_the_layer_norms)
{
    const char *path = run_capture("norms.h5", SS_POOL_MEAN, 2, 0, 0, 0, 0);
    int d = tm->cfg.d_model;
    float *vec = calloc((size_t)2 * d, sizeof(float));
    for (int j = 0; j < 2 * d; j++)
        vec[j] = (float)(j % 7) - 3.0f;
    const int32_t vlayers[2] = {2, 3};
    ss_vector_set v;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_vectors_from_array("crime", SS_SITE_RESID_POST, vlayers, 2, d, vec, &v, &err),
                 0, "%s", err.msg);
    ss_capture_data cap;
    load(path, &cap);
    ss_steer_plan p;
    ss_steer_plan_init(&p, tm->cfg.n_layers, d);
    const float strength = 2.5f;
    ss_steer_source s = {.vectors = &v, .site = -1, .strengths = &strength, .n_strengths = 1,
                         .op = SS_STEER_ADD, .normalize_acts = path};
    cr_assert_eq(ss_steer_plan_add_vectors(&p, &s, &err), 0, "%s", err.msg);
    cr_assert_eq(p.n_entries, 2);
    for (int e = 0; e < 2; e++) {
        const float *src = vec + (size_t)e * d, *got = p.entries[e].vector;
        double nn = 0;
        for (int j = 0; j < d; j++)
            nn += (double)src[j] * src[j];
        float norm = cap.layer_norms[e + 1]; /* captured layers {0, 2, 3} */
        cr_assert_eq(p.entries[e].layer, vlayers[e]);
        cr_assert_eq(p.entries[e].strength, strength);
        for (int j = 0; j < d; j++)
            cr_assert_float_eq(got[j], (float)(src[j] / sqrt(nn) * norm),
                               1e-6f * (1 + norm), "layer %d dim %d", vlayers[e], j);
    }
    ss_steer_plan_free(&p);
    const int32_t uncaptured = 1;
    ss_vector_set v1;
    cr_assert_eq(ss_vectors_from_array("crime", SS_SITE_RESID_POST, &uncaptured, 1, d, vec, &v1,
                                       &err), 0, "%s", err.msg);
    s.vectors = &v1;
    ss_steer_plan_init(&p, tm->cfg.n_layers, d);
    cr_assert_eq(ss_steer_plan_add_vectors(&p, &s, &err), -1);
    cr_assert(strstr(err.msg, "layer 1 was not captured"), "%s", err.msg);
    ss_steer_plan_free(&p);
    ss_vectors_free(&v1);
    ss_vectors_free(&v);
    ss_capture_data_free(&cap);
    free(vec);
}

Test(capture, layer_specs)
{
    int *l, n;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_layers_parse("3-5,1,4", 30, &l, &n, &err), 0, "%s", err.msg);
    cr_assert(n == 4 && l[0] == 1 && l[1] == 3 && l[3] == 5);
    free(l);
    cr_assert_eq(ss_layers_parse("all", 30, &l, &n, &err), 0);
    cr_assert_eq(n, 30);
    free(l);
    cr_assert_eq(ss_layers_parse("30", 30, &l, &n, &err), -1);
    cr_assert(strstr(err.msg, "0..29"), "%s", err.msg);
    cr_assert_eq(ss_layers_parse("5-2", 30, &l, &n, &err), -1);
    cr_assert_eq(ss_layers_parse("x", 30, &l, &n, &err), -1);
}

/* Reports a sink receives, for the progress test. */
typedef struct {
    int n;
    ss_progress_report last;
    char task[96];
    int stop_at;   /* ask to stop at this report (0: never) */
} recorder;

static int record(void *user, const ss_progress_report *r)
{
    recorder *rec = user;
    rec->n++;
    rec->last = *r;
    snprintf(rec->task, sizeof rec->task, "%s", r->task);
    return rec->stop_at && rec->n >= rec->stop_at;
}

/* The progress reporter: a loop over in well under a second reports only
 * its end, or nothing when asked to stay quiet for fast loops; a sink that
 * asks to stop ends the loop with SS_ERR_STOPPED. */
Test(progress, final_report_quiet_when_fast_and_stop)
{
    ss_error err = {.msg = ""};
    recorder rec = {0};
    ss_progress_sink sink = {record, &rec};
    ss_progress p;
    ss_progress_begin(&p, &sink, "fast", "items", 0, 3, 1);
    for (int i = 1; i <= 3; i++)
        cr_assert_eq(ss_progress_update(&p, i, &err), 0);
    cr_assert_eq(rec.n, 0, "a fast quiet loop reported %d times", rec.n);
    ss_progress_begin(&p, &sink, "resumed", "prompts", 2, 5, 0);
    for (int i = 3; i <= 5; i++)
        cr_assert_eq(ss_progress_update(&p, i, &err), 0);
    cr_assert_eq(rec.n, 1, "reports: %d", rec.n);
    cr_assert_str_eq(rec.task, "resumed");
    cr_assert_str_eq(rec.last.unit, "prompts");
    cr_assert(rec.last.done == 5 && rec.last.total == 5 && rec.last.final);
    cr_assert(rec.last.rate > 0 && rec.last.eta == 0);
    rec = (recorder){.stop_at = 1};
    ss_progress_begin(&p, &sink, "stopped", "prompts", 0, 2, 0);
    cr_assert_eq(ss_progress_update(&p, 1, &err), 0); /* within a second: not reported */
    cr_assert_eq(ss_progress_update(&p, 2, &err), -1);
    cr_assert_eq(err.kind, SS_ERR_STOPPED);
    cr_assert(strstr(err.msg, "stopped: stopped at 2 of 2 prompts"), "%s", err.msg);
}
