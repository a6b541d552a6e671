/* engine.c - the backend-neutral half of the engine: options, validation,
 * slot bookkeeping, steering/capture state.  Backends (engine_cpu.c,
 * cuda/) only compute the forward pass. */
#include "safesteer/engine.h"

#include "engine/backend.h"
#include "safesteer/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ss_engine_opts_default(ss_engine_opts *o)
{
    o->device = SS_DEVICE_CPU;
    o->threads = 0;
    o->max_seqs = 1;
    o->max_ctx = 0;
    o->gpu = 0;
}

int ss_device_parse(const char *name, int *device, ss_error *err)
{
    if (!strcasecmp(name, "cpu")) {
        *device = SS_DEVICE_CPU;
        return 0;
    }
    if (!strcasecmp(name, "cuda") || !strcasecmp(name, "gpu")) {
        *device = SS_DEVICE_CUDA;
        return 0;
    }
    return ss_fail(err, "unknown device '%s' (expected cpu or cuda)", name);
}

static const char *const site_names[SS_SITE_COUNT] = {"resid_post", "attn_out", "mlp_out"};

const char *ss_site_name(int site)
{
    return site >= 0 && site < SS_SITE_COUNT ? site_names[site] : "unknown-site";
}

int ss_site_parse(const char *name, int *site, ss_error *err)
{
    for (int s = 0; s < SS_SITE_COUNT; s++) {
        if (!strcasecmp(name, site_names[s])) {
            *site = s;
            return 0;
        }
    }
    return ss_fail(err, "unknown site '%s' (expected resid_post, attn_out or mlp_out)", name);
}

/* The architecture numbers every backend relies on. */
static int check_config(const ss_model *m, ss_error *err)
{
    const ss_config *c = &m->cfg;
    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 ||
        c->d_ff < 1 || c->vocab_size < 1)
        return ss_fail(err,
                       "%s: invalid config (n_layers %d, d_model %d, n_heads %d, "
                       "n_kv_heads %d, d_ff %d, vocab %d)",
                       m->path, c->n_layers, c->d_model, c->n_heads, c->n_kv_heads, c->d_ff,
                       c->vocab_size);
    if (c->n_heads % c->n_kv_heads)
        return ss_fail(err, "%s: n_heads %d is not a multiple of n_kv_heads %d", m->path,
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim < 2 || c->head_dim % 2)
        return ss_fail(err, "%s: head_dim %d must be even and >= 2", m->path, c->head_dim);
    if (c->rope_scaling == SS_ROPE_SCALING_LLAMA3 &&
        !(c->rope_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          c->rope_low_freq_factor > 0 && c->rope_orig_ctx > 0))
        return ss_fail(err,
                       "%s: llama3 rope scaling needs factor > 0, high_freq_factor > "
                       "low_freq_factor > 0 and original context > 0 (got %g, %g, %g, %d)",
                       m->path, (double)c->rope_factor, (double)c->rope_high_freq_factor,
                       (double)c->rope_low_freq_factor, c->rope_orig_ctx);
    return 0;
}

static void free_shared(ss_engine *e)
{
    if (e->steer) {
        for (int s = 0; s < e->max_seqs; s++) {
            free(e->steer[s].alpha);
            free(e->steer[s].ops);
            free(e->steer[s].vectors);
        }
    }
    free(e->steer);
    for (int s = 0; s < SS_SITE_COUNT; s++)
        free(e->capture[s].layers);
    free(e->slot_pos);
    free(e);
}

int ss_engine_context(const ss_model *m, const ss_engine_opts *o)
{
    if (o->max_ctx > 0)
        return o->max_ctx;
    return m->cfg.max_ctx > 0 && m->cfg.max_ctx < 4096 ? m->cfg.max_ctx : 4096;
}

int ss_engine_footprint_of(const ss_model *m, const ss_engine_opts *o, ss_engine_footprint *f,
                           ss_error *err)
{
    if (o->device != SS_DEVICE_CUDA)
        return ss_fail(err, "a memory footprint is the CUDA engine's (device %s computes in "
                            "host memory)", o->device == SS_DEVICE_CPU ? "cpu" : "unknown");
    if (check_config(m, err))
        return -1;
    ss_engine_opts r = *o;
    r.max_ctx = ss_engine_context(m, o);
    return ss_engine_cuda_footprint(m, &r, f, err);
}

int ss_engine_create(const ss_model *m, const ss_engine_opts *o, ss_engine **out, ss_error *err)
{
    *out = NULL;
    if (check_config(m, err))
        return -1;
    if (o->max_seqs < 1)
        return ss_fail(err, "max_seqs must be >= 1 (got %d)", o->max_seqs);
    if (o->max_ctx < 0)
        return ss_fail(err, "max_ctx must be >= 0 (got %d; 0 = model context up to 4096)",
                       o->max_ctx);
    if (o->threads < 0)
        return ss_fail(err, "threads must be >= 0 (got %d; 0 = all cores)", o->threads);
    ss_engine *e = ss_calloc(1, sizeof *e, err);
    if (!e)
        return -1;
    e->model = m;
    e->cfg = m->cfg;
    e->max_seqs = o->max_seqs;
    e->threads = o->threads;
    e->max_ctx = ss_engine_context(m, o);
    e->slot_pos = ss_calloc((size_t)e->max_seqs, sizeof *e->slot_pos, err);
    e->steer = ss_calloc((size_t)e->max_seqs, sizeof *e->steer, err);
    int ok = e->slot_pos && e->steer;
    for (int s = 0; ok && s < SS_SITE_COUNT; s++)
        ok = (e->capture[s].layers = ss_calloc((size_t)e->cfg.n_layers, 1, err)) != NULL;
    if (!ok) {
        free_shared(e);
        return -1;
    }
    int rc = o->device == SS_DEVICE_CPU    ? ss_engine_cpu_create(e, o, err)
             : o->device == SS_DEVICE_CUDA ? ss_engine_cuda_create(e, o, err)
                                           : ss_fail(err, "unknown device id %d", o->device);
    if (rc) {
        /* a backend that failed half way has set ops only if destroy can
         * undo its partial state */
        if (e->ops && e->ops->destroy)
            e->ops->destroy(e);
        free_shared(e);
        return -1;
    }
    *out = e;
    return 0;
}

void ss_engine_free(ss_engine *e)
{
    if (!e)
        return;
    if (e->ops && e->ops->destroy)
        e->ops->destroy(e);
    free_shared(e);
}

const ss_config *ss_engine_config(const ss_engine *e) { return &e->cfg; }
int ss_engine_max_seqs(const ss_engine *e) { return e->max_seqs; }
int ss_engine_max_ctx(const ss_engine *e) { return e->max_ctx; }
const char *ss_engine_device_name(const ss_engine *e) { return e->ops->name; }

void ss_engine_reset_slot(ss_engine *e, int slot)
{
    if (slot < 0 || slot >= e->max_seqs)
        return;
    e->slot_pos[slot] = 0;
    if (e->ops->reset_slot)
        e->ops->reset_slot(e, slot);
}

int ss_engine_slot_pos(const ss_engine *e, int slot)
{
    return slot >= 0 && slot < e->max_seqs ? e->slot_pos[slot] : -1;
}

int ss_engine_check_batch(const ss_engine *e, const ss_batch *b, ss_error *err)
{
    if (!b || b->n_seqs < 1)
        return ss_fail(err, "empty batch: forward needs at least one sequence");
    if (b->n_seqs > e->max_seqs)
        return ss_fail(err, "batch of %d sequences exceeds the engine's %d slots", b->n_seqs,
                       e->max_seqs);
    const int32_t *tok = b->tokens;
    for (int i = 0; i < b->n_seqs; i++) {
        int slot = b->slots[i], n = b->n_tokens[i];
        if (slot < 0 || slot >= e->max_seqs)
            return ss_fail(err, "sequence %d: slot %d out of range (engine has slots 0..%d)", i,
                           slot, e->max_seqs - 1);
        for (int j = 0; j < i; j++)
            if (b->slots[j] == slot)
                return ss_fail(err, "sequences %d and %d both use slot %d", j, i, slot);
        if (n < 1)
            return ss_fail(err, "sequence in slot %d: %d tokens (each sequence needs >= 1)",
                           slot, n);
        int pos = e->slot_pos[slot];
        if (n > e->max_ctx - pos)
            return ss_fail(err,
                           "sequence in slot %d: %d tokens at position %d exceed the context "
                           "of %d",
                           slot, n, pos, e->max_ctx);
        for (int t = 0; t < n; t++)
            if (tok[t] < 0 || tok[t] >= e->cfg.vocab_size)
                return ss_fail(err,
                               "sequence in slot %d: token id %d at index %d is outside the "
                               "vocabulary of %d",
                               slot, (int)tok[t], t, e->cfg.vocab_size);
        tok += n;
    }
    return 0;
}

int ss_engine_forward(ss_engine *e, const ss_batch *b, float *logits, ss_error *err)
{
    if (ss_engine_check_batch(e, b, err))
        return -1;
    if (e->ops->forward(e, b, logits, err))
        return -1;
    for (int i = 0; i < b->n_seqs; i++)
        e->slot_pos[b->slots[i]] += b->n_tokens[i];
    return 0;
}

int ss_engine_forward_argmax(ss_engine *e, const ss_batch *b, int32_t *ids, ss_error *err)
{
    if (b->all_logits)
        return ss_fail(err, "forward_argmax: all_logits must be 0");
    if (ss_engine_check_batch(e, b, err))
        return -1;
    if (e->ops->forward_argmax) {
        if (e->ops->forward_argmax(e, b, ids, err))
            return -1;
    } else {
        int V = e->cfg.vocab_size;
        float *logits = ss_malloc((size_t)b->n_seqs * V * sizeof(float), err);
        int rc = logits ? e->ops->forward(e, b, logits, err) : -1;
        for (int i = 0; !rc && i < b->n_seqs; i++)
            ids[i] = ss_argmax(logits + (size_t)i * V, V);
        free(logits);
        if (rc)
            return -1;
    }
    for (int i = 0; i < b->n_seqs; i++)
        e->slot_pos[b->slots[i]] += b->n_tokens[i];
    return 0;
}

void ss_engine_get_stats(const ss_engine *e, ss_engine_stats *s)
{
    memset(s, 0, sizeof *s);
    e->ops->stats(e, s);
}

int ss_engine_measure_device(ss_engine *e, ss_engine_device *d, ss_error *err)
{
    memset(d, 0, sizeof *d);
    return e->ops->measure_device(e, d, err);
}

int ss_engine_timer_begin(ss_engine *e, ss_error *err)
{
    if (e->ops->timer_begin)
        return e->ops->timer_begin(e, err);
    e->timer_t0 = ss_seconds();
    return 0;
}

int ss_engine_timer_end(ss_engine *e, double *ms, ss_error *err)
{
    if (e->ops->timer_end)
        return e->ops->timer_end(e, ms, err);
    *ms = (ss_seconds() - e->timer_t0) * 1e3;
    return 0;
}

int ss_engine_set_decode_graphs(ss_engine *e, int on, ss_error *err)
{
    if (!e->ops->set_decode_graphs)
        return ss_fail(err, "the %s engine has no decode graphs", e->ops->name);
    return e->ops->set_decode_graphs(e, on);
}

/* Validates s against the model; ablation directions must be unit norm
 * because the projection h -= (h.v) v assumes it. */
static int check_steer(const ss_engine *e, int slot, const ss_steer_slot *s, ss_error *err)
{
    int L = e->cfg.n_layers, d = e->cfg.d_model;
    if (s->pos_begin < 0 || (s->pos_end >= 0 && s->pos_end < s->pos_begin))
        return ss_fail(err,
                       "steering slot %d: position range [%d, %d) is invalid (need 0 <= "
                       "begin <= end, or end < 0 for no end)",
                       slot, s->pos_begin, s->pos_end);
    if (!s->alpha || !s->ops || !s->vectors)
        return ss_fail(err, "steering slot %d: alpha, ops and vectors must be set", slot);
    for (int site = 0; site < SS_SITE_COUNT; site++)
        for (int l = 0; l < L; l++) {
            size_t at = (size_t)site * L + l;
            const char *sn = ss_site_name(site);
            if (!isfinite(s->alpha[at]))
                return ss_fail(err, "steering slot %d: alpha of %s layer %d is %g", slot, sn, l,
                               (double)s->alpha[at]);
            if (s->alpha[at] == 0.0f)
                continue;
            if (s->ops[at] != SS_STEER_ADD && s->ops[at] != SS_STEER_ABLATE)
                return ss_fail(err,
                               "steering slot %d: op %d at %s layer %d is neither add (0) nor "
                               "ablate (1)",
                               slot, s->ops[at], sn, l);
            const float *v = s->vectors + at * d;
            double nn = 0.0;
            for (int j = 0; j < d; j++) {
                if (!isfinite(v[j]))
                    return ss_fail(err,
                                   "steering slot %d: vector of %s layer %d has %g at index %d",
                                   slot, sn, l, (double)v[j], j);
                nn += (double)v[j] * v[j];
            }
            if (s->ops[at] == SS_STEER_ABLATE && fabs(sqrt(nn) - 1.0) > 1e-3)
                return ss_fail(err,
                               "steering slot %d: ablation vector of %s layer %d has norm %g "
                               "(must be unit norm)",
                               slot, sn, l, sqrt(nn));
        }
    return 0;
}

int ss_engine_set_steering(ss_engine *e, int slot, const ss_steer_slot *s, ss_error *err)
{
    if (slot < 0 || slot >= e->max_seqs)
        return ss_fail(err, "steering: slot %d out of range (engine has slots 0..%d)", slot,
                       e->max_seqs - 1);
    if (!s) {
        e->steer[slot].active = 0;
        return e->ops->sync_hooks ? e->ops->sync_hooks(e, err) : 0;
    }
    if (check_steer(e, slot, s, err))
        return -1;
    size_t n = (size_t)SS_SITE_COUNT * e->cfg.n_layers; /* (site, layer) pairs */
    size_t vec_bytes = n * e->cfg.d_model * sizeof(float);
    /* allocated on first use: most slots are never steered */
    if (!e->steer[slot].alpha) {
        float *a = ss_malloc(n * sizeof(float), err);
        uint8_t *o = a ? ss_malloc(n, err) : NULL;
        float *v = o ? ss_malloc(vec_bytes, err) : NULL;
        if (!v) {
            free(a);
            free(o);
            return -1;
        }
        e->steer[slot].alpha = a;
        e->steer[slot].ops = o;
        e->steer[slot].vectors = v;
    }
    memcpy(e->steer[slot].alpha, s->alpha, n * sizeof(float));
    memcpy(e->steer[slot].ops, s->ops, n);
    memcpy(e->steer[slot].vectors, s->vectors, vec_bytes);
    e->steer[slot].pos_begin = s->pos_begin;
    e->steer[slot].pos_end = s->pos_end;
    e->steer[slot].active = 1;
    e->steer[slot].dirty = 1;
    return e->ops->sync_hooks ? e->ops->sync_hooks(e, err) : 0;
}

int ss_engine_set_capture(ss_engine *e, int site, const uint8_t *layers_mask, ss_capture_fn fn,
                          void *user, ss_error *err)
{
    if (site < 0 || site >= SS_SITE_COUNT)
        return ss_fail(err, "capture: site %d out of range", site);
    e->capture[site].fn = fn;
    e->capture[site].user = fn ? user : NULL;
    /* a NULL mask with a hook selects every layer */
    for (int l = 0; l < e->cfg.n_layers; l++)
        e->capture[site].layers[l] = fn && (!layers_mask || layers_mask[l]);
    return e->ops->sync_hooks ? e->ops->sync_hooks(e, err) : 0;
}
