/* cmd_sweep.c - `safesteer sweep`: run a config-driven steering sweep. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "safesteer/model.h"
#include "safesteer/config.h"
#include "safesteer/engine.h"
#include "safesteer/sweep.h"

static const char *const usage_text =
    "usage: safesteer sweep FILE.yaml [options]\n"
    "  --out DIR          run folder (default: the config's output.dir, else runs/<name>)\n"
    "  --model M          override the config's model (default: config, else %s)\n"
    "  --resume           continue an interrupted run in DIR (same config)\n"
    "  --shard i/N        run only work units u with u %% N == i (merge with safesteer merge)\n"
    "  --threads N        CPU threads (default: the config's, 0 = all cores)\n"
    "  --device D         cpu | cuda (default: the config's)\n"
    "  --quiet            no progress bar\n"
    "  --trace-tokens     records also hold token_ids and top2_gap (to compare engines)\n"
    "See docs/sweeps.md for the file format.\n";

static int parse_shard(const char *s, ss_sweep_opts *o, ss_error *err)
{
    int i, n, k = 0;
    if (sscanf(s, "%d/%d%n", &i, &n, &k) != 2 || s[k] || n < 1 || i < 0 || i >= n)
        return ss_fail(err, "--shard: \"%s\" is not i/N with 0 <= i < N", s);
    o->shard_i = i;
    o->shard_n = n;
    return 0;
}

/* runs/<config file name without .yaml> */
static void default_out(const char *cfg, char *out, size_t cap)
{
    const char *base = strrchr(cfg, '/');
    base = base ? base + 1 : cfg;
    size_t n = strcspn(base, ".");
    snprintf(out, cap, "runs/%.*s", (int)n, base);
}

int ss_cmd_sweep(int argc, char **argv)
{
    static const struct option longopts[] = {
        SS_ARG("out", 'o'), SS_ARG("model", 'm'), SS_FLAG("resume", 'r'), SS_ARG("shard", 's'),
        SS_ARG("threads", 'j'), SS_ARG("device", 'd'), SS_FLAG("quiet", 'q'), SS_FLAG("help", 'h'),
        SS_FLAG("trace-tokens", 't'),
        SS_END_OPTIONS};
    ss_error err = {.msg = ""};
    ss_sweep_opts o;
    ss_sweep_opts_default(&o);
    int quiet = !isatty(2); /* a log file gets no progress lines */
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'm': o.model = optarg; break;
        case 'r': o.resume = 1; break;
        case 's':
            if (parse_shard(optarg, &o, &err) < 0)
                return ss_cli_fail("sweep", SS_EXIT_USAGE, &err);
            break;
        case 'j':
            if (ss_cli_int_to("--threads", optarg, 0, 1024, &o.threads, &err) < 0)
                return ss_cli_fail("sweep", SS_EXIT_USAGE, &err);
            break;
        case 'd':
            if (ss_device_parse(optarg, &o.device, &err) < 0 && ss_cli_flag(&err, "--device"))
                return ss_cli_fail("sweep", SS_EXIT_USAGE, &err);
            break;
        case 'q': quiet = 1; break;
        case 't': o.trace_tokens = 1; break;
        case 'h': printf(usage_text, ss_default_model_path()); return SS_EXIT_OK;
        default: return ss_cli_error("sweep", SS_EXIT_USAGE, "unknown option (see --help)");
        }
    }
    if (optind != argc - 1)
        return ss_cli_error("sweep", SS_EXIT_USAGE, "expected one config file (see --help)");
    ss_sweep_config cfg;
    if (ss_config_load(argv[optind], &cfg, &err) < 0) {
        ss_config_free(&cfg);
        return ss_cli_fail("sweep", SS_EXIT_USAGE, &err);
    }
    char dflt[1024];
    default_out(argv[optind], dflt, sizeof dflt);
    if (!out)
        out = cfg.out_dir ? cfg.out_dir : dflt;
    o.out_dir = out;
    o.progress = ss_cli_progress(quiet);
    ss_sweep_throughput tp;
    o.throughput = &tp;
    int rc = ss_sweep_run(&cfg, &o, &err);
    ss_config_free(&cfg);
    if (rc < 0)
        return ss_cli_fail("sweep", SS_EXIT_FAIL, &err);
    if (tp.generations > 0) {
        double busy = tp.loop_seconds > 0 ? tp.loop_seconds : 1;
        fprintf(stderr,
                "safesteer sweep: %ld generations, %ld tokens generated in %.1f s = %.0f tok/s "
                "at batch %d%s (generation %.0f%%, perplexity/relevance %.0f%%, judge %.0f%%); "
                "capture and vectors %.1f s\n",
                tp.generations, tp.generated_tokens, tp.loop_seconds,
                tp.generated_tokens / busy, tp.batch, tp.batch_auto ? " (auto)" : "",
                100 * tp.generate_seconds / busy, 100 * tp.quality_seconds / busy,
                100 * tp.judge_seconds / busy, tp.capture_seconds);
    }
    fprintf(stderr, "safesteer sweep: results in %s (results.h5, summary.csv, generations.jsonl)\n",
            out);
    return SS_EXIT_OK;
}
