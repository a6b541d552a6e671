/* model_internal.h - pieces of the model loader shared between model.c,
 * safetensors.c and the info/tensor subcommands (not a public interface). */
#ifndef SAFESTEER_MODEL_INTERNAL_H
#define SAFESTEER_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"
#include "safesteer/model.h"

/* ---------------------------------------------------------------- mapped files (mapped.c) */

/* One model file (GGUF, .safetensors shard) mapped read-only.  Every read of
 * it goes through the checks below: no tensor points outside it. */
typedef struct {
    char path[1024];
    const uint8_t *map;
    size_t size;
} ss_mapped_file;

/* Maps a regular, non-empty file. */
int ss_mapped_open(const char *path, ss_mapped_file *f, ss_error *err);
void ss_mapped_close(ss_mapped_file *f);

/* Sets t's type, n_dims, dims (innermost first; the rest 1) and nbytes, with
 * every product checked for overflow: n_dims 1..4, no zero dimension, dims[0]
 * a multiple of the type's block, the byte size below 2^63.  type must be
 * one safesteer decodes.  Errors name file, t->name and the dims. */
int ss_tensor_set_shape(ss_tensor *t, const char *file, int type, int n_dims,
                        const uint64_t *dims, ss_error *err);

/* A shaped tensor and the offset of its data from the data section's start,
 * as its file gives it. */
typedef struct {
    ss_tensor *t;
    uint64_t begin;
} ss_tensor_slot;

/* Points each slot's tensor at its data in the data section [data_start,
 * f->size), in slot order (sorted by offset first when in_offset_order):
 * each offset a multiple of alignment, the data inside the file, each
 * tensor beginning where the one before ends rounded up to alignment (the
 * first at 0: no gap, no overlap, no shared range) and fewer than alignment
 * bytes after the last.  This is the layout ggml's GGUF reader and the
 * safetensors format (alignment 1) require. */
int ss_mapped_place(const ss_mapped_file *f, size_t data_start, uint64_t alignment,
                    int in_offset_order, ss_tensor_slot *slots, size_t n, ss_error *err);

/* 1 with the indices of two equal names in *first < *second, 0 if all
 * names[n] differ, -1 out of memory.  O(n log n): files hold many names. */
int ss_find_duplicate(const ss_gguf_str *names, size_t n, size_t *first, size_t *second,
                      ss_error *err);

/* ---------------------------------------------------------------- Hugging Face folders */

/* A Hugging Face folder: its mapped shards and every tensor they hold. */
struct ss_hf_folder {
    char dir[1024];
    int n_files;
    ss_mapped_file *files; /* [n_files] */
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
