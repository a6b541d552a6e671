/* h5io.c - HDF5 helpers (see h5io.h). */
#include "util/h5io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ss_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

hid_t ss_h5_open(const char *path, unsigned flags, ss_error *err)
{
    ss_h5_quiet();
    FILE *probe = fopen(path, flags == H5F_ACC_RDWR ? "r+b" : "rb");
    if (!probe)
        return ss_fail(err, "%s: %s", path, strerror(errno));
    fclose(probe);
    hid_t f = H5Fopen(path, flags, H5P_DEFAULT);
    if (f < 0)
        ss_fail(err, "%s: not an HDF5 file, or damaged (a run killed mid-write?)", path);
    return f;
}

hid_t ss_h5_out_create(ss_outfile *o, const char *path, ss_error *err)
{
    ss_h5_quiet();
    if (ss_outfile_begin(o, path, err) < 0)
        return -1;
    hid_t f = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0)
        ss_fail(err, "%s: cannot create %s as HDF5", path, o->tmp);
    return f;
}

int ss_h5_out_close(ss_outfile *o, hid_t f, int rc, ss_error *err)
{
    if (H5Fclose(f) < 0 && rc == 0)
        rc = ss_fail(err, "cannot close %s", o->tmp);
    return ss_outfile_end(o, rc, err);
}

hid_t ss_h5_f16_type(void)
{
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    /* sign bit 15, exponent bits 10..14, mantissa bits 0..9, bias 15 */
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_precision(t, 16);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

int ss_h5_fail_in(ss_error *err, const char *path)
{
    if (err && !strstr(err->msg, path))
        ss_fail_context(err, "%s", path);
    return -1;
}

const char *ss_h5_name(hid_t obj)
{
    static char buf[256];
    if (H5Iget_name(obj, buf, sizeof buf) < 0)
        snprintf(buf, sizeof buf, "(unnamed)");
    return buf;
}

hid_t ss_h5_vlen_str_type(void)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

/* ---------------------------------------------------------------- attributes */

int ss_h5_attr_exists(hid_t loc, const char *name) { return H5Aexists(loc, name) > 0; }

int ss_h5_attr_get_str_buf(hid_t loc, const char *name, int optional, char *dst, size_t cap,
                           ss_error *err)
{
    dst[0] = 0;
    if (optional && !ss_h5_attr_exists(loc, name))
        return 0;
    char *s;
    if (ss_h5_attr_get_str(loc, name, &s, err) < 0)
        return -1;
    snprintf(dst, cap, "%s", s);
    free(s);
    return 0;
}

/* Writes a scalar attribute of file type ftype from value (memory type mtype). */
static int attr_set(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *value,
                    ss_error *err)
{
    if (H5Aexists(loc, name) > 0) {
        /* rewrite in place when the stored type accepts the value (no
         * object-header churn on every progress update); else replace */
        hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
        hid_t at = a >= 0 ? H5Aget_type(a) : -1;
        int same = at >= 0 && H5Tget_class(at) == H5Tget_class(ftype) &&
                   H5Tis_variable_str(at) == H5Tis_variable_str(ftype);
        int ok = same && H5Awrite(a, mtype, value) >= 0;
        if (at >= 0)
            H5Tclose(at);
        if (a >= 0)
            H5Aclose(a);
        if (ok)
            return 0;
        if (H5Adelete(loc, name) < 0)
            return ss_fail(err, "%s: cannot replace attribute %s", ss_h5_name(loc), name);
    }
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 || H5Awrite(a, mtype, value) < 0 ? -1 : 0;
    if (a >= 0)
        H5Aclose(a);
    H5Sclose(sp);
    return rc ? ss_fail(err, "%s: cannot write attribute %s", ss_h5_name(loc), name) : 0;
}

int ss_h5_attr_set_str(hid_t loc, const char *name, const char *value, ss_error *err)
{
    hid_t t = ss_h5_vlen_str_type();
    const char *v = value ? value : "";
    int rc = attr_set(loc, name, t, t, &v, err);
    H5Tclose(t);
    return rc;
}

int ss_h5_attr_set_i64(hid_t loc, const char *name, int64_t value, ss_error *err)
{
    return attr_set(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, err);
}

int ss_h5_attr_set_f64(hid_t loc, const char *name, double value, ss_error *err)
{
    return attr_set(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, err);
}

/* Opens a one-value attribute: the readers read it into one variable, so an
 * attribute holding several values would overrun it. */
static hid_t attr_open(hid_t loc, const char *name, ss_error *err)
{
    if (H5Aexists(loc, name) <= 0) {
        ss_fail(err, "%s: attribute %s is missing", ss_h5_name(loc), name);
        return -1;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        ss_fail(err, "%s: cannot open attribute %s", ss_h5_name(loc), name);
        return -1;
    }
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp < 0 ? -1 : H5Sget_simple_extent_npoints(sp);
    if (sp >= 0)
        H5Sclose(sp);
    if (n != 1) {
        ss_fail(err, "%s: attribute %s holds %lld values, expected one", ss_h5_name(loc), name,
                (long long)n);
        H5Aclose(a);
        return -1;
    }
    return a;
}

int ss_h5_attr_get_str(hid_t loc, const char *name, char **out, ss_error *err)
{
    *out = NULL;
    hid_t a = attr_open(loc, name, err);
    if (a < 0)
        return -1;
    hid_t ft = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ft) != H5T_STRING) {
        ss_fail(err, "%s: attribute %s is not a string", ss_h5_name(loc), name);
    } else if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = ss_h5_vlen_str_type();
        char *v = NULL;
        if (H5Aread(a, mt, &v) >= 0) {
            *out = strdup(v ? v : "");
            hid_t sp = H5Screate(H5S_SCALAR);
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, &v);
            H5Sclose(sp);
            rc = *out ? 0 : ss_fail(err, "out of memory reading attribute %s", name);
        } else {
            ss_fail(err, "%s: cannot read attribute %s", ss_h5_name(loc), name);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ft);
        char *v = ss_calloc(n + 1, 1, err);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n + 1);
        if (v && H5Aread(a, mt, v) >= 0) {
            *out = v;
            rc = 0;
        } else {
            free(v);
            ss_fail(err, "%s: cannot read attribute %s", ss_h5_name(loc), name);
        }
        H5Tclose(mt);
    }
    H5Tclose(ft);
    H5Aclose(a);
    return rc;
}

static int attr_get_num(hid_t loc, const char *name, hid_t mtype, void *out, ss_error *err)
{
    hid_t a = attr_open(loc, name, err);
    if (a < 0)
        return -1;
    hid_t ft = H5Aget_type(a);
    H5T_class_t cl = H5Tget_class(ft);
    int rc = (cl == H5T_INTEGER || cl == H5T_FLOAT) && H5Aread(a, mtype, out) >= 0 ? 0 : -1;
    H5Tclose(ft);
    H5Aclose(a);
    return rc ? ss_fail(err, "%s: attribute %s is not a readable number", ss_h5_name(loc),
                        name)
              : 0;
}

int ss_h5_attr_get_i64(hid_t loc, const char *name, int64_t *out, ss_error *err)
{
    return attr_get_num(loc, name, H5T_NATIVE_INT64, out, err);
}

int ss_h5_attr_get_f64(hid_t loc, const char *name, double *out, ss_error *err)
{
    return attr_get_num(loc, name, H5T_NATIVE_DOUBLE, out, err);
}

/* ---------------------------------------------------------------- datasets */

hid_t ss_h5_create(hid_t file, const char *name, hid_t type, int rank, const hsize_t *dims,
                   int extendible, hsize_t chunk_rows, ss_error *err)
{
    hsize_t maxd[8], chunk[8];
    if (rank < 1 || rank > 8) {
        ss_fail(err, "%s: rank %d out of range 1..8", name, rank);
        return -1;
    }
    for (int i = 0; i < rank; i++) {
        maxd[i] = dims[i];
        chunk[i] = dims[i] ? dims[i] : 1;
    }
    if (extendible)
        maxd[0] = H5S_UNLIMITED;
    chunk[0] = chunk_rows ? chunk_rows : 1;
    hid_t sp = H5Screate_simple(rank, dims, maxd);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = H5Dcreate2(file, name, type, sp, lcpl, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Sclose(sp);
    if (d < 0)
        ss_fail(err, "cannot create dataset %s", name);
    return d;
}

int ss_h5_shape(hid_t dset, int *rank, hsize_t dims[8], ss_error *err)
{
    hid_t sp = H5Dget_space(dset);
    int r = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (r < 0 || r > 8 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0) {
        if (sp >= 0)
            H5Sclose(sp);
        return ss_fail(err, "%s: cannot read the dataset's shape", ss_h5_name(dset));
    }
    H5Sclose(sp);
    *rank = r;
    return 0;
}

int ss_h5_set_rows(hid_t dset, hsize_t rows, ss_error *err)
{
    int rank;
    hsize_t dims[8];
    if (ss_h5_shape(dset, &rank, dims, err) < 0)
        return -1;
    dims[0] = rows;
    if (H5Dset_extent(dset, dims) < 0)
        return ss_fail(err, "%s: cannot resize to %llu rows", ss_h5_name(dset),
                       (unsigned long long)rows);
    return 0;
}

/* Selects rows [row0, row0+n) of dset's file space; fills the memory space. */
static int row_spaces(hid_t dset, hsize_t row0, hsize_t n, hid_t *fsp, hid_t *msp,
                      ss_error *err)
{
    int rank;
    hsize_t dims[8], start[8] = {0}, count[8];
    if (ss_h5_shape(dset, &rank, dims, err) < 0)
        return -1;
    if (row0 + n > dims[0])
        return ss_fail(err, "%s: rows %llu..%llu past its %llu rows", ss_h5_name(dset),
                       (unsigned long long)row0, (unsigned long long)(row0 + n),
                       (unsigned long long)dims[0]);
    memcpy(count, dims, sizeof dims);
    start[0] = row0;
    count[0] = n;
    *fsp = H5Dget_space(dset);
    H5Sselect_hyperslab(*fsp, H5S_SELECT_SET, start, NULL, count, NULL);
    *msp = H5Screate_simple(rank, count, NULL);
    return 0;
}

int ss_h5_write_rows(hid_t dset, hid_t mtype, hsize_t row0, hsize_t n, const void *buf,
                     ss_error *err)
{
    if (n == 0)
        return 0;
    int rank;
    hsize_t dims[8];
    if (ss_h5_shape(dset, &rank, dims, err) < 0)
        return -1;
    if (row0 + n > dims[0] && ss_h5_set_rows(dset, row0 + n, err) < 0)
        return -1;
    hid_t fsp, msp;
    if (row_spaces(dset, row0, n, &fsp, &msp, err) < 0)
        return -1;
    herr_t rc = H5Dwrite(dset, mtype, msp, fsp, H5P_DEFAULT, buf);
    H5Sclose(fsp);
    H5Sclose(msp);
    return rc < 0 ? ss_fail(err, "%s: write of rows %llu..%llu failed", ss_h5_name(dset),
                            (unsigned long long)row0, (unsigned long long)(row0 + n))
                  : 0;
}

int ss_h5_read_rows(hid_t dset, hid_t mtype, hsize_t row0, hsize_t n, void *buf,
                    ss_error *err)
{
    if (n == 0)
        return 0;
    hid_t fsp, msp;
    if (row_spaces(dset, row0, n, &fsp, &msp, err) < 0)
        return -1;
    herr_t rc = H5Dread(dset, mtype, msp, fsp, H5P_DEFAULT, buf);
    H5Sclose(fsp);
    H5Sclose(msp);
    return rc < 0 ? ss_fail(err, "%s: read of rows %llu..%llu failed", ss_h5_name(dset),
                            (unsigned long long)row0, (unsigned long long)(row0 + n))
                  : 0;
}

int ss_h5_write_all(hid_t file, const char *name, hid_t ftype, hid_t mtype, int rank,
                    const hsize_t *dims, const void *buf, ss_error *err)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(file, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    int rc = d < 0 || H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0 ? -1 : 0;
    if (d >= 0)
        H5Dclose(d);
    H5Pclose(lcpl);
    H5Sclose(sp);
    return rc ? ss_fail(err, "cannot write dataset %s", name) : 0;
}

int ss_h5_write_strs(hid_t dset, hsize_t row0, hsize_t n, const char *const *strs,
                     ss_error *err)
{
    const char **v = ss_malloc((n ? n : 1) * sizeof *v, err);
    if (!v)
        return -1;
    for (hsize_t i = 0; i < n; i++)
        v[i] = strs[i] ? strs[i] : "";
    hid_t t = ss_h5_vlen_str_type();
    int rc = ss_h5_write_rows(dset, t, row0, n, v, err);
    H5Tclose(t);
    free(v);
    return rc;
}

void ss_h5_free_strs(char **strs, hsize_t n)
{
    if (!strs)
        return;
    for (hsize_t i = 0; i < n; i++)
        free(strs[i]);
    free(strs);
}

int ss_h5_read_strs(hid_t file, const char *name, char ***out, hsize_t *n, ss_error *err)
{
    *out = NULL;
    *n = 0;
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        return ss_fail(err, "dataset %s is missing", name);
    int rank, rc = -1;
    hsize_t dims[8];
    char **raw = NULL, **res = NULL;
    hid_t t = ss_h5_vlen_str_type();
    if (ss_h5_shape(d, &rank, dims, err) < 0)
        goto out;
    if (rank != 1) {
        ss_fail(err, "%s: expected a 1-D string dataset, rank is %d", name, rank);
        goto out;
    }
    raw = ss_calloc(dims[0] ? dims[0] : 1, sizeof *raw, err);
    res = ss_calloc(dims[0] ? dims[0] : 1, sizeof *res, err);
    if (!raw || !res)
        goto out;
    if (dims[0] && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) < 0) {
        ss_fail(err, "%s: cannot read as variable-length strings", name);
        goto out;
    }
    for (hsize_t i = 0; i < dims[0]; i++)
        if (!(res[i] = strdup(raw[i] ? raw[i] : ""))) {
            ss_fail(err, "%s: out of memory", name);
            ss_h5_free_strs(res, i);
            res = NULL;
            break;
        }
    if (dims[0]) {
        hid_t sp = H5Dget_space(d);
        H5Dvlen_reclaim(t, sp, H5P_DEFAULT, raw);
        H5Sclose(sp);
    }
    if (res) {
        *out = res;
        *n = dims[0];
        res = NULL;
        rc = 0;
    }
out:
    free(raw);
    free(res);
    H5Tclose(t);
    H5Dclose(d);
    return rc;
}

hid_t ss_h5_open_dataset(hid_t file, const char *path, const char *name, ss_error *err)
{
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        ss_fail(err, "%s: dataset %s is missing", path, name);
        return -1;
    }
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        ss_fail(err, "%s: cannot open dataset %s", path, name);
    return d;
}

/* "[2][3][4]" (the rank's first dims; ">=" before dims[0] when at_least). */
static void shape_str(char *dst, size_t cap, int rank, const hsize_t *dims, int at_least)
{
    size_t n = 0;
    snprintf(dst, cap, "%s", rank ? "" : "[] (a scalar)");
    for (int k = 0; k < rank && n < cap; k++)
        n += (size_t)snprintf(dst + n, cap - n, "[%s%llu]", k == 0 && at_least ? ">=" : "",
                              (unsigned long long)dims[k]);
}

int ss_h5_read_array(hid_t file, const char *path, const char *name, hid_t mtype, size_t elem,
                     int rank, const hsize_t *want, int at_least, void **out, hsize_t *rows,
                     ss_error *err)
{
    *out = NULL;
    hid_t d = ss_h5_open_dataset(file, path, name, err);
    if (d < 0)
        return -1;
    int r, rc = -1;
    hsize_t dims[8];
    if (ss_h5_shape(d, &r, dims, err) < 0)
        goto out;
    int ok = r == rank && (at_least ? dims[0] >= want[0] : dims[0] == want[0]);
    size_t count = (size_t)dims[0], bytes = 0; /* dims come from the file: no wrap */
    for (int k = 1; ok && k < rank; k++)
        ok = dims[k] == want[k] && !__builtin_mul_overflow(count, (size_t)dims[k], &count);
    ok = ok && !__builtin_mul_overflow(count ? count : 1, elem, &bytes);
    if (!ok) {
        char got[128], expected[128];
        shape_str(got, sizeof got, r, dims, 0);
        shape_str(expected, sizeof expected, rank, want, at_least);
        ss_fail(err, "%s: %s has shape %s, expected %s", path, name, got, expected);
        goto out;
    }
    *out = ss_malloc(bytes, err);
    if (!*out || (count && ss_h5_read_rows(d, mtype, 0, dims[0], *out, err) < 0))
        goto out;
    if (rows)
        *rows = dims[0];
    rc = 0;
out:
    if (rc < 0) {
        free(*out);
        *out = NULL;
    }
    H5Dclose(d);
    return rc;
}

int ss_h5_read_1d(hid_t file, const char *path, const char *name, hid_t mtype, size_t elem,
                  hsize_t n, int at_least, void **out, hsize_t *n_out, ss_error *err)
{
    return ss_h5_read_array(file, path, name, mtype, elem, 1, &n, at_least, out, n_out, err);
}
