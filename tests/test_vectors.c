/* test_vectors.c - threshold separability, vector/model checks, control-vector
 * GGUF export read back through ss_vectors_load, and capture-reader errors.
 * (Vector arithmetic is checked against numpy in tests/python.) */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "safesteer/capture.h"
#include "safesteer/model.h"
#include "safesteer/steer.h"
#include "safesteer/vectors.h"

Test(separability, perfect_split_on_training_rows)
{
    float s[4] = {1, 2, 3, 4};
    int8_t lab[4] = {0, 0, 1, 1}, held[4] = {0};
    float thr;
    cr_assert_float_eq(ss_vec_separability(s, lab, held, 4, &thr), 1.0, 1e-12);
    cr_assert_float_eq(thr, 2.5f, 1e-6);
}

Test(separability, measured_on_held_out_rows)
{
    /* threshold 2.5 from the training rows; both held-out rows fall on the wrong side */
    float s[6] = {1, 2, 3, 4, 2.4f, 2.6f};
    int8_t lab[6] = {0, 0, 1, 1, 1, 0}, held[6] = {0, 0, 0, 0, 1, 1};
    cr_assert_float_eq(ss_vec_separability(s, lab, held, 6, NULL), 0.0, 1e-12);
    lab[4] = 0, lab[5] = 1;
    cr_assert_float_eq(ss_vec_separability(s, lab, held, 6, NULL), 1.0, 1e-12);
}

Test(separability, best_threshold_with_overlap)
{
    /* unsafe 1,2,5 vs safe 3,4,6: threshold 2.5 misclassifies only the 5 */
    float s[6] = {1, 2, 5, 3, 4, 6};
    int8_t lab[6] = {0, 0, 0, 1, 1, 1}, held[6] = {0};
    float thr;
    cr_assert_float_eq(ss_vec_separability(s, lab, held, 6, &thr), 5.0 / 6, 1e-12);
    cr_assert_float_eq(thr, 2.5f, 1e-6);
}

Test(methods, parse_names)
{
    int m;
    ss_error err;
    cr_assert_eq(ss_vec_method_parse("pruned", &m, &err), 0);
    cr_assert_eq(m, SS_VEC_PRUNED);
    cr_assert_str_eq(ss_vec_method_name(SS_VEC_PCA), "pca");
    cr_assert_eq(ss_vec_method_parse("median", &m, &err), -1);
    cr_assert(strstr(err.msg, "\"median\""), "%s", err.msg);
}

static ss_vector_set make_set(int d, const int32_t *layers, int n_layers)
{
    ss_vector_set v;
    memset(&v, 0, sizeof v);
    snprintf(v.path, sizeof v.path, "mem.h5");
    v.n_categories = 2;
    v.n_layers = n_layers;
    v.d_model = d;
    v.layers = (int32_t *)layers;
    v.vectors = malloc(sizeof(float) * 2 * n_layers * d);
    for (int i = 0; i < 2 * n_layers * d; i++)
        v.vectors[i] = (float)((i * 37 % 101) - 50) / 7.0f;
    return v;
}

Test(model_check, d_model_and_layers)
{
    const int32_t layers[2] = {1, 29};
    ss_vector_set v = make_set(32, layers, 2);
    ss_config cfg = {.n_layers = 30, .d_model = 576};
    ss_error err;
    cr_assert_eq(ss_vectors_check_model(&v, &cfg, "smol.gguf", &err), -1);
    cr_assert(strstr(err.msg, "mem.h5") && strstr(err.msg, "d_model is 32") &&
                  strstr(err.msg, "smol.gguf") && strstr(err.msg, "576"), "%s", err.msg);
    cfg.d_model = 32;
    cr_assert_eq(ss_vectors_check_model(&v, &cfg, "smol.gguf", &err), 0, "%s", err.msg);
    cfg.n_layers = 29;
    cr_assert_eq(ss_vectors_check_model(&v, &cfg, "smol.gguf", &err), -1);
    cr_assert(strstr(err.msg, "29") && strstr(err.msg, "0..28"), "%s", err.msg);
    free(v.vectors);
}

Test(control_vector, export_reads_back_bitwise)
{
    const int32_t layers[3] = {2, 1, 7};
    ss_vector_set v = make_set(40, layers, 3);
    char path[] = "/tmp/ss_cv_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ss_error err;
    int skipped = -1;
    cr_assert_eq(ss_control_vector_write(path, &v, 1, 1.0f, "llama", 0, &skipped, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(skipped, 0);
    ss_vector_set back;
    cr_assert_eq(ss_vectors_load(path, &back, &err), 0, "%s", err.msg);
    cr_assert_eq(back.n_layers, 3);
    cr_assert_eq(back.d_model, 40);
    cr_assert_str_eq(back.model_hint, "llama");
    /* rows come back sorted by layer: 1, 2, 7 */
    const int order[3] = {1, 0, 2};
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(back.layers[r], layers[order[r]]);
        cr_assert_eq(memcmp(back.vectors + r * 40, v.vectors + (3 + order[r]) * 40,
                            40 * sizeof(float)), 0);
    }
    ss_gguf *g;
    cr_assert_eq(ss_gguf_open(path, &g, &err), 0, "%s", err.msg);
    ss_gguf_str arch;
    uint64_t n;
    cr_assert_eq(ss_gguf_get_str(g, "general.architecture", &arch, &err), 0);
    cr_assert_eq(arch.len, 13);
    cr_assert_eq(memcmp(arch.ptr, "controlvector", 13), 0);
    cr_assert_eq(ss_gguf_get_u64(g, "controlvector.layer_count", &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 3);
    ss_gguf_close(g);
    ss_vectors_free(&back);
    unlink(path);
    free(v.vectors);
}

Test(control_vector, layer_zero_is_refused_or_skipped)
{
    const int32_t layers[2] = {0, 3};
    ss_vector_set v = make_set(8, layers, 2);
    char path[] = "/tmp/ss_cv0_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ss_error err;
    int skipped = 0;
    cr_assert_eq(ss_control_vector_write(path, &v, 0, 2.0f, "llama", 0, &skipped, &err), -1);
    cr_assert(strstr(err.msg, "layer 0") && strstr(err.msg, "mem.h5"), "%s", err.msg);
    cr_assert_eq(ss_control_vector_write(path, &v, 0, 2.0f, "llama", 1, &skipped, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(skipped, 1);
    ss_vector_set back;
    cr_assert_eq(ss_vectors_load(path, &back, &err), 0, "%s", err.msg);
    cr_assert_eq(back.n_layers, 1);
    cr_assert_eq(back.layers[0], 3);
    for (int j = 0; j < 8; j++)
        cr_assert_eq(back.vectors[j], 2.0f * v.vectors[8 + j]);
    ss_vectors_free(&back);
    unlink(path);
    free(v.vectors);
}

Test(actfile, missing_and_wrong_files)
{
    ss_capture_file *a;
    ss_error err;
    cr_assert_eq(ss_capture_open("/nonexistent/acts.h5", &a, &err), -1);
    cr_assert(strstr(err.msg, "/nonexistent/acts.h5"), "%s", err.msg);
    cr_assert_eq(ss_capture_open(SS_SOURCE_DIR "/CMakeLists.txt", &a, &err), -1);
    cr_assert(strstr(err.msg, "CMakeLists.txt") && strstr(err.msg, "HDF5"), "%s", err.msg);
}
