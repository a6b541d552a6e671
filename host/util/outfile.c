/* outfile.c - write-then-rename outputs (see outfile.h). */
#include "util/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int ss_outfile_begin(ss_outfile *o, const char *path, ss_error *err)
{
    o->path = path;
    int n = snprintf(o->tmp, sizeof o->tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof o->tmp)
        return ss_fail(err, "output path too long (%zu bytes, %zu at most): %.200s...",
                       strlen(path), sizeof o->tmp - 5, path);
    return 0;
}

/* fsync through a fresh descriptor: the writers (stdio, HDF5) have closed
 * theirs, and the data must be on disk before the rename publishes it. */
static int sync_file(const char *name, ss_error *err)
{
    int fd = open(name, O_RDONLY);
    if (fd < 0)
        return ss_fail(err, "cannot reopen %s to sync it: %s", name, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : ss_fail(err, "cannot sync %s: %s", name, strerror(errno));
    close(fd);
    return rc;
}

int ss_outfile_end(ss_outfile *o, int rc, ss_error *err)
{
    if (rc == 0)
        rc = sync_file(o->tmp, err);
    if (rc == 0 && rename(o->tmp, o->path) != 0)
        rc = ss_fail(err, "cannot rename %s into place: %s", o->tmp, strerror(errno));
    if (rc == 0)
        return 0;
    remove(o->tmp);
    return ss_fail_context(err, "%s", o->path);
}

FILE *ss_outfile_fopen(ss_outfile *o, const char *path, ss_error *err)
{
    if (ss_outfile_begin(o, path, err) < 0)
        return NULL;
    FILE *f = fopen(o->tmp, "wb");
    if (!f)
        ss_fail(err, "%s: cannot create %s: %s", path, o->tmp, strerror(errno));
    return f;
}

int ss_outfile_fclose(ss_outfile *o, FILE *f, int rc, ss_error *err)
{
    int stream_bad = ferror(f);
    int close_bad = fclose(f) != 0;
    if (rc == 0 && (stream_bad || close_bad))
        rc = ss_fail(err, "write to %s failed%s%s", o->tmp, close_bad ? ": " : "",
                     close_bad ? strerror(errno) : "");
    return ss_outfile_end(o, rc, err);
}
