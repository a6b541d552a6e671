/* cli_common.c - option parsing and defaults shared by subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
