/* tokenizer.c - tokenizer tables, the GGUF loader, byte-level BPE encoding,
 * the shared symbol-merge loop, decoding and streaming decoding. */
#include "tokenizer/tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2 split regex (Hugging Face ByteLevel use_regex). */
const char ss_re_gpt2[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* Llama-3 split regex. */
const char ss_re_llama3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/* Digits(individual_digits=true): every numeric character on its own. */
const char ss_re_digits[] = "\\p{N}";

/* ---------------------------------------------------------------- hashes */

static uint64_t ss_hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t ss_hash_pair(uint64_t key)
{
    key ^= key >> 33; /* murmur3 finaliser */
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    key ^= key >> 33;
    return key;
}

static uint32_t ss_pow2_at_least(uint64_t n)
{
    uint32_t cap = 16;
    while (cap < n)
        cap <<= 1;
    return cap;
}

const char *ss_tok_text(const ss_tokenizer *t, int id)
{
    return t->text + t->text_off[id];
}

static size_t ss_tok_text_len(const ss_tokenizer *t, int id)
{
    return t->text_off[id + 1] - t->text_off[id] - 1;
}

int ss_tok_lookup(const ss_tokenizer *t, const char *s, size_t len)
{
    uint32_t mask = t->vocab.cap - 1;
    for (uint32_t i = (uint32_t)ss_hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vocab.slots[i];
        if (id < 0)
            return -1;
        if (ss_tok_text_len(t, id) == len && memcmp(ss_tok_text(t, id), s, len) == 0)
            return id;
    }
}

/* Inserts id under its text; a duplicate text keeps the first id. */
static void ss_strmap_insert(ss_tokenizer *t, int id)
{
    const char *s = ss_tok_text(t, id);
    size_t len = ss_tok_text_len(t, id);
    uint32_t mask = t->vocab.cap - 1;
    for (uint32_t i = (uint32_t)ss_hash_bytes(s, len) & mask;; i = (i + 1) & mask) {
        int32_t other = t->vocab.slots[i];
        if (other < 0) {
            t->vocab.slots[i] = id;
            return;
        }
        if (ss_tok_text_len(t, other) == len && memcmp(ss_tok_text(t, other), s, len) == 0)
            return;
    }
}

int ss_tok_merge_rank(const ss_tokenizer *t, int a, int b, int *merged)
{
    if (!t->merges.cap || a < 0 || b < 0)
        return -1;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t mask = t->merges.cap - 1;
    for (uint32_t i = (uint32_t)ss_hash_pair(key) & mask;; i = (i + 1) & mask) {
        const ss_pair_slot *sl = &t->merges.slots[i];
        if (sl->key == UINT64_MAX)
            return -1;
        if (sl->key == key) {
            *merged = sl->id;
            return sl->rank;
        }
    }
}

int ss_tok_add_merge(ss_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen,
                     int rank, const char *where, ss_error *err)
{
    if (!t->merges.cap)
        return ss_fail(err, "%s: merges table not sized before merge %d", where, rank);
    int ia = ss_tok_lookup(t, a, alen), ib = ss_tok_lookup(t, b, blen);
    char buf[512];
    if (alen + blen >= sizeof buf)
        return ss_fail(err, "%s: merge %d is %zu bytes long (max %zu)", where, rank,
                       alen + blen, sizeof buf - 1);
    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    int im = ss_tok_lookup(t, buf, alen + blen);
    if (ia < 0 || ib < 0 || im < 0)
        return ss_fail(err, "%s: merge %d '%.*s %.*s' names a token missing from the vocabulary",
                       where, rank, (int)alen, a, (int)blen, b);
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    uint32_t mask = t->merges.cap - 1;
    for (uint32_t i = (uint32_t)ss_hash_pair(key) & mask;; i = (i + 1) & mask) {
        ss_pair_slot *sl = &t->merges.slots[i];
        if (sl->key == key)
            return 0; /* a repeated merge keeps its first (lower) rank */
        if (sl->key == UINT64_MAX) {
            sl->key = key;
            sl->rank = rank;
            sl->id = im;
            t->n_merges++;
            return 0;
        }
    }
}

/* At most half full, so probes stay short. */
int ss_tok_reserve_merges(ss_tokenizer *t, uint64_t n, ss_error *err)
{
    if (n > INT32_MAX / 2) /* ranks are ints; the table size a uint32 */
        return ss_fail(err, "%llu merges (at most %d)", (unsigned long long)n, INT32_MAX / 2);
    t->merges.cap = ss_pow2_at_least(2 * n + 1);
    t->merges.slots = ss_malloc(sizeof *t->merges.slots * t->merges.cap, err);
    if (!t->merges.slots)
        return -1;
    for (uint32_t i = 0; i < t->merges.cap; i++)
        t->merges.slots[i].key = UINT64_MAX;
    return 0;
}

/* ---------------------------------------------------------------- building */

ss_tokenizer *ss_tok_alloc(int kind, ss_error *err)
{
    ss_tokenizer *t = ss_calloc(1, sizeof *t, err);
    if (!t)
        return NULL;
    t->kind = kind;
    t->bos = t->eos = t->unk = -1;
    for (int i = 0; i < 256; i++)
        t->byte_id[i] = -1;
    return t;
}

int ss_tok_set_texts(ss_tokenizer *t, int n_vocab, const char *const *texts,
                     const size_t *lens, ss_error *err)
{
    size_t total = 0;
    for (int i = 0; i < n_vocab; i++)
        total += (texts[i] ? lens[i] : 0) + 1;
    if (total > UINT32_MAX)
        return ss_fail(err, "vocabulary texts take %zu bytes (max 4 GiB)", total);
    t->n_vocab = n_vocab;
    t->text = ss_malloc(total, err);
    t->text_off = ss_malloc(sizeof *t->text_off * ((size_t)n_vocab + 1), err);
    t->type = ss_malloc((size_t)n_vocab, err);
    t->vocab.cap = ss_pow2_at_least(2 * (uint64_t)n_vocab + 1);
    t->vocab.slots = ss_malloc(sizeof *t->vocab.slots * t->vocab.cap, err);
    if (!t->text || !t->text_off || !t->type || !t->vocab.slots)
        return -1;
    memset(t->vocab.slots, 0xff, sizeof *t->vocab.slots * t->vocab.cap);
    size_t off = 0;
    for (int i = 0; i < n_vocab; i++) {
        t->text_off[i] = (uint32_t)off;
        size_t len = texts[i] ? lens[i] : 0;
        if (len)
            memcpy(t->text + off, texts[i], len);
        t->text[off + len] = 0;
        off += len + 1;
        t->type[i] = texts[i] ? SS_TT_NORMAL : SS_TT_UNUSED;
    }
    t->text_off[n_vocab] = (uint32_t)off;
    for (int i = 0; i < n_vocab; i++)
        if (texts[i])
            ss_strmap_insert(t, i);
    return 0;
}

int ss_tok_add_pre(ss_tokenizer *t, const char *pattern, const char *where, ss_error *err)
{
    if (t->n_pre == SS_TOK_MAX_PRE)
        return ss_fail(err, "%s: more than %d pre-tokenizer splits", where, SS_TOK_MAX_PRE);
    int code;
    PCRE2_SIZE off;
    /* MATCH_INVALID_UTF: stray bytes fall between matches instead of
     * failing the whole match, and byte-level BPE encodes them anyway. */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &off,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return ss_fail(err, "%s: pre-tokenizer regex '%s' does not compile at offset %zu: %s",
                       where, pattern, (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up */
    t->pre[t->n_pre++] = re;
    return 0;
}

/* GPT-2's reversible map of bytes to printable code points. */
static int ss_byte_to_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return b;
    int n = 0;
    for (int x = 0; x < b; x++)
        if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
            n++;
    return 256 + n;
}

/* Decodes one UTF-8 code point at s[0..n); returns its length or 0. */
static int ss_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (!len || (size_t)len > n)
        return 0;
    uint32_t c = s[0] & (0x7f >> len);
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    *cp = c;
    return len;
}

static int ss_utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Writes the bytes token id decodes to into out (never more than its text
 * length); returns the count. */
static size_t ss_tok_decode_one(const ss_tokenizer *t, int id, const int16_t *cp_to_byte,
                                char *out)
{
    const char *s = ss_tok_text(t, id);
    size_t n = ss_tok_text_len(t, id);
    int ty = t->type[id];
    if (ty == SS_TT_CONTROL || ty == SS_TT_USER || ty == SS_TT_UNKNOWN || ty == SS_TT_UNUSED) {
        memcpy(out, s, n);
        return n;
    }
    if (t->kind == SS_TOK_SPM_BPE) {
        unsigned v;
        if (ty == SS_TT_BYTE && n == 6 && sscanf(s, "<0x%2X>", &v) == 1) {
            out[0] = (char)v;
            return 1;
        }
        size_t k = 0;
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                out[k++] = ' ';
                i += 3;
            } else {
                out[k++] = s[i++];
            }
        }
        return k;
    }
    /* Byte-level: every char maps back to a byte, else the raw text. */
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = ss_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (!len || cp >= 324 || cp_to_byte[cp] < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[k++] = (char)cp_to_byte[cp];
        i += (size_t)len;
    }
    return k;
}

typedef struct {
    size_t len;
    int32_t id;
} ss_special_key;

/* Longer texts first so the first match found is the longest. */
static int ss_cmp_special(const void *a, const void *b)
{
    const ss_special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id - y->id;
}

static int ss_tok_sort_special(ss_tokenizer *t, ss_error *err)
{
    ss_special_key *keys = ss_malloc(sizeof *keys * ((size_t)t->n_special + 1), err);
    if (!keys)
        return -1;
    for (int i = 0; i < t->n_special; i++)
        keys[i] = (ss_special_key){ss_tok_text_len(t, t->special[i]), t->special[i]};
    qsort(keys, (size_t)t->n_special, sizeof *keys, ss_cmp_special);
    for (int i = 0; i < t->n_special; i++) {
        t->special[i] = keys[i].id;
        t->special_first[(uint8_t)ss_tok_text(t, keys[i].id)[0]] = 1;
    }
    free(keys);
    return 0;
}

static void ss_tok_add_stop(ss_tokenizer *t, int id)
{
    if (id < 0 || t->n_stop == SS_TOK_MAX_STOP)
        return;
    for (int i = 0; i < t->n_stop; i++)
        if (t->stop[i] == id)
            return;
    t->stop[t->n_stop++] = id;
}

int ss_tok_finish(ss_tokenizer *t, ss_error *err)
{
    int n = t->n_vocab;
    int16_t cp_to_byte[324];
    for (int i = 0; i < 324; i++)
        cp_to_byte[i] = -1;
    if (t->kind == SS_TOK_BYTE_BPE) {
        for (int b = 0; b < 256; b++) {
            char u[4];
            int cp = ss_byte_to_cp(b);
            cp_to_byte[cp] = (int16_t)b;
            t->byte_id[b] = ss_tok_lookup(t, u, (size_t)ss_utf8_put((uint32_t)cp, u));
        }
    } else {
        for (int id = 0; id < n; id++) {
            unsigned v;
            const char *s = ss_tok_text(t, id);
            if (ss_tok_text_len(t, id) == 6 && sscanf(s, "<0x%2X>", &v) == 1 && v < 256) {
                if (t->type[id] == SS_TT_NORMAL)
                    t->type[id] = SS_TT_BYTE;
                if (t->type[id] == SS_TT_BYTE && t->byte_id[v] < 0)
                    t->byte_id[v] = id;
            }
        }
    }
    /* Decoded bytes never exceed the text, so the text size bounds them. */
    t->bytes = ss_malloc(t->text_off[n] + 1, err);
    t->bytes_off = ss_malloc(sizeof *t->bytes_off * ((size_t)n + 1), err);
    t->special = ss_malloc(sizeof *t->special * ((size_t)n + 1), err);
    if (!t->bytes || !t->bytes_off || !t->special)
        return -1;
    uint32_t off = 0;
    for (int id = 0; id < n; id++) {
        t->bytes_off[id] = off;
        off += (uint32_t)ss_tok_decode_one(t, id, cp_to_byte, t->bytes + off);
    }
    t->bytes_off[n] = off;

    t->n_special = 0;
    for (int id = 0; id < n; id++) {
        int ty = t->type[id];
        if ((ty == SS_TT_CONTROL || ty == SS_TT_USER || ty == SS_TT_UNKNOWN) &&
            ss_tok_text_len(t, id) > 0)
            t->special[t->n_special++] = id;
    }
    if (ss_tok_sort_special(t, err))
        return -1;

    static const char *const stop_names[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>",
                                             "<|eom_id|>", "</s>", "<|endoftext|>"};
    ss_tok_add_stop(t, t->eos);
    for (size_t i = 0; i < sizeof stop_names / sizeof *stop_names; i++)
        ss_tok_add_stop(t, ss_tokenizer_find(t, stop_names[i]));
    return 0;
}

/* ---------------------------------------------------------------- GGUF */

static int ss_gguf_array(const ss_gguf *g, const char *key, int arr_type, uint64_t n,
                         const ss_gguf_kv **out, ss_error *err)
{
    const ss_gguf_kv *kv = ss_gguf_find(g, key);
    if (!kv)
        return ss_fail(err, "%s: key %s missing", g->path, key);
    if (kv->type != SS_GGUF_ARRAY || kv->arr_type != arr_type)
        return ss_fail(err, "%s: key %s has type %d/%d, expected array of %d", g->path, key,
                       kv->type, kv->arr_type, arr_type);
    if (n && kv->arr_len != n)
        return ss_fail(err, "%s: key %s has %llu entries, expected %llu", g->path, key,
                       (unsigned long long)kv->arr_len, (unsigned long long)n);
    *out = kv;
    return 0;
}

static int ss_gguf_opt_id(const ss_gguf *g, const char *key, int n_vocab, int *out,
                          ss_error *err)
{
    if (!ss_gguf_find(g, key))
        return 0;
    uint64_t v;
    if (ss_gguf_get_u64(g, key, &v, err))
        return -1;
    if (v >= (uint64_t)n_vocab)
        return ss_fail(err, "%s: %s = %llu is outside the vocabulary of %d", g->path, key,
                       (unsigned long long)v, n_vocab);
    *out = (int)v;
    return 0;
}

static int ss_gguf_opt_bool(const ss_gguf *g, const char *key, int dflt)
{
    const ss_gguf_kv *kv = ss_gguf_find(g, key);
    if (!kv || kv->type != SS_GGUF_BOOL)
        return dflt;
    return *(const uint8_t *)kv->data != 0;
}

static int ss_tok_gguf_texts(ss_tokenizer *t, const ss_gguf *g, const ss_gguf_kv *tokens,
                             ss_error *err)
{
    ss_gguf_str *strs;
    if (ss_gguf_arr_strs(tokens, &strs, err))
        return -1;
    int n = (int)tokens->arr_len;
    const char **texts = ss_malloc(sizeof *texts * (size_t)n, err);
    size_t *lens = ss_malloc(sizeof *lens * (size_t)n, err);
    int rc = -1;
    if (texts && lens) {
        for (int i = 0; i < n; i++) {
            texts[i] = strs[i].ptr;
            lens[i] = strs[i].len;
        }
        rc = ss_tok_set_texts(t, n, texts, lens, err);
        if (rc)
            ss_fail_context(err, "%s: tokenizer.ggml.tokens", g->path);
    }
    free(texts);
    free(lens);
    free(strs);
    return rc;
}

static int ss_tok_gguf_merges(ss_tokenizer *t, const ss_gguf *g, ss_error *err)
{
    const ss_gguf_kv *kv;
    if (ss_gguf_array(g, "tokenizer.ggml.merges", SS_GGUF_STRING, 0, &kv, err))
        return -1;
    char where[1100];
    snprintf(where, sizeof where, "%s: tokenizer.ggml.merges", g->path);
    ss_gguf_str *strs;
    if (ss_tok_reserve_merges(t, kv->arr_len, err) || ss_gguf_arr_strs(kv, &strs, err))
        return ss_fail_context(err, "%s", where);
    for (uint64_t i = 0; i < kv->arr_len; i++) {
        const char *s = strs[i].ptr;
        const char *sp = memchr(s + 1, ' ', strs[i].len ? strs[i].len - 1 : 0);
        if (!sp) {
            ss_fail(err, "%s: entry %llu '%.*s' is not 'left right'", where,
                    (unsigned long long)i, (int)strs[i].len, s);
            free(strs); /* after the message: it quotes the entry */
            return -1;
        }
        if (ss_tok_add_merge(t, s, (size_t)(sp - s), sp + 1, strs[i].len - (size_t)(sp - s) - 1,
                             (int)i, where, err)) {
            free(strs);
            return -1;
        }
    }
    free(strs);
    return 0;
}

static int ss_tok_gguf_pre(ss_tokenizer *t, const ss_gguf *g, ss_error *err)
{
    char pre[64] = "default";
    const ss_gguf_kv *kv = ss_gguf_find(g, "tokenizer.ggml.pre");
    if (kv && kv->type == SS_GGUF_STRING)
        snprintf(pre, sizeof pre, "%.*s", (int)kv->str.len, kv->str.ptr);
    char where[1100];
    snprintf(where, sizeof where, "%s: tokenizer.ggml.pre '%s'", g->path, pre);
    if (!strcmp(pre, "smollm"))
        return ss_tok_add_pre(t, ss_re_digits, where, err) ||
               ss_tok_add_pre(t, ss_re_gpt2, where, err);
    if (!strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2"))
        return ss_tok_add_pre(t, ss_re_gpt2, where, err);
    if (!strcmp(pre, "llama-bpe") || !strcmp(pre, "llama3") || !strcmp(pre, "llama-v3")) {
        t->ignore_merges = 1; /* as Llama-3's tokenizer.json sets */
        return ss_tok_add_pre(t, ss_re_llama3, where, err);
    }
    return ss_fail(err, "%s: unsupported pre-tokenizer (known: smollm, gpt2, default, llama-bpe)",
                   where);
}

static int ss_tok_load_gguf(const ss_gguf *g, ss_tokenizer **out, ss_error *err)
{
    ss_gguf_str model;
    if (ss_gguf_get_str(g, "tokenizer.ggml.model", &model, err))
        return -1;
    int kind;
    if (model.len == 4 && !memcmp(model.ptr, "gpt2", 4))
        kind = SS_TOK_BYTE_BPE;
    else if (model.len == 5 && !memcmp(model.ptr, "llama", 5))
        kind = SS_TOK_SPM_BPE;
    else
        return ss_fail(err, "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)",
                       g->path, (int)model.len, model.ptr);
    const ss_gguf_kv *tokens, *types;
    if (ss_gguf_array(g, "tokenizer.ggml.tokens", SS_GGUF_STRING, 0, &tokens, err))
        return -1;
    if (tokens->arr_len == 0 || tokens->arr_len > INT32_MAX / 2) /* hash table of 2n slots */
        return ss_fail(err, "%s: tokenizer.ggml.tokens has %llu entries", g->path,
                       (unsigned long long)tokens->arr_len);
    int n = (int)tokens->arr_len;
    ss_tokenizer *t = ss_tok_alloc(kind, err);
    if (!t)
        return -1;
    if (ss_tok_gguf_texts(t, g, tokens, err))
        goto fail;
    if (ss_gguf_find(g, "tokenizer.ggml.token_type")) {
        if (ss_gguf_array(g, "tokenizer.ggml.token_type", SS_GGUF_INT32, (uint64_t)n, &types, err))
            goto fail;
        for (int i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const char *)types->data + 4 * (size_t)i, 4);
            t->type[i] = (int8_t)v;
        }
    }
    if (kind == SS_TOK_BYTE_BPE) {
        if (ss_tok_gguf_merges(t, g, err) || ss_tok_gguf_pre(t, g, err))
            goto fail;
    } else {
        const ss_gguf_kv *scores;
        if (ss_gguf_array(g, "tokenizer.ggml.scores", SS_GGUF_FLOAT32, (uint64_t)n, &scores, err))
            goto fail;
        t->scores = ss_malloc(sizeof *t->scores * (size_t)n, err);
        if (!t->scores)
            goto fail;
        memcpy(t->scores, scores->data, sizeof *t->scores * (size_t)n);
        for (int i = 0; i < n; i++)
            if (!isfinite(t->scores[i])) { /* merges would happen in no defined order */
                ss_fail(err, "%s: tokenizer.ggml.scores[%d] = %g", g->path, i,
                        (double)t->scores[i]);
                goto fail;
            }
        int prefix = ss_gguf_opt_bool(g, "tokenizer.ggml.add_space_prefix", 1);
        t->spm_prefix = prefix ? SS_PREFIX_ALWAYS : SS_PREFIX_NONE;
        t->strip_leading_space = prefix;
    }
    t->add_bos = ss_gguf_opt_bool(g, "tokenizer.ggml.add_bos_token", kind == SS_TOK_SPM_BPE);
    int eot = -1, eom = -1;
    if (ss_gguf_opt_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos, err) ||
        ss_gguf_opt_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos, err) ||
        ss_gguf_opt_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk, err) ||
        ss_gguf_opt_id(g, "tokenizer.ggml.eot_token_id", n, &eot, err) ||
        ss_gguf_opt_id(g, "tokenizer.ggml.eom_token_id", n, &eom, err))
        goto fail;
    const ss_gguf_kv *tmpl = ss_gguf_find(g, "tokenizer.chat_template");
    if (tmpl && tmpl->type == SS_GGUF_STRING) {
        t->chat_template = ss_malloc(tmpl->str.len + 1, err);
        if (!t->chat_template)
            goto fail;
        memcpy(t->chat_template, tmpl->str.ptr, tmpl->str.len);
        t->chat_template[tmpl->str.len] = 0;
    }
    if (ss_tok_finish(t, err))
        goto fail;
    ss_tok_add_stop(t, eot);
    ss_tok_add_stop(t, eom);
    *out = t;
    return 0;
fail:
    ss_tokenizer_free(t);
    return -1;
}

int ss_tokenizer_load(const ss_model *m, ss_tokenizer **out, ss_error *err)
{
    if (m->gguf)
        return ss_tok_load_gguf(m->gguf, out, err);
    if (m->format == SS_FORMAT_SYNTHETIC)
        return ss_fail(err, "%s: a synthetic model has no tokenizer; add tokenizer=GGUF to take "
                            "one from a GGUF file", m->path);
    return ss_tokenizer_load_json(m->path, out, err);
}

void ss_tokenizer_free(ss_tokenizer *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i]);
    free(t->text);
    free(t->text_off);
    free(t->bytes);
    free(t->bytes_off);
    free(t->type);
    free(t->scores);
    free(t->vocab.slots);
    free(t->merges.slots);
    free(t->special);
    free(t->chat_template);
    free(t);
}

/* ---------------------------------------------------------------- queries */

int ss_tokenizer_kind_of(const ss_tokenizer *t) { return t->kind; }
int ss_tokenizer_vocab_size(const ss_tokenizer *t) { return t->n_vocab; }
int ss_tokenizer_bos(const ss_tokenizer *t) { return t->bos; }
int ss_tokenizer_eos(const ss_tokenizer *t) { return t->eos; }
int ss_tokenizer_adds_bos(const ss_tokenizer *t) { return t->add_bos && t->bos >= 0; }
const char *ss_tokenizer_chat_template(const ss_tokenizer *t) { return t->chat_template; }

int ss_tokenizer_is_stop(const ss_tokenizer *t, int id)
{
    for (int i = 0; i < t->n_stop; i++)
        if (t->stop[i] == id)
            return 1;
    return 0;
}

int ss_tokenizer_find(const ss_tokenizer *t, const char *text)
{
    return ss_tok_lookup(t, text, strlen(text));
}

int ss_token_bytes(const ss_tokenizer *t, int id, const char **bytes, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return -1;
    *bytes = t->bytes + t->bytes_off[id];
    *len = t->bytes_off[id + 1] - t->bytes_off[id];
    return 0;
}

/* ---------------------------------------------------------------- merging */

typedef struct {
    int32_t start, len, id, prev, next;
} ss_sym;

typedef struct {
    double prio;
    int32_t left, right, llen, rlen, merged;
} ss_cand;

static int ss_cand_less(const ss_cand *a, const ss_cand *b, const ss_sym *sym)
{
    if (a->prio != b->prio)
        return a->prio < b->prio;
    return sym[a->left].start < sym[b->left].start;
}

typedef struct {
    ss_cand *v;
    int n, cap;
} ss_heap;

static int ss_heap_push(ss_heap *h, ss_cand c, const ss_sym *sym, ss_error *err)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 64;
        ss_cand *v = realloc(h->v, sizeof *v * (size_t)cap);
        if (!v)
            return ss_fail(err, "out of memory growing the BPE merge queue to %d", cap);
        h->v = v;
        h->cap = cap;
    }
    int i = h->n++;
    while (i > 0 && ss_cand_less(&c, &h->v[(i - 1) / 2], sym)) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = c;
    return 0;
}

static ss_cand ss_heap_pop(ss_heap *h, const ss_sym *sym)
{
    ss_cand top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && ss_cand_less(&h->v[c + 1], &h->v[c], sym))
            c++;
        if (!ss_cand_less(&h->v[c], &last, sym))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    h->v[i] = last;
    return top;
}

/* Queues the merge of symbol left with its right neighbour if one exists. */
static int ss_bpe_try(const ss_tokenizer *t, const char *s, const ss_sym *sym, int left,
                      ss_heap *h, ss_error *err)
{
    if (left < 0 || sym[left].next < 0)
        return 0;
    int right = sym[left].next;
    ss_cand c = {0, left, right, sym[left].len, sym[right].len, -1};
    if (t->n_merges) {
        int rank = ss_tok_merge_rank(t, sym[left].id, sym[right].id, &c.merged);
        if (rank < 0)
            return 0;
        c.prio = rank;
    } else {
        c.merged = ss_tok_lookup(t, s + sym[left].start, (size_t)(c.llen + c.rlen));
        if (c.merged < 0 || !t->scores)
            return 0;
        c.prio = -(double)t->scores[c.merged];
    }
    return ss_heap_push(h, c, sym, err);
}

static int ss_emit_unknown(const ss_tokenizer *t, const char *s, const ss_sym *y, ss_idvec *out,
                           ss_error *err)
{
    int all = 1;
    for (int k = 0; k < y->len; k++)
        all &= t->byte_id[(uint8_t)s[y->start + k]] >= 0;
    if (all && t->kind == SS_TOK_SPM_BPE) {
        for (int k = 0; k < y->len; k++)
            if (ss_idvec_push(out, t->byte_id[(uint8_t)s[y->start + k]], err))
                return -1;
        return 0;
    }
    if (t->unk < 0 || (t->fuse_unk && out->n && out->v[out->n - 1] == t->unk))
        return 0; /* no unknown token: the text is dropped, as HF does */
    return ss_idvec_push(out, t->unk, err);
}

int ss_bpe_merge(const ss_tokenizer *t, const char *s, int n_sym, const int32_t *start,
                 const int32_t *len, const int32_t *id, ss_idvec *out, ss_error *err)
{
    if (n_sym == 0)
        return 0;
    ss_sym *sym = ss_malloc(sizeof *sym * (size_t)n_sym, err);
    if (!sym)
        return -1;
    for (int i = 0; i < n_sym; i++)
        sym[i] = (ss_sym){start[i], len[i], id[i], i - 1, i + 1 < n_sym ? i + 1 : -1};
    ss_heap h = {0};
    int rc = 0;
    for (int i = 0; i + 1 < n_sym && !rc; i++)
        rc = ss_bpe_try(t, s, sym, i, &h, err);
    while (!rc && h.n) {
        ss_cand c = ss_heap_pop(&h, sym);
        ss_sym *l = &sym[c.left], *r = &sym[c.right];
        if (l->len != c.llen || l->next != c.right || r->len != c.rlen)
            continue; /* stale: a neighbour merged since it was queued */
        l->len += r->len;
        l->id = c.merged;
        l->next = r->next;
        if (r->next >= 0)
            sym[r->next].prev = c.left;
        r->len = 0;
        rc = ss_bpe_try(t, s, sym, l->prev, &h, err);
        if (!rc)
            rc = ss_bpe_try(t, s, sym, c.left, &h, err);
    }
    for (int i = 0; i >= 0 && !rc; i = sym[i].next) {
        if (sym[i].id >= 0)
            rc = ss_idvec_push(out, sym[i].id, err);
        else
            rc = ss_emit_unknown(t, s, &sym[i], out, err);
    }
    free(h.v);
    free(sym);
    return rc;
}

int ss_idvec_push(ss_idvec *v, int32_t id, ss_error *err)
{
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 64;
        int32_t *p = realloc(v->v, sizeof *p * (size_t)cap);
        if (!p)
            return ss_fail(err, "out of memory growing a token list to %d", cap);
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return 0;
}

/* ---------------------------------------------------------------- byte-level */

/* One pre-tokenized piece: bytes are the initial symbols. */
static int ss_bytelevel_piece(const ss_tokenizer *t, const char *s, size_t n, ss_idvec *out,
                              ss_error *err)
{
    if (t->ignore_merges) {
        char small[256];
        char *mapped = 2 * n <= sizeof small ? small : ss_malloc(2 * n, err);
        if (!mapped)
            return -1;
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += (size_t)ss_utf8_put((uint32_t)ss_byte_to_cp((uint8_t)s[i]), mapped + k);
        int id = ss_tok_lookup(t, mapped, k);
        if (mapped != small)
            free(mapped);
        if (id >= 0)
            return ss_idvec_push(out, id, err);
    }
    int32_t *buf = ss_malloc(sizeof *buf * 3 * n, err);
    if (!buf)
        return -1;
    int32_t *start = buf, *len = buf + n, *id = buf + 2 * n;
    for (size_t i = 0; i < n; i++) {
        start[i] = (int32_t)i;
        len[i] = 1;
        id[i] = t->byte_id[(uint8_t)s[i]];
    }
    int rc = ss_bpe_merge(t, s, (int)n, start, len, id, out, err);
    free(buf);
    return rc;
}

/* Applies split pass `level` to s[0..n): matches and the gaps between them
 * are pieces (Isolated), each handed to the next pass. */
static int ss_bytelevel_split(const ss_tokenizer *t, int level, pcre2_match_data **md,
                              const char *s, size_t n, ss_idvec *out, ss_error *err)
{
    if (n == 0)
        return 0;
    if (level == t->n_pre)
        return ss_bytelevel_piece(t, s, n, out, err);
    size_t pos = 0;
    while (pos < n) {
        int rc = pcre2_match(t->pre[level], (PCRE2_SPTR)s, n, pos, 0, md[level], NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return ss_fail(err, "pre-tokenizer regex %d failed at byte %zu: %s", level, pos,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md[level]);
        size_t a = ov[0], b = ov[1];
        if (b == a) { /* empty match: step one character so the loop moves */
            b = a + 1;
            while (b < n && ((uint8_t)s[b] & 0xc0) == 0x80)
                b++;
            if (ss_bytelevel_split(t, level + 1, md, s + pos, b - pos, out, err))
                return -1;
            pos = b;
            continue;
        }
        if (ss_bytelevel_split(t, level + 1, md, s + pos, a - pos, out, err) ||
            ss_bytelevel_split(t, level + 1, md, s + a, b - a, out, err))
            return -1;
        pos = b;
    }
    return ss_bytelevel_split(t, level + 1, md, s + pos, n - pos, out, err);
}

static int ss_bytelevel_segment(const ss_tokenizer *t, const char *s, size_t n, ss_idvec *out,
                                ss_error *err)
{
    pcre2_match_data *md[SS_TOK_MAX_PRE] = {0};
    int rc = 0;
    for (int i = 0; i < t->n_pre && !rc; i++) {
        md[i] = pcre2_match_data_create_from_pattern(t->pre[i], NULL);
        if (!md[i])
            rc = ss_fail(err, "out of memory creating regex match data");
    }
    if (!rc)
        rc = ss_bytelevel_split(t, 0, md, s, n, out, err);
    for (int i = 0; i < t->n_pre; i++)
        pcre2_match_data_free(md[i]);
    return rc;
}

/* ---------------------------------------------------------------- encode */

/* The special token starting at s[0..n) (longest first), or -1. */
static int ss_match_special(const ss_tokenizer *t, const char *s, size_t n, int parse_special)
{
    for (int i = 0; i < t->n_special; i++) {
        int id = t->special[i];
        if (!parse_special && t->type[id] != SS_TT_USER)
            continue; /* user-defined tokens always match, as in HF and llama.cpp */
        size_t len = ss_tok_text_len(t, id);
        if (len <= n && memcmp(s, ss_tok_text(t, id), len) == 0)
            return id;
    }
    return -1;
}

static int ss_encode_segment(const ss_tokenizer *t, const char *s, size_t n, int first,
                             ss_idvec *out, ss_error *err)
{
    if (t->kind == SS_TOK_SPM_BPE)
        return ss_spm_encode_segment(t, s, n, first, out, err);
    return ss_bytelevel_segment(t, s, n, out, err);
}

int ss_tokenize(const ss_tokenizer *t, const char *text, size_t len, int parse_special,
                int32_t **ids, int *n_ids, ss_error *err)
{
    ss_idvec out = {0};
    size_t seg = 0;
    for (size_t i = 0; i < len;) {
        int id = t->special_first[(uint8_t)text[i]] ? ss_match_special(t, text + i, len - i, parse_special)
                                              : -1;
        if (id < 0) {
            i++;
            continue;
        }
        if (ss_encode_segment(t, text + seg, i - seg, seg == 0, &out, err) ||
            ss_idvec_push(&out, id, err))
            goto fail;
        i += ss_tok_text_len(t, id);
        seg = i;
    }
    if (ss_encode_segment(t, text + seg, len - seg, seg == 0, &out, err))
        goto fail;
    if (!out.v && !(out.v = ss_malloc(sizeof *out.v, err)))
        return -1;
    *ids = out.v;
    *n_ids = out.n;
    return 0;
fail:
    free(out.v);
    return -1;
}

/* ---------------------------------------------------------------- decode */

/* Copies the longest prefix of in[0..n) made of complete characters to out,
 * each maximal invalid subsequence as U+FFFD (Rust's from_utf8_lossy, which
 * Hugging Face uses).  A trailing incomplete character is left unconsumed
 * unless final.  out needs 3n bytes.  Returns bytes written. */
static size_t ss_utf8_lossy(const uint8_t *in, size_t n, int final, char *out, size_t *consumed)
{
    size_t i = 0, k = 0;
    while (i < n) {
        uint8_t c = in[i];
        int need;
        uint8_t lo = 0x80, hi = 0xbf; /* range of the second byte */
        if (c < 0x80) {
            out[k++] = (char)c;
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0;
            if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90;
            if (c == 0xf4)
                hi = 0x8f;
        } else {
            memcpy(out + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
            continue;
        }
        size_t j = 1;
        int bad = 0;
        for (; j <= (size_t)need; j++) {
            if (i + j >= n)
                break;
            uint8_t d = in[i + j];
            if (j == 1 ? (d < lo || d > hi) : (d & 0xc0) != 0x80) {
                bad = 1;
                break;
            }
        }
        if (!bad && j > (size_t)need) {
            memcpy(out + k, in + i, j);
            k += j;
            i += j;
        } else if (!bad && !final) {
            break; /* incomplete at the end: wait for more bytes */
        } else {
            memcpy(out + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += j;
        }
    }
    *consumed = i;
    return k;
}

static int ss_decoded_skipped(const ss_tokenizer *t, int id, int skip_special)
{
    return skip_special && t->type[id] == SS_TT_CONTROL;
}

int ss_detokenize(const ss_tokenizer *t, const int32_t *ids, int n_ids, int skip_special,
                  char **text, ss_error *err)
{
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return ss_fail(err, "token id %d at position %d is outside the vocabulary of %d",
                           ids[i], i, t->n_vocab);
        total += t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
    }
    uint8_t *raw = ss_malloc(total + 1, err);
    char *res = ss_malloc(3 * total + 1, err);
    if (!raw || !res) {
        free(raw);
        free(res);
        return -1;
    }
    size_t n = 0;
    for (int i = 0; i < n_ids; i++) {
        if (ss_decoded_skipped(t, ids[i], skip_special))
            continue;
        size_t bl = t->bytes_off[ids[i] + 1] - t->bytes_off[ids[i]];
        memcpy(raw + n, t->bytes + t->bytes_off[ids[i]], bl);
        n += bl;
    }
    size_t skip = t->strip_leading_space && n && raw[0] == ' ';
    size_t used;
    size_t k = ss_utf8_lossy(raw + skip, n - skip, 1, res, &used);
    res[k] = 0;
    free(raw);
    *text = res;
    return 0;
}

void ss_stream_init(ss_stream_decoder *s, const ss_tokenizer *t, int skip_special)
{
    memset(s, 0, sizeof *s);
    s->tok = t;
    s->skip_special = skip_special;
}

/* Appends k bytes of src to out[*w..cap), dropping what does not fit. */
static void ss_stream_put(const char *src, size_t k, char *out, size_t cap, size_t *w)
{
    size_t room = cap - *w;
    if (k > room)
        k = room;
    memcpy(out + *w, src, k);
    *w += k;
}

size_t ss_stream_feed(ss_stream_decoder *s, int id, char *out, size_t cap)
{
    const ss_tokenizer *t = s->tok;
    if (id < 0 || id >= t->n_vocab || ss_decoded_skipped(t, id, s->skip_special))
        return 0;
    const char *b;
    size_t n, w = 0;
    ss_token_bytes(t, id, &b, &n);
    if (n == 0)
        return 0;
    if (s->n_fed++ == 0 && t->strip_leading_space && b[0] == ' ') {
        b++;
        n--;
    }
    char tmp[3 * 64];
    while (n) {
        size_t used, k;
        if (s->n_pending) { /* complete the held character a byte at a time */
            s->pending[s->n_pending++] = *b++;
            n--;
            k = ss_utf8_lossy((const uint8_t *)s->pending, (size_t)s->n_pending, 0, tmp, &used);
            memmove(s->pending, s->pending + used, (size_t)s->n_pending - used);
            s->n_pending -= (int)used;
        } else {
            /* A chunk cut inside a character leaves it for the next
             * chunk; the token's last one waits in pending (<= 3 bytes). */
            size_t chunk = n < 64 ? n : 64;
            k = ss_utf8_lossy((const uint8_t *)b, chunk, 0, tmp, &used);
            if (chunk == n && used < n) {
                memcpy(s->pending, b + used, n - used);
                s->n_pending = (int)(n - used);
                used = n;
            }
            b += used;
            n -= used;
        }
        ss_stream_put(tmp, k, out, cap, &w);
    }
    return w;
}

size_t ss_stream_finish(ss_stream_decoder *s, char *out, size_t cap)
{
    char tmp[3 * 8];
    size_t used, w = 0;
    size_t k = ss_utf8_lossy((const uint8_t *)s->pending, (size_t)s->n_pending, 1, tmp, &used);
    s->n_pending = 0;
    ss_stream_put(tmp, k, out, cap, &w);
    return w;
}
