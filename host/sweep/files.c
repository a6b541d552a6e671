/* files.c - the sweep's file helpers: paths, folders, whole-file text and
 * JSON, cells_done.txt (see sweep_internal.h). */
#include "sweep/sweep_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/outfile.h"

void join(char *dst, size_t cap, const char *dir, const char *name)
{
    snprintf(dst, cap, "%s/%s", dir, name);
}

/* mkdir -p */
int make_dirs(const char *dir, ss_error *err)
{
    char p[2048];
    snprintf(p, sizeof p, "%s", dir);
    for (char *q = p + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(p, 0777) < 0 && errno != EEXIST)
                return ss_fail(err, "%s: %s", p, strerror(errno));
            *q = '/';
        }
    if (mkdir(p, 0777) < 0 && errno != EEXIST)
        return ss_fail(err, "%s: %s", p, strerror(errno));
    return 0;
}

int append_text(const char *path, const char *text, ss_error *err)
{
    FILE *f = fopen(path, "ab");
    if (!f)
        return ss_fail(err, "%s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    return bad ? ss_fail(err, "%s: write failed: %s", path, strerror(errno)) : 0;
}

int write_text(const char *path, const char *text, ss_error *err)
{
    ss_outfile out;
    FILE *f = ss_outfile_fopen(&out, path, err);
    if (!f)
        return -1;
    fputs(text, f);
    return ss_outfile_fclose(&out, f, 0, err);
}

/* run.json: info as indented JSON, written whole (write_text). */
int write_json(const char *path, const json_t *info, ss_error *err)
{
    char *text = info ? json_dumps(info, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (!text)
        return ss_fail(err, "%s: out of memory", path);
    int rc = write_text(path, text, err);
    free(text);
    return rc;
}

/* done[n_cells] from cells_done.txt (one cell id a line); a missing file
 * means none.  A repeated or out-of-range id is an error. */
int read_done(const char *dir, int n_cells, uint8_t *done, ss_error *err)
{
    char path[2048];
    join(path, sizeof path, dir, "cells_done.txt");
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? 0 : ss_fail(err, "%s: %s", path, strerror(errno));
    int id, rc = 0;
    while (fscanf(f, "%d", &id) == 1) {
        if (id < 0 || id >= n_cells || done[id]) {
            rc = ss_fail(err, "%s: cell %d is out of range or repeated", path, id);
            break;
        }
        done[id] = 1;
    }
    fclose(f);
    return rc;
}
