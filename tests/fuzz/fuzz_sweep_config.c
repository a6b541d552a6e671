/* fuzz_sweep_config.c - YAML sweep configs (ss_config_load).  The scratch
 * folder holds the files seeds name: unsafe.jsonl, safe.jsonl, model.gguf,
 * judge.gguf (empty: the loader only checks they exist).  Oracle: an
 * accepted config written back (ss_config_write) loads again and writes
 * back the same text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safesteer/config.h"

static char *resolved(const ss_sweep_config *c, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    ss_error err;
    if (ss_config_write(c, f, &err))
        fuzz_reject("ss_config_write: %s", err.msg);
    fclose(f);
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *names[] = {"unsafe.jsonl", "safe.jsonl", "model.gguf", "judge.gguf"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        fuzz_write(names[i], "", 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("sweep.yaml", data, size);
    ss_sweep_config c;
    ss_error err;
    if (ss_config_load(path, &c, &err)) {
        fuzz_refused(&err, path);
        ss_config_free(&c);
        return 0;
    }
    size_t len, len2;
    char *text = resolved(&c, &len);
    ss_config_free(&c);
    const char *path2 = fuzz_write("resolved.yaml", text, len);
    if (ss_config_load(path2, &c, &err))
        fuzz_reject("the resolved config does not load: %s", err.msg);
    char *text2 = resolved(&c, &len2);
    if (len != len2 || memcmp(text, text2, len))
        fuzz_reject("the resolved config changes when loaded and written again");
    ss_config_free(&c);
    free(text);
    free(text2);
    return 0;
}
