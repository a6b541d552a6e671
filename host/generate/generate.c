/* generate.c - batched generation loop over any engine.
 *
 * One prefill forward for all prompts, then one forward per step for the
 * sequences still running.  Text is decoded incrementally; when stop
 * strings are set, the last (longest stop - 1) bytes are held back from the
 * stream so a stop string is never printed. */
#include "safesteer/generate.h"

#include "safesteer/util.h"
#include "safesteer/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    ss_sampler sampler;
    ss_stream_decoder dec;
    char *text;        /* decoded so far */
    size_t len, cap;
    size_t emitted;    /* bytes already passed to on_text */
    int done;
    int next_id;       /* token to append on the next step */
} seq_state;

static int append_text(seq_state *st, const char *s, size_t n, ss_error *err)
{
    if (st->len + n + 1 > st->cap) {
        size_t cap = (st->cap ? st->cap * 2 : 256) + n;
        char *p = realloc(st->text, cap);
        if (!p)
            return ss_fail(err, "out of memory growing generated text to %zu bytes", cap);
        st->text = p;
        st->cap = cap;
    }
    memcpy(st->text + st->len, s, n);
    st->len += n;
    st->text[st->len] = '\0';
    return 0;
}

/* Returns the offset of the earliest stop string in text, or -1. */
static long find_stop(const char *text, const ss_gen_params *p)
{
    long best = -1;
    for (int i = 0; i < p->n_stop_strings; i++) {
        const char *hit = strstr(text, p->stop_strings[i]);
        if (hit && (best < 0 || hit - text < best))
            best = hit - text;
    }
    return best;
}

static size_t utf8_boundary_before(const char *s, size_t pos)
{
    while (pos > 0 && ((unsigned char)s[pos] & 0xC0) == 0x80)
        pos--;
    return pos;
}

static void emit(seq_state *st, int seq, size_t upto, ss_gen_text_fn fn, void *user)
{
    if (fn && upto > st->emitted)
        fn(user, seq, st->text + st->emitted, upto - st->emitted);
    if (upto > st->emitted)
        st->emitted = upto;
}

static int record_logprobs(ss_gen_result *r, const float *logits, int vocab, int k, float *lp,
                           ss_error *err)
{
    int step = r->n_steps;
    int *ids = realloc(r->top_ids, sizeof(int) * (size_t)(step + 1) * (size_t)k);
    if (ids)
        r->top_ids = ids;
    float *vals = realloc(r->top_logprobs, sizeof(float) * (size_t)(step + 1) * (size_t)k);
    if (vals)
        r->top_logprobs = vals;
    if (!ids || !vals)
        return ss_fail(err, "out of memory storing log-probabilities for step %d", step);
    ss_log_softmax(logits, lp, vocab);
    ss_top_k(lp, vocab, k, r->top_ids + (size_t)step * k, r->top_logprobs + (size_t)step * k);
    r->n_steps++;
    return 0;
}

static int push_id(ss_gen_result *r, int id, ss_error *err)
{
    int32_t *p = realloc(r->ids, sizeof(int32_t) * (size_t)(r->n_ids + 1));
    if (!p)
        return ss_fail(err, "out of memory storing generated ids");
    r->ids = p;
    r->ids[r->n_ids++] = id;
    return 0;
}

/* Chooses the next token of sequence i from its logits and updates its state. */
static int step_sequence(ss_engine *e, const ss_tokenizer *tok, int i, seq_state *st,
                         ss_gen_result *r, const float *logits, const ss_gen_params *p,
                         size_t holdback, float *lp, ss_gen_text_fn on_text, void *user,
                         ss_error *err)
{
    int vocab = ss_engine_config(e)->vocab_size;
    if (p->logprobs_k > 0 && record_logprobs(r, logits, vocab, p->logprobs_k, lp, err) < 0)
        return -1;
    int id = ss_sample(&st->sampler, logits);
    if (!isfinite(logits[id])) /* every logit is NaN or +inf once activations overflow */
        return ss_fail(err,
                       "sequence %d at position %d: the logits are not finite (%g for token "
                       "%d); the activations overflowed (steering strength or vector too "
                       "large?)",
                       i, ss_engine_slot_pos(e, i), (double)logits[id], id);
    if (ss_tokenizer_is_stop(tok, id)) {
        st->done = 1;
        r->stop_reason = SS_STOP_EOS;
        return 0;
    }
    if (push_id(r, id, err) < 0)
        return -1;
    char piece[1024];
    size_t n = ss_stream_feed(&st->dec, id, piece, sizeof piece);
    if (append_text(st, piece, n, err) < 0)
        return -1;
    long stop_at = find_stop(st->text, p);
    if (stop_at >= 0) {
        st->len = (size_t)stop_at;
        st->text[st->len] = '\0';
        st->done = 1;
        r->stop_reason = SS_STOP_STRING;
    } else if (r->n_ids >= p->max_new) {
        st->done = 1;
        r->stop_reason = SS_STOP_LENGTH;
    } else if (ss_engine_slot_pos(e, i) + 1 > ss_engine_max_ctx(e)) {
        st->done = 1;
        r->stop_reason = SS_STOP_CONTEXT;
    }
    if (st->done) {
        n = ss_stream_finish(&st->dec, piece, sizeof piece);
        if (r->stop_reason != SS_STOP_STRING && append_text(st, piece, n, err) < 0)
            return -1;
        emit(st, i, st->len, on_text, user);
    } else {
        size_t safe = st->len > holdback ? st->len - holdback : 0;
        emit(st, i, utf8_boundary_before(st->text, safe), on_text, user);
    }
    st->next_id = id;
    return 0;
}

/* Installs every prompt's plan (or none) on its slot. */
static int install_plans(ss_engine *e, const ss_gen_request *req, ss_error *err)
{
    for (int i = 0; i < req->n; i++) {
        const ss_steer_plan *p = req->plans ? req->plans[i] : NULL;
        if (ss_steer_apply(e, i, p, req->n_prompt[i], err) < 0)
            return ss_fail_context(err, "prompt %d", i);
    }
    return 0;
}

int ss_generate(ss_engine *e, const ss_tokenizer *tok, const ss_gen_request *req,
                ss_gen_result *results, ss_gen_timing *timing, ss_error *err)
{
    const ss_config *cfg = ss_engine_config(e);
    int n = req->n;
    const int32_t *const *prompts = req->prompts;
    const int *n_prompt = req->n_prompt;
    const ss_gen_params *params = &req->params;
    ss_gen_text_fn on_text = req->on_text;
    void *user = req->user;
    if (n < 1 || n > ss_engine_max_seqs(e))
        return ss_fail(err, "%d prompts in one generation call; the engine has %d slots", n,
                       ss_engine_max_seqs(e));
    long total_prompt = 0;
    for (int i = 0; i < n; i++) {
        if (n_prompt[i] < 1)
            return ss_fail(err, "prompt %d is empty (0 tokens)", i);
        if (n_prompt[i] >= ss_engine_max_ctx(e))
            return ss_fail(err, "prompt %d has %d tokens; the context holds %d (leave room to "
                                "generate: a larger context)", i, n_prompt[i],
                           ss_engine_max_ctx(e));
        total_prompt += n_prompt[i];
    }
    memset(results, 0, sizeof(*results) * (size_t)n);
    memset(timing, 0, sizeof *timing);
    if (install_plans(e, req, err) < 0)
        return -1;

    size_t holdback = 0;
    for (int i = 0; i < params->n_stop_strings; i++) {
        size_t l = strlen(params->stop_strings[i]);
        if (l > holdback + 1)
            holdback = l - 1;
    }
    int rc = -1;
    seq_state *st = ss_calloc((size_t)n, sizeof *st, err);
    int *slots = ss_malloc(sizeof(int) * (size_t)n, err);
    int *counts = ss_malloc(sizeof(int) * (size_t)n, err);
    int32_t *tokens = ss_malloc(sizeof(int32_t) * (size_t)(total_prompt > n ? total_prompt : n), err);
    float *logits = ss_malloc(sizeof(float) * (size_t)n * (size_t)cfg->vocab_size, err);
    float *lp = ss_malloc(sizeof(float) * (size_t)cfg->vocab_size, err);
    if (!st || !slots || !counts || !tokens || !logits || !lp)
        goto out;
    for (int i = 0; i < n; i++) {
        ss_sampler_params sp = params->sampler;
        sp.seed += (uint64_t)i;
        if (ss_sampler_init(&st[i].sampler, &sp, cfg->vocab_size, err) < 0)
            goto out;
        ss_stream_init(&st[i].dec, tok, 1);
        ss_engine_reset_slot(e, i);
    }

    /* Prefill: every prompt in one forward call. */
    long off = 0;
    for (int i = 0; i < n; i++) {
        slots[i] = i;
        counts[i] = n_prompt[i];
        memcpy(tokens + off, prompts[i], sizeof(int32_t) * (size_t)n_prompt[i]);
        off += n_prompt[i];
    }
    ss_batch b = {.n_seqs = n, .slots = slots, .n_tokens = counts, .tokens = tokens};
    double t0 = ss_seconds();
    if (ss_engine_forward(e, &b, logits, err) < 0)
        goto out;
    timing->prefill_seconds = ss_seconds() - t0;
    timing->prefill_tokens = total_prompt;

    int *active = ss_malloc(sizeof(int) * (size_t)n, err);
    if (!active)
        goto out;
    for (int i = 0; i < n; i++)
        active[i] = i;
    int n_active = params->max_new > 0 ? n : 0;
    ss_progress prog;
    ss_progress_begin(&prog, &req->progress, "generate", "steps", 0, params->max_new, 1);
    t0 = ss_seconds();
    for (int step = 1; n_active > 0; step++) {
        /* logits row j belongs to active[j] */
        int still = 0;
        for (int j = 0; j < n_active; j++) {
            int i = active[j];
            if (step_sequence(e, tok, i, &st[i], &results[i],
                              logits + (size_t)j * cfg->vocab_size, params, holdback, lp,
                              on_text, user, err) < 0) {
                free(active);
                goto out;
            }
            if (!st[i].done) {
                active[still] = i;
                slots[still] = i;
                counts[still] = 1;
                tokens[still] = st[i].next_id;
                still++;
            }
        }
        n_active = still;
        if (n_active == 0)
            break;
        b.n_seqs = n_active;
        if (ss_progress_update(&prog, step, err) < 0 || ss_engine_forward(e, &b, logits, err) < 0) {
            free(active);
            goto out;
        }
        timing->decode_tokens += n_active;
    }
    timing->decode_seconds = ss_seconds() - t0;
    free(active);
    for (int i = 0; i < n; i++) {
        results[i].text = st[i].text;
        st[i].text = NULL;
        if (!results[i].text)
            results[i].text = calloc(1, 1);
    }
    rc = 0;
out:
    if (st)
        for (int i = 0; i < n; i++) {
            ss_sampler_free(&st[i].sampler);
            free(st[i].text);
        }
    if (rc < 0 && results)
        for (int i = 0; i < n; i++)
            ss_gen_result_free(&results[i]);
    free(st);
    free(slots);
    free(counts);
    free(tokens);
    free(logits);
    free(lp);
    return rc;
}

void ss_gen_result_free(ss_gen_result *r)
{
    free(r->ids);
    free(r->text);
    free(r->top_ids);
    free(r->top_logprobs);
    memset(r, 0, sizeof *r);
}
