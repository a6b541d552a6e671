/* cmd_vectors.c - `safesteer vectors`: category steering vectors from a
 * capture file, and `vectors export` / `vectors import` for llama.cpp
 * control-vector GGUF files (docs/vectors.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "safesteer/capture.h"
#include "safesteer/model.h"
#include "safesteer/util.h"
#include "safesteer/vectors.h"

#define CMD "vectors"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: safesteer vectors --acts ACTS.h5 --out VECTORS.h5 [options]\n"
            "       safesteer vectors export --in VECTORS.h5 --out CV.gguf [--category C]\n"
            "                                [--scale S] [--model-hint ARCH] [--model PATH]\n"
            "                                [--skip-layer0]\n"
            "       safesteer vectors import --in CV.gguf --out VECTORS.h5 [--category NAME]\n"
            "                                [--model PATH]\n\n"
            "options (compute):\n"
            "  --method M           mean-diff (default), pruned or pca\n"
            "  --safe-acts FILE     every prompt of another capture forms the safe pool\n"
            "  --safe-category C    prompts of category C form the safe pool\n"
            "  --unsafe-label S     label of unsafe prompts (default unsafe)\n"
            "  --safe-label S       label of safe prompts (default safe)\n"
            "  --categories a,b,c   categories to compute (default: all with unsafe prompts)\n"
            "  --layers 3,5,10-12   model layers (default: all captured)\n"
            "  --holdout F          fraction held out for separability (default 0.2)\n"
            "  --seed N             split seed (default 0)\n"
            "  --pca-iters N        maximum power iterations (default 200)\n"
            "  --chunk-rows N       prompts per HDF5 read (default 64)\n"
            "  --quiet              no progress lines (shown for passes over a second)\n");
}

/* Splits "a,b,c" in place into items[*n] (at most cap). */
static int split_list(char *s, char **items, int cap, int *n, ss_error *err)
{
    *n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (*n == cap)
            return ss_fail(err, "list has more than %d items", cap);
        items[(*n)++] = tok;
    }
    return *n ? 0 : ss_fail(err, "empty list");
}

static void print_summary(const ss_vector_set *r, const char *out)
{
    int L = r->n_layers;
    if (!strcmp(r->method, "pca") && r->pca_residual > 1e-12)
        fprintf(stderr, "safesteer vectors: warning: power iteration stopped after %d iterations "
                        "with residual %.3g (small eigengap; raise --pca-iters)\n",
                r->pca_iterations, r->pca_residual);
    printf("wrote %s: %d categories x %d layers x d_model %d, method %s, %d passes\n", out,
           r->n_categories, L, r->d_model, r->method, r->passes);
    for (int c = 0; c < r->n_categories; c++) {
        int best = 0;
        for (int l = 1; l < L; l++)
            if (r->separability[c * L + l] > r->separability[c * L + best])
                best = l;
        printf("  %-28s unsafe %6lld  safe %6lld  best layer %d (separability %.3f, "
               "norm %.3f)  pool %s\n", r->categories[c], (long long)r->counts_unsafe[c],
               (long long)r->counts_safe[c], r->layers[best], r->separability[c * L + best],
               r->norms[c * L + best], r->safe_pool[c]);
    }
}

static int cmd_compute(int argc, char **argv)
{
    static const struct option opts[] = {
        SS_ARG("acts", 'a'), SS_ARG("method", 'm'), SS_ARG("out", 'o'), SS_ARG("safe-acts", 'S'),
        SS_ARG("unsafe-label", 'u'), SS_ARG("safe-label", 's'), SS_ARG("safe-category", 'C'),
        SS_ARG("categories", 'c'), SS_ARG("layers", 'l'), SS_ARG("holdout", 'H'),
        SS_ARG("seed", 'e'), SS_ARG("pca-iters", 'p'), SS_ARG("chunk-rows", 'r'),
        SS_FLAG("quiet", 'q'), SS_FLAG("help", 'h'), SS_END_OPTIONS};
    ss_vec_options o;
    ss_vec_options_init(&o);
    o.holdout = 0.2;
    int quiet = 0;
    ss_error err = {.msg = ""};
    const char *out = NULL, *layers_spec = NULL;
    char cats_buf[4096];
    char *cats[512];
    double f;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = 0;
        switch (opt) {
        case 'a': o.acts_path = optarg; break;
        case 'o': out = optarg; break;
        case 'S': o.safe_acts_path = optarg; break;
        case 'u': o.unsafe_label = optarg; break;
        case 's': o.safe_label = optarg; break;
        case 'C': o.safe_category = optarg; break;
        case 'm':
            rc = ss_vec_method_parse(optarg, &o.method, &err) < 0 ? ss_cli_flag(&err, "--method")
                                                                  : 0;
            break;
        case 'c':
            snprintf(cats_buf, sizeof cats_buf, "%s", optarg);
            rc = split_list(cats_buf, cats, 512, &o.n_categories, &err);
            o.categories = (const char *const *)cats;
            if (rc)
                ss_fail_context(&err, "--categories");
            break;
        case 'l': layers_spec = optarg; break;
        case 'H':
            rc = ss_cli_float("--holdout", optarg, 0, 0.99, &f, &err);
            o.holdout = f;
            break;
        case 'e':
            rc = ss_cli_seed("--seed", optarg, &o.seed, &err);
            break;
        case 'p':
            rc = ss_cli_int_to("--pca-iters", optarg, 1, 100000, &o.pca_iters, &err);
            break;
        case 'r':
            rc = ss_cli_int_to("--chunk-rows", optarg, 1, 1 << 20, &o.chunk_rows, &err);
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
    if (!o.acts_path || !out)
        return ss_cli_error(CMD, SS_EXIT_USAGE, "--acts and --out are required");
    int *layers = NULL;
    if (layers_spec) { /* checked against the captured model's layer count */
        ss_capture_file *a;
        if (ss_capture_open(o.acts_path, &a, &err) < 0)
            return ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
        int rc = ss_layers_parse(layers_spec, ss_capture_info_of(a)->n_layers_model, &layers,
                                 &o.n_layers, &err);
        ss_capture_close(a);
        if (rc < 0)
            return ss_cli_flag(&err, "--layers"), ss_cli_fail(CMD, SS_EXIT_USAGE, &err);
    }
    o.layers = layers;
    o.progress = ss_cli_progress(quiet);
    ss_vector_set r;
    int failed = ss_vectors_compute(&o, &r, &err) < 0;
    free(layers);
    if (failed)
        return ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    int code = SS_EXIT_OK;
    if (ss_vectors_write(out, &r, &err) < 0)
        code = ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    else
        print_summary(&r, out);
    ss_vectors_free(&r);
    return code;
}

/* Loads a model only for its config (d_model, layers, architecture). */
static int check_against_model(const ss_vector_set *vs, const char *model_path, char *hint,
                               size_t hint_cap, ss_error *err)
{
    ss_model *m;
    if (ss_model_load(model_path, &m, err) < 0)
        return -1;
    int rc = ss_vectors_check_model(vs, &m->cfg, model_path, err);
    ss_gguf_str arch;
    if (!rc && hint && m->gguf && ss_gguf_get_str(m->gguf, "general.architecture", &arch, NULL) == 0)
        snprintf(hint, hint_cap, "%.*s", (int)arch.len, arch.ptr);
    ss_model_free(m);
    return rc;
}

static int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        SS_ARG("in", 'i'), SS_ARG("out", 'o'), SS_ARG("category", 'c'), SS_ARG("scale", 's'),
        SS_ARG("model-hint", 'M'), SS_ARG("model", 'm'), SS_FLAG("skip-layer0", 'z'),
        SS_FLAG("help", 'h'), SS_END_OPTIONS};
    const char *in = NULL, *out = NULL, *cat = NULL, *model = NULL;
    char hint[64] = "llama";
    double scale = 1.0;
    int skip0 = 0, opt;
    ss_error err = {.msg = ""};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'c': cat = optarg; break;
        case 'M': snprintf(hint, sizeof hint, "%s", optarg); break;
        case 'm': model = optarg; break;
        case 'z': skip0 = 1; break;
        case 's':
            if (ss_cli_float("--scale", optarg, -1e6, 1e6, &scale, &err) < 0)
                return ss_cli_fail(CMD, SS_EXIT_USAGE, &err);
            break;
        case 'h': usage(stdout); return SS_EXIT_OK;
        default: usage(stderr); return SS_EXIT_USAGE;
        }
    }
    if (!in || !out || optind < argc)
        return ss_cli_error(CMD, SS_EXIT_USAGE, "export needs --in and --out (see --help)");
    ss_vector_set vs;
    int idx, skipped = 0, code = SS_EXIT_OK;
    if (ss_vectors_load(in, &vs, &err) < 0)
        return ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    if (ss_vectors_category(&vs, cat, &idx, &err) < 0 ||
        (model && check_against_model(&vs, model, hint, sizeof hint, &err) < 0) ||
        ss_control_vector_write(out, &vs, idx, (float)scale, hint, skip0, &skipped, &err) < 0)
        code = ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    else
        printf("wrote %s: category %s, %d direction tensors (model_hint %s, scale %g)%s\n", out,
               vs.categories[idx], vs.n_layers - skipped, hint, scale,
               skipped ? ", layer 0 skipped" : "");
    ss_vectors_free(&vs);
    return code;
}

/* An imported control vector under its new name, fingerprinted by its file. */
static int rename_imported(ss_vector_set *vs, const char *name, const char *src, ss_error *err)
{
    char *copy = strdup(name);
    if (!copy)
        return ss_fail(err, "out of memory");
    free(vs->categories[0]);
    vs->categories[0] = copy;
    snprintf(vs->model_name, sizeof vs->model_name, "%s", vs->model_hint);
    return ss_sha256_file(src, vs->source_sha256, err);
}

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        SS_ARG("in", 'i'), SS_ARG("out", 'o'), SS_ARG("category", 'c'), SS_ARG("model", 'm'),
        SS_FLAG("help", 'h'), SS_END_OPTIONS};
    const char *in = NULL, *out = NULL, *name = "control", *model = NULL;
    int opt;
    ss_error err = {.msg = ""};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'i': in = optarg; break;
        case 'o': out = optarg; break;
        case 'c': name = optarg; break;
        case 'm': model = optarg; break;
        case 'h': usage(stdout); return SS_EXIT_OK;
        default: usage(stderr); return SS_EXIT_USAGE;
        }
    }
    if (!in || !out || optind < argc)
        return ss_cli_error(CMD, SS_EXIT_USAGE, "import needs --in and --out (see --help)");
    ss_vector_set vs;
    int code = SS_EXIT_OK;
    if (ss_vectors_load(in, &vs, &err) < 0)
        return ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    if (vs.n_categories != 1)
        code = ss_cli_error(CMD, SS_EXIT_FAIL, "import expects a control-vector GGUF (one "
                                               "direction per layer)");
    else if ((model && check_against_model(&vs, model, NULL, 0, &err) < 0) ||
             rename_imported(&vs, name, in, &err) < 0 || ss_vectors_write(out, &vs, &err) < 0)
        code = ss_cli_fail(CMD, SS_EXIT_FAIL, &err);
    else
        printf("wrote %s: category %s, %d layers x d_model %d from %s\n", out, name,
               vs.n_layers, vs.d_model, in);
    ss_vectors_free(&vs);
    return code;
}

int ss_cmd_vectors(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "export"))
        return cmd_export(argc - 1, argv + 1);
    if (argc > 1 && !strcmp(argv[1], "import"))
        return cmd_import(argc - 1, argv + 1);
    return cmd_compute(argc, argv);
}
