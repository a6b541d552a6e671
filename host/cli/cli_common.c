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
