/* fuzz_hf_model.c - a Hugging Face folder: config.json (ss_hf_read_config)
 * and the safetensors header and data (ss_hf_open), each on its own, then
 * the model (ss_model_load).  Input: config.json, the separator line
 * "\n#safetensors#\n", model.safetensors.  Oracle: an accepted config has
 * positive sizes that divide as the architecture needs; accepted tensors lie
 * inside their file, sized by shape and dtype, and tile the data section
 * exactly (the safetensors rule); an accepted model binds tensors of the
 * shapes its config implies. */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/model_internal.h"

static void check_config(const ss_config *c, const char *dir)
{
    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 ||
        c->head_dim < 1 || c->d_ff < 1 || c->vocab_size < 1 || c->max_ctx < 1 ||
        c->d_model % c->n_heads || !(c->rms_eps > 0) || !(c->rope_theta > 0) ||
        isinf(c->rms_eps) || isinf(c->rope_theta))
        fuzz_reject("%s: config.json accepted with a bad size", dir);
    if (c->rope_scaling == SS_ROPE_SCALING_LLAMA3 &&
        !(c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_factor > 0 &&
          c->rope_orig_ctx > 0))
        fuzz_reject("%s: llama3 rope scaling accepted with bad parameters", dir);
}

static void check_tensors(const struct ss_hf_folder *hf)
{
    const ss_mapped_file *f = &hf->files[0];
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    size_t covered = 0;
    for (size_t i = 0; i < hf->n_tensors; i++) {
        const ss_tensor *t = &hf->tensors[i];
        unsigned __int128 n = 1;
        for (int d = 0; d < 4; d++)
            n *= (unsigned __int128)(t->dims[d] > 0 ? t->dims[d] : 0);
        unsigned __int128 bytes = n * (unsigned)ss_type_block_bytes(t->type);
        const uint8_t *p = t->data, *data = f->map + 8 + hlen;
        if (!n || bytes != t->nbytes || p < data || p > f->map + f->size ||
            t->nbytes > (size_t)(f->map + f->size - p))
            fuzz_reject("tensor %s: %zu bytes at %td accepted", t->name, t->nbytes, p - data);
        for (size_t j = 0; j < i; j++) {
            const ss_tensor *u = &hf->tensors[j];
            const uint8_t *q = u->data;
            if (!strcmp(t->name, u->name) || (p < q + u->nbytes && q < p + t->nbytes))
                fuzz_reject("tensors %s and %s share a name or bytes", t->name, u->name);
        }
        covered += t->nbytes;
    }
    if (covered != f->size - 8 - hlen)
        fuzz_reject("tensors cover %zu of %zu data bytes", covered, (size_t)(f->size - 8 - hlen));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *cfg, *st;
    size_t ncfg, nst;
    fuzz_split(data, size, "\n#safetensors#\n", &cfg, &ncfg, &st, &nst);
    const char *cfg_path = fuzz_write("hf/config.json", cfg, ncfg);
    const char *st_path = fuzz_write("hf/model.safetensors", st, nst);
    const char *dir = fuzz_path("hf");
    ss_error err;
    ss_config c;
    int cfg_ok = ss_hf_read_config(dir, &c, &err) == 0;
    if (cfg_ok)
        check_config(&c, dir);
    else
        fuzz_refused(&err, cfg_path);
    struct ss_hf_folder *hf;
    int st_ok = ss_hf_open(dir, &hf, &err) == 0;
    if (st_ok) {
        check_tensors(hf);
        ss_hf_close(hf);
    } else {
        fuzz_refused(&err, st_path);
    }
    ss_model *m;
    if (cfg_ok && st_ok) {
        if (ss_model_load(dir, &m, &err)) {
            fuzz_refused(&err, dir);
        } else {
            int64_t d = m->cfg.d_model, q = (int64_t)m->cfg.n_heads * m->cfg.head_dim;
            for (int l = 0; l < m->cfg.n_layers; l++)
                if (ss_model_tensor_check(m, &m->layers[l].wq, "wq", d, q, &err) ||
                    ss_model_tensor_check(m, &m->layers[l].ffn_norm, "ffn_norm", d, 1, &err))
                    fuzz_reject("%s", err.msg);
            ss_model_free(m);
        }
    }
    return 0;
}
