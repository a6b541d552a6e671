/* cmd_tokenize.c - `safesteer tokenize` (text -> ids, optionally through
 * the chat template) and `safesteer detokenize` (ids -> text). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/model.h"
#include "safesteer/tokenizer.h"

static const char *const tokenize_usage =
    "usage: safesteer tokenize [--model M | --tokenizer DIR] [options] (TEXT | --file F)\n"
    "  --model M            GGUF file or Hugging Face folder (default: %s)\n"
    "  --tokenizer DIR      a folder with tokenizer.json (+ tokenizer_config.json) only\n"
    "  --chat               TEXT is the user turn, rendered with the generation prompt\n"
    "  --system TEXT        system turn (with --chat; default: the template's own)\n"
    "  --messages F         with --chat: a JSON array of {role, content} instead of TEXT\n"
    "  --no-gen-prompt      with --chat: leave out the assistant header\n"
    "  --chat-template F    chatml | llama2 | llama3 (overrides detection)\n"
    "  --print-prompt       with --chat: print the rendered prompt instead of ids\n"
    "                       (no model needed when --chat-template is given)\n"
    "  --file F             one output line per input line\n"
    "  --json-lines         with --file: each input line is a JSON string\n"
    "  --json               ids as a JSON array (the prompt as a JSON string)\n"
    "  --no-special         special-token text is plain text (not with --chat)\n";

static const char *const detokenize_usage =
    "usage: safesteer detokenize [--model M | --tokenizer DIR] [--json] [--skip-special] "
    "[IDS...]\n"
    "  ids as arguments, or on stdin as a JSON array or whitespace-separated numbers;\n"
    "  --json prints the text as a JSON string\n";

typedef struct {
    ss_cli_common common;  /* --model (NULL: not given), --chat, --system, --chat-template */
    const char *tokenizer, *messages, *file, *text;
    int json, no_special, print_prompt, json_lines, no_gen;
    int family; /* from --chat-template */
} tok_opts;

typedef struct {
    ss_model *m;
    ss_tokenizer *t;
    const char *tmpl;    /* model's (or tokenizer folder's) chat template */
    int family;          /* with --chat */
    char *default_system;
    ss_chat_msg *msgs;   /* [n_msgs] from --messages */
    int n_msgs;
    json_t *msgs_json;   /* owns the strings of msgs */
} tok_ctx;

/* ---------------------------------------------------------------- loading */

static int load_tokenizer(const char *model, const char *dir, tok_ctx *c, ss_error *err)
{
    if (dir) {
        if (ss_tokenizer_load_json(dir, &c->t, err) < 0)
            return -1;
        c->tmpl = ss_tokenizer_chat_template(c->t);
        return 0;
    }
    if (ss_model_load(model, &c->m, err) < 0 || ss_tokenizer_load(c->m, &c->t, err) < 0)
        return -1;
    c->tmpl = c->m->chat_template ? c->m->chat_template : ss_tokenizer_chat_template(c->t);
    return 0;
}

static void ctx_free(tok_ctx *c)
{
    ss_tokenizer_free(c->t);
    if (c->m)
        ss_model_free(c->m);
    free(c->default_system);
    free(c->msgs);
    json_decref(c->msgs_json);
}

static int load_messages(const char *path, tok_ctx *c, ss_error *err)
{
    json_error_t je;
    c->msgs_json = json_load_file(path, 0, &je);
    if (!c->msgs_json)
        return ss_fail(err, "%s: line %d: %s", path, je.line, je.text);
    size_t n = json_array_size(c->msgs_json);
    if (!json_is_array(c->msgs_json) || !n)
        return ss_fail(err, "%s: expected a non-empty JSON array of {role, content}", path);
    if (!(c->msgs = ss_calloc(n, sizeof *c->msgs, err)))
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(c->msgs_json, i);
        c->msgs[i].role = json_string_value(json_object_get(e, "role"));
        c->msgs[i].content = json_string_value(json_object_get(e, "content"));
        if (!c->msgs[i].role || !c->msgs[i].content)
            return ss_fail(err, "%s: message %zu lacks string role/content", path, i);
    }
    c->n_msgs = (int)n;
    return 0;
}

/* ---------------------------------------------------------------- output */

static void print_ids(const int32_t *ids, int n, int json)
{
    if (json)
        putchar('[');
    for (int i = 0; i < n; i++)
        printf(i ? (json ? ", %d" : " %d") : "%d", ids[i]);
    puts(json ? "]" : "");
}

static int print_text(const char *s, size_t n, int json, ss_error *err)
{
    if (!json) {
        fwrite(s, 1, n, stdout);
        putchar('\n');
        return 0;
    }
    json_t *j = json_stringn(s, n);
    char *dump = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!dump)
        return ss_fail(err, "text is not valid UTF-8, cannot print it as JSON");
    puts(dump);
    free(dump);
    return 0;
}

/* ---------------------------------------------------------------- tokenize */

static int render_chat(const tok_opts *o, tok_ctx *c, const char *text, char **out,
                       ss_error *err)
{
    if (c->msgs)
        return ss_chat_render(c->family, c->msgs, c->n_msgs, !o->no_gen, c->default_system, out,
                              err);
    ss_chat_msg msgs[2];
    int n = 0;
    if (o->common.system)
        msgs[n++] = (ss_chat_msg){"system", o->common.system};
    msgs[n++] = (ss_chat_msg){"user", text};
    return ss_chat_render(c->family, msgs, n, !o->no_gen, c->default_system, out, err);
}

/* Prints one output line for one input text. */
static int tokenize_one(const tok_opts *o, tok_ctx *c, const char *text, size_t len,
                        ss_error *err)
{
    char *rendered = NULL;
    int parse_special = !o->no_special, bos = -1;
    if (o->common.chat) {
        if (render_chat(o, c, text, &rendered, err) < 0)
            return -1;
        if (o->print_prompt) {
            int rc = print_text(rendered, strlen(rendered), o->json, err);
            free(rendered);
            return rc;
        }
        text = rendered;
        len = strlen(rendered);
        parse_special = 1; /* the template's markers are special tokens */
    } else if (ss_tokenizer_adds_bos(c->t)) {
        bos = ss_tokenizer_bos(c->t);
    }
    int32_t *ids;
    int n;
    int rc = ss_tokenize(c->t, text, len, parse_special, &ids, &n, err);
    free(rendered);
    if (rc < 0)
        return -1;
    int32_t *all = ss_malloc(sizeof *all * ((size_t)n + 1), err);
    if (!all) {
        free(ids);
        return -1;
    }
    int k = 0;
    if (bos >= 0)
        all[k++] = bos;
    memcpy(all + k, ids, sizeof *ids * (size_t)n);
    print_ids(all, k + n, o->json);
    free(ids);
    free(all);
    return 0;
}

static int tokenize_file(const tok_opts *o, tok_ctx *c, ss_error *err)
{
    FILE *f = strcmp(o->file, "-") ? fopen(o->file, "rb") : stdin;
    if (!f)
        return ss_fail(err, "%s: cannot open for reading", o->file);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    for (long no = 1; !rc && (n = getline(&line, &cap, f)) >= 0; no++) {
        if (n > 0 && line[n - 1] == '\n')
            line[--n] = 0;
        if (!o->json_lines) {
            rc = tokenize_one(o, c, line, (size_t)n, err);
            continue;
        }
        json_error_t je;
        json_t *s = json_loadb(line, (size_t)n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!json_is_string(s))
            rc = ss_fail(err, "%s:%ld: not a JSON string (%s)", o->file, no,
                         s ? "another JSON value" : je.text);
        else
            rc = tokenize_one(o, c, json_string_value(s), json_string_length(s), err);
        json_decref(s);
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

static int tokenize_parse(int argc, char **argv, tok_opts *o, ss_error *err)
{
    static const struct option longopts[] = {
        SS_CLI_OPT_MODEL, SS_CLI_OPT_CHAT, SS_CLI_OPT_SYSTEM, SS_CLI_OPT_CHAT_TEMPLATE,
        SS_ARG("tokenizer", 'k'), SS_ARG("messages", 'M'), SS_FLAG("no-gen-prompt", 'g'),
        SS_FLAG("print-prompt", 'p'), SS_ARG("file", 'f'), SS_FLAG("json-lines", 'l'),
        SS_FLAG("json", 'J'), SS_FLAG("no-special", 'n'), SS_FLAG("help", 'h'), SS_END_OPTIONS};
    memset(o, 0, sizeof *o);
    ss_cli_common_init(&o->common);
    o->common.model = NULL; /* a model or a tokenizer folder, or the default model */
    ss_cli_common *co = &o->common;
    int c, shared;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if ((shared = ss_cli_common_option(co, c, optarg, err)) != 0) {
            if (shared < 0)
                return -1;
            continue;
        }
        switch (c) {
        case 'k': o->tokenizer = optarg; break;
        case 'M': o->messages = optarg; break;
        case 'g': o->no_gen = 1; break;
        case 'p': o->print_prompt = 1; break;
        case 'f': o->file = optarg; break;
        case 'l': o->json_lines = 1; break;
        case 'J': o->json = 1; break;
        case 'n': o->no_special = 1; break;
        case 'h': printf(tokenize_usage, ss_default_model_path()); return 1;
        default: return ss_fail(err, "unknown option (see --help)");
        }
    }
    if (optind < argc)
        o->text = argv[optind++];
    if (optind < argc)
        return ss_fail(err, "unexpected argument '%s' (quote TEXT as one argument)", argv[optind]);
    if (co->model && o->tokenizer)
        return ss_fail(err, "give --model or --tokenizer, not both");
    if (!!o->text + !!o->file + !!o->messages != 1)
        return ss_fail(err, "give exactly one of TEXT, --file F or --messages F");
    if (!co->chat && (co->system || o->messages || o->no_gen || o->print_prompt || co->chat_template))
        return ss_fail(err, "--system, --messages, --no-gen-prompt, --print-prompt and "
                            "--chat-template need --chat");
    if (o->messages && co->system)
        return ss_fail(err, "put the system turn in the --messages file instead of --system");
    if (o->json_lines && !o->file)
        return ss_fail(err, "--json-lines needs --file");
    if (co->chat && o->no_special)
        return ss_fail(err, "--no-special cannot be used with --chat");
    if (co->chat_template && ss_chat_family_parse(co->chat_template, &o->family, err) < 0)
        return ss_cli_flag(err, "--chat-template");
    return 0;
}

int ss_cmd_tokenize(int argc, char **argv)
{
    ss_error err = {.msg = ""};
    tok_opts o;
    int prc = tokenize_parse(argc, argv, &o, &err);
    if (prc)
        return prc > 0 ? SS_EXIT_OK : ss_cli_fail("tokenize", SS_EXIT_USAGE, &err);
    tok_ctx c = {0};
    int rc = 0;
    /* Rendering with a named family needs no tokenizer. */
    const ss_cli_common *co = &o.common;
    int need_tok = !(o.print_prompt && co->chat_template && !co->model && !o.tokenizer);
    if (need_tok)
        rc = load_tokenizer(co->model ? co->model : ss_default_model_path(), o.tokenizer, &c, &err);
    if (!rc && co->chat) {
        c.family = o.family;
        if (!co->chat_template && (rc = ss_chat_family_detect(c.tmpl, &c.family, &err)) < 0)
            ss_cli_flag(&err, "--chat-template");
        if (!co->system)
            c.default_system = ss_chat_default_system(c.tmpl);
    }
    if (!rc && o.messages)
        rc = load_messages(o.messages, &c, &err);
    if (!rc)
        rc = o.file ? tokenize_file(&o, &c, &err)
                    : tokenize_one(&o, &c, o.text ? o.text : "", o.text ? strlen(o.text) : 0,
                                   &err);
    ctx_free(&c);
    return rc < 0 ? ss_cli_fail("tokenize", SS_EXIT_FAIL, &err) : SS_EXIT_OK;
}

/* ---------------------------------------------------------------- detokenize */

static int push_id(int32_t **ids, int *n, int *cap, long v, ss_error *err)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        int32_t *p = realloc(*ids, sizeof *p * (size_t)*cap);
        if (!p)
            return ss_fail(err, "out of memory reading %d ids", *n);
        *ids = p;
    }
    (*ids)[(*n)++] = (int32_t)v;
    return 0;
}

/* Ids from stdin: a JSON array, or whitespace-separated numbers. */
static int read_stdin_ids(int32_t **ids, int *n, int *cap, ss_error *err)
{
    size_t len = 0, size = 4096;
    char *buf = malloc(size);
    for (size_t got; buf && (got = fread(buf + len, 1, size - len - 1, stdin)) > 0;) {
        len += got;
        if (len + 1 == size) {
            char *p = realloc(buf, size *= 2);
            if (!p)
                free(buf);
            buf = p;
        }
    }
    if (!buf)
        return ss_fail(err, "out of memory reading stdin");
    buf[len] = 0;
    int rc = 0;
    const char *p = buf + strspn(buf, " \t\r\n");
    if (*p == '[') {
        json_error_t je;
        json_t *arr = json_loads(p, 0, &je);
        size_t i;
        json_t *e;
        if (!json_is_array(arr))
            rc = ss_fail(err, "stdin: not a JSON array of ids (%s)", arr ? "other value" : je.text);
        json_array_foreach(arr, i, e) {
            if (rc)
                break;
            if (!json_is_integer(e))
                rc = ss_fail(err, "stdin: element %zu is not an integer id", i);
            else
                rc = push_id(ids, n, cap, (long)json_integer_value(e), err);
        }
        json_decref(arr);
    } else {
        for (char *tok = strtok(buf, " \t\r\n,"); tok && !rc; tok = strtok(NULL, " \t\r\n,")) {
            long v;
            rc = ss_cli_int("id", tok, 0, INT32_MAX, &v, err);
            if (!rc)
                rc = push_id(ids, n, cap, v, err);
        }
    }
    free(buf);
    return rc;
}

int ss_cmd_detokenize(int argc, char **argv)
{
    static const struct option longopts[] = {
        SS_ARG("model", 'm'), SS_ARG("tokenizer", 'k'), SS_FLAG("json", 'J'),
        SS_FLAG("skip-special", 's'), SS_FLAG("help", 'h'), SS_END_OPTIONS};
    const char *model = NULL, *dir = NULL;
    int json = 0, skip = 0, c;
    ss_error err = {.msg = ""};
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'k': dir = optarg; break;
        case 'J': json = 1; break;
        case 's': skip = 1; break;
        case 'h': fputs(detokenize_usage, stdout); return SS_EXIT_OK;
        default: return ss_cli_error("detokenize", SS_EXIT_USAGE, "unknown option (see --help)");
        }
    }
    if (model && dir)
        return ss_cli_error("detokenize", SS_EXIT_USAGE, "give --model or --tokenizer, not both");
    int32_t *ids = NULL;
    int n = 0, cap = 0, rc = 0;
    for (int i = optind; i < argc && !rc; i++) {
        long v;
        rc = ss_cli_int("id", argv[i], 0, INT32_MAX, &v, &err);
        if (!rc)
            rc = push_id(&ids, &n, &cap, v, &err);
    }
    if (rc) {
        free(ids);
        return ss_cli_fail("detokenize", SS_EXIT_USAGE, &err);
    }
    tok_ctx ctx = {0};
    if (optind == argc)
        rc = read_stdin_ids(&ids, &n, &cap, &err);
    if (!rc)
        rc = load_tokenizer(model ? model : ss_default_model_path(), dir, &ctx, &err);
    char *text = NULL;
    if (!rc)
        rc = ss_detokenize(ctx.t, ids, n, skip, &text, &err);
    if (!rc)
        rc = print_text(text, strlen(text), json, &err);
    free(text);
    free(ids);
    ctx_free(&ctx);
    return rc < 0 ? ss_cli_fail("detokenize", SS_EXIT_FAIL, &err) : SS_EXIT_OK;
}
