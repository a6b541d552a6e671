/* model.h - model files (GGUF, Hugging Face safetensors folders) and the
 * Llama-family architecture description every engine runs.
 *
 * Weights stay in the file's own encoding, memory-mapped; engines decode
 * them to exactly the values ss_tensor_rows_f32 gives (CPU: inside every
 * matrix product; CUDA: row blocks on the way to bf16).  Shapes follow GGUF: dims[0] is the contiguous (innermost) axis,
 * so a linear layer W with y = W x has dims = {in, out} and is stored as
 * `out` rows of `in` values. */
#ifndef SAFESTEER_MODEL_H
#define SAFESTEER_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"

/* ---------------------------------------------------------------- dtypes */

/* Values are GGML's type ids, so GGUF tensor infos map one to one. */
typedef enum {
    SS_TYPE_F32 = 0,
    SS_TYPE_F16 = 1,
    SS_TYPE_Q4_0 = 2,
    SS_TYPE_Q4_1 = 3,
    SS_TYPE_Q8_0 = 8,
    SS_TYPE_BF16 = 30,
} ss_type;

/* "F32", "Q4_1", ... or "type-N" for ids safesteer does not decode. */
const char *ss_type_name(int type);
/* 1 if safesteer can decode this GGML type id. */
int ss_type_supported(int type);
/* Elements per block and bytes per block (F32: 1 and 4; Q4_1: 32 and 20). */
int ss_type_block_elems(int type);
int ss_type_block_bytes(int type);
/* Bytes for n elements (n a multiple of the block size), 0 if unsupported. */
size_t ss_type_row_bytes(int type, int64_t n);
/* Decode n elements (a multiple of the block size) of `type` into f32. */
void ss_dequantize(int type, const void *src, float *dst, int64_t n);

/* IEEE half and bfloat16 conversions (round to nearest even). */
float ss_f16_to_f32(uint16_t h);
uint16_t ss_f32_to_f16(float f);
float ss_bf16_to_f32(uint16_t h);
uint16_t ss_f32_to_bf16(float f);

/* ---------------------------------------------------------------- tensors */

typedef struct {
    char name[96];
    int type;          /* ss_type */
    int n_dims;        /* 1..4 */
    int64_t dims[4];   /* dims[0] innermost; unused dims are 1 */
    const void *data;  /* points into the mapped file */
    size_t nbytes;
} ss_tensor;

int64_t ss_tensor_nelem(const ss_tensor *t);
/* Decode rows [row0, row0 + nrows) of a tensor viewed as dims[1..] rows of
 * dims[0] values into dst[nrows][dims[0]]. */
void ss_tensor_rows_f32(const ss_tensor *t, int64_t row0, int64_t nrows, float *dst);

/* ---------------------------------------------------------------- GGUF */

/* GGUF metadata value types (GGUF spec numbering). */
typedef enum {
    SS_GGUF_UINT8 = 0, SS_GGUF_INT8 = 1, SS_GGUF_UINT16 = 2, SS_GGUF_INT16 = 3,
    SS_GGUF_UINT32 = 4, SS_GGUF_INT32 = 5, SS_GGUF_FLOAT32 = 6, SS_GGUF_BOOL = 7,
    SS_GGUF_STRING = 8, SS_GGUF_ARRAY = 9, SS_GGUF_UINT64 = 10, SS_GGUF_INT64 = 11,
    SS_GGUF_FLOAT64 = 12,
} ss_gguf_vtype;

typedef struct {
    const char *ptr;   /* not NUL-terminated: points into the mapped file */
    uint64_t len;
} ss_gguf_str;

typedef struct {
    ss_gguf_str key;
    int type;            /* ss_gguf_vtype */
    int arr_type;        /* element type when type == SS_GGUF_ARRAY */
    uint64_t arr_len;
    const void *data;    /* scalar value, or first array element, in the file */
    union { uint64_t u; int64_t i; double f; } num; /* numeric scalars decoded */
    ss_gguf_str str;     /* string scalars */
} ss_gguf_kv;

typedef struct ss_gguf {
    char path[1024];
    const uint8_t *map;
    size_t map_size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    ss_gguf_kv *kv;          /* [n_kv] */
    ss_tensor *tensors;      /* [n_tensors] */
    uint64_t alignment;
    size_t data_offset;
} ss_gguf;

/* Maps and parses a GGUF v2/v3 file; every tensor is bounds-checked. */
int ss_gguf_open(const char *path, ss_gguf **out, ss_error *err);
void ss_gguf_close(ss_gguf *g);
const ss_gguf_kv *ss_gguf_find(const ss_gguf *g, const char *key);
const ss_tensor *ss_gguf_tensor(const ss_gguf *g, const char *name);
/* Typed lookups: return -1 with "FILE: key KEY missing/has type T" errors. */
int ss_gguf_get_u64(const ss_gguf *g, const char *key, uint64_t *out, ss_error *err);
int ss_gguf_get_f64(const ss_gguf *g, const char *key, double *out, ss_error *err);
int ss_gguf_get_str(const ss_gguf *g, const char *key, ss_gguf_str *out, ss_error *err);
/* i-th string of a string array (no bounds check beyond arr_len). */
ss_gguf_str ss_gguf_arr_str(const ss_gguf_kv *kv, uint64_t i);
/* Walks the string array once and returns pointers to all elements. */
int ss_gguf_arr_strs(const ss_gguf_kv *kv, ss_gguf_str **out, ss_error *err);

/* ---------------------------------------------------------------- model */

typedef enum { SS_ROPE_SCALING_NONE = 0, SS_ROPE_SCALING_LLAMA3 = 1 } ss_rope_scaling;

typedef struct {
    int n_layers;      /* decoder blocks */
    int d_model;       /* residual width */
    int n_heads;       /* query heads */
    int n_kv_heads;    /* key/value heads (GQA: n_heads % n_kv_heads == 0) */
    int head_dim;      /* per head; may differ from d_model / n_heads */
    int d_ff;          /* MLP hidden width */
    int vocab_size;
    int max_ctx;       /* training context length */
    float rms_eps;
    float rope_theta;
    /* Pairing of rotary dimensions: GGUF llama files pair (2i, 2i+1)
     * because llama.cpp's converter permutes Q/K rows; Hugging Face
     * checkpoints pair (i, i + head_dim/2). */
    int rope_neox;
    int rope_scaling;              /* ss_rope_scaling */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_ctx;
    int tied_embeddings;           /* output projection is tok_embd */
} ss_config;

typedef struct {
    ss_tensor attn_norm;   /* [d_model] */
    ss_tensor wq;          /* {d_model, n_heads*head_dim} */
    ss_tensor wk;          /* {d_model, n_kv_heads*head_dim} */
    ss_tensor wv;          /* {d_model, n_kv_heads*head_dim} */
    ss_tensor wo;          /* {n_heads*head_dim, d_model} */
    ss_tensor ffn_norm;    /* [d_model] */
    ss_tensor w_gate;      /* {d_model, d_ff} */
    ss_tensor w_up;        /* {d_model, d_ff} */
    ss_tensor w_down;      /* {d_ff, d_model} */
} ss_layer_weights;

typedef enum {
    SS_FORMAT_GGUF = 0,
    SS_FORMAT_HF = 1,
    SS_FORMAT_SYNTHETIC = 2, /* random weights (ss_model_random, "synthetic:SPEC"); no tensor table */
} ss_model_format;

struct ss_hf_folder;

typedef struct ss_model {
    char path[1024];
    char name[256];            /* general.name or the folder name */
    int format;                /* ss_model_format */
    ss_config cfg;
    ss_tensor tok_embd;        /* {d_model, vocab} */
    ss_tensor output_norm;     /* [d_model] */
    ss_tensor output;          /* {d_model, vocab}; == tok_embd if tied */
    ss_layer_weights *layers;  /* [n_layers] */
    char *chat_template;       /* template string or NULL */
    ss_gguf *gguf;             /* set for GGUF models (tokenizer metadata) */
    struct ss_hf_folder *hf;   /* set for HF folders (safetensors shards) */
    float *random_data;        /* every tensor's values, for ss_model_random */
    uint64_t synthetic_seed;   /* random models: the seed their values come from */
    int weights_on_device;     /* random models without host values: the CUDA engine
                                  draws them on the GPU from synthetic_seed */
} ss_model;

/* Loads a GGUF file, a Hugging Face folder (config.json +
 * model.safetensors or model.safetensors.index.json), or a synthetic model
 * "synthetic:SPEC" (ss_model_synthetic). */
int ss_model_load(const char *path, ss_model **out, ss_error *err);
void ss_model_free(ss_model *m);
/* Value ranges of ss_model_random: norms are 1 + norm * U(-1, 1), every
 * other tensor scale * U(-1, 1). */
typedef struct {
    float embd, output, norm;     /* token_embd, untied output, all norms */
    float wq, wk, wv, wo;         /* attention projections */
    float w_gate, w_up, w_down;   /* MLP */
    int bf16_exact;               /* round values to bf16 (still stored as F32) */
} ss_random_scales;

/* A Llama model of shape cfg held in memory, path "synthetic:seed=SEED".
 * s non-NULL: F32 tensors drawn from a xorshift64 stream seeded by seed, in
 * the order token_embd, output_norm, output (untied only), then per layer
 * attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down.  s NULL: tensor
 * shapes only, data NULL (the CUDA engine draws such weights itself).
 * Freed by ss_model_free. */
int ss_model_random(const ss_config *cfg, const ss_random_scales *s, uint64_t seed,
                    ss_model **out, ss_error *err);

/* The configuration of a named real-model shape: smollm2-135m, llama2-7b,
 * llama3-8b. */
int ss_model_shape(const char *name, ss_config *cfg, ss_error *err);

/* A random model of a named shape, from "SHAPE[,seed=N][,tokenizer=GGUF]
 * [,weights=host|device]": tokenizer takes that GGUF's tokenizer and chat
 * template and sets the vocabulary to its size (so prompts tokenize; the
 * text is noise, the timing real); weights=device leaves the values to the
 * CUDA engine (no host memory for an 8B shape).  Values are scaled by
 * 1/sqrt(fan_in); seed defaults to 1.  Path "synthetic:SPEC". */
int ss_model_synthetic(const char *spec, ss_model **out, ss_error *err);

/* Where the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) lives:
 * $SAFESTEER_MODEL, else $SAFESTEER_CACHE/models/..., else
 * ~/.cache/safesteer/models/... (scripts/fetch-model.sh puts it there).
 * Points to static storage. */
const char *ss_default_model_path(void);

/* What an engine checks before using tensor t of m as `what`: present, a
 * decodable type, dims {in, out} (out == 1: a vector).  Errors name the
 * file, the tensor and `what`. */
int ss_model_tensor_check(const ss_model *m, const ss_tensor *t, const char *what, int64_t in,
                          int64_t out, ss_error *err);
/* ss_tensor_rows_f32, then an error naming the file, tensor, row and
 * column of the first NaN or infinity (a corrupt file: no engine can
 * compute with it). */
int ss_model_tensor_rows(const ss_model *m, const ss_tensor *t, int64_t row0, int64_t nrows,
                         float *dst, ss_error *err);

/* ---------------------------------------------------------------- layers */

/* "10,14", "0-29", "3-5,20" or "all" -> sorted unique malloc'd layers[n],
 * each checked against n_layers; errors quote spec. */
int ss_layers_parse(const char *spec, int n_layers, int **layers, int *n, ss_error *err);
/* Index of `layer` in layers[n], or -1 with the layers written to list[cap]
 * joined by sep (truncated to fit), for the caller's error message.  Vector
 * sets and capture files both look layers up this way. */
int ss_layer_index(const int32_t *layers, int n, int layer, const char *sep, char *list,
                   size_t cap);

/* A model's fingerprint, as capture, vector and sweep files record it: the
 * SHA-256 of the GGUF file, or for a Hugging Face folder of config.json
 * followed by model.safetensors.index.json (sharded) or model.safetensors. */
int ss_model_sha256(const char *path, char hex[65], ss_error *err);

/* Total parameters counted from the tensors (tied output counted once). */
int64_t ss_model_param_count(const ss_model *m);

#endif
