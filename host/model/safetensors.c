/* safetensors.c - Hugging Face model folders: config.json, safetensors
 * weights (single file or sharded through model.safetensors.index.json) and
 * the chat template from tokenizer_config.json.
 *
 * A .safetensors file is: u64 little-endian header length N, N bytes of
 * JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
 * {...}}, then the data; offsets count from the byte after the header.
 * Shapes are row-major [out, in]; ss_tensor dims are reversed ({in, out}). */
#include "model/model_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- config.json */

/* A present key must hold a value: null stands for "absent" only where
 * transformers' LlamaConfig documents None as the default (nullable = 1:
 * head_dim, num_key_value_heads). */
static int ss_json_get(const json_t *root, const char *file, const char *key, int required,
                       int nullable, const json_t **out, ss_error *err)
{
    const json_t *v = json_object_get(root, key);
    if (v && json_is_null(v) && !nullable)
        return ss_fail(err, "%s: key \"%s\" is null, expected a value", file, key);
    *out = v && !json_is_null(v) ? v : NULL;
    if (!*out && required)
        return ss_fail(err, "%s: missing key \"%s\"", file, key);
    return 0;
}

static int ss_json_int(const json_t *root, const char *file, const char *key, int required,
                       int nullable, int fallback, int *out, ss_error *err)
{
    const json_t *v = NULL;
    if (ss_json_get(root, file, key, required, nullable, &v, err))
        return -1;
    if (!v) {
        *out = fallback;
        return 0;
    }
    if (!json_is_integer(v))
        return ss_fail(err, "%s: key \"%s\" must be an integer", file, key);
    json_int_t x = json_integer_value(v);
    if (x <= 0 || x > INT32_MAX)
        return ss_fail(err, "%s: key \"%s\" = %" JSON_INTEGER_FORMAT " is out of range", file,
                       key, x);
    *out = (int)x;
    return 0;
}

static int ss_json_num(const json_t *root, const char *file, const char *key, int required,
                       double fallback, double *out, ss_error *err)
{
    const json_t *v = NULL;
    if (ss_json_get(root, file, key, required, 0, &v, err))
        return -1;
    if (!v) {
        *out = fallback;
        return 0;
    }
    if (!json_is_number(v))
        return ss_fail(err, "%s: key \"%s\" must be a number", file, key);
    *out = json_number_value(v);
    float stored = (float)*out; /* ss_config keeps floats: 1e-85 would become 0 */
    if (!(stored > 0) || isinf(stored))
        return ss_fail(err, "%s: key \"%s\" = %g is not a positive, finite 32-bit float", file,
                       key, *out);
    return 0;
}

static int ss_check_llama(const json_t *root, const char *file, ss_error *err)
{
    const json_t *archs = json_object_get(root, "architectures");
    size_t i;
    const json_t *a;
    json_array_foreach(archs, i, a) {
        if (json_is_string(a) && !strcmp(json_string_value(a), "LlamaForCausalLM"))
            return 0;
    }
    const json_t *mt = json_object_get(root, "model_type");
    if (json_is_string(mt) && !strcmp(json_string_value(mt), "llama"))
        return 0;
    const json_t *first = json_array_get(archs, 0);
    const char *found = json_is_string(first) ? json_string_value(first)
                        : json_is_string(mt) ? json_string_value(mt)
                                             : "(none)";
    return ss_fail(err, "%s: architecture \"%s\" is not supported (need architectures "
                        "[\"LlamaForCausalLM\"] or model_type \"llama\")",
                   file, found);
}

static int ss_parse_rope_scaling(const json_t *root, const char *file, ss_config *cfg,
                                 ss_error *err)
{
    const json_t *rs = json_object_get(root, "rope_scaling");
    cfg->rope_scaling = SS_ROPE_SCALING_NONE;
    if (!rs || json_is_null(rs))
        return 0;
    if (!json_is_object(rs))
        return ss_fail(err, "%s: key \"rope_scaling\" must be null or an object", file);
    const json_t *t = json_object_get(rs, "rope_type");
    if (!t)
        t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "(missing)";
    if (!strcmp(type, "default"))
        return 0;
    if (strcmp(type, "llama3"))
        return ss_fail(err, "%s: rope_scaling type \"%s\" is not supported (only \"llama3\")",
                       file, type);
    char where[1200];
    snprintf(where, sizeof where, "%s: rope_scaling", file);
    double factor, low, high;
    int orig;
    if (ss_json_num(rs, where, "factor", 1, 0, &factor, err) ||
        ss_json_num(rs, where, "low_freq_factor", 1, 0, &low, err) ||
        ss_json_num(rs, where, "high_freq_factor", 1, 0, &high, err) ||
        ss_json_int(rs, where, "original_max_position_embeddings", 1, 0, 0, &orig, err))
        return -1;
    if (!(high > low))
        return ss_fail(err, "%s: high_freq_factor %g must exceed low_freq_factor %g", where,
                       high, low);
    cfg->rope_scaling = SS_ROPE_SCALING_LLAMA3;
    cfg->rope_factor = (float)factor;
    cfg->rope_low_freq_factor = (float)low;
    cfg->rope_high_freq_factor = (float)high;
    cfg->rope_orig_ctx = orig;
    return 0;
}

static int ss_parse_config(const json_t *root, const char *file, ss_config *cfg, ss_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root))
        return ss_fail(err, "%s: top level is not a JSON object", file);
    if (ss_check_llama(root, file, err))
        return -1;
    double eps, theta;
    if (ss_json_int(root, file, "hidden_size", 1, 0, 0, &cfg->d_model, err) ||
        ss_json_int(root, file, "num_hidden_layers", 1, 0, 0, &cfg->n_layers, err) ||
        ss_json_int(root, file, "num_attention_heads", 1, 0, 0, &cfg->n_heads, err) ||
        ss_json_int(root, file, "num_key_value_heads", 0, 1, cfg->n_heads, &cfg->n_kv_heads,
                    err) ||
        ss_json_int(root, file, "intermediate_size", 1, 0, 0, &cfg->d_ff, err) ||
        ss_json_int(root, file, "vocab_size", 1, 0, 0, &cfg->vocab_size, err) ||
        ss_json_int(root, file, "max_position_embeddings", 1, 0, 0, &cfg->max_ctx, err) ||
        ss_json_num(root, file, "rms_norm_eps", 1, 0, &eps, err) ||
        ss_json_num(root, file, "rope_theta", 0, 10000.0, &theta, err))
        return -1;
    if (cfg->d_model % cfg->n_heads)
        return ss_fail(err, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                       file, cfg->d_model, cfg->n_heads);
    if (ss_json_int(root, file, "head_dim", 0, 1, cfg->d_model / cfg->n_heads, &cfg->head_dim,
                    err))
        return -1;
    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie) && !json_is_null(tie)) /* transformers: None is untied */
        return ss_fail(err, "%s: key \"tie_word_embeddings\" must be true or false", file);
    cfg->tied_embeddings = json_is_true(tie);
    cfg->rms_eps = (float)eps;
    cfg->rope_theta = (float)theta;
    cfg->rope_neox = 1; /* HF checkpoints pair rotary dims (i, i + head_dim/2) */
    return ss_parse_rope_scaling(root, file, cfg, err);
}

int ss_hf_read_config(const char *dir, ss_config *cfg, ss_error *err)
{
    char file[1100];
    snprintf(file, sizeof file, "%s/config.json", dir);
    json_error_t jerr;
    json_t *root = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ss_fail(err, "%s: %s (line %d)", file, jerr.text, jerr.line);
    int rc = ss_parse_config(root, file, cfg, err);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- safetensors */

static int ss_st_dtype(const char *dtype, int *type, int *esize)
{
    static const struct { const char *name; int type, esize; } table[] = {
        {"F32", SS_TYPE_F32, 4}, {"F16", SS_TYPE_F16, 2}, {"BF16", SS_TYPE_BF16, 2}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(dtype, table[i].name)) {
            *type = table[i].type;
            *esize = table[i].esize;
            return 0;
        }
    return -1;
}

/* A JSON array entry that must be a non-negative integer. */
static int ss_st_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Shapes t from one header entry and gives the offset of its data;
 * data_size is the byte count after the header. */
static int ss_st_tensor(const ss_mapped_file *f, const char *name, const json_t *e,
                        size_t data_size, ss_tensor *t, uint64_t *begin, ss_error *err)
{
    if (strlen(name) >= sizeof t->name)
        return ss_fail(err, "%s: tensor name \"%s\" is longer than %zu bytes", f->path, name,
                       sizeof t->name - 1);
    strcpy(t->name, name);
    const json_t *dt = json_object_get(e, "dtype");
    const json_t *shape = json_object_get(e, "shape");
    const json_t *offs = json_object_get(e, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) ||
        json_array_size(offs) != 2)
        return ss_fail(err, "%s: tensor %s: header entry needs dtype, shape and data_offsets "
                            "[begin, end]",
                       f->path, name);
    int type, esize;
    if (ss_st_dtype(json_string_value(dt), &type, &esize))
        return ss_fail(err, "%s: tensor %s has dtype %s (supported: F32, F16, BF16)", f->path,
                       name, json_string_value(dt));
    size_t nd = json_array_size(shape);
    if (nd > 4)
        return ss_fail(err, "%s: tensor %s: n_dims = %zu, expected 1..4", f->path, name, nd);
    uint64_t dims[4] = {1, 1, 1, 1}; /* shape [] is a scalar */
    for (size_t d = 0; d < nd; d++) {
        const json_t *jd = json_array_get(shape, nd - 1 - d); /* reversed: innermost first */
        if (ss_st_u64(jd, &dims[d]))
            return ss_fail(err, "%s: tensor %s: shape entry %zu is not a size", f->path, name,
                           nd - 1 - d);
    }
    if (ss_tensor_set_shape(t, f->path, type, nd ? (int)nd : 1, dims, err))
        return -1;
    uint64_t end;
    if (ss_st_u64(json_array_get(offs, 0), begin) || ss_st_u64(json_array_get(offs, 1), &end) ||
        end < *begin || end > data_size) {
        char *text = json_dumps(offs, JSON_COMPACT | JSON_ENCODE_ANY);
        ss_fail(err, "%s: tensor %s: data_offsets %.80s are not [begin, end] inside the %zu "
                     "data bytes of the file",
                f->path, name, text ? text : "?", data_size);
        free(text);
        return -1;
    }
    if (end - *begin != t->nbytes)
        return ss_fail(err, "%s: tensor %s: data_offsets span %" PRIu64 " bytes but shape and "
                            "dtype need %zu",
                       f->path, name, end - *begin, t->nbytes);
    return 0;
}

/* Appends the tensors of one mapped file to hf->tensors. */
static int ss_st_parse(struct ss_hf_folder *hf, const ss_mapped_file *f, ss_error *err)
{
    if (f->size < 8)
        return ss_fail(err, "%s: file of %zu bytes is too small for the 8-byte header length",
                       f->path, f->size);
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > f->size - 8)
        return ss_fail(err, "%s: header length %" PRIu64 " runs past the end of the file "
                            "(%zu bytes)",
                       f->path, hlen, f->size);
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES,
                              &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return ss_fail(err, "%s: header is not a JSON object: %s", f->path,
                       root ? "wrong type" : jerr.text);
    }
    size_t n_new = json_object_size(root);
    ss_tensor *grown = realloc(hf->tensors, (hf->n_tensors + n_new + 1) * sizeof *grown);
    ss_tensor_slot *slots = ss_calloc(n_new, sizeof *slots, err); /* [n_new] */
    if (grown)
        hf->tensors = grown;
    if (!grown || !slots) {
        json_decref(root);
        free(slots);
        return ss_fail(err, "%s: out of memory for %zu tensor entries", f->path, n_new);
    }
    size_t data_size = f->size - 8 - (size_t)hlen, n = 0;
    const char *name;
    json_t *e;
    int rc = 0;
    json_object_foreach(root, name, e) {
        if (!strcmp(name, "__metadata__"))
            continue;
        ss_tensor *t = &hf->tensors[hf->n_tensors + n];
        memset(t, 0, sizeof *t);
        slots[n].t = t;
        if ((rc = ss_st_tensor(f, name, e, data_size, t, &slots[n].begin, err)))
            break;
        n++;
    }
    if (rc == 0)
        rc = ss_mapped_place(f, 8 + (size_t)hlen, 1, 1, slots, n, err);
    if (rc == 0)
        hf->n_tensors += n;
    free(slots);
    json_decref(root);
    return rc;
}

static int ss_hf_add_file(struct ss_hf_folder *hf, const char *path, ss_error *err)
{
    ss_mapped_file *grown = realloc(hf->files, (size_t)(hf->n_files + 1) * sizeof *grown);
    if (!grown)
        return ss_fail(err, "%s: out of memory", path);
    hf->files = grown;
    ss_mapped_file *f = &hf->files[hf->n_files];
    if (ss_mapped_open(path, f, err))
        return -1;
    hf->n_files++;
    return ss_st_parse(hf, f, err);
}

/* Opens every shard named in the index's weight_map once. */
static int ss_hf_open_index(struct ss_hf_folder *hf, const char *index, ss_error *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ss_fail(err, "%s: %s (line %d)", index, jerr.text, jerr.line);
    const json_t *wm = json_object_get(root, "weight_map");
    int rc = json_is_object(wm) ? 0 : ss_fail(err, "%s: missing key \"weight_map\"", index);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)wm, name, v) {
        if (rc)
            break;
        if (!json_is_string(v)) {
            rc = ss_fail(err, "%s: weight_map[\"%s\"] is not a file name", index, name);
            break;
        }
        char path[2200];
        snprintf(path, sizeof path, "%s/%s", hf->dir, json_string_value(v));
        int seen = 0;
        for (int i = 0; i < hf->n_files; i++)
            seen |= !strcmp(hf->files[i].path, path);
        if (!seen)
            rc = ss_hf_add_file(hf, path, err);
    }
    json_decref(root);
    return rc;
}

static int ss_hf_check_unique(const struct ss_hf_folder *hf, ss_error *err)
{
    ss_gguf_str *names = ss_malloc((hf->n_tensors ? hf->n_tensors : 1) * sizeof *names, err);
    if (!names)
        return -1;
    for (size_t i = 0; i < hf->n_tensors; i++)
        names[i] = (ss_gguf_str){hf->tensors[i].name, strlen(hf->tensors[i].name)};
    size_t a, b;
    int rc = ss_find_duplicate(names, hf->n_tensors, &a, &b, err);
    free(names);
    if (rc > 0)
        return ss_fail(err, "%s: tensor %s appears in more than one shard", hf->dir,
                       hf->tensors[a].name);
    return rc;
}

int ss_hf_open(const char *dir, struct ss_hf_folder **out, ss_error *err)
{
    *out = NULL;
    struct ss_hf_folder *hf = ss_calloc(1, sizeof *hf, err);
    if (!hf)
        return -1;
    snprintf(hf->dir, sizeof hf->dir, "%s", dir);
    char single[1100], index[1100];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int rc;
    if (access(single, F_OK) == 0)
        rc = ss_hf_add_file(hf, single, err);
    else if (access(index, F_OK) == 0)
        rc = ss_hf_open_index(hf, index, err);
    else
        rc = ss_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
    if (rc == 0)
        rc = ss_hf_check_unique(hf, err);
    if (rc) {
        ss_hf_close(hf);
        return -1;
    }
    *out = hf;
    return 0;
}

void ss_hf_close(struct ss_hf_folder *hf)
{
    if (!hf)
        return;
    for (int i = 0; i < hf->n_files; i++)
        ss_mapped_close(&hf->files[i]);
    free(hf->files);
    free(hf->tensors);
    free(hf);
}

/* ---------------------------------------------------------------- chat template */

/* tokenizer_config.json "chat_template": a string, or a list of
 * {"name", "template"} from which the "default" entry is taken. */
static const char *ss_template_of(const json_t *ct)
{
    if (json_is_string(ct))
        return json_string_value(ct);
    size_t i;
    const json_t *e;
    json_array_foreach(ct, i, e) {
        const json_t *name = json_object_get(e, "name");
        const json_t *tmpl = json_object_get(e, "template");
        if (json_is_string(name) && !strcmp(json_string_value(name), "default") &&
            json_is_string(tmpl))
            return json_string_value(tmpl);
    }
    return NULL;
}

int ss_hf_chat_template(const char *dir, char **out, ss_error *err)
{
    *out = NULL;
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (access(path, F_OK) == 0) {
        json_error_t jerr;
        json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (!root)
            return ss_fail(err, "%s: %s (line %d)", path, jerr.text, jerr.line);
        const char *t = ss_template_of(json_object_get(root, "chat_template"));
        if (t && !(*out = strdup(t))) {
            json_decref(root);
            return ss_fail(err, "%s: out of memory", path);
        }
        json_decref(root);
        if (*out)
            return 0;
    }
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    if (access(path, F_OK) == 0)
        return ss_read_file(path, out, NULL, err);
    return 0;
}
