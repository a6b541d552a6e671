/* main.c - the safesteer command: dispatches to one file per subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"generate", ss_cmd_generate, "generate text from a prompt (optionally as a chat turn)"},
    {"info", ss_cmd_info, "describe a model file or folder"},
    {"tensor", ss_cmd_tensor, "write one dequantised tensor as .npy"},
    {"tokenize", ss_cmd_tokenize, "print the token ids of text"},
    {"detokenize", ss_cmd_detokenize, "print the text of token ids"},
    {"bench", ss_cmd_bench, "measure prefill / decode speed and steering cost"},
    {"capture", ss_cmd_capture, "capture activations of a prompt set to HDF5"},
    {"vectors", ss_cmd_vectors, "steering vectors from captures; export/import GGUF control vectors"},
    {"cluster", ss_cmd_cluster, "k-means clusters of captured activations with NMI/ARI/purity"},
    {"sweep", ss_cmd_sweep, "run a config-driven steering sweep with evaluation (docs/sweeps.md)"},
    {"merge", ss_cmd_merge, "join the run folders of a sharded sweep"},
    {"report", ss_cmd_report, "write the HTML report of a sweep run (Python analysis package)"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: safesteer COMMAND [options]   (safesteer COMMAND --help for options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
}

/* OpenMP threads that spin while waiting make the CPU engine 5-10x slower as
 * soon as anything else uses the cores (measured on the 2-core development
 * machine: 1.3 vs 12.2 tokens/s with 2 threads under load), and shared nodes
 * are the norm.  libgomp reads OMP_WAIT_POLICY when it loads, before main,
 * so the default is set by running this program again with it. */
static void prefer_passive_openmp_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with libgomp's default */
}

int main(int argc, char **argv)
{
    prefer_passive_openmp_wait(argv);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? SS_EXIT_USAGE : SS_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("safesteer %s\n", SAFESTEER_VERSION);
        return SS_EXIT_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "safesteer: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return SS_EXIT_USAGE;
}
