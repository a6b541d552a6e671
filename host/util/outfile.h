/* outfile.h - outputs written whole or not at all.
 *
 * A writer fills "<path>.tmp" beside the destination and renames it into
 * place only once every byte is written and synced, so a failed, refused
 * or killed write leaves an existing output as it was, and never a half
 * file under the real name (rename within a directory is atomic). */
#ifndef SAFESTEER_OUTFILE_H
#define SAFESTEER_OUTFILE_H

#include <stdio.h>

#include "safesteer/util.h"

typedef struct {
    const char *path; /* destination, borrowed */
    char tmp[4096];   /* path + ".tmp" */
} ss_outfile;

/* Names the temporary file for path; fails when the name is too long. */
int ss_outfile_begin(ss_outfile *o, const char *path, ss_error *err);

/* Ends a write: with rc == 0 syncs the temporary file and renames it onto
 * the destination; otherwise, or when that fails, removes the temporary
 * file, prefixes err with the destination and returns -1. */
int ss_outfile_end(ss_outfile *o, int rc, ss_error *err);

/* ss_outfile_begin, then the temporary file opened for writing ("wb"). */
FILE *ss_outfile_fopen(ss_outfile *o, const char *path, ss_error *err);

/* Closes f (a stream error or failed close counts as failure), then
 * ss_outfile_end. */
int ss_outfile_fclose(ss_outfile *o, FILE *f, int rc, ss_error *err);

#endif
