/* cmd_cluster.c - `safesteer cluster`: k-means over one captured layer with
 * silhouette-chosen k and purity / NMI / ARI against the categories. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/cluster.h"

#define CMD "cluster"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: safesteer cluster --acts ACTS.h5 --layer L (--k K | --k-range A..B)\n"
            "                         --out CLUSTERS.h5 [options]\n\n"
            "  --metric cosine|l2        distance (default cosine: rows scaled to unit length)\n"
            "  --seed N                  k-means++ and silhouette sample seed (default 0)\n"
            "  --restarts R              k-means runs per k, best inertia kept (default 10)\n"
            "  --max-iter N              Lloyd iterations per run (default 300)\n"
            "  --silhouette-samples N    points used for the silhouette (default 5000)\n"
            "  --safe-label S            prompts with this label form the safe pool and are\n"
            "                            not clustered (default safe)\n"
            "  --quiet                   no progress lines (shown when a run takes over a second)\n");
}

static int parse_range(const char *s, int *a, int *b, ss_error *err)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    char *dots = strstr(buf, "..");
    if (!dots)
        return ss_fail(err, "--k-range: \"%s\" is not A..B", s);
    *dots = 0;
    long lo, hi;
    if (ss_cli_int("--k-range", buf, 2, 100000, &lo, err) < 0 ||
        ss_cli_int("--k-range", dots + 2, lo, 100000, &hi, err) < 0)
        return -1;
    *a = (int)lo;
    *b = (int)hi;
    return 0;
}

static void print_summary(const ss_cluster_options *o, const ss_cluster_summary *r,
                          const char *out)
{
    for (int i = 0; i < r->n_k; i++)
        printf("k=%-3d inertia %-12.5g silhouette %.4f%s\n", r->k_values[i], r->inertia[i],
               r->silhouette[i], i == r->best ? "  <- chosen" : "");
    printf("layer %d, metric %s, %lld prompts clustered (%lld safe in the pool)\n", o->layer,
           ss_metric_name(o->metric), (long long)r->n_clustered, (long long)r->n_safe);
    printf("purity %.4f  NMI %.4f  ARI %.4f  (against %d categories)\n", r->purity, r->nmi,
           r->ari, r->n_categories);
    for (int j = 0; j < r->k; j++)
        printf("  cluster %-3d size %-6lld top category %s (%lld)\n", j, (long long)r->sizes[j],
               r->top_category[j], (long long)r->top_count[j]);
    printf("wrote %s\n", out);
}

int ss_cmd_cluster(int argc, char **argv)
{
    static const struct option opts[] = {
        SS_ARG("acts", 'a'), SS_ARG("layer", 'l'), SS_ARG("k", 'k'), SS_ARG("k-range", 'K'),
        SS_ARG("metric", 'm'), SS_ARG("seed", 'e'), SS_ARG("restarts", 'r'),
        SS_ARG("max-iter", 'i'), SS_ARG("silhouette-samples", 'S'), SS_ARG("safe-label", 's'),
        SS_ARG("out", 'o'), SS_FLAG("quiet", 'q'), SS_FLAG("help", 'h'), SS_END_OPTIONS};
    ss_cluster_options o;
    ss_cluster_options_init(&o);
    int quiet = 0;
    ss_error err = {.msg = ""};
    const char *out = NULL;
    int have_layer = 0, opt;
    long v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case 'a': o.acts_path = optarg; break;
        case 'o': out = optarg; break;
        case 's': o.safe_label = optarg; break;
        case 'm':
            rc = ss_metric_parse(optarg, &o.metric, &err) < 0 ? ss_cli_flag(&err, "--metric") : 0;
            break;
        case 'K': rc = parse_range(optarg, &o.k_min, &o.k_max, &err); break;
        case 'l':
            rc = ss_cli_int_to("--layer", optarg, 0, 1 << 20, &o.layer, &err);
            have_layer = 1;
            break;
        case 'k':
            rc = ss_cli_int("--k", optarg, 2, 100000, &v, &err);
            o.k_min = o.k_max = (int)v;
            break;
        case 'e':
            rc = ss_cli_seed("--seed", optarg, &o.seed, &err);
            break;
        case 'r':
            rc = ss_cli_int_to("--restarts", optarg, 1, 10000, &o.restarts, &err);
            break;
        case 'i':
            rc = ss_cli_int_to("--max-iter", optarg, 1, 1000000, &o.max_iter, &err);
            break;
        case 'S':
            rc = ss_cli_int("--silhouette-samples", optarg, 2, 1L << 40, &v, &err);
            o.silhouette_samples = v;
            break;
        case 'q': quiet = 1; break;
        case 'h': usage(stdout); return SS_EXIT_OK;
        default: usage(stderr); return SS_EXIT_USAGE;
        }
        if (rc)
            return ss_cli_fail(CMD, SS_EXIT_USAGE, &err);
    }
    if (optind < argc)
        return ss_cli_error(CMD, SS_EXIT_USAGE, "unexpected argument (see --help)");
    if (!o.acts_path || !out || !have_layer || !o.k_min)
        return ss_cli_error(CMD, SS_EXIT_USAGE,
                            "--acts, --layer, --out and --k or --k-range are required");
    o.progress = ss_cli_progress(quiet);
    ss_cluster_summary r;
    if (ss_cluster_run(&o, out, &r, &err) < 0)
        return ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    print_summary(&o, &r, out);
    ss_cluster_summary_free(&r);
    return SS_EXIT_OK;
}
