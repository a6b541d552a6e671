/* fuzz_h5.c - HDF5 files from fuzz recipes (see fuzz_h5.h). */
#include "fuzz_h5.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/h5io.h"

typedef struct {
    const uint8_t *p, *end;
} reader;

static unsigned get_u8(reader *r)
{
    return r->p < r->end ? *r->p++ : 0;
}

static void get_bytes(reader *r, void *dst, size_t n)
{
    size_t have = (size_t)(r->end - r->p) < n ? (size_t)(r->end - r->p) : n;
    memcpy(dst, r->p, have);
    memset((char *)dst + have, 0, n - have);
    r->p += have;
}

/* The file type of type id t (fixed strings read their length); the memory
 * type is the same (HDF5 converts nothing). */
static hid_t file_type(unsigned t, reader *r)
{
    static const hid_t *const numeric[] = {&H5T_STD_I8LE_g, &H5T_STD_U8LE_g, &H5T_STD_I32LE_g,
                                           &H5T_STD_I64LE_g, &H5T_IEEE_F32LE_g,
                                           &H5T_IEEE_F64LE_g};
    H5open();
    if (t < 6)
        return H5Tcopy(*numeric[t]);
    if (t == 6)
        return ss_h5_f16_type();
    if (t == 7)
        return ss_h5_vlen_str_type();
    hid_t s = H5Tcopy(H5T_C_S1);
    H5Tset_size(s, get_u8(r) + 1);
    return s;
}

/* Element values for n elements of type ft: a buffer for H5Dwrite/H5Awrite
 * (vlen strings: an array of pointers into *strings). */
static void *values(reader *r, hid_t ft, size_t n, char **strings)
{
    if (H5Tis_variable_str(ft) > 0) {
        char **v = calloc(n ? n : 1, sizeof *v);
        *strings = calloc(n ? n : 1, 256);
        for (size_t i = 0; i < n; i++) {
            v[i] = *strings + 256 * i;
            get_bytes(r, v[i], get_u8(r));
        }
        return v;
    }
    size_t es = H5Tget_size(ft);
    void *v = calloc(n ? n : 1, es);
    get_bytes(r, v, n * es);
    return v;
}

static void build_object(reader *r, hid_t file)
{
    unsigned kind = get_u8(r), n = get_u8(r) % 64;
    char name[80] = "";
    get_bytes(r, name, n);
    name[n] = 0;
    hid_t ft = file_type(get_u8(r) % 9, r);
    int rank = (int)(get_u8(r) % 4);
    hsize_t dims[3], maxdims[3], chunk[3];
    size_t count = 1;
    for (int d = 0; d < rank; d++) {
        dims[d] = get_u8(r);
        dims[d] |= (hsize_t)get_u8(r) << 8;
        maxdims[d] = d == 0 && (kind & 4) ? H5S_UNLIMITED : dims[d];
        chunk[d] = dims[d] ? (dims[d] < 64 ? dims[d] : 64) : 1;
        count *= (size_t)dims[d];
        if (count > 1 << 16) {
            H5Tclose(ft);
            return;
        }
    }
    char *strings = NULL;
    void *buf = values(r, ft, count, &strings);
    int dataset = kind & 1;
    hid_t space = rank ? H5Screate_simple(rank, dims, maxdims) : H5Screate(H5S_SCALAR);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    if (rank && (kind & 6))
        H5Pset_chunk(dcpl, rank, chunk);
    if (dataset) {
        hid_t d = H5Dcreate2(file, name, ft, space, lcpl, dcpl, H5P_DEFAULT);
        if (d >= 0) {
            H5Dwrite(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
            H5Dclose(d);
        }
    } else {
        hid_t a = H5Acreate2(file, name, ft, space, H5P_DEFAULT, H5P_DEFAULT);
        if (a >= 0) {
            H5Awrite(a, ft, buf);
            H5Aclose(a);
        }
    }
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Sclose(space);
    H5Tclose(ft);
    free(buf);
    free(strings);
}

void fuzz_h5_build(const uint8_t *data, size_t size, const char *path)
{
    ss_h5_quiet(); /* a rejected name or shape just leaves the object out */
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "fuzz: cannot create %s\n", path);
        abort();
    }
    reader r = {data, data + size};
    while (r.p < r.end)
        build_object(&r, f);
    H5Fclose(f);
}
