/* dataset.h - labelled prompt sets from JSONL or CSV files, with
 * configurable field names, category filters, offset/limit and a seeded
 * shuffle.  Used by capture, sweeps and evaluation. */
#ifndef SAFESTEER_DATASET_H
#define SAFESTEER_DATASET_H

#include <stdint.h>

#include "safesteer/util.h"

/* Which field (JSONL key or CSV header column) holds each value. */
typedef struct {
    const char *prompt, *id, *category, *label, *response;
    /* 1 where the name was given explicitly: a record lacking such a field
     * is an error instead of getting the default value */
    int explicit_id, explicit_category, explicit_label, explicit_response;
} ss_dataset_fields;

/* prompt, id, category, label, response; none explicit. */
void ss_dataset_fields_default(ss_dataset_fields *f);
/* Applies "prompt=goal,id=BehaviorID,..." (keys prompt id category label
 * response).  The names point into spec, which must outlive f. */
int ss_dataset_fields_parse(char *spec, ss_dataset_fields *f, ss_error *err);

typedef struct {
    char *prompt;
    char *id;          /* field value; else "row-R" with R the 0-based record index */
    char *category;    /* "" when absent */
    char *label;       /* "" when absent */
    char *response;    /* NULL when absent */
    int line;          /* 1-based line where the record starts in the file */
} ss_record;

typedef struct {
    char path[1024];
    int n;
    ss_record *rec;    /* [n] */
} ss_dataset;

/* Reads FILE.jsonl / FILE.json (one object per line) or FILE.csv (RFC 4180:
 * quoted fields, "" escapes, newlines inside quotes, CRLF or LF).  Errors
 * name file:line and the field. */
int ss_dataset_load(const char *path, const ss_dataset_fields *f, ss_dataset **out,
                    ss_error *err);
void ss_dataset_free(ss_dataset *d);

typedef struct {
    const char *const *categories;  /* keep records whose category is one of these */
    int n_categories;               /* 0 = no filter */
    long offset;                    /* skip this many (after filter and shuffle) */
    long limit;                     /* keep at most this many; < 0 = all */
    int shuffle;                    /* 1 = permute with seed before offset/limit */
    uint64_t seed;
    int need_response;              /* 1 = every kept record must have a response */
} ss_dataset_select;

void ss_dataset_select_default(ss_dataset_select *s);
/* Filters, shuffles (Fisher-Yates, splitmix64 from seed: the same seed gives
 * the same order on every machine), then applies offset and limit, in
 * place.  Selecting nothing is an error naming the filter. */
int ss_dataset_apply(ss_dataset *d, const ss_dataset_select *s, ss_error *err);

#endif
