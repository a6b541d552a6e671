/* sweep_internal.h - what the sweep's run (sweep.c), its records and
 * results tables (results.c) and the shard merge (merge.c) share; not a
 * public interface. */
#ifndef SAFESTEER_SWEEP_INTERNAL_H
#define SAFESTEER_SWEEP_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"

/* ---------------------------------------------------------------- files */

void join(char *dst, size_t cap, const char *dir, const char *name);
/* mkdir -p */
int make_dirs(const char *dir, ss_error *err);
/* Appends text to path, synced. */
int append_text(const char *path, const char *text, ss_error *err);
/* Writes path whole (write-then-rename). */
int write_text(const char *path, const char *text, ss_error *err);
int write_json(const char *path, const json_t *info, ss_error *err);
int read_done(const char *dir, int n_cells, uint8_t *done, ss_error *err);

/* ---------------------------------------------------------------- records */

typedef struct {
    json_t **rows;   /* [n] parsed generations.jsonl records */
    int n, cap;
} rec_list;

void recs_free(rec_list *r);
int recs_read(const char *path, const uint8_t *done, int n_cells, rec_list *r, ss_error *err);
/* Writes the records sorted by cell id, prompt index. */
int recs_write(const char *path, rec_list *r, ss_error *err);

/* ---------------------------------------------------------------- results */

int read_run_info(const char *dir, json_t **out, ss_error *err);
int finalize(const char *dir, int n_expected, ss_error *err);

#endif
