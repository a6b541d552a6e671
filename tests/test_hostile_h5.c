/* test_hostile_h5.c - capture and vector files that are valid HDF5 but
 * hold hostile content, as the fuzz targets tests/fuzz/fuzz_capture.c and
 * fuzz_vectors.c found them: every one is refused with a message naming the
 * file and the field, before any allocation it would size. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/capture.h"
#include "safesteer/steer.h"
#include "util/h5io.h"

static char path[256];

/* A pooled capture of 2 prompts, 1 layer (3 of a 4-layer model), d_model 4
 * (what ss_capture_open reads), with n_done and /offsets as given (pooling
 * "all" when offsets). */
static const char *write_capture(int64_t n_done, const int64_t *offsets)
{
    snprintf(path, sizeof path, "/tmp/ss_test_hostile_%d.h5", (int)getpid());
    ss_error err;
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    float acts[4 * 1 * 4] = {0};
    int32_t layer = 3, n_tokens[2] = {2, 2};
    float norm = 1;
    hsize_t dims[3] = {offsets ? 4 : 2, 1, 4}, two = 2, one = 1, three = 3;
    hid_t st = ss_h5_vlen_str_type();
    const char *ids[2] = {"p0", "p1"}, *cats[2] = {"crime", "crime"}, *labels[2] = {"unsafe",
                                                                                    "unsafe"};
    cr_assert_eq(ss_h5_attr_set_str(f, "format", "safesteer.capture", &err) ||
                     ss_h5_attr_set_i64(f, "n_layers_model", 4, &err) ||
                     ss_h5_attr_set_i64(f, "n_prompts", 2, &err) ||
                     ss_h5_attr_set_i64(f, "n_done", n_done, &err) ||
                     ss_h5_attr_set_i64(f, "complete", 1, &err) ||
                     ss_h5_attr_set_i64(f, "d_model", 4, &err) ||
                     ss_h5_attr_set_str(f, "pooling", offsets ? "all" : "mean", &err) ||
                     ss_h5_attr_set_str(f, "site", "resid_post", &err) ||
                     ss_h5_write_all(f, "/acts", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, dims, acts,
                                     &err) ||
                     ss_h5_write_all(f, "/layers", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &one,
                                     &layer, &err) ||
                     ss_h5_write_all(f, "/layer_norms", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 1,
                                     &one, &norm, &err) ||
                     ss_h5_write_all(f, "/prompts/n_tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, 1,
                                     &two, n_tokens, &err) ||
                     ss_h5_write_all(f, "/prompts/id", st, st, 1, &two, ids, &err) ||
                     ss_h5_write_all(f, "/prompts/category", st, st, 1, &two, cats, &err) ||
                     ss_h5_write_all(f, "/prompts/label", st, st, 1, &two, labels, &err) ||
                     (offsets && ss_h5_write_all(f, "/offsets", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                                 1, &three, offsets, &err)),
                 0, "%s", err.msg);
    H5Tclose(st);
    H5Fclose(f);
    return path;
}

static void expect_capture_refused(const char *file, const char *needle)
{
    ss_capture_data d;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_capture_load(file, 0, &d, &err), -1, "%s loaded", file);
    cr_assert(strstr(err.msg, file) && strstr(err.msg, needle), "%s", err.msg);
}

Test(hostile_h5, capture_counts_and_offsets)
{
    ss_capture_data d;
    ss_error err;
    const int64_t good[3] = {0, 2, 4}, backwards[3] = {0, 3, 1};
    cr_assert_eq(ss_capture_load(write_capture(2, good), 0, &d, &err), 0, "%s", err.msg);
    cr_assert_eq(d.n_rows, 4);
    ss_capture_data_free(&d);
    /* n_done sized an allocation of 2^54 x 4 bytes */
    expect_capture_refused(write_capture(INT64_C(1) << 54, NULL),
                           "attribute n_done is 18014398509481984 (expected 0..2)");
    expect_capture_refused(write_capture(-1, NULL), "attribute n_done is -1");
    expect_capture_refused(write_capture(2, backwards),
                           "/offsets[1..2] = 3..1 is not a token range inside /acts (4 rows)");
    unlink(path);
}

Test(hostile_h5, messages_name_the_file)
{
    /* h5io names only the object: "/: attribute d_model is missing" */
    write_capture(2, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Adelete(f, "d_model"), 0);
    H5Fclose(f);
    expect_capture_refused(path, "attribute d_model is missing");
    ss_vector_set v;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_vectors_load(path, &v, &err), -1);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "safesteer.vectors"), "%s", err.msg);
    unlink(path);
}

/* A vector file of 1 category ("crime"), n_rows layers, d_model 3 (n_rows
 * rows of vectors in /vectors, declared as n_rows). */
static const char *write_vectors(const float *vec, const int32_t *layers, hsize_t n_rows)
{
    snprintf(path, sizeof path, "/tmp/ss_test_hostile_v%d.h5", (int)getpid());
    ss_error err = {.msg = ""};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[3] = {n_rows ? 1 : 0, n_rows, 3}, one = 1;
    hid_t st = ss_h5_vlen_str_type();
    const char *name = "crime";
    cr_assert_eq(ss_h5_attr_set_str(f, "format", "safesteer.vectors", &err) ||
                     ss_h5_attr_set_str(f, "site", "resid_post", &err) ||
                     ss_h5_attr_set_str(f, "method", "mean-diff", &err) ||
                     ss_h5_write_all(f, "/vectors", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, dims,
                                     vec, &err) ||
                     ss_h5_write_all(f, "/layers", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &n_rows,
                                     layers, &err) ||
                     ss_h5_write_all(f, "/categories", st, st, 1, &one, &name, &err),
                 0, "%s", err.msg);
    H5Tclose(st);
    H5Fclose(f);
    return path;
}

static void expect_vectors_refused(const char *file, const char *needle)
{
    ss_vector_set v;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_vectors_load(file, &v, &err), -1, "%s loaded", file);
    cr_assert(strstr(err.msg, file) && strstr(err.msg, needle), "%s", err.msg);
}

Test(hostile_h5, vector_values_must_be_finite)
{
    const float vec[6] = {1, 2, 3, 4, NAN, 6};
    const int32_t layers[2] = {5, 9};
    expect_vectors_refused(write_vectors(vec, layers, 2),
                           "vector of category crime, layer 9 has nan at dim 1");
    unlink(path);
}

/* Layers are looked up by value: -1276 or one given twice loaded before */
Test(hostile_h5, vector_layers_and_shape)
{
    const float vec[6] = {1, 2, 3, 4, 5, 6};
    const int32_t negative[2] = {5, -1276}, twice[2] = {5, 5};
    expect_vectors_refused(write_vectors(vec, negative, 2), "/layers[1] = -1276 is negative");
    expect_vectors_refused(write_vectors(vec, twice, 2), "/layers[1] = 5 is listed twice");
    expect_vectors_refused(write_vectors(vec, twice, 0), "/vectors has shape [0][0][3]");
    unlink(path);
}

/* Fewer names than category rows: the names were freed as if there were one
 * per row (heap-buffer-overflow under ASan, found by fuzz_vectors). */
Test(hostile_h5, vector_categories_that_do_not_match_the_rows)
{
    const float vec[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const int32_t layers[2] = {5, 9};
    write_vectors(vec, layers, 2); /* one name, "crime" */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Ldelete(f, "/vectors", H5P_DEFAULT), 0);
    hsize_t dims[3] = {2, 2, 3};
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_h5_write_all(f, "/vectors", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 3, dims, vec,
                                 &err), 0, "%s", err.msg);
    H5Fclose(f);
    expect_vectors_refused(path, "/categories has 1 names for 2 vector rows");
    unlink(path);
}

/* Attributes the readers read into one variable, holding several values:
 * H5Aread wrote past the variable (stack-buffer-overflow under ASan). */
Test(hostile_h5, attributes_must_hold_one_value)
{
    write_capture(2, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(H5Adelete(f, "n_done"), 0);
    cr_assert_geq(H5Adelete(f, "site"), 0);
    hsize_t four = 4, three = 3;
    int64_t counts[4] = {1, 1, 1, 1};
    const char *sites[3] = {"resid_post", "attn_out", "mlp_out"};
    hid_t sp = H5Screate_simple(1, &four, NULL), st = ss_h5_vlen_str_type();
    hid_t a = H5Acreate2(f, "n_done", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, H5T_NATIVE_INT64, counts), 0);
    H5Aclose(a);
    H5Sclose(sp);
    sp = H5Screate_simple(1, &three, NULL);
    a = H5Acreate2(f, "site", st, sp, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Awrite(a, st, sites), 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(st);
    H5Fclose(f);
    expect_capture_refused(path, "attribute n_done holds 4 values, expected one");
    f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_h5_attr_set_str(f, "format", "safesteer.vectors", &err), 0, "%s", err.msg);
    H5Fclose(f);
    ss_vector_set v;
    cr_assert_eq(ss_vectors_load(path, &v, &err), -1);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "attribute site holds 3 values"), "%s",
              err.msg);
    unlink(path);
}
