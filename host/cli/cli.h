/* cli.h - helpers shared by the safesteer subcommands. */
#ifndef SAFESTEER_CLI_H
#define SAFESTEER_CLI_H

#include <stdint.h>

#include "safesteer/util.h"

/* Exit codes every subcommand uses. */
enum { SS_EXIT_OK = 0, SS_EXIT_FAIL = 1, SS_EXIT_USAGE = 2 };


/* Strict number parsing: the whole string must be a number in [lo, hi]. */
int ss_cli_int(const char *opt, const char *s, long lo, long hi, long *out, ss_error *err);
int ss_cli_float(const char *opt, const char *s, double lo, double hi, double *out, ss_error *err);

/* Prints "safesteer CMD: MESSAGE" to stderr and returns code. */
int ss_cli_error(const char *cmd, int code, const char *msg);
/* ss_cli_error with a library error, followed by what this command's user
 * can do about its kind (SS_ERR_EXISTS: --force / --resume, ...). */
int ss_cli_fail(const char *cmd, int code, const ss_error *err);
/* A library error about the value of one option: "--flag: message", or
 * "--flag \"value\": ..." when the message opens with the quoted value. */
int ss_cli_flag(ss_error *err, const char *flag);

/* Progress lines on stderr, "TASK: DONE/TOTAL UNIT, R UNIT/s, elapsed E s,
 * ETA T s" (rewritten in place on a terminal); no reports when quiet. */
ss_progress_sink ss_cli_progress(int quiet);

int ss_cmd_generate(int argc, char **argv);
int ss_cmd_info(int argc, char **argv);
int ss_cmd_tensor(int argc, char **argv);
int ss_cmd_tokenize(int argc, char **argv);
int ss_cmd_detokenize(int argc, char **argv);
int ss_cmd_bench(int argc, char **argv);
int ss_cmd_report(int argc, char **argv);
int ss_cmd_capture(int argc, char **argv);
int ss_cmd_vectors(int argc, char **argv);
int ss_cmd_cluster(int argc, char **argv);
int ss_cmd_sweep(int argc, char **argv);
int ss_cmd_merge(int argc, char **argv);

#endif
