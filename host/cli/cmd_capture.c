/* cmd_capture.c - `safesteer capture`: activations of a prompt set to HDF5. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/capture.h"
#include "safesteer/dataset.h"
#include "safesteer/engine.h"
#include "safesteer/model.h"
#include "safesteer/util.h"
#include "safesteer/tokenizer.h"

#define MAX_CATEGORIES 64

static const char *const usage_text =
    "usage: safesteer capture [--model M] --data FILE --out ACTS.h5 [options]\n"
    "  --model M            GGUF file or Hugging Face folder (default: %s)\n"
    "  --data FILE          prompt set (.jsonl or .csv)\n"
    "  --field K=NAME,...   field names: prompt, id, category, label, response\n"
    "  --category C         keep only this category (repeatable)\n"
    "  --limit N            keep at most N prompts (after filter, shuffle, offset)\n"
    "  --offset K           skip the first K prompts\n"
    "  --shuffle-seed S     shuffle deterministically with seed S first\n"
    "  --layers SPEC        10,14,20 | 0-29 | all (default all)\n"
    "  --site S             resid_post | attn_out | mlp_out (default resid_post)\n"
    "  --pool P             mean | last | all | gen_mean (default mean)\n"
    "  --with-response      append each record's response (assistant turn with --chat)\n"
    "  --mean-scope S       prompt | prompt+response: tokens that mean/all cover with\n"
    "                       --with-response (default prompt+response)\n"
    "  --max-new N          gen_mean: tokens to generate (default 64, greedy)\n"
    "  --chat               apply the model's chat template (the prompt is the user turn)\n"
    "  --chat-template F    chatml | llama2 | llama3 (overrides detection)\n"
    "  --batch N            prompts per forward (default 8)\n"
    "  --device D           cpu | cuda (default cpu)\n"
    "  --dtype T            f32 | f16 storage (default f32)\n"
    "  --resume             continue an incomplete capture of the same model/data/settings\n"
    "  --force              overwrite an existing output\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --ctx N              KV positions per slot (default min(model context, 4096))\n"
    "  --quiet              no progress lines\n";

typedef struct {
    ss_cli_common common;   /* --model, --device, --threads, --ctx, --chat, --chat-template */
    const char *data, *out, *layers;
    char *fields;
    const char *categories[MAX_CATEGORIES];
    int n_categories, with_response, mean_prompt_only, batch, quiet;
    long limit, offset;
    int shuffle;
    uint64_t seed;
    ss_capture_opts cap;
} cap_cli;

static int parse_opts(int argc, char **argv, cap_cli *o, ss_error *err)
{
    static const struct option longopts[] = {
        SS_CLI_OPT_MODEL, SS_CLI_OPT_DEVICE, SS_CLI_OPT_THREADS, SS_CLI_OPT_CTX, SS_CLI_OPT_CHAT,
        SS_CLI_OPT_CHAT_TEMPLATE, SS_ARG("data", 'D'), SS_ARG("field", 'F'),
        SS_ARG("category", 'c'), SS_ARG("limit", 'l'), SS_ARG("offset", 'o'),
        SS_ARG("shuffle-seed", 'S'), SS_ARG("layers", 'L'), SS_ARG("site", 's'),
        SS_ARG("pool", 'p'), SS_FLAG("with-response", 'R'), SS_ARG("mean-scope", 'M'),
        SS_ARG("max-new", 'n'), SS_ARG("out", 'O'), SS_ARG("batch", 'b'), SS_ARG("dtype", 't'),
        SS_FLAG("resume", 'r'), SS_FLAG("force", 'f'), SS_FLAG("quiet", 'q'), SS_FLAG("help", 'h'),
        SS_END_OPTIONS};
    memset(o, 0, sizeof *o);
    ss_capture_opts_default(&o->cap);
    ss_cli_common_init(&o->common);
    o->layers = "all";
    o->batch = 8;
    o->limit = -1;
    int c, shared;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if ((shared = ss_cli_common_option(&o->common, c, optarg, err)) != 0) {
            if (shared < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'D': o->data = optarg; break;
        case 'F': o->fields = optarg; break;
        case 'c':
            if (o->n_categories == MAX_CATEGORIES)
                return ss_fail(err, "--category: at most %d categories", MAX_CATEGORIES);
            o->categories[o->n_categories++] = optarg;
            break;
        case 'l':
            if (ss_cli_int("--limit", optarg, 0, 1L << 40, &o->limit, err) < 0) return -1;
            break;
        case 'o':
            if (ss_cli_int("--offset", optarg, 0, 1L << 40, &o->offset, err) < 0) return -1;
            break;
        case 'S':
            if (ss_cli_seed("--shuffle-seed", optarg, &o->seed, err) < 0)
                return -1;
            o->shuffle = 1;
            break;
        case 'L': o->layers = optarg; break;
        case 's':
            if (ss_site_parse(optarg, &o->cap.site, err) < 0) return ss_cli_flag(err, "--site");
            break;
        case 'p':
            if (ss_pool_parse(optarg, &o->cap.pool, err) < 0) return ss_cli_flag(err, "--pool");
            break;
        case 'R': o->with_response = 1; break;
        case 'M':
            if (!strcmp(optarg, "prompt"))
                o->mean_prompt_only = 1;
            else if (strcmp(optarg, "prompt+response"))
                return ss_fail(err, "--mean-scope: \"%s\" is not prompt or prompt+response",
                               optarg);
            break;
        case 'n':
            if (ss_cli_int_to("--max-new", optarg, 1, 1 << 20, &o->cap.gen.max_new, err) < 0)
                return -1;
            break;
        case 'O': o->out = optarg; break;
        case 'b':
            if (ss_cli_int_to("--batch", optarg, 1, 4096, &o->batch, err) < 0) return -1;
            break;
        case 't':
            if (strcmp(optarg, "f32") && strcmp(optarg, "f16"))
                return ss_fail(err, "--dtype: \"%s\" is not f32 or f16", optarg);
            o->cap.f16 = !strcmp(optarg, "f16");
            break;
        case 'r': o->cap.resume = 1; break;
        case 'f': o->cap.force = 1; break;
        case 'q': o->quiet = 1; break;
        case 'h': printf(usage_text, ss_default_model_path()); exit(SS_EXIT_OK);
        default: return ss_fail(err, "unknown option (see safesteer capture --help)");
        }
    }
    if (optind < argc)
        return ss_fail(err, "unexpected argument \"%s\"", argv[optind]);
    if (!o->data || !o->out)
        return ss_fail(err, "--data and --out are required");
    if (o->cap.resume && o->cap.force)
        return ss_fail(err, "--resume and --force contradict each other");
    if (o->with_response && o->cap.pool == SS_POOL_GEN_MEAN)
        return ss_fail(err, "--with-response does not apply to --pool gen_mean (it generates)");
    if (o->mean_prompt_only && !o->with_response)
        return ss_fail(err, "--mean-scope needs --with-response");
    if (o->common.chat_template && !o->common.chat)
        return ss_fail(err, "--chat-template needs --chat");
    o->cap.mean_response = o->with_response && !o->mean_prompt_only &&
                           (o->cap.pool == SS_POOL_MEAN || o->cap.pool == SS_POOL_ALL);
    return 0;
}

typedef struct {
    const ss_model *m;
    const ss_tokenizer *tok;
    int family;
    const ss_dataset *d;
    int with_response;
} enc_ctx;

static int encode_item(void *user, int i, int32_t **ids, int *n_ids, int *n_prompt, ss_error *err)
{
    enc_ctx *c = user;
    const ss_record *r = &c->d->rec[i];
    return ss_capture_encode(c->m, c->tok, c->family, r->prompt,
                             c->with_response ? r->response : NULL, ids, n_ids, n_prompt, err);
}

int ss_cmd_capture(int argc, char **argv)
{
    ss_error err = {.msg = ""};
    cap_cli o;
    if (parse_opts(argc, argv, &o, &err) < 0)
        return ss_cli_fail("capture", SS_EXIT_USAGE, &err);
    ss_dataset *d = NULL;
    ss_model *m = NULL;
    ss_tokenizer *tok = NULL;
    ss_engine *e = NULL;
    int *layers = NULL, n_layers = 0, rc = SS_EXIT_FAIL, family = SS_CHAT_NONE;
    const char **cols = NULL;
    ss_dataset_fields fields;
    ss_dataset_fields_default(&fields);
    if (o.fields && ss_dataset_fields_parse(o.fields, &fields, &err) < 0) {
        ss_cli_flag(&err, "--field");
        rc = SS_EXIT_USAGE;
        goto out;
    }
    fields.explicit_response |= o.with_response;
    ss_dataset_select sel;
    ss_dataset_select_default(&sel);
    sel.categories = o.categories;
    sel.n_categories = o.n_categories;
    sel.offset = o.offset;
    sel.limit = o.limit;
    sel.shuffle = o.shuffle;
    sel.seed = o.seed;
    sel.need_response = o.with_response;
    if (ss_dataset_load(o.data, &fields, &d, &err) < 0 || ss_dataset_apply(d, &sel, &err) < 0)
        goto out;
    if (ss_cli_load_model(&o.common, &m, &tok, &family, &err) < 0)
        goto out;
    if (ss_layers_parse(o.layers, m->cfg.n_layers, &layers, &n_layers, &err) < 0) {
        ss_cli_flag(&err, "--layers");
        rc = SS_EXIT_USAGE;
        goto out;
    }
    char sha[65];
    if (ss_model_sha256(o.common.model, sha, &err) < 0)
        goto out;
    int batch = o.batch < d->n ? o.batch : d->n;
    o.common.engine.max_seqs = batch;
    if (ss_engine_create(m, &o.common.engine, &e, &err) < 0)
        goto out;
    cols = ss_calloc((size_t)d->n * 5, sizeof *cols, &err);
    if (!cols)
        goto out;
    for (int i = 0; i < d->n; i++) {
        cols[i] = d->rec[i].prompt;
        cols[d->n + i] = d->rec[i].id;
        cols[2 * d->n + i] = d->rec[i].category;
        cols[3 * d->n + i] = d->rec[i].label;
        cols[4 * d->n + i] = d->rec[i].response;
    }
    enc_ctx ec = {m, tok, family, d, o.with_response};
    ss_capture_source src = {.n = d->n, .text = cols, .id = cols + d->n,
                             .category = cols + 2 * d->n, .label = cols + 3 * d->n,
                             .response = o.with_response ? cols + 4 * d->n : NULL,
                             .encode = encode_item, .user = &ec};
    ss_capture_opts_set_source(&o.cap, m, tok, sha, family, o.data);
    o.cap.n_layers = n_layers;
    o.cap.layers = layers;
    o.cap.batch = batch;
    o.cap.progress = ss_cli_progress(o.quiet);
    if (!o.quiet)
        fprintf(stderr, "capture: %d prompts from %s, %d layers at %s, pool %s, batch %d on %s\n",
                d->n, o.data, n_layers, ss_site_name(o.cap.site), ss_pool_name(o.cap.pool), batch,
                ss_engine_device_name(e));
    ss_capture_outcome done;
    if (ss_capture_run(e, &src, &o.cap, o.out, &done, &err) < 0)
        goto out;
    if (done.was_complete)
        fprintf(stderr, "capture: %s is already complete (%d prompts); nothing to do\n", o.out,
                d->n);
    else if (done.n_before)
        fprintf(stderr, "capture: finished resuming %s from prompt %lld of %d\n", o.out,
                (long long)done.n_before, d->n);
    rc = SS_EXIT_OK;
out:
    if (rc != SS_EXIT_OK)
        ss_cli_fail("capture", rc, &err);
    free(cols);
    free(layers);
    ss_engine_free(e);
    ss_tokenizer_free(tok);
    ss_model_free(m);
    ss_dataset_free(d);
    return rc;
}
