/* fuzz_common.c - scratch files and oracle verdicts for the fuzz targets. */
#include "fuzz_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char scratch[256];

static void remove_scratch(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", scratch);
}

static const char *scratch_dir(void)
{
    if (!scratch[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(scratch, sizeof scratch, "%s/safesteer-fuzz-XXXXXX", base);
        if (!mkdtemp(scratch)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_scratch);
    }
    return scratch;
}

const char *fuzz_path(const char *name)
{
    /* a few names live at once (a folder's files), each in its own slot */
    static char paths[8][512];
    static char names[8][64];
    int slot = 0;
    while (slot < 7 && names[slot][0] && strcmp(names[slot], name))
        slot++;
    snprintf(names[slot], sizeof names[slot], "%s", name);
    snprintf(paths[slot], sizeof paths[slot], "%s/%s", scratch_dir(), name);
    const char *sl = strchr(name, '/');
    if (sl) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%.*s", scratch_dir(), (int)(sl - name), name);
        mkdir(dir, 0755);
    }
    return paths[slot];
}

const char *fuzz_write(const char *name, const void *data, size_t size)
{
    const char *path = fuzz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f)) {
        perror(path);
        abort();
    }
    return path;
}

void fuzz_reject(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz oracle: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

void fuzz_refused(const ss_error *err, const char *file)
{
    static int verbose = -1; /* SS_FUZZ_VERBOSE=1: print every refusal (checking seeds) */
    if (verbose < 0)
        verbose = getenv("SS_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "refused: %s\n", err->msg);
    if (!err->msg[0])
        fuzz_reject("refused %s with an empty message", file);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (!strstr(err->msg, base))
        fuzz_reject("the message does not name %s: %s", base, err->msg);
}

void fuzz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **a,
                size_t *na, const uint8_t **b, size_t *nb)
{
    size_t k = strlen(sep);
    *a = data;
    *na = size;
    *b = NULL;
    *nb = 0;
    for (size_t i = 0; k && i + k <= size; i++)
        if (!memcmp(data + i, sep, k)) {
            *na = i;
            *b = data + i + k;
            *nb = size - i - k;
            return;
        }
}
