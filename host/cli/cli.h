/* cli.h - helpers shared by the safesteer subcommands. */
#ifndef SAFESTEER_CLI_H
#define SAFESTEER_CLI_H

#include <stdint.h>

#include "safesteer/error.h"

/* Exit codes every subcommand uses. */
enum { SS_EXIT_OK = 0, SS_EXIT_FAIL = 1, SS_EXIT_USAGE = 2 };


/* Strict number parsing: the whole string must be a number in [lo, hi]. */
int ss_cli_int(const char *opt, const char *s, long lo, long hi, long *out, ss_error *err);
int ss_cli_float(const char *opt, const char *s, double lo, double hi, double *out, ss_error *err);

/* Prints "safesteer CMD: MESSAGE" to stderr and returns code. */
int ss_cli_error(const char *cmd, int code, const char *msg);

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
