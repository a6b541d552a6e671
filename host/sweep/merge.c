/* merge.c - joins shard run folders into one run (ss_sweep_merge). */
#include "safesteer/sweep.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/steer.h"
#include "safesteer/vectors.h"
#include "sweep/sweep_internal.h"
#include "util/outfile.h"

static int copy_file(const char *src, const char *dst, ss_error *err)
{
    FILE *in = fopen(src, "rb");
    if (!in)
        return ss_fail(err, "%s: %s", src, strerror(errno));
    ss_outfile o;
    FILE *out = ss_outfile_fopen(&o, dst, err);
    if (!out) {
        fclose(in);
        return -1;
    }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, k, out);
    int bad = ferror(in) ? ss_fail(err, "%s: read failed", src) : 0;
    fclose(in);
    return ss_outfile_fclose(&o, out, bad, err);
}

/* Copies the capture and vector files (the same in every shard) from dir. */
static int copy_artifacts(const char *dir, const char *out_dir, ss_error *err)
{
    for (int si = 0; si < SS_SITE_COUNT; si++)
        for (int m = -1; m <= SS_VEC_PCA; m++) {
            char name[256], src[2400], dst[2400];
            if (m < 0)
                snprintf(name, sizeof name, "capture_%s.h5", ss_site_name(si));
            else
                snprintf(name, sizeof name, "vectors_%s_%s.h5", ss_site_name(si),
                         ss_vec_method_name(m));
            snprintf(src, sizeof src, "%s/%s", dir, name);
            snprintf(dst, sizeof dst, "%s/%s", out_dir, name);
            if (access(src, F_OK) == 0 && copy_file(src, dst, err) < 0)
                return -1;
        }
    return 0;
}

/* The shard index and count of a shard folder's run.json, which must say
 * the shard finished (finalize marks it complete last). */
static int shard_of(const char *dir, const json_t *info, int n_done, int *index, int *count,
                    ss_error *err)
{
    *index = (int)json_integer_value(json_object_get(info, "shard"));
    *count = (int)json_integer_value(json_object_get(info, "shards"));
    if (*count < 1 || *index < 0 || *index >= *count)
        return ss_fail(err, "%s/run.json: shard %d of %d is out of range", dir, *index, *count);
    if (!json_is_true(json_object_get(info, "complete")))
        return ss_fail(err, "%s: shard %d/%d is not finished (%d cells done so far): it is "
                            "still running or was stopped; resume it, then merge",
                       dir, *index, *count, n_done);
    return 0;
}

int ss_sweep_merge(const char *out_dir, const char *const *shards, int n_shards, ss_error *err)
{
    char path[2048];
    char *config = NULL;
    json_t *info0 = NULL;
    uint8_t *done = NULL, *seen = NULL;
    int *folder_of = NULL;   /* [shard count]: 1 + the argument holding each shard */
    rec_list r = {0};
    int rc = -1, n_cells = 0, split = 0;
    if (n_shards < 1)
        return ss_fail(err, "no shard folders given");
    for (int k = 0; k < n_shards; k++) {
        json_t *info;
        join(path, sizeof path, shards[k], "config.resolved.yaml");
        char *cfg;
        if (ss_read_file(path, &cfg, NULL, err) < 0 || read_run_info(shards[k], &info, err) < 0) {
            free(cfg);
            goto out;
        }
        if (k == 0) {
            config = cfg;
            info0 = info;
            n_cells = (int)json_integer_value(json_object_get(info, "n_cells"));
            split = (int)json_integer_value(json_object_get(info, "shards"));
            done = ss_calloc((size_t)n_cells + 1, 1, err);
            seen = ss_calloc((size_t)n_cells + 1, 1, err);
            folder_of = ss_calloc((size_t)(split > 0 ? split : 1), sizeof *folder_of, err);
            if (!done || !seen || !folder_of)
                goto out;
        } else {
            int same = !strcmp(cfg, config) &&
                       !strcmp(json_string_value(json_object_get(info, "model_sha256")),
                               json_string_value(json_object_get(info0, "model_sha256")));
            free(cfg);
            if (!same) {
                json_decref(info);
                ss_fail(err, "%s: its config or model differs from %s's", shards[k], shards[0]);
                goto out;
            }
        }
        memset(done, 0, (size_t)n_cells);
        int n_done = 0, index = 0, count = 0;
        int bad = read_done(shards[k], n_cells, done, err);
        for (int i = 0; i < n_cells; i++)
            n_done += done[i];
        if (bad == 0)
            bad = shard_of(shards[k], info, n_done, &index, &count, err);
        if (k > 0)
            json_decref(info);
        if (bad < 0)
            goto out;
        if (count != split) {
            ss_fail(err, "%s is shard %d/%d but %s is of a split into %d", shards[k], index,
                    count, shards[0], split);
            goto out;
        }
        if (folder_of[index]) {
            ss_fail(err, "%s and %s are both shard %d/%d", shards[folder_of[index] - 1],
                    shards[k], index, count);
            goto out;
        }
        folder_of[index] = k + 1;
        for (int i = 0; i < n_cells; i++) {
            if (done[i] && seen[i]) {
                ss_fail(err, "%s: cell %d is also in an earlier shard", shards[k], i);
                goto out;
            }
            seen[i] |= done[i];
        }
        join(path, sizeof path, shards[k], "generations.jsonl");
        if (recs_read(path, done, n_cells, &r, err) < 0)
            goto out;
    }
    for (int i = 0; i < split; i++)
        if (!folder_of[i]) {
            ss_fail(err, "shard %d/%d is missing: merge needs the folders of all %d shards", i,
                    split, split);
            goto out;
        }
    for (int i = 0; i < n_cells; i++)
        if (!seen[i]) {
            ss_fail(err, "cell %d is in no shard", i);
            goto out;
        }
    join(path, sizeof path, out_dir, "config.resolved.yaml");
    if (access(path, F_OK) == 0) {
        ss_fail(err, "%s already holds a run; merge into a new folder", out_dir);
        goto out;
    }
    if (make_dirs(out_dir, err) < 0 || write_text(path, config, err) < 0)
        goto out;
    json_object_set_new(info0, "shard", json_integer(0));
    json_object_set_new(info0, "shards", json_integer(1));
    join(path, sizeof path, out_dir, "run.json");
    if (write_json(path, info0, err) < 0)
        goto out;
    size_t cap = (size_t)n_cells * 12 + 1, len = 0;
    char *buf = ss_malloc(cap, err);
    if (!buf)
        goto out;
    for (int i = 0; i < n_cells; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%d\n", i);
    join(path, sizeof path, out_dir, "cells_done.txt");
    int w = write_text(path, buf, err);
    free(buf);
    join(path, sizeof path, out_dir, "generations.jsonl");
    if (w < 0 || recs_write(path, &r, err) < 0 || copy_artifacts(shards[0], out_dir, err) < 0)
        goto out;
    rc = finalize(out_dir, n_cells, err);
out:
    free(config);
    json_decref(info0);
    free(done);
    free(seen);
    free(folder_of);
    recs_free(&r);
    return rc;
}
