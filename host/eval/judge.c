/* judge.c - an LLM judge over a batch of (prompt, response) pairs: the
 * judge's prompts encoded with its chat template, one unsteered generation
 * batch, and the verdict of each answer (see eval.h). */
#include "safesteer/eval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/generate.h"

/* Top tokens whose probabilities the generic judge's verdict is read from. */
#define JUDGE_TOP_K 20

/* Appends the tokens of text to ids[*n] (reallocated). */
static int append_text_tokens(const ss_tokenizer *t, const char *text, int32_t **ids, int *n,
                              ss_error *err)
{
    int32_t *more;
    int n_more;
    if (ss_tokenize(t, text, strlen(text), 0, &more, &n_more, err) < 0)
        return -1;
    int32_t *p = realloc(*ids, sizeof(int32_t) * (size_t)(*n + n_more));
    if (!p) {
        free(more);
        return ss_fail(err, "out of memory");
    }
    memcpy(p + *n, more, sizeof(int32_t) * (size_t)n_more);
    free(more);
    *ids = p;
    *n += n_more;
    return 0;
}

/* The judge's token ids for one pair: Llama Guard's rendered template as it
 * is, or the generic question through the judge's chat template; then the
 * answer prefix when the kind has one. */
static int encode_pair(const ss_judge *j, const char *prompt, const char *response,
                       int32_t **ids, int *n_ids, ss_error *err)
{
    char *text = ss_eval_judge_prompt(j->kind, prompt, response);
    if (!text)
        return ss_fail(err, "out of memory");
    const char *prefix = ss_eval_judge_answer_prefix(j->kind);
    int r = j->kind == SS_JUDGE_LLAMA_GUARD
                ? ss_tokenize(j->tok, text, strlen(text), 1, ids, n_ids, err)
                : ss_encode_prompt(j->model, j->tok, j->chat_family, NULL, text, ids, n_ids, err);
    free(text);
    if (r < 0 || (prefix && append_text_tokens(j->tok, prefix, ids, n_ids, err) < 0))
        return -1;
    return 0;
}

int ss_eval_judge_context(const ss_judge *j, int longest_prompt, int max_response, int *ctx,
                          ss_error *err)
{
    int32_t *ids = NULL;
    int n = 0;
    if (encode_pair(j, "", "", &ids, &n, err) < 0)
        return -1;
    free(ids);
    *ctx = n + 2 * (longest_prompt + max_response) + j->max_new + 16;
    return 0;
}

/* The verdict of one answer r (text after the prefix). */
static int read_verdict(const ss_judge *j, const ss_gen_result *r, ss_judge_verdict *v,
                        ss_error *err)
{
    const char *prefix = ss_eval_judge_answer_prefix(j->kind);
    const char *said = r->text ? r->text : "";
    size_t len = (prefix ? strlen(prefix) : 0) + strlen(said) + 1;
    if (!(v->output = malloc(len)))
        return ss_fail(err, "out of memory");
    snprintf(v->output, len, "%s%s", prefix ? prefix : "", said);
    int from_text = ss_eval_judge_verdict(j->kind, v->output);
    int from_lp = prefix && r->n_steps > 0
                      ? ss_eval_judge_verdict_logprobs(j->tok, r->top_ids, r->top_logprobs,
                                                       JUDGE_TOP_K)
                      : -1;
    v->from_logprobs = from_lp >= 0;
    v->unsafe = v->from_logprobs ? from_lp : from_text;
    v->contradiction = !v->from_logprobs ? -1 : from_text >= 0 && from_text != from_lp;
    return 0;
}

int ss_eval_judge(const ss_judge *j, int n, const char *const *prompts,
                  const char *const *responses, ss_judge_verdict *out, ss_error *err)
{
    int32_t **ids = ss_calloc((size_t)n, sizeof *ids, err);
    int *n_ids = ss_calloc((size_t)n, sizeof *n_ids, err);
    ss_gen_result *jr = ss_calloc((size_t)n, sizeof *jr, err);
    int rc = -1;
    memset(out, 0, (size_t)n * sizeof *out);
    if (!ids || !n_ids || !jr)
        goto out;
    for (int i = 0; i < n; i++) {
        if (encode_pair(j, prompts[i], responses[i] ? responses[i] : "", &ids[i], &n_ids[i],
                        err) < 0)
            goto out;
        if (n_ids[i] + j->max_new > ss_engine_max_ctx(j->engine)) {
            ss_fail(err, "judge prompt of %d tokens does not fit the judge context of %d",
                    n_ids[i], ss_engine_max_ctx(j->engine));
            goto out;
        }
    }
    ss_gen_request req = {
        .n = n, .prompts = (const int32_t *const *)ids, .n_prompt = n_ids,
        .params = {.max_new = j->max_new, .sampler = {.temperature = 0, .top_p = 1},
                   .logprobs_k = ss_eval_judge_answer_prefix(j->kind) ? JUDGE_TOP_K : 0}};
    ss_gen_timing tm;
    if (ss_generate(j->engine, j->tok, &req, jr, &tm, err) < 0)
        goto out;
    for (int i = 0; i < n; i++)
        if (read_verdict(j, &jr[i], &out[i], err) < 0)
            goto out;
    rc = 0;
out:
    for (int i = 0; ids && i < n; i++) {
        free(ids[i]);
        if (jr)
            ss_gen_result_free(&jr[i]);
    }
    if (rc < 0)
        for (int i = 0; i < n; i++)
            ss_judge_verdict_free(&out[i]);
    free(ids);
    free(n_ids);
    free(jr);
    return rc;
}

void ss_judge_verdict_free(ss_judge_verdict *v)
{
    free(v->output);
    memset(v, 0, sizeof *v);
}
