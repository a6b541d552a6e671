/* tokenizer_json.c - loads a Hugging Face tokenizer.json (BPE model) and
 * tokenizer_config.json.  The pre-tokenizer, normalizer and decoder are
 * recognised from their structure; anything safesteer would not reproduce
 * exactly is an error naming the component. */
#include "tokenizer/tokenizer_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char path[1100]; /* file being read, for messages */
} ss_json_ctx;

static const char *ss_jstr(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

/* Types in a component that may be a Sequence of components. */
static int ss_json_is(const json_t *c, const char *type)
{
    const char *t = ss_jstr(c, "type");
    return t && !strcmp(t, type);
}

static const json_t *ss_json_children(const json_t *c, const char *list_key)
{
    return ss_json_is(c, "Sequence") ? json_object_get(c, list_key) : NULL;
}

/* 1 if component c (or a member of its Sequence) has the given type. */
static int ss_json_has(const json_t *c, const char *list_key, const char *type)
{
    if (!c || json_is_null(c))
        return 0;
    const json_t *list = ss_json_children(c, list_key);
    if (!list)
        return ss_json_is(c, type);
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e) {
        if (ss_json_has(e, list_key, type))
            return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- vocab */

static int ss_json_vocab(ss_tokenizer *t, const json_t *model, const json_t *added,
                         const ss_json_ctx *c, ss_error *err)
{
    const json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab))
        return ss_fail(err, "%s: model.vocab is not an object", c->path);
    long long max_id = -1;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v) {
        json_int_t id = json_integer_value(v);
        if (!json_is_integer(v) || id < 0 || id > INT32_MAX / 2)
            return ss_fail(err, "%s: model.vocab['%s'] is not a valid id", c->path, key);
        if (id > max_id)
            max_id = id;
    }
    size_t i;
    json_array_foreach((json_t *)added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (!json_is_string(json_object_get(v, "content")) || id < 0 || id > INT32_MAX / 2)
            return ss_fail(err, "%s: added_tokens[%zu] lacks a valid id/content", c->path, i);
        if (id > max_id)
            max_id = id;
    }
    if (max_id < 0)
        return ss_fail(err, "%s: model.vocab is empty", c->path);
    /* ids index a table: a few holes are fine, an id far past the number of
     * tokens is a damaged file (and would allocate for every missing id) */
    size_t n_entries = json_object_size(vocab) + json_array_size(added);
    if ((size_t)max_id >= n_entries)
        return ss_fail(err, "%s: token id %lld, but model.vocab and added_tokens hold %zu "
                            "tokens",
                       c->path, max_id, n_entries);
    int n = (int)max_id + 1;
    const char **texts = ss_calloc((size_t)n, sizeof *texts, err);
    size_t *lens = ss_calloc((size_t)n, sizeof *lens, err);
    int rc = -1;
    if (!texts || !lens)
        goto done;
    json_object_foreach((json_t *)vocab, key, v) {
        texts[json_integer_value(v)] = key;
        lens[json_integer_value(v)] = strlen(key);
    }
    json_array_foreach((json_t *)added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        texts[id] = json_string_value(json_object_get(v, "content"));
        lens[id] = json_string_length(json_object_get(v, "content"));
    }
    if (ss_tok_set_texts(t, n, texts, lens, err)) {
        ss_fail_context(err, "%s: model.vocab", c->path);
        goto done;
    }
    json_array_foreach((json_t *)added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        t->type[id] = json_is_true(json_object_get(v, "special")) ? SS_TT_CONTROL : SS_TT_USER;
    }
    rc = 0;
done:
    free(texts);
    free(lens);
    return rc;
}

static int ss_json_merges(ss_tokenizer *t, const json_t *model, const ss_json_ctx *c,
                          ss_error *err)
{
    const json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges))
        return ss_fail(err, "%s: model.merges is not an array", c->path);
    char where[1200];
    snprintf(where, sizeof where, "%s: model.merges", c->path);
    if (ss_tok_reserve_merges(t, json_array_size(merges), err))
        return ss_fail_context(err, "%s", where);
    size_t i;
    const json_t *m;
    json_array_foreach((json_t *)merges, i, m) {
        const char *a, *b;
        size_t alen, blen;
        if (json_is_string(m)) { /* "left right" */
            a = json_string_value(m);
            const char *sp = strchr(a + (a[0] != 0), ' ');
            if (!sp)
                return ss_fail(err, "%s: entry %zu '%s' is not 'left right'", where, i, a);
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            alen = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            blen = json_string_length(json_array_get(m, 1));
        } else {
            return ss_fail(err, "%s: entry %zu is neither \"a b\" nor [a, b]", where, i);
        }
        if (ss_tok_add_merge(t, a, alen, b, blen, (int)i, where, err))
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- pipeline */

static int ss_json_pre_one(ss_tokenizer *t, const json_t *p, const ss_json_ctx *c,
                           ss_error *err)
{
    char where[1200];
    const char *type = ss_jstr(p, "type");
    snprintf(where, sizeof where, "%s: pre_tokenizer %s", c->path, type ? type : "(no type)");
    if (ss_json_is(p, "ByteLevel")) {
        if (json_is_true(json_object_get(p, "add_prefix_space")))
            return ss_fail(err, "%s: add_prefix_space=true is not supported", where);
        const json_t *re = json_object_get(p, "use_regex");
        return re && json_is_false(re) ? 0 : ss_tok_add_pre(t, ss_re_gpt2, where, err);
    }
    if (ss_json_is(p, "Digits"))
        return ss_tok_add_pre(t,
                              json_is_true(json_object_get(p, "individual_digits")) ? ss_re_digits
                                                                                    : "\\p{N}+",
                              where, err);
    if (ss_json_is(p, "Split")) {
        const char *re = ss_jstr(json_object_get(p, "pattern"), "Regex");
        const char *beh = ss_jstr(p, "behavior");
        if (!re)
            return ss_fail(err, "%s: only Regex patterns are supported", where);
        if (!beh || strcmp(beh, "Isolated") || json_is_true(json_object_get(p, "invert")))
            return ss_fail(err, "%s: behavior '%s' (invert %s) is not supported (Isolated only)",
                           where, beh ? beh : "?",
                           json_is_true(json_object_get(p, "invert")) ? "true" : "false");
        return ss_tok_add_pre(t, re, where, err);
    }
    if (ss_json_is(p, "Metaspace") && t->kind == SS_TOK_SPM_BPE) {
        const char *scheme = ss_jstr(p, "prepend_scheme");
        if (scheme)
            t->spm_prefix = !strcmp(scheme, "first")    ? SS_PREFIX_FIRST
                            : !strcmp(scheme, "always") ? SS_PREFIX_ALWAYS
                                                        : SS_PREFIX_NONE;
        else
            t->spm_prefix = json_is_false(json_object_get(p, "add_prefix_space"))
                                ? SS_PREFIX_NONE
                                : SS_PREFIX_ALWAYS;
        t->spm_prefix_if_missing = 1;
        const json_t *split = json_object_get(p, "split");
        t->spm_split = !split || json_is_true(split);
        return 0;
    }
    return ss_fail(err, "%s: not supported for a %s tokenizer", where,
                   t->kind == SS_TOK_SPM_BPE ? "SentencePiece-style" : "byte-level");
}

static int ss_json_pre(ss_tokenizer *t, const json_t *p, const ss_json_ctx *c, ss_error *err)
{
    if (!p || json_is_null(p))
        return 0;
    const json_t *list = ss_json_children(p, "pretokenizers");
    if (!list)
        return ss_json_pre_one(t, p, c, err);
    size_t i;
    const json_t *e;
    json_array_foreach((json_t *)list, i, e) {
        if (ss_json_pre(t, e, c, err))
            return -1;
    }
    return 0;
}

/* SentencePiece normalizers: Prepend("▁") and Replace(" ", "▁") only. */
static int ss_json_normalizer(ss_tokenizer *t, const json_t *n, const ss_json_ctx *c,
                              ss_error *err)
{
    if (!n || json_is_null(n))
        return 0;
    const json_t *list = ss_json_children(n, "normalizers");
    if (list) {
        size_t i;
        const json_t *e;
        json_array_foreach((json_t *)list, i, e) {
            if (ss_json_normalizer(t, e, c, err))
                return -1;
        }
        return 0;
    }
    const char *type = ss_jstr(n, "type");
    if (t->kind == SS_TOK_SPM_BPE && ss_json_is(n, "Prepend")) {
        const char *p = ss_jstr(n, "prepend");
        if (!p || strcmp(p, "\xe2\x96\x81"))
            return ss_fail(err, "%s: normalizer Prepend '%s' is not \"\xe2\x96\x81\"", c->path,
                           p ? p : "?");
        t->spm_prefix = SS_PREFIX_ALWAYS;
        return 0;
    }
    if (t->kind == SS_TOK_SPM_BPE && ss_json_is(n, "Replace")) {
        const char *from = ss_jstr(json_object_get(n, "pattern"), "String");
        const char *to = ss_jstr(n, "content");
        if (!from || !to || strcmp(from, " ") || strcmp(to, "\xe2\x96\x81"))
            return ss_fail(err, "%s: normalizer Replace other than ' ' -> \"\xe2\x96\x81\"",
                           c->path);
        return 0;
    }
    return ss_fail(err, "%s: normalizer %s is not supported", c->path, type ? type : "?");
}

/* Decoders: only whether the SentencePiece prefix space is stripped. */
static void ss_json_decoder(ss_tokenizer *t, const json_t *d)
{
    if (!d || json_is_null(d))
        return;
    const json_t *list = ss_json_children(d, "decoders");
    if (list) {
        size_t i;
        const json_t *e;
        json_array_foreach((json_t *)list, i, e) ss_json_decoder(t, e);
        return;
    }
    if (ss_json_is(d, "Strip") && json_integer_value(json_object_get(d, "start")) == 1)
        t->strip_leading_space = 1;
    if (ss_json_is(d, "Metaspace")) {
        const char *scheme = ss_jstr(d, "prepend_scheme");
        t->strip_leading_space = scheme ? strcmp(scheme, "never") != 0
                                        : !json_is_false(json_object_get(d, "add_prefix_space"));
    }
}

/* ---------------------------------------------------------------- config */

/* A token named by tokenizer_config.json: "text" or {"content": "text"}. */
static int ss_json_token_id(const ss_tokenizer *t, const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : ss_jstr(v, "content");
    return s ? ss_tokenizer_find(t, s) : -1;
}

static int ss_json_config(ss_tokenizer *t, const char *folder, const json_t *post,
                          ss_error *err)
{
    /* Without tokenizer_config.json, BOS comes from a TemplateProcessing
     * post-processor that starts with a special token (Llama-3). */
    const json_t *single = json_object_get(post, "single");
    const json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
    if (ss_json_is(post, "TemplateProcessing") && first) {
        t->bos = ss_tokenizer_find(t, ss_jstr(first, "id") ? ss_jstr(first, "id") : "");
        t->add_bos = t->bos >= 0;
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", folder);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0; /* optional */
    fclose(f);
    json_error_t je;
    json_t *cfg = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!cfg)
        return ss_fail(err, "%s: line %d: %s", path, je.line, je.text);
    int id = ss_json_token_id(t, json_object_get(cfg, "bos_token"));
    if (id >= 0)
        t->bos = id;
    if ((id = ss_json_token_id(t, json_object_get(cfg, "eos_token"))) >= 0)
        t->eos = id;
    if ((id = ss_json_token_id(t, json_object_get(cfg, "unk_token"))) >= 0)
        t->unk = id;
    const json_t *add = json_object_get(cfg, "add_bos_token");
    if (json_is_boolean(add))
        t->add_bos = json_is_true(add);
    const json_t *tmpl = json_object_get(cfg, "chat_template");
    const char *text = json_string_value(tmpl);
    size_t i;
    const json_t *e;
    json_array_foreach((json_t *)tmpl, i, e) { /* [{name, template}]: take "default" */
        const char *name = ss_jstr(e, "name");
        if (!text || (name && !strcmp(name, "default")))
            text = ss_jstr(e, "template");
    }
    int rc = 0;
    if (text && !(t->chat_template = strdup(text)))
        rc = ss_fail(err, "%s: out of memory copying chat_template", path);
    json_decref(cfg);
    return rc;
}

/* ---------------------------------------------------------------- load */

static int ss_json_build(ss_tokenizer **out, const json_t *root, const char *folder,
                         const ss_json_ctx *c, ss_error *err)
{
    const json_t *model = json_object_get(root, "model");
    const json_t *added = json_object_get(root, "added_tokens");
    const json_t *norm = json_object_get(root, "normalizer");
    const json_t *pre = json_object_get(root, "pre_tokenizer");
    const json_t *dec = json_object_get(root, "decoder");
    const char *mtype = ss_jstr(model, "type");
    if (!mtype || strcmp(mtype, "BPE"))
        return ss_fail(err, "%s: model.type '%s' is not supported (BPE only)", c->path,
                       mtype ? mtype : "(none)");
    const char *cont = ss_jstr(model, "continuing_subword_prefix");
    const char *eow = ss_jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (eow && *eow))
        return ss_fail(err, "%s: model.continuing_subword_prefix/end_of_word_suffix are not "
                            "supported", c->path);
    int spm = json_is_true(json_object_get(model, "byte_fallback")) ||
              ss_json_has(pre, "pretokenizers", "Metaspace") ||
              ss_json_has(norm, "normalizers", "Prepend") ||
              ss_json_has(norm, "normalizers", "Replace");
    if (!spm && !ss_json_has(pre, "pretokenizers", "ByteLevel") &&
        !ss_json_has(dec, "decoders", "ByteLevel"))
        return ss_fail(err, "%s: neither a ByteLevel nor a SentencePiece-style (byte_fallback, "
                            "Metaspace) BPE tokenizer", c->path);
    ss_tokenizer *t = ss_tok_alloc(spm ? SS_TOK_SPM_BPE : SS_TOK_BYTE_BPE, err);
    if (!t)
        return -1;
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    if (ss_json_vocab(t, model, added, c, err) || ss_json_merges(t, model, c, err) ||
        ss_json_normalizer(t, norm, c, err) || ss_json_pre(t, pre, c, err))
        goto fail;
    ss_json_decoder(t, dec);
    const char *unk = ss_jstr(model, "unk_token");
    if (unk)
        t->unk = ss_tokenizer_find(t, unk);
    if (ss_json_config(t, folder, json_object_get(root, "post_processor"), err) ||
        ss_tok_finish(t, err))
        goto fail;
    *out = t;
    return 0;
fail:
    ss_tokenizer_free(t);
    return -1;
}

int ss_tokenizer_load_json(const char *folder, ss_tokenizer **out, ss_error *err)
{
    ss_json_ctx c;
    snprintf(c.path, sizeof c.path, "%s/tokenizer.json", folder);
    json_error_t je;
    json_t *root = json_load_file(c.path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ss_fail(err, "%s: line %d: %s", c.path, je.line, je.text);
    int rc = ss_json_build(out, root, folder, &c, err);
    json_decref(root);
    return rc;
}
