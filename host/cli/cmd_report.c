/* cmd_report.c - `safesteer report RUN_DIR [--out FILE]`: the HTML report of
 * a sweep, written by the Python analysis package (analysis/), which this
 * command runs with the package on PYTHONPATH.  The package is found through
 * $SAFESTEER_ANALYSIS_DIR, else the source tree this binary was built from. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int ss_cmd_report(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: safesteer report RUN_DIR [--out report.html] [--samples N]\n"
               "                        [--max-perplexity-ratio R] [--max-distinct2-drop D]\n"
               "                        [--max-relevance-drop D] [--min-n N]\n"
               "  writes one self-contained HTML report of a sweep run folder\n"
               "  (python3 -m safesteer_analysis report; needs numpy, pandas, h5py,\n"
               "  matplotlib: pip install ./analysis).  The best cell of a category is the\n"
               "  lowest unsafe rate among cells whose perplexity stays within R times the\n"
               "  baseline's (default 1.5) and whose distinct-2 and relevance drop by at most\n"
               "  D (defaults 0.1); cells with fewer than N generations (default 30) are\n"
               "  flagged.\n");
        return argc < 2 ? SS_EXIT_USAGE : SS_EXIT_OK;
    }
    const char *dir = getenv("SAFESTEER_ANALYSIS_DIR");
    if (!dir || !*dir)
        dir = SAFESTEER_SOURCE_DIR "/analysis";
    char pkg[4096];
    snprintf(pkg, sizeof pkg, "%s/safesteer_analysis", dir);
    struct stat st;
    if (stat(pkg, &st) != 0) {
        char msg[4200];
        snprintf(msg, sizeof msg, "analysis package not found at %s (set SAFESTEER_ANALYSIS_DIR "
                                  "to the repository's analysis/ folder)", pkg);
        return ss_cli_error("report", SS_EXIT_FAIL, msg);
    }
    const char *old = getenv("PYTHONPATH");
    char path[8192];
    snprintf(path, sizeof path, "%s%s%s", dir, old && *old ? ":" : "", old && *old ? old : "");
    setenv("PYTHONPATH", path, 1);

    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args)
        return ss_cli_error("report", SS_EXIT_FAIL, "out of memory");
    int n = 0;
    args[n++] = "python3";
    args[n++] = "-m";
    args[n++] = "safesteer_analysis";
    args[n++] = "report";
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    execvp("python3", args);
    char msg[256];
    snprintf(msg, sizeof msg, "cannot run python3: %s", strerror(errno));
    free(args);
    return ss_cli_error("report", SS_EXIT_FAIL, msg);
}
