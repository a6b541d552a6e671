/* cli_common.c - option parsing and defaults shared by subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ss_cli_int(const char *opt, const char *s, long lo, long hi, long *out, ss_error *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return ss_fail(err, "%s: \"%s\" is not an integer", opt, s);
    if (v < lo || v > hi)
        return ss_fail(err, "%s: %ld is out of range [%ld, %ld]", opt, v, lo, hi);
    *out = v;
    return 0;
}

int ss_cli_float(const char *opt, const char *s, double lo, double hi, double *out, ss_error *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isnan(v))
        return ss_fail(err, "%s: \"%s\" is not a number", opt, s);
    if (v < lo || v > hi)
        return ss_fail(err, "%s: %g is out of range [%g, %g]", opt, v, lo, hi);
    *out = v;
    return 0;
}

int ss_cli_int_to(const char *opt, const char *s, long lo, long hi, int *out, ss_error *err)
{
    long v;
    if (ss_cli_int(opt, s, lo, hi, &v, err) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

int ss_cli_seed(const char *opt, const char *s, uint64_t *out, ss_error *err)
{
    long v;
    if (ss_cli_int(opt, s, 0, 0x7fffffffffffffffL, &v, err) < 0)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

void ss_cli_common_init(ss_cli_common *o)
{
    memset(o, 0, sizeof *o);
    o->model = ss_default_model_path();
    ss_engine_opts_default(&o->engine);
}

int ss_cli_common_option(ss_cli_common *o, int c, const char *arg, ss_error *err)
{
    switch (c) {
    case SS_OPT_MODEL: o->model = arg; return 1;
    case SS_OPT_CHAT: o->chat = 1; return 1;
    case SS_OPT_SYSTEM: o->system = arg; return 1;
    case SS_OPT_CHAT_TEMPLATE: o->chat_template = arg; return 1;
    case SS_OPT_DEVICE:
        return ss_device_parse(arg, &o->engine.device, err) < 0 ? ss_cli_flag(err, "--device") : 1;
    case SS_OPT_THREADS:
        return ss_cli_int_to("--threads", arg, 0, 1024, &o->engine.threads, err) < 0 ? -1 : 1;
    case SS_OPT_CTX:
        return ss_cli_int_to("--ctx", arg, 1, 1 << 24, &o->engine.max_ctx, err) < 0 ? -1 : 1;
    default: return 0;
    }
}

int ss_cli_load_model(const ss_cli_common *o, ss_model **m, ss_tokenizer **tok, int *family,
                      ss_error *err)
{
    *m = NULL;
    *tok = NULL;
    *family = SS_CHAT_NONE;
    if (ss_model_load(o->model, m, err) < 0 || ss_tokenizer_load(*m, tok, err) < 0)
        goto fail;
    if (o->chat && ss_chat_family_for_model(*m, o->chat_template, family, err) < 0) {
        ss_cli_flag(err, "--chat-template");
        goto fail;
    }
    return 0;
fail:
    ss_tokenizer_free(*tok);
    ss_model_free(*m);
    *m = NULL;
    *tok = NULL;
    return -1;
}

int ss_cli_error(const char *cmd, int code, const char *msg)
{
    fprintf(stderr, "safesteer %s: %s\n", cmd, msg);
    return code;
}

/* What a command's user can do about a failure of each kind. */
static const char *remedy(const char *cmd, int kind)
{
    int writes_captures = !strcmp(cmd, "capture") || !strcmp(cmd, "sweep");
    switch (kind) {
    case SS_ERR_EXISTS:
        return !strcmp(cmd, "capture") ? "pass --force to overwrite it"
               : !strcmp(cmd, "sweep") ? "pass --resume to continue it or choose another --out"
                                       : NULL;
    case SS_ERR_INCOMPLETE:
        return writes_captures ? "rerun with --resume or delete it"
                               : "finish it with safesteer capture --resume, or delete it";
    case SS_ERR_STOPPED: return "interrupted";
    default: return NULL;
    }
}

int ss_cli_fail(const char *cmd, int code, const ss_error *err)
{
    const char *fix = remedy(cmd, err->kind);
    fprintf(stderr, "safesteer %s: %s%s%s\n", cmd, err->msg, fix ? "; " : "", fix ? fix : "");
    return code;
}

int ss_cli_flag(ss_error *err, const char *flag)
{
    if (err->msg[0] != '"')
        return ss_fail_context(err, "%s", flag);
    /* a message that opens with the quoted value reads as --flag "value": ... */
    char msg[SS_ERROR_MSG_MAX];
    snprintf(msg, sizeof msg, "%s", err->msg);
    int kind = err->kind;
    ss_fail(err, "%s %s", flag, msg);
    err->kind = kind;
    return -1;
}

static int print_progress(void *user, const ss_progress_report *r)
{
    (void)user;
    /* on a terminal each report overwrites the last; in a log every report is a line */
    int tty = isatty(2);
    fprintf(stderr, "%s%s: %lld/%lld %s, %.2f %s/s, elapsed %.0f s, ETA %.0f s%s", tty ? "\r" : "",
            r->task, (long long)r->done, (long long)r->total, r->unit, r->rate, r->unit,
            r->elapsed, r->eta, tty && !r->final ? "" : "\n");
    fflush(stderr);
    return 0;
}

ss_progress_sink ss_cli_progress(int quiet)
{
    return (ss_progress_sink){.fn = quiet ? NULL : print_progress};
}
