/* cmd_merge.c - `safesteer merge OUT SHARD_DIR...`: join sharded sweep runs. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "safesteer/sweep.h"

int ss_cmd_merge(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: safesteer merge OUT SHARD_DIR...\n"
               "  joins the run folders of `safesteer sweep --shard i/N` (same config) into OUT,\n"
               "  equal to the unsharded run: results.h5, summary.csv, generations.jsonl,\n"
               "  config.resolved.yaml and the capture/vector files.\n");
        return SS_EXIT_OK;
    }
    if (argc < 3)
        return ss_cli_error("merge", SS_EXIT_USAGE, "usage: safesteer merge OUT SHARD_DIR...");
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], argv[1]))
            return ss_cli_error("merge", SS_EXIT_USAGE, "OUT must differ from the shard folders");
    ss_error err = {.msg = ""};
    if (ss_sweep_merge(argv[1], (const char *const *)argv + 2, argc - 2, &err) < 0)
        return ss_cli_fail("merge", SS_EXIT_FAIL, &err);
    fprintf(stderr, "safesteer merge: %d shards joined into %s\n", argc - 2, argv[1]);
    return SS_EXIT_OK;
}
