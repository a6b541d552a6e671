/* fuzz_vectors.c - steering vector files through ss_vectors_load: HDF5
 * vector files and llama.cpp control-vector GGUFs (told apart by their
 * magic bytes, so one target covers both).  Input: a GGUF file as is, or
 * else a recipe (fuzz_h5.h) of an HDF5 vector file.  Oracle: an accepted
 * set has categories, layers (distinct, >= 0) and d_model >= 1, names for
 * every category, and finite values. */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_h5.h"
#include "safesteer/steer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_path("vectors.bin");
    if (size >= 4 && !memcmp(data, "GGUF", 4))
        fuzz_write("vectors.bin", data, size);
    else
        fuzz_h5_build(data, size, path);
    ss_vector_set v;
    ss_error err;
    if (ss_vectors_load(path, &v, &err)) {
        fuzz_refused(&err, path);
        ss_vectors_free(&v);
        return 0;
    }
    if (v.n_categories < 1 || v.n_layers < 1 || v.d_model < 1)
        fuzz_reject("%d categories, %d layers, d_model %d accepted", v.n_categories, v.n_layers,
                    v.d_model);
    for (int c = 0; c < v.n_categories; c++)
        if (!v.categories[c])
            fuzz_reject("category %d has no name", c);
    for (int l = 0; l < v.n_layers; l++) {
        if (v.layers[l] < 0)
            fuzz_reject("layer %d accepted", v.layers[l]);
        for (int k = 0; k < l; k++)
            if (v.layers[k] == v.layers[l])
                fuzz_reject("layer %d accepted twice", v.layers[l]);
    }
    size_t n = (size_t)v.n_categories * (size_t)v.n_layers * (size_t)v.d_model;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v.vectors[i]))
            fuzz_reject("vector value %zu is %g", i, (double)v.vectors[i]);
    int index;
    if (v.n_categories == 1 && ss_vectors_category(&v, NULL, &index, &err))
        fuzz_reject("the only category is not found: %s", err.msg);
    ss_vectors_free(&v);
    return 0;
}
