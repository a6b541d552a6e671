/* fingerprint.c - a model's SHA-256 as capture, vector and sweep files
 * record it (see model.h). */
#include "safesteer/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int ss_model_sha256(const char *path, char hex[65], ss_error *err)
{
    struct stat st;
    if (!strncmp(path, "synthetic:", 10)) { /* its spec is all there is */
        ss_sha256 s;
        ss_sha256_init(&s);
        ss_sha256_update(&s, path, strlen(path));
        ss_sha256_final_hex(&s, hex);
        return 0;
    }
    if (stat(path, &st) < 0)
        return ss_fail(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ss_sha256_file(path, hex, err);
    /* a Hugging Face folder: its config, then the index of a sharded
     * checkpoint or the single weights file */
    char p[2048];
    ss_sha256 s;
    ss_sha256_init(&s);
    snprintf(p, sizeof p, "%s/config.json", path);
    if (ss_sha256_add_file(&s, p, err) < 0)
        return -1;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
    if (stat(p, &st) < 0)
        snprintf(p, sizeof p, "%s/model.safetensors", path);
    if (ss_sha256_add_file(&s, p, err) < 0)
        return -1;
    ss_sha256_final_hex(&s, hex);
    return 0;
}
