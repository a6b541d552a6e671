/* cmd_info.c - `safesteer info`: describes a model file or folder
 * (architecture numbers, rope, tensor types, size, chat template family). */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_internal.h"
#include "cli.h"
#include "safesteer/tokenizer.h"

static void ss_info_usage(FILE *f)
{
    fprintf(f, "usage: safesteer info [MODEL] [--json]\n\n"
               "  MODEL     GGUF file or Hugging Face folder (default: %s)\n"
               "  --json    print one JSON object instead of text\n",
               ss_default_model_path());
}

/* Tensor type histogram, most frequent first. */
typedef struct {
    int type, count;
} ss_type_count;

static int ss_count_types(const ss_model *m, ss_type_count *out, int cap)
{
    const ss_tensor *t;
    size_t n;
    int k = 0;
    ss_model_tensors(m, &t, &n);
    for (size_t i = 0; i < n; i++) {
        int j = 0;
        while (j < k && out[j].type != t[i].type)
            j++;
        if (j == k && k < cap)
            out[k++] = (ss_type_count){t[i].type, 0};
        if (j < k)
            out[j].count++;
    }
    for (int i = 1; i < k; i++) /* insertion sort: stable, k is tiny */
        for (int j = i; j > 0 && out[j].count > out[j - 1].count; j--) {
            ss_type_count tmp = out[j];
            out[j] = out[j - 1];
            out[j - 1] = tmp;
        }
    return k;
}

static size_t ss_file_size(const ss_model *m)
{
    if (m->format == SS_FORMAT_SYNTHETIC)
        return 0;
    if (m->format == SS_FORMAT_GGUF)
        return m->gguf->map_size;
    size_t s = 0;
    for (int i = 0; i < m->hf->n_files; i++)
        s += m->hf->files[i].size;
    return s;
}

static const char *ss_format_name(const ss_model *m)
{
    return m->format == SS_FORMAT_GGUF ? "gguf" : m->format == SS_FORMAT_HF ? "hf" : "synthetic";
}

static const char *ss_chat_family_of(const ss_model *m)
{
    if (!m->chat_template)
        return "none";
    int family;
    ss_error err;
    if (ss_chat_family_detect(m->chat_template, &family, &err))
        return "unknown";
    return ss_chat_family_name(family);
}

static const char *ss_pairing(const ss_config *c)
{
    return c->rope_neox ? "neox (i, i+head_dim/2)" : "interleaved (2i, 2i+1)";
}

static void ss_print_text(const ss_model *m, const ss_type_count *tc, int n_tc)
{
    const ss_config *c = &m->cfg;
    printf("model:           %s\n", m->path);
    printf("name:            %s\n", m->name);
    printf("format:          %s\n", m->format == SS_FORMAT_HF ? "hf-safetensors" : ss_format_name(m));
    printf("architecture:    llama\n");
    printf("layers:          %d\n", c->n_layers);
    printf("d_model:         %d\n", c->d_model);
    printf("heads:           %d\n", c->n_heads);
    printf("kv heads:        %d\n", c->n_kv_heads);
    printf("head_dim:        %d\n", c->head_dim);
    printf("d_ff:            %d\n", c->d_ff);
    printf("vocab:           %d\n", c->vocab_size);
    printf("context:         %d\n", c->max_ctx);
    printf("rms eps:         %g\n", (double)c->rms_eps);
    printf("rope theta:      %g\n", (double)c->rope_theta);
    if (c->rope_scaling == SS_ROPE_SCALING_LLAMA3)
        printf("rope scaling:    llama3 (factor %g, low_freq_factor %g, high_freq_factor %g, "
               "original context %d)\n",
               (double)c->rope_factor, (double)c->rope_low_freq_factor,
               (double)c->rope_high_freq_factor, c->rope_orig_ctx);
    else
        printf("rope scaling:    none\n");
    printf("rope pairing:    %s\n", ss_pairing(c));
    printf("tied embeddings: %s\n", c->tied_embeddings ? "yes" : "no");
    printf("tensor types:    ");
    for (int i = 0; i < n_tc; i++)
        printf("%s%s x%d", i ? ", " : "", ss_type_name(tc[i].type), tc[i].count);
    if (m->format == SS_FORMAT_SYNTHETIC)
        printf("random, %s", m->weights_on_device ? "drawn on the GPU by the CUDA engine"
                                                  : "bf16-exact f32 in host memory");
    int64_t p = ss_model_param_count(m);
    size_t fs = ss_file_size(m);
    printf("\nparameters:      %" PRId64 " (%.1fM)\n", p, (double)p / 1e6);
    printf("file size:       %zu bytes (%.1f MiB)\n", fs, (double)fs / (1024.0 * 1024.0));
    printf("chat template:   %s\n", ss_chat_family_of(m));
}

static json_t *ss_info_json(const ss_model *m, const ss_type_count *tc, int n_tc)
{
    const ss_config *c = &m->cfg;
    json_t *types = json_object();
    for (int i = 0; i < n_tc; i++)
        json_object_set_new(types, ss_type_name(tc[i].type), json_integer(tc[i].count));
    json_t *scaling = c->rope_scaling == SS_ROPE_SCALING_LLAMA3
        ? json_pack("{s:s, s:f, s:f, s:f, s:i}", "type", "llama3", "factor", (double)c->rope_factor,
                    "low_freq_factor", (double)c->rope_low_freq_factor, "high_freq_factor",
                    (double)c->rope_high_freq_factor, "original_max_position_embeddings",
                    c->rope_orig_ctx)
        : json_null();
    return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, "
                     "s:o, s:s, s:b, s:o, s:I, s:I, s:s}",
                     "path", m->path, "name", m->name, "format",
                     ss_format_name(m), "architecture", "llama",
                     "n_layers", c->n_layers, "d_model", c->d_model, "n_heads", c->n_heads,
                     "n_kv_heads", c->n_kv_heads, "head_dim", c->head_dim, "d_ff", c->d_ff,
                     "vocab_size", c->vocab_size, "max_ctx", c->max_ctx, "rms_eps",
                     (double)c->rms_eps, "rope_theta", (double)c->rope_theta, "rope_scaling",
                     scaling, "rope_pairing", c->rope_neox ? "neox" : "interleaved",
                     "tied_embeddings", c->tied_embeddings, "tensor_types", types, "parameters",
                     (json_int_t)ss_model_param_count(m), "file_size",
                     (json_int_t)ss_file_size(m), "chat_template", ss_chat_family_of(m));
}

int ss_cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'},
                                         {"model", required_argument, 0, 'm'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = ss_default_model_path();
    int as_json = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jm:h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': as_json = 1; break;
        case 'm': model = optarg; break;
        case 'h': ss_info_usage(stdout); return SS_EXIT_OK;
        default: ss_info_usage(stderr); return SS_EXIT_USAGE;
        }
    }
    if (optind < argc)
        model = argv[optind++];
    if (optind < argc) {
        ss_info_usage(stderr);
        return ss_cli_error("info", SS_EXIT_USAGE, "expected one MODEL argument");
    }
    ss_error err;
    ss_model *m;
    if (ss_model_load(model, &m, &err))
        return ss_cli_fail("info", SS_EXIT_FAIL, &err);
    ss_type_count tc[16];
    int n_tc = ss_count_types(m, tc, 16);
    if (as_json) {
        json_t *j = ss_info_json(m, tc, n_tc);
        char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
        if (!s) {
            ss_model_free(m);
            return ss_cli_error("info", SS_EXIT_FAIL, "out of memory formatting JSON");
        }
    } else {
        ss_print_text(m, tc, n_tc);
    }
    ss_model_free(m);
    return SS_EXIT_OK;
}
