/* cli.h - helpers shared by the safesteer subcommands. */
#ifndef SAFESTEER_CLI_H
#define SAFESTEER_CLI_H

#include <getopt.h>
#include <stdint.h>

#include "safesteer/engine.h"
#include "safesteer/tokenizer.h"
#include "safesteer/util.h"

/* Exit codes every subcommand uses. */
enum { SS_EXIT_OK = 0, SS_EXIT_FAIL = 1, SS_EXIT_USAGE = 2 };


/* Strict number parsing: the whole string must be a number in [lo, hi]. */
int ss_cli_int(const char *opt, const char *s, long lo, long hi, long *out, ss_error *err);
int ss_cli_float(const char *opt, const char *s, double lo, double hi, double *out, ss_error *err);
/* ss_cli_int into an int field. */
int ss_cli_int_to(const char *opt, const char *s, long lo, long hi, int *out, ss_error *err);
/* A seed: an integer in [0, 2^63 - 1]. */
int ss_cli_seed(const char *opt, const char *s, uint64_t *out, ss_error *err);

/* getopt_long table entries: an option with a value, and a flag. */
#define SS_ARG(name, code) {name, required_argument, 0, code}
#define SS_FLAG(name, code) {name, no_argument, 0, code}
#define SS_END_OPTIONS {0, 0, 0, 0}

/* Options several commands share, parsed in one place.  Their getopt codes
 * lie above the letters, so a command's own codes never clash with them;
 * a command lists the ones it takes in its longopts. */
enum {
    SS_OPT_MODEL = 256,
    SS_OPT_DEVICE,
    SS_OPT_THREADS,
    SS_OPT_CTX,
    SS_OPT_CHAT,
    SS_OPT_SYSTEM,
    SS_OPT_CHAT_TEMPLATE,
};
#define SS_CLI_OPT_MODEL SS_ARG("model", SS_OPT_MODEL)
#define SS_CLI_OPT_DEVICE SS_ARG("device", SS_OPT_DEVICE)
#define SS_CLI_OPT_THREADS SS_ARG("threads", SS_OPT_THREADS)
#define SS_CLI_OPT_CTX SS_ARG("ctx", SS_OPT_CTX)
#define SS_CLI_OPT_CHAT SS_FLAG("chat", SS_OPT_CHAT)
#define SS_CLI_OPT_SYSTEM SS_ARG("system", SS_OPT_SYSTEM)
#define SS_CLI_OPT_CHAT_TEMPLATE SS_ARG("chat-template", SS_OPT_CHAT_TEMPLATE)

typedef struct {
    const char *model;          /* --model, else the default model */
    ss_engine_opts engine;      /* --device, --threads, --ctx (max_ctx) */
    int chat;                   /* --chat */
    const char *system;         /* --system */
    const char *chat_template;  /* --chat-template */
} ss_cli_common;

void ss_cli_common_init(ss_cli_common *o);
/* Stores shared option c: 1 when c is one, 0 when it is not, -1 for a bad
 * value (err names the option). */
int ss_cli_common_option(ss_cli_common *o, int c, const char *arg, ss_error *err);
/* Loads o->model and its tokenizer and, with --chat, the chat family (from
 * --chat-template or the model's template; SS_CHAT_NONE without --chat).
 * On failure nothing is left to free. */
int ss_cli_load_model(const ss_cli_common *o, ss_model **m, ss_tokenizer **tok, int *family,
                      ss_error *err);

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
