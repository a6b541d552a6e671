/* model_internal.h - pieces of the model loader shared between model.c,
 * safetensors.c and the info/tensor subcommands (not a public interface). */
#ifndef SAFESTEER_MODEL_INTERNAL_H
#define SAFESTEER_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"
#include "safesteer/model.h"

/* One mapped .safetensors file. */
typedef struct {
    char path[1024];
    const uint8_t *map;
    size_t size;
} ss_hf_file;

/* A Hugging Face folder: its mapped shards and every tensor they hold. */
struct ss_hf_folder {
    char dir[1024];
    int n_files;
    ss_hf_file *files;     /* [n_files] */
    size_t n_tensors;
    ss_tensor *tensors;    /* [n_tensors], data points into files[].map */
};

/* Parses FOLDER/config.json into cfg (rope_neox = 1) and maps the weights
 * (model.safetensors or model.safetensors.index.json shards). */
int ss_hf_read_config(const char *dir, ss_config *cfg, ss_error *err);
int ss_hf_open(const char *dir, struct ss_hf_folder **out, ss_error *err);
void ss_hf_close(struct ss_hf_folder *hf);
/* chat_template from tokenizer_config.json (or chat_template.jinja), malloc'd;
 * *out stays NULL when the folder has none. */
int ss_hf_chat_template(const char *dir, char **out, ss_error *err);

/* Every tensor in the model's file(s), in file order. */
void ss_model_tensors(const ss_model *m, const ss_tensor **tensors, size_t *n);
/* A tensor by its name in the file (GGUF or Hugging Face naming), or NULL. */
const ss_tensor *ss_model_find_tensor(const ss_model *m, const char *name);

#endif
