/* sha256.h - streaming SHA-256 (FIPS 180-4) for model and data fingerprints
 * recorded in capture and vector files. */
#ifndef SAFESTEER_SHA256_H
#define SAFESTEER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/error.h"

typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;      /* message length so far */
    uint8_t block[64];     /* pending partial block */
    size_t n_block;
} ss_sha256;

void ss_sha256_init(ss_sha256 *s);
void ss_sha256_update(ss_sha256 *s, const void *data, size_t len);
/* Writes the digest as 64 lowercase hex digits + NUL into hex[65]. */
void ss_sha256_final_hex(ss_sha256 *s, char hex[65]);

/* Hashes a whole file in 1 MiB reads (memory stays bounded). */
int ss_sha256_file(const char *path, char hex[65], ss_error *err);
/* A model's fingerprint: the GGUF file itself, or for a Hugging Face folder
 * config.json followed by model.safetensors.index.json (sharded) or
 * model.safetensors (single file). */
int ss_sha256_model(const char *path, char hex[65], ss_error *err);

#endif
