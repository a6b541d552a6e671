/* cmd_generate.c - `safesteer generate`: one prompt streamed, or a batch of prompts, as text
 * or JSON lines. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/engine.h"
#include "safesteer/generate.h"
#include "safesteer/capture.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"
#include "safesteer/tokenizer.h"

#define MAX_STOP_STRINGS 16
#define MAX_PROMPTS 4096

static const char *const usage_text =
    "usage: safesteer generate [--model M] (--prompt TEXT... | --prompt-file F) [options]\n"
    "  --model M            GGUF file or Hugging Face folder (default: %s)\n"
    "  --prompt TEXT        the prompt (the user turn with --chat); repeat it to generate\n"
    "                       for several prompts in one batch (same steering for all)\n"
    "  --prompt-file F      prompts one per line, in one batch\n"
    "  --chat               apply the model's chat template\n"
    "  --system TEXT        system turn (with --chat; default: the template's own)\n"
    "  --chat-template F    chatml | llama2 | llama3 (overrides detection)\n"
    "  --max-new N          tokens to generate at most (default 128)\n"
    "  --temperature T      0 = greedy (default 0)\n"
    "  --top-p P            nucleus sampling mass (default 1)\n"
    "  --seed S             sampling seed (default 0)\n"
    "  --stop STR           stop string (repeatable, up to 16)\n"
    "  --threads N          CPU threads (default: all cores)\n"
    "  --device D           cpu | cuda (default cpu)\n"
    "  --ctx N              KV-cache positions (default min(model context, 4096))\n"
    "  --logprobs K         with --json: top-K log-probabilities at every step\n"
    "  --json               print one JSON record (a line per prompt) instead of text\n"
    "steering (docs/steering.md):\n"
    "  --steer FILE[:NAME]  vector file (safesteer HDF5 or llama.cpp control-vector GGUF);\n"
    "                       NAME picks a category of a multi-vector file.  Repeat it (up to\n"
    "                       8) to combine files, sites and ops in one plan: --layers,\n"
    "                       --strength, --ablate and --normalize apply to the --steer\n"
    "                       they follow\n"
    "  --layers SPEC        layers to steer: 10,14 | 8-12 | all (default: every layer in FILE)\n"
    "  --strength S[,S...]  one strength for all layers or one per layer (default 1)\n"
    "  --ablate             project the (unit) directions out instead of adding\n"
    "  --positions P        all | prompt | generated | from:K (default all; for every --steer)\n"
    "  --normalize ACTS.h5  scale unit directions by the layer's mean activation norm\n"
    "                       recorded in a capture file\n";

#define MAX_STEER 8

/* One --steer and the options that follow it. */
typedef struct {
    const char *file; /* FILE[:NAME] */
    const char *layers, *strength, *normalize;
    int ablate;
} steer_group;

typedef struct {
    ss_cli_common common;   /* --model, --device, --threads, --ctx, --chat, --system, ... */
    const char *prompts[MAX_PROMPTS];
    int n_prompts;
    const char *prompt_file;
    char *file_text;        /* --prompt-file contents; prompts point into it */
    steer_group steer[MAX_STEER];
    int n_steer;
    ss_positions positions;
    int json;
    ss_gen_params gen;
    const char *stops[MAX_STOP_STRINGS];
} gen_opts;

/* --steer starts a group (the first takes the options given before it);
 * --layers, --strength, --ablate and --normalize fill the current one, once
 * each. */
static int steer_option(gen_opts *o, int opt, const char *arg, ss_error *err)
{
    if (opt == 'V' && o->n_steer && o->steer[o->n_steer - 1].file) {
        if (o->n_steer == MAX_STEER)
            return ss_fail(err, "--steer: at most %d vector files", MAX_STEER);
        o->n_steer++;
    }
    if (!o->n_steer)
        o->n_steer = 1;
    steer_group *g = &o->steer[o->n_steer - 1];
    const char **field = NULL, *name = "--ablate";
    switch (opt) {
    case 'V': g->file = arg; return 0;
    case 'Y': field = &g->layers, name = "--layers"; break;
    case 'a': field = &g->strength, name = "--strength"; break;
    case 'N': field = &g->normalize, name = "--normalize"; break;
    }
    if (field ? *field != NULL : g->ablate)
        return ss_fail(err, "%s given twice for one --steer (repeat --steer before it to add "
                            "another vector file)", name);
    if (field)
        *field = arg;
    else
        g->ablate = 1;
    return 0;
}

static int parse_opts(int argc, char **argv, gen_opts *o, ss_error *err)
{
    static const struct option longopts[] = {
        SS_CLI_OPT_MODEL, SS_CLI_OPT_DEVICE, SS_CLI_OPT_THREADS, SS_CLI_OPT_CTX, SS_CLI_OPT_CHAT,
        SS_CLI_OPT_SYSTEM, SS_CLI_OPT_CHAT_TEMPLATE, SS_ARG("prompt", 'p'),
        SS_ARG("prompt-file", 'F'), SS_ARG("max-new", 'n'),
        SS_ARG("temperature", 't'), SS_ARG("top-p", 'P'), SS_ARG("seed", 'S'), SS_ARG("stop", 'x'),
        SS_ARG("logprobs", 'L'), SS_FLAG("json", 'J'), SS_FLAG("help", 'h'), SS_ARG("steer", 'V'),
        SS_ARG("layers", 'Y'), SS_ARG("strength", 'a'), SS_FLAG("ablate", 'A'),
        SS_ARG("positions", 'Q'), SS_ARG("normalize", 'N'), SS_END_OPTIONS};
    memset(o, 0, sizeof *o);
    ss_cli_common_init(&o->common);
    o->common.engine.max_seqs = 1;
    o->gen.max_new = 128;
    o->gen.sampler.top_p = 1.0f;
    o->gen.stop_strings = o->stops;
    double f;
    int c, shared;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if ((shared = ss_cli_common_option(&o->common, c, optarg, err)) != 0) {
            if (shared < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'p':
            if (o->n_prompts == MAX_PROMPTS)
                return ss_fail(err, "--prompt: at most %d prompts", MAX_PROMPTS);
            o->prompts[o->n_prompts++] = optarg;
            break;
        case 'F': o->prompt_file = optarg; break;
        case 'J': o->json = 1; break;
        case 'n':
            if (ss_cli_int_to("--max-new", optarg, 0, 1 << 20, &o->gen.max_new, err) < 0)
                return -1;
            break;
        case 't':
            if (ss_cli_float("--temperature", optarg, 0, 100, &f, err) < 0) return -1;
            o->gen.sampler.temperature = (float)f;
            break;
        case 'P':
            if (ss_cli_float("--top-p", optarg, 1e-6, 1, &f, err) < 0) return -1;
            o->gen.sampler.top_p = (float)f;
            break;
        case 'S':
            if (ss_cli_seed("--seed", optarg, &o->gen.sampler.seed, err) < 0) return -1;
            break;
        case 'x':
            if (o->gen.n_stop_strings == MAX_STOP_STRINGS)
                return ss_fail(err, "--stop: at most %d stop strings", MAX_STOP_STRINGS);
            if (!*optarg)
                return ss_fail(err, "--stop: empty stop string");
            o->stops[o->gen.n_stop_strings++] = optarg;
            break;
        case 'L':
            if (ss_cli_int_to("--logprobs", optarg, 1, 100, &o->gen.logprobs_k, err) < 0)
                return -1;
            break;
        case 'V':
        case 'Y':
        case 'a':
        case 'A':
        case 'N':
            if (steer_option(o, c, optarg, err) < 0) return -1;
            break;
        case 'Q':
            if (ss_positions_parse(optarg, &o->positions, err) < 0)
                return ss_cli_flag(err, "--positions");
            break;
        case 'h': printf(usage_text, ss_default_model_path()); exit(SS_EXIT_OK);
        default: return ss_fail(err, "unknown option (see safesteer generate --help)");
        }
    }
    if (optind < argc)
        return ss_fail(err, "unexpected argument \"%s\"", argv[optind]);
    if (!o->n_prompts == !o->prompt_file)
        return ss_fail(err, "give --prompt (one or more) or --prompt-file, not both or neither");
    if (o->gen.logprobs_k && !o->json)
        return ss_fail(err, "--logprobs needs --json");
    if ((o->n_steer && !o->steer[0].file) || (!o->n_steer && o->positions.rule != SS_POS_ALL))
        return ss_fail(err, "--layers, --strength, --ablate, --positions and --normalize need "
                            "--steer FILE");
    for (int g = 0; g < o->n_steer; g++)
        if (o->steer[g].ablate && o->steer[g].normalize)
            return ss_fail(err, "--steer %s: --normalize scales added vectors; --ablate uses unit "
                                "directions", o->steer[g].file);
    return 0;
}

#define MAX_STRENGTHS 1024

/* --strength: comma-separated values (the plan builder checks that there is
 * one, or one per steered layer). */
static int parse_strengths(const char *spec, float *out, int *n, ss_error *err)
{
    *n = 0;
    const char *p = spec ? spec : "1";
    while (*p) {
        char buf[64];
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof buf)
            return ss_fail(err, "--strength \"%s\": empty or overlong value", spec);
        if (*n == MAX_STRENGTHS)
            return ss_fail(err, "--strength \"%s\": more than %d values", spec, MAX_STRENGTHS);
        memcpy(buf, p, len);
        buf[len] = '\0';
        double v;
        if (ss_cli_float("--strength", buf, -1e6, 1e6, &v, err) < 0)
            return -1;
        out[(*n)++] = (float)v;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Appends one --steer group's entries to plan. */
static int add_group(const steer_group *o, const ss_model *m, ss_steer_plan *plan,
                     ss_error *err)
{
    char file[1024];
    const char *name;
    ss_vectors_split_ref(o->file, file, sizeof file, &name);
    ss_vector_set v;
    if (ss_vectors_load(file, &v, err) < 0)
        return -1;
    int rc = -1, *layers = NULL, n = 0, n_str;
    float str[MAX_STRENGTHS];
    if (o->layers && ss_layers_parse(o->layers, m->cfg.n_layers, &layers, &n, err) < 0) {
        ss_cli_flag(err, "--layers");
        goto out;
    }
    if (parse_strengths(o->strength, str, &n_str, err) < 0)
        goto out;
    ss_steer_source src = {.vectors = &v, .category = name, .site = -1, .layers = layers,
                           .n_layers = n, .strengths = str, .n_strengths = n_str,
                           .op = o->ablate ? SS_STEER_ABLATE : SS_STEER_ADD,
                           .normalize_acts = o->normalize};
    rc = ss_steer_plan_add_vectors(plan, &src, err);
out:
    free(layers);
    ss_vectors_free(&v);
    return rc;
}

/* The steering plan of every --steer group. */
static int build_plan(const gen_opts *o, const ss_model *m, ss_steer_plan *plan, ss_error *err)
{
    ss_steer_plan_init(plan, m->cfg.n_layers, m->cfg.d_model);
    plan->positions = o->positions;
    for (int g = 0; g < o->n_steer; g++)
        if (add_group(&o->steer[g], m, plan, err) < 0) {
            ss_steer_plan_free(plan);
            return -1;
        }
    return 0;
}

static void stream_text(void *user, int seq, const char *text, size_t len)
{
    (void)user;
    (void)seq;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static json_t *ids_json(const int32_t *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static const char *stop_reason_name(int r)
{
    static const char *const names[] = {"length", "eos", "stop_string", "context"};
    return names[r];
}

static void print_json(const gen_opts *o, const ss_model *m, const char *prompt,
                       const int32_t *prompt_ids, int n_prompt, const ss_gen_result *r,
                       const ss_gen_timing *tm)
{
    json_t *rec = json_object();
    json_object_set_new(rec, "model", json_string(m->path));
    json_object_set_new(rec, "prompt", json_string(prompt));
    json_object_set_new(rec, "chat", json_boolean(o->common.chat));
    json_object_set_new(rec, "prompt_ids", ids_json(prompt_ids, n_prompt));
    json_object_set_new(rec, "ids", ids_json(r->ids, r->n_ids));
    json_object_set_new(rec, "text", json_string(r->text));
    json_object_set_new(rec, "stop_reason", json_string(stop_reason_name(r->stop_reason)));
    if (o->gen.logprobs_k) {
        json_t *steps = json_array();
        int k = o->gen.logprobs_k;
        for (int s = 0; s < r->n_steps; s++) {
            json_t *step = json_object(), *ids = json_array(), *lps = json_array();
            for (int j = 0; j < k; j++) {
                json_array_append_new(ids, json_integer(r->top_ids[s * k + j]));
                json_array_append_new(lps, json_real(r->top_logprobs[s * k + j]));
            }
            json_object_set_new(step, "top_ids", ids);
            json_object_set_new(step, "top_logprobs", lps);
            json_array_append_new(steps, step);
        }
        json_object_set_new(rec, "logprobs", steps);
    }
    json_t *timing = json_object();
    json_object_set_new(timing, "prefill_seconds", json_real(tm->prefill_seconds));
    json_object_set_new(timing, "prefill_tokens", json_integer(tm->prefill_tokens));
    json_object_set_new(timing, "decode_seconds", json_real(tm->decode_seconds));
    json_object_set_new(timing, "decode_tokens", json_integer(tm->decode_tokens));
    json_object_set_new(rec, "timing", timing);
    json_dumpf(rec, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(rec);
}

/* --prompt-file: every line (without its newline) is a prompt; empty lines
 * are skipped. */
static int read_prompt_file(gen_opts *o, ss_error *err)
{
    size_t len;
    if (ss_read_file(o->prompt_file, &o->file_text, &len, err) < 0)
        return ss_cli_flag(err, "--prompt-file");
    for (char *line = o->file_text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[n - 1] = '\0';
        if (!*line)
            continue;
        if (o->n_prompts == MAX_PROMPTS)
            return ss_fail(err, "%s: more than %d prompts", o->prompt_file, MAX_PROMPTS);
        o->prompts[o->n_prompts++] = line;
    }
    return o->n_prompts ? 0 : ss_fail(err, "%s: no prompts (one per line)", o->prompt_file);
}

/* One prompt's text was streamed; several are printed when done, each after
 * its index. */
static void print_text(int i, int n, const ss_gen_result *r)
{
    if (n > 1)
        printf("[%d] %s\n", i, r->text);
    else
        fputc('\n', stdout);
}

int ss_cmd_generate(int argc, char **argv)
{
    ss_error err = {.msg = ""};
    gen_opts o;
    if (parse_opts(argc, argv, &o, &err) < 0)
        return ss_cli_fail("generate", SS_EXIT_USAGE, &err);

    ss_model *m = NULL;
    ss_tokenizer *tok = NULL;
    ss_engine *e = NULL;
    int32_t **ids = NULL;
    int *n_ids = NULL, n = 0, rc = SS_EXIT_FAIL, family = SS_CHAT_NONE;
    ss_gen_result *res = NULL;
    const ss_steer_plan **plans = NULL;
    ss_gen_timing tm;
    ss_steer_plan plan = {0};
    if (o.prompt_file && read_prompt_file(&o, &err) < 0) {
        rc = SS_EXIT_USAGE;
        goto out;
    }
    n = o.n_prompts;
    ids = ss_calloc((size_t)n, sizeof *ids, &err);
    n_ids = ss_calloc((size_t)n, sizeof *n_ids, &err);
    res = ss_calloc((size_t)n, sizeof *res, &err);
    plans = ss_calloc((size_t)n, sizeof *plans, &err);
    if (!ids || !n_ids || !res || !plans ||
        ss_cli_load_model(&o.common, &m, &tok, &family, &err) < 0)
        goto out;
    for (int i = 0; i < n; i++)
        if (ss_encode_prompt(m, tok, family, o.common.system, o.prompts[i], &ids[i], &n_ids[i],
                             &err) < 0)
            goto out;
    o.common.engine.max_seqs = n;
    if (ss_engine_create(m, &o.common.engine, &e, &err) < 0 ||
        (o.n_steer && build_plan(&o, m, &plan, &err) < 0))
        goto out;
    for (int i = 0; i < n; i++)
        plans[i] = o.n_steer ? &plan : NULL;
    ss_gen_request req = {.n = n, .prompts = (const int32_t *const *)ids, .n_prompt = n_ids,
                          .plans = plans, .params = o.gen,
                          .on_text = o.json || n > 1 ? NULL : stream_text};
    if (ss_generate(e, tok, &req, res, &tm, &err) < 0)
        goto out;
    long generated = 0;
    for (int i = 0; i < n; i++) {
        if (o.json)
            print_json(&o, m, o.prompts[i], ids[i], n_ids[i], &res[i], &tm);
        else
            print_text(i, n, &res[i]);
        generated += res[i].n_ids;
    }
    fprintf(stderr, "[%s] %d prompt%s, %ld tokens in %.3f s (%.1f tok/s); generated %ld tokens, "
                    "decode %.1f tok/s; stop: %s\n",
            ss_engine_device_name(e), n, n > 1 ? "s" : "", tm.prefill_tokens, tm.prefill_seconds,
            tm.prefill_seconds > 0 ? tm.prefill_tokens / tm.prefill_seconds : 0.0, generated,
            tm.decode_seconds > 0 ? tm.decode_tokens / tm.decode_seconds : 0.0,
            n > 1 ? "per prompt" : stop_reason_name(res[0].stop_reason));
    rc = SS_EXIT_OK;
out:
    if (rc != SS_EXIT_OK)
        ss_cli_fail("generate", rc, &err);
    for (int i = 0; i < n; i++) {
        if (res)
            ss_gen_result_free(&res[i]);
        if (ids)
            free(ids[i]);
    }
    free(res), free(ids), free(n_ids), free(plans), free(o.file_text);
    ss_steer_plan_free(&plan);
    ss_engine_free(e);
    ss_tokenizer_free(tok);
    ss_model_free(m);
    return rc;
}
