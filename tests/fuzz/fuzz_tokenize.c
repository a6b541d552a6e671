/* fuzz_tokenize.c - ss_tokenize / ss_detokenize / the stream decoder on
 * arbitrary bytes, with the tokenizers named by $SS_FUZZ_TOKENIZERS (GGUF
 * files, folders with tokenizer.json, or "default" for the default model,
 * separated by ':'; unset: the default model).  Input: one byte choosing
 * the tokenizer and the flags, then the text; the text read as
 * little-endian int16 pairs is also decoded as ids.  Oracle: ids stay
 * inside the vocabulary; the stream decoder gives what ss_detokenize gives
 * (up to a decoded NUL byte, where ss_detokenize's C string ends);
 * byte-level BPE gives valid UTF-8 without NUL back unchanged when its
 * vocabulary has every byte (SmolLM2's lacks some control bytes: they
 * become the unknown token, as in Hugging Face tokenizers).  The text is
 * also read as a chat template and rendered as a user turn in every chat
 * family (plain and ChatML keep it verbatim). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safesteer/tokenizer.h"

#define MAX_TOKENIZERS 8

static ss_tokenizer *toks[MAX_TOKENIZERS];
static int n_toks;

/* A GGUF file (a model or a vocabulary alone) or a tokenizer.json folder. */
static void load_one(const char *path)
{
    ss_error err;
    if (n_toks == MAX_TOKENIZERS)
        return;
    int rc;
    if (strstr(path, ".gguf")) {
        ss_model m = {0}; /* the tokenizer reads only the GGUF metadata, and copies it */
        rc = ss_gguf_open(path, &m.gguf, &err) ? -1 : ss_tokenizer_load(&m, &toks[n_toks], &err);
        ss_gguf_close(m.gguf);
    } else {
        rc = ss_tokenizer_load_json(path, &toks[n_toks], &err);
    }
    if (rc) {
        fprintf(stderr, "fuzz_tokenize: %s: %s\n", path, err.msg);
        exit(1);
    }
    n_toks++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *env = getenv("SS_FUZZ_TOKENIZERS");
    char *list = strdup(env && *env ? env : "default"), *save = NULL;
    for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save))
        load_one(strcmp(p, "default") ? p : ss_default_model_path());
    free(list);
    return 0;
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int len = s[i] < 0x80 ? 1 : (s[i] >> 5) == 6 ? 2 : (s[i] >> 4) == 14 ? 3
                                  : (s[i] >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n)
            return 0;
        uint32_t cp = len == 1 ? s[i] : (uint32_t)(s[i] & (0x7f >> len));
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

/* 1 if the vocabulary has a token for every byte of s (as GPT-2 maps bytes
 * to characters): only then is byte-level BPE lossless. */
static int bytes_in_vocab(const ss_tokenizer *t, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int b = s[i], cp = b;
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
            cp = 256;
            for (int x = 0; x < b; x++)
                cp += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
        }
        char u[4] = {(char)cp, 0};
        if (cp >= 0x80) {
            u[0] = (char)(0xc0 | cp >> 6);
            u[1] = (char)(0x80 | (cp & 0x3f));
            u[2] = 0;
        }
        if (ss_tokenizer_find(t, u) < 0)
            return 0;
    }
    return 1;
}

/* Decodes ids[n] both ways and compares; returns ss_detokenize's text. */
static char *decode_both(const ss_tokenizer *t, const int32_t *ids, int n, int skip)
{
    char *text;
    ss_error err;
    if (ss_detokenize(t, ids, n, skip, &text, &err))
        fuzz_reject("in-vocabulary ids do not decode: %s", err.msg);
    size_t cap = 3 * strlen(text) + 64 * (size_t)n + 16, w = 0;
    char *streamed = malloc(cap);
    ss_stream_decoder s;
    ss_stream_init(&s, t, skip);
    for (int i = 0; i < n; i++)
        w += ss_stream_feed(&s, ids[i], streamed + w, cap - w);
    w += ss_stream_finish(&s, streamed + w, cap - w);
    /* ss_detokenize returns a C string: a decoded NUL byte ends it */
    w = strnlen(streamed, w);
    if (w != strlen(text) || memcmp(streamed, text, w))
        fuzz_reject("stream decoding gives %zu bytes, ss_detokenize %zu", w, strlen(text));
    free(streamed);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || n_toks == 0)
        return 0;
    const ss_tokenizer *t = toks[data[0] % n_toks];
    int special = data[0] >> 4 & 1, skip = data[0] >> 5 & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int32_t *ids;
    int n;
    ss_error err;
    if (ss_tokenize(t, text, len, special, &ids, &n, &err))
        fuzz_reject("ss_tokenize refused %zu bytes: %s", len, err.msg);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= ss_tokenizer_vocab_size(t))
            fuzz_reject("id %d outside the vocabulary of %d", ids[i], ss_tokenizer_vocab_size(t));
    char *back = decode_both(t, ids, n, 0);
    if (ss_tokenizer_kind_of(t) == SS_TOK_BYTE_BPE && valid_utf8(data + 1, len) &&
        !memchr(text, 0, len) && bytes_in_vocab(t, data + 1, len) &&
        (strlen(back) != len || memcmp(back, text, len)))
        fuzz_reject("byte-level round trip changed %zu bytes into %zu", len, strlen(back));
    free(back);
    free(ids);
    /* the same bytes as token ids, some outside the vocabulary */
    int n_ids = (int)(len / 2), vocab = ss_tokenizer_vocab_size(t), bad = 0;
    int32_t *raw = malloc(sizeof *raw * (size_t)(n_ids + 1));
    for (int i = 0; i < n_ids; i++) {
        raw[i] = (int16_t)(data[1 + 2 * i] | data[2 + 2 * i] << 8);
        bad |= raw[i] < 0 || raw[i] >= vocab;
    }
    char *s;
    if (bad) {
        if (!ss_detokenize(t, raw, n_ids, skip, &s, &err))
            fuzz_reject("ss_detokenize accepted an id outside the vocabulary");
    } else {
        free(decode_both(t, raw, n_ids, skip));
    }
    free(raw);
    /* the same bytes as a chat template (a GGUF or tokenizer_config.json
     * string), and as a user turn rendered in each family */
    char *tmpl = strndup(text, len);
    int family;
    if (ss_chat_family_detect(tmpl, &family, &err) == 0 && !ss_chat_family_name(family))
        fuzz_reject("detected chat family %d has no name", family);
    free(ss_chat_default_system(tmpl));
    ss_chat_msg msg = {"user", tmpl};
    char *rendered;
    for (int f = SS_CHAT_NONE; f <= SS_CHAT_LLAMA3; f++)
        if (ss_chat_render(f, &msg, 1, 1, NULL, &rendered, &err) == 0) {
            /* llama2 and llama3 strip the content, as their templates do */
            if (f <= SS_CHAT_CHATML && !strstr(rendered, tmpl))
                fuzz_reject("the %s rendering lost the user text", ss_chat_family_name(f));
            free(rendered);
        }
    free(tmpl);
    return 0;
}
