/* fuzz_capture.c - HDF5 capture files through the project's readers:
 * ss_capture_open + ss_capture_read (vectors, clustering) and
 * ss_capture_load.  Input: a recipe (fuzz_h5.h) of the file.  Oracle: an
 * accepted file's shapes agree with its attributes (rows, layers, offsets inside /acts); what ss_capture_read
 * returns is finite. */
#include <math.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "fuzz_h5.h"
#include "safesteer/capture.h"
#include "safesteer/vectors.h"

static void check_reader(ss_capture_file *a, const char *path)
{
    const ss_capture_info *in = ss_capture_info_of(a);
    if (in->n_layers < 1 || in->d_model < 1 || in->n_prompts < 0)
        fuzz_reject("%s: %d layers, d_model %d, %lld prompts accepted", path, in->n_layers,
                    in->d_model, (long long)in->n_prompts);
    int *rows = malloc(sizeof *rows * (size_t)in->n_layers);
    for (int l = 0; l < in->n_layers; l++) {
        rows[l] = l;
        if (in->layers[l] < 0 || in->layers[l] >= in->n_layers_model)
            fuzz_reject("%s: layer %d accepted for a %d-layer model", path, in->layers[l],
                        in->n_layers_model);
    }
    for (int64_t p = 0; p < in->n_prompts; p++)
        if (!in->ids[p] || !in->categories[p] || !in->labels[p])
            fuzz_reject("%s: prompt %lld has no id, category or label", path, (long long)p);
    int64_t n = in->n_prompts < 64 ? in->n_prompts : 64;
    if ((double)n * in->n_layers * in->d_model < 1 << 22) {
        float *out = malloc(sizeof *out * (size_t)(n ? n : 1) * (size_t)in->n_layers *
                            (size_t)in->d_model);
        ss_error err;
        if (n && ss_capture_read(a, 0, n, rows, in->n_layers, out, &err) == 0) {
            for (int64_t i = 0; i < n * in->n_layers * in->d_model; i++)
                if (!isfinite(out[i]))
                    fuzz_reject("%s: activation %lld is %g", path, (long long)i,
                                (double)out[i]);
        } else if (n) {
            fuzz_refused(&err, path);
        }
        free(out);
    }
    free(rows);
}

static void check_capture(const ss_capture_data *d, const char *path)
{
    if (d->n_layers < 1 || d->d_model < 1 || d->n_done < 0 || d->n_done > d->n_prompts)
        fuzz_reject("%s: %d layers, d_model %d, %d of %d prompts accepted", path, d->n_layers,
                    d->d_model, d->n_done, d->n_prompts);
    if (d->offsets) {
        if (d->offsets[0] != 0)
            fuzz_reject("%s: offsets[0] = %lld accepted", path, (long long)d->offsets[0]);
        for (int i = 0; i < d->n_done; i++)
            if (d->offsets[i + 1] < d->offsets[i] || d->offsets[i + 1] > d->n_rows)
                fuzz_reject("%s: offsets[%d] = %lld accepted (%lld rows)", path, i + 1,
                            (long long)d->offsets[i + 1], (long long)d->n_rows);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_path("acts.h5");
    fuzz_h5_build(data, size, path);
    ss_error err;
    ss_capture_file *a;
    if (ss_capture_open(path, &a, &err)) {
        fuzz_refused(&err, path);
    } else {
        check_reader(a, path);
        ss_capture_close(a);
    }
    ss_capture_data d;
    if (ss_capture_load(path, 1, &d, &err)) {
        fuzz_refused(&err, path);
        return 0;
    }
    check_capture(&d, path);
    ss_capture_data_free(&d);
    return 0;
}
