/* h5io.h - small HDF5 helpers shared by capture, vector and cluster files:
 * string/integer/float attributes, variable-length UTF-8 string datasets,
 * chunked datasets written in row blocks, and a half-precision file type.
 * Every function returns 0 / -1 with err naming the object at fault; the
 * HDF5 library's own error stack printing is turned off by ss_h5_quiet. */
#ifndef SAFESTEER_H5IO_H
#define SAFESTEER_H5IO_H

#include <hdf5.h>
#include <stdint.h>

#include "util/outfile.h"
#include "safesteer/util.h"

/* Silences HDF5's automatic error printing (we report through ss_error). */
void ss_h5_quiet(void);

/* IEEE binary16 little-endian file type (h5py reads it as float16); the
 * caller closes it with H5Tclose. */
hid_t ss_h5_f16_type(void);

/* Opens an existing HDF5 file (H5F_ACC_RDONLY or H5F_ACC_RDWR); a missing
 * or unreadable file and a file that is not HDF5 (or was damaged) each get
 * their own message naming path. */
hid_t ss_h5_open(const char *path, unsigned flags, ss_error *err);

/* A new HDF5 file at o's temporary name for path (see outfile.h). */
hid_t ss_h5_out_create(ss_outfile *o, const char *path, ss_error *err);
/* Closes f (a failed close counts as failure), then ss_outfile_end. */
int ss_h5_out_close(ss_outfile *o, hid_t f, int rc, ss_error *err);

/* ---------------------------------------------------------------- attributes */

/* Create or overwrite a scalar attribute on loc (file, group or dataset). */
int ss_h5_attr_set_str(hid_t loc, const char *name, const char *value, ss_error *err);
int ss_h5_attr_set_i64(hid_t loc, const char *name, int64_t value, ss_error *err);
int ss_h5_attr_set_f64(hid_t loc, const char *name, double value, ss_error *err);
/* Read a scalar attribute; a string comes back malloc'd (fixed or variable
 * length in the file), numbers converted from any integer/float type. */
int ss_h5_attr_get_str(hid_t loc, const char *name, char **out, ss_error *err);
int ss_h5_attr_get_i64(hid_t loc, const char *name, int64_t *out, ss_error *err);
int ss_h5_attr_get_f64(hid_t loc, const char *name, double *out, ss_error *err);
int ss_h5_attr_exists(hid_t loc, const char *name);
/* A string attribute into dst[cap]; an optional one absent reads as "". */
int ss_h5_attr_get_str_buf(hid_t loc, const char *name, int optional, char *dst, size_t cap,
                           ss_error *err);

/* ---------------------------------------------------------------- datasets */

/* Creates a chunked dataset of file type `type` with dims[rank]; dims[0] is
 * the row axis.  extendible = 1 makes dims[0] unlimited (it grows on write).
 * chunk_rows rows per chunk (the remaining axes whole).  Intermediate groups
 * of name ("prompts/text") are created.  Returns the dataset id, or -1. */
hid_t ss_h5_create(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                   int extendible, hsize_t chunk_rows, ss_error *err);
/* Writes n rows starting at row0 from buf (memory type mtype, rows contiguous),
 * first growing dims[0] to row0 + n when the dataset is extendible. */
int ss_h5_write_rows(hid_t dset, hid_t mtype, hsize_t row0, hsize_t n, const void *buf,
                     ss_error *err);
/* Reads n rows from row0 into buf (memory type mtype). */
int ss_h5_read_rows(hid_t dset, hid_t mtype, hsize_t row0, hsize_t n, void *buf,
                    ss_error *err);
/* Opens dataset name of file; a missing one is an error naming path. */
hid_t ss_h5_open_dataset(hid_t file, const char *path, const char *name, ss_error *err);
/* Reads a whole dataset of shape want[rank] (at_least: dims[0] may be
 * larger) of memory type mtype (elem bytes each) into a malloc'd *out;
 * *rows (may be NULL) gets dims[0].  Errors name path, the dataset and the
 * shapes. */
int ss_h5_read_array(hid_t file, const char *path, const char *name, hid_t mtype, size_t elem,
                     int rank, const hsize_t *want, int at_least, void **out, hsize_t *rows,
                     ss_error *err);
/* ss_h5_read_array of a 1-D dataset of n rows. */
int ss_h5_read_1d(hid_t file, const char *path, const char *name, hid_t mtype, size_t elem,
                  hsize_t n, int at_least, void **out, hsize_t *n_out, ss_error *err);
/* Sets dims[0] of an extendible dataset (shrinking drops rows). */
int ss_h5_set_rows(hid_t dset, hsize_t rows, ss_error *err);
/* Shape of a dataset: *rank and dims[up to 8]. */
int ss_h5_shape(hid_t dset, int *rank, hsize_t dims[8], ss_error *err);

/* Writes a whole small dataset in one call (contiguous layout). */
int ss_h5_write_all(hid_t file, const char *name, hid_t ftype, hid_t mtype, int rank,
                    const hsize_t *dims, const void *buf, ss_error *err);

/* Variable-length UTF-8 string type (close with H5Tclose). */
hid_t ss_h5_vlen_str_type(void);
/* Writes strs[n] (NULL written as "") at rows row0.. of a 1-D string dataset. */
int ss_h5_write_strs(hid_t dset, hsize_t row0, hsize_t n, const char *const *strs,
                     ss_error *err);
/* Reads a whole 1-D string dataset: *out[*n] malloc'd strings; free with
 * ss_h5_free_strs. */
int ss_h5_read_strs(hid_t file, const char *name, char ***out, hsize_t *n, ss_error *err);
void ss_h5_free_strs(char **strs, hsize_t n);

/* h5io's messages name the object ("/acts"), not the file: a reader calls
 * this on its failure path so the message names path too (once).
 * Returns -1. */
int ss_h5_fail_in(ss_error *err, const char *path);

/* A dataset's name for messages ("/acts"), into a static buffer. */
const char *ss_h5_name(hid_t obj);

#endif
