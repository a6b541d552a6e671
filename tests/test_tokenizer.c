/* test_tokenizer.c - the byte-level BPE tokenizer against the Hugging Face
 * `tokenizers` goldens of SmolLM2 (tests/golden/tokenizer_smollm2.jsonl),
 * round trips, streaming decode, special tokens; and the SentencePiece-style
 * path on tiny tokenizers written here (a GGUF "llama" vocabulary with
 * scores and a tokenizer.json with byte fallback and merges). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "safesteer/model.h"
#include "safesteer/tokenizer.h"

/* ---------------------------------------------------------------- helpers */

static ss_model *g_model;
static ss_tokenizer *g_tok;

/* Loads SmolLM2's tokenizer, or skips the test when the model is absent. */
static ss_tokenizer *smollm2(void)
{
    if (g_tok)
        return g_tok;
    const char *path = ss_default_model_path();
    if (access(path, R_OK) != 0)
        cr_skip_test("model %s is absent", path);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_model_load(path, &g_model, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_load(g_model, &g_tok, &err), 0, "%s", err.msg);
    return g_tok;
}

static void release(void)
{
    ss_tokenizer_free(g_tok);
    if (g_model)
        ss_model_free(g_model);
    g_tok = NULL;
    g_model = NULL;
}

static int32_t *encode(const ss_tokenizer *t, const char *s, size_t n, int special, int *n_ids)
{
    ss_error err = {.msg = ""};
    int32_t *ids = NULL;
    cr_assert_eq(ss_tokenize(t, s, n, special, &ids, n_ids, &err), 0, "%s", err.msg);
    return ids;
}

static char *decode(const ss_tokenizer *t, const int32_t *ids, int n, int skip)
{
    ss_error err = {.msg = ""};
    char *s = NULL;
    cr_assert_eq(ss_detokenize(t, ids, n, skip, &s, &err), 0, "%s", err.msg);
    return s;
}

/* 1 if s[0..n) is complete, valid UTF-8. */
static int utf8_complete(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    json_decref(j);
    return j != NULL;
}

/* Decodes by streaming; every chunk must be whole characters. */
static char *stream_decode(const ss_tokenizer *t, const int32_t *ids, int n, int skip)
{
    ss_stream_decoder sd;
    ss_stream_init(&sd, t, skip);
    size_t cap = 1024 * ((size_t)n + 1), len = 0;
    char *out = malloc(cap + 1);
    cr_assert(out);
    for (int i = 0; i < n; i++) {
        size_t k = ss_stream_feed(&sd, ids[i], out + len, 1024);
        cr_assert(utf8_complete(out + len, k), "chunk after token %d (id %d) splits a character",
                  i, ids[i]);
        len += k;
    }
    len += ss_stream_finish(&sd, out + len, 1024);
    out[len] = 0;
    return out;
}

static void assert_ids(const int32_t *got, int n_got, const int32_t *want, int n_want,
                       const char *text)
{
    cr_assert_eq(n_got, n_want, "'%s': %d ids, want %d", text, n_got, n_want);
    for (int i = 0; i < n_want; i++)
        cr_assert_eq(got[i], want[i], "'%s': id[%d] = %d, want %d", text, i, got[i], want[i]);
}

/* ---------------------------------------------------------------- SmolLM2 */

Test(smollm2, goldens_round_trip_and_stream, .fini = release)
{
    ss_tokenizer *t = smollm2();
    const char *path = SS_SOURCE_DIR "/tests/golden/tokenizer_smollm2.jsonl";
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s is missing (scripts/goldens/make_tokenizer_goldens.py writes it)", path);
    char *line = NULL;
    size_t cap = 0;
    int n_lines = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *row = json_loads(line, 0, &je);
        cr_assert(row, "%s:%d: %s", path, n_lines + 1, je.text);
        const json_t *text = json_object_get(row, "text"), *want = json_object_get(row, "ids");
        const char *s = json_string_value(text);
        size_t len = json_string_length(text);
        int n;
        int32_t *ids = encode(t, s, len, 1, &n);
        int32_t *w = malloc(sizeof *w * (json_array_size(want) + 1));
        for (size_t i = 0; i < json_array_size(want); i++)
            w[i] = (int32_t)json_integer_value(json_array_get(want, i));
        assert_ids(ids, n, w, (int)json_array_size(want), s);
        char *back = decode(t, ids, n, 0);
        cr_assert_str_eq(back, s, "decode(encode(s)) != s");
        char *streamed = stream_decode(t, ids, n, 0);
        cr_assert_str_eq(streamed, back, "stream decode differs for '%s'", s);
        free(streamed);
        free(back);
        free(ids);
        free(w);
        json_decref(row);
        n_lines++;
    }
    free(line);
    fclose(f);
    cr_assert_geq(n_lines, 200, "only %d golden lines", n_lines);
}

Test(smollm2, loads_fast_with_expected_ids, .fini = release)
{
    const char *path = ss_default_model_path();
    if (access(path, R_OK) != 0)
        cr_skip_test("model %s is absent", path);
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_model_load(path, &g_model, &err), 0, "%s", err.msg);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cr_assert_eq(ss_tokenizer_load(g_model, &g_tok, &err), 0, "%s", err.msg);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    cr_assert_lt(s, 0.5, "tokenizer load took %.3f s", s);
    ss_tokenizer *t = g_tok;
    cr_assert_eq(ss_tokenizer_kind_of(t), SS_TOK_BYTE_BPE);
    cr_assert_eq(ss_tokenizer_vocab_size(t), 49152);
    cr_assert_eq(ss_tokenizer_bos(t), 1);
    cr_assert_eq(ss_tokenizer_eos(t), 2);
    cr_assert_eq(ss_tokenizer_adds_bos(t), 0);
    cr_assert_eq(ss_tokenizer_find(t, "<|im_start|>"), 1);
    cr_assert_eq(ss_tokenizer_find(t, "<|im_end|>"), 2);
    cr_assert_eq(ss_tokenizer_find(t, "\xc4\xa0the"), 260); /* "Ġthe" */
    cr_assert_eq(ss_tokenizer_find(t, "no such token text"), -1);
    cr_assert(ss_tokenizer_is_stop(t, 2), "<|im_end|> (eos) stops");
    cr_assert(ss_tokenizer_is_stop(t, 0), "<|endoftext|> stops");
    cr_assert(!ss_tokenizer_is_stop(t, 1), "<|im_start|> does not stop");
    cr_assert(!ss_tokenizer_is_stop(t, 260), "a word does not stop");
    cr_assert(ss_tokenizer_chat_template(t) && strstr(ss_tokenizer_chat_template(t), "<|im_start|>"));
}

Test(smollm2, special_tokens_parse_only_when_asked, .fini = release)
{
    ss_tokenizer *t = smollm2();
    const char *s = "<|im_start|>user\nHi<|im_end|>";
    int n1, n0;
    int32_t *on = encode(t, s, strlen(s), 1, &n1);
    int32_t *off = encode(t, s, strlen(s), 0, &n0);
    cr_assert_eq(on[0], 1);
    cr_assert_eq(on[n1 - 1], 2);
    cr_assert_gt(n0, n1, "without parsing, the markers are spelled out in pieces");
    for (int i = 0; i < n0; i++)
        cr_assert(off[i] != 1 && off[i] != 2, "special id %d produced by BPE", off[i]);
    char *a = decode(t, on, n1, 0), *b = decode(t, off, n0, 0), *c = decode(t, on, n1, 1);
    cr_assert_str_eq(a, s);
    cr_assert_str_eq(b, s);
    cr_assert_str_eq(c, "user\nHi", "skip_special drops the control tokens");
    free(a);
    free(b);
    free(c);
    free(on);
    free(off);
}

Test(smollm2, stream_holds_split_characters, .fini = release)
{
    ss_tokenizer *t = smollm2();
    /* A rare CJK character and a ZWJ emoji come out as several byte tokens. */
    const char *texts[] = {"\xf0\xa0\x80\x80", "\xf0\x9f\x91\xa9\xe2\x80\x8d\xe2\x9d\xa4"
                                               "\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x92\x8b"};
    for (int k = 0; k < 2; k++) {
        int n;
        int32_t *ids = encode(t, texts[k], strlen(texts[k]), 0, &n);
        int split = 0;
        for (int i = 0; i < n; i++) {
            const char *b;
            size_t len;
            cr_assert_eq(ss_token_bytes(t, ids[i], &b, &len), 0);
            split |= !utf8_complete(b, len);
        }
        cr_assert(split, "'%s' should have a token holding part of a character", texts[k]);
        char *s = stream_decode(t, ids, n, 0);
        cr_assert_str_eq(s, texts[k]);
        free(s);
        free(ids);
    }
    /* An unfinished character is flushed as U+FFFD by finish and by decode. */
    int32_t first = -1;
    int n;
    int32_t *ids = encode(t, "\xf0\xa0\x80\x80", 4, 0, &n);
    first = ids[0];
    ss_stream_decoder sd;
    ss_stream_init(&sd, t, 0);
    char out[64];
    const char *b;
    size_t len;
    ss_token_bytes(t, first, &b, &len);
    cr_assert_lt(len, 4);
    cr_assert_eq(ss_stream_feed(&sd, first, out, sizeof out), 0);
    size_t k = ss_stream_finish(&sd, out, sizeof out);
    cr_assert_eq(k, 3);
    cr_assert(!memcmp(out, "\xef\xbf\xbd", 3));
    char *full = decode(t, &first, 1, 0);
    cr_assert_str_eq(full, "\xef\xbf\xbd");
    free(full);
    free(ids);
}

Test(smollm2, invalid_utf8_bytes_survive_encoding, .fini = release)
{
    ss_tokenizer *t = smollm2();
    /* Stray lead and continuation bytes: byte-level BPE keeps every byte. */
    const char s[] = "ok \xc3( bytes \x80 end \xc3";
    int n;
    int32_t *ids = encode(t, s, sizeof s - 1, 1, &n);
    char joined[64];
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const char *b;
        size_t len;
        cr_assert_eq(ss_token_bytes(t, ids[i], &b, &len), 0);
        cr_assert_lt(k + len, sizeof joined);
        memcpy(joined + k, b, len);
        k += len;
    }
    cr_assert_eq(k, sizeof s - 1);
    cr_assert(!memcmp(joined, s, k), "token bytes reassemble the input");
    char *d = decode(t, ids, n, 0);
    cr_assert_str_eq(d, "ok \xef\xbf\xbd( bytes \xef\xbf\xbd end \xef\xbf\xbd");
    free(d);
    free(ids);
    /* SmolLM2's vocabulary has no character for byte 0xFF (never in UTF-8):
     * it becomes the unknown token, as in llama.cpp. */
    ids = encode(t, "a\xff", 2, 0, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(ids[1], 0);
    free(ids);
}

Test(smollm2, bad_ids_are_errors, .fini = release)
{
    ss_tokenizer *t = smollm2();
    int32_t ids[] = {260, 49152};
    char *s = NULL;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_detokenize(t, ids, 2, 0, &s, &err), -1);
    cr_assert(strstr(err.msg, "49152"), "%s", err.msg);
    const char *b;
    size_t len;
    cr_assert_eq(ss_token_bytes(t, -1, &b, &len), -1);
}

/* ---------------------------------------------------------------- GGUF SPM */

typedef struct {
    FILE *f;
} gguf_w;

static void w_u32(FILE *f, uint32_t v) { fwrite(&v, 4, 1, f); }
static void w_u64(FILE *f, uint64_t v) { fwrite(&v, 8, 1, f); }
static void w_str(FILE *f, const char *s)
{
    w_u64(f, strlen(s));
    fwrite(s, 1, strlen(s), f);
}

/* A tokenizer-only GGUF "llama" vocabulary: pieces with scores. */
static const char *spm_pieces[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "h", "e", "l", "o",
                                   "w", "r", "d", "\xe2\x96\x81h", "ll", "\xe2\x96\x81he",
                                   "llo", "\xe2\x96\x81hello", "or", "\xe2\x96\x81w", "ld"};
static const float spm_scores[] = {0, 0, 0, -1, -2, -2, -2, -2, -2, -2, -2,
                                   -3, -4, -5, -6, -7, -8, -9, -10};
#define N_SPM_PIECES (int)(sizeof spm_pieces / sizeof *spm_pieces)

/* bad_score, when nonzero, replaces the score of piece 5 ("e"). */
static void write_spm_gguf(const char *path, float bad_score)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    int n = N_SPM_PIECES + 256;
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0); /* tensors */
    w_u64(f, 7); /* kvs */
    w_str(f, "tokenizer.ggml.model");
    w_u32(f, 8);
    w_str(f, "llama");
    w_str(f, "tokenizer.ggml.tokens");
    w_u32(f, 9);
    w_u32(f, 8);
    w_u64(f, (uint64_t)n);
    for (int i = 0; i < N_SPM_PIECES; i++)
        w_str(f, spm_pieces[i]);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        w_str(f, s);
    }
    w_str(f, "tokenizer.ggml.scores");
    w_u32(f, 9);
    w_u32(f, 6);
    w_u64(f, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        float s = i < N_SPM_PIECES ? spm_scores[i] : 0.0f;
        if (i == 5 && bad_score != 0)
            s = bad_score;
        fwrite(&s, 4, 1, f);
    }
    w_str(f, "tokenizer.ggml.token_type");
    w_u32(f, 9);
    w_u32(f, 5);
    w_u64(f, (uint64_t)n);
    for (int i = 0; i < n; i++) {
        int32_t ty = i == 0 ? 2 : i < 3 ? 3 : i < N_SPM_PIECES ? 1 : 6;
        fwrite(&ty, 4, 1, f);
    }
    w_str(f, "tokenizer.ggml.bos_token_id");
    w_u32(f, 4);
    w_u32(f, 1);
    w_str(f, "tokenizer.ggml.eos_token_id");
    w_u32(f, 4);
    w_u32(f, 2);
    w_str(f, "tokenizer.ggml.unknown_token_id");
    w_u32(f, 4);
    w_u32(f, 0);
    fclose(f);
}

Test(spm, gguf_scores_prefix_and_byte_fallback)
{
    char path[] = "/tmp/ss_test_spm_XXXXXX.gguf";
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    close(fd);
    write_spm_gguf(path, 0);
    ss_error err = {.msg = ""};
    ss_gguf *g = NULL;
    cr_assert_eq(ss_gguf_open(path, &g, &err), 0, "%s", err.msg);
    ss_model m = {0};
    m.gguf = g;
    ss_tokenizer *t = NULL;
    cr_assert_eq(ss_tokenizer_load(&m, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_kind_of(t), SS_TOK_SPM_BPE);
    cr_assert_eq(ss_tokenizer_adds_bos(t), 1, "llama vocabularies add BOS by default");
    cr_assert(ss_tokenizer_is_stop(t, 2));

    /* "▁hello": ▁h (-3) beats ll (-4); then ▁he, llo, ▁hello by score.
     * " world": ▁w, or, ld merge; "w"+"or" has no piece.  "ñ" is not in the
     * vocabulary: bytes C3 B1. */
    const char *s = "hello world\xc3\xb1<s>";
    int n;
    int32_t *ids = encode(t, s, strlen(s), 1, &n);
    int32_t want[] = {15, 17, 16, 18, N_SPM_PIECES + 0xc3, N_SPM_PIECES + 0xb1, 1};
    assert_ids(ids, n, want, 7, s);
    char *d = decode(t, ids, n, 1);
    cr_assert_str_eq(d, "hello world\xc3\xb1", "leading prefix space stripped, specials skipped");
    char *st = stream_decode(t, ids, n, 1);
    cr_assert_str_eq(st, d);
    free(st);
    free(d);
    free(ids);

    /* The prefix goes before every text segment (llama.cpp), so text after a
     * special token starts with "▁". */
    ids = encode(t, "<s>hello", 8, 1, &n);
    int32_t want2[] = {1, 15};
    assert_ids(ids, n, want2, 2, "<s>hello");
    d = decode(t, ids, n, 0);
    cr_assert_str_eq(d, "<s> hello");
    free(d);
    free(ids);
    ss_tokenizer_free(t);
    ss_gguf_close(g);
    unlink(path);
}

/* ---------------------------------------------------------------- JSON SPM */

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

Test(spm, tokenizer_json_merges_and_byte_fallback)
{
    char dir[] = "/tmp/ss_test_tokjson_XXXXXX";
    cr_assert(mkdtemp(dir));
    /* Llama-2 style: Prepend + Replace normalizer, byte_fallback, merges
     * by rank, Strip decoder. */
    char *vocab = malloc(16384);
    int k = sprintf(vocab, "{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2");
    for (int b = 0; b < 256; b++)
        k += sprintf(vocab + k, ", \"<0x%02X>\": %d", b, 3 + b);
    sprintf(vocab + k, ", \"\xe2\x96\x81\": 259, \"a\": 260, \"b\": 261, \"\xe2\x96\x81" "a\": 262, "
                       "\"ab\": 263, \"\xe2\x96\x81" "ab\": 264}");
    char *json = malloc(32768);
    sprintf(json,
            "{\"version\": \"1.0\", \"added_tokens\": ["
            "{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
            "{\"id\": 1, \"content\": \"<s>\", \"special\": true},"
            "{\"id\": 2, \"content\": \"</s>\", \"special\": true}],"
            "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
            "{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"},"
            "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},"
            "\"pre_tokenizer\": null, \"post_processor\": null,"
            "\"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
            "{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"},"
            "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
            "{\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
            "\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
            "\"byte_fallback\": true, \"vocab\": %s,"
            "\"merges\": [\"a b\", [\"\xe2\x96\x81\", \"a\"], \"\xe2\x96\x81" "a b\"]}}",
            vocab);
    write_file(dir, "tokenizer.json", json);
    write_file(dir, "tokenizer_config.json",
               "{\"add_bos_token\": true, \"bos_token\": {\"content\": \"<s>\"},"
               " \"eos_token\": \"</s>\", \"chat_template\": \"{{ '[INST]' }}\"}");
    free(vocab);
    free(json);
    ss_error err = {.msg = ""};
    ss_tokenizer *t = NULL;
    cr_assert_eq(ss_tokenizer_load_json(dir, &t, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_kind_of(t), SS_TOK_SPM_BPE);
    cr_assert_eq(ss_tokenizer_bos(t), 1);
    cr_assert_eq(ss_tokenizer_eos(t), 2);
    cr_assert_eq(ss_tokenizer_adds_bos(t), 1);
    cr_assert_str_eq(ss_tokenizer_chat_template(t), "{{ '[INST]' }}");

    /* "ab abé" -> "▁ab▁abé": "a b" (rank 0) beats "▁ a" (rank 1), leaving
     * ▁ + ab, which has no rule; é is not in the vocabulary: bytes C3 A9. */
    const char *s = "ab ab\xc3\xa9";
    int n;
    int32_t *ids = encode(t, s, strlen(s), 1, &n);
    int32_t want[] = {259, 263, 259, 263, 3 + 0xc3, 3 + 0xa9};
    assert_ids(ids, n, want, 6, s);
    char *d = decode(t, ids, n, 0);
    cr_assert_str_eq(d, s);
    free(d);
    free(ids);
    /* "a" alone: ▁ + a merges (rank 1) into ▁a. */
    ids = encode(t, "a", 1, 1, &n);
    int32_t want2[] = {262};
    assert_ids(ids, n, want2, 1, "a");
    free(ids);
    ss_tokenizer_free(t);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
    unlink(p);
    rmdir(dir);
}

Test(spm, tokenizer_json_errors_name_the_component)
{
    char dir[] = "/tmp/ss_test_tokjson_XXXXXX";
    cr_assert(mkdtemp(dir));
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}");
    ss_error err = {.msg = ""};
    ss_tokenizer *t = NULL;
    cr_assert_eq(ss_tokenizer_load_json(dir, &t, &err), -1);
    cr_assert(strstr(err.msg, "WordPiece") && strstr(err.msg, "tokenizer.json"), "%s", err.msg);
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
               " \"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    cr_assert_eq(ss_tokenizer_load_json(dir, &t, &err), -1);
    cr_assert(strstr(err.msg, "Whitespace"), "%s", err.msg);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    rmdir(dir);
}

/* ---------------------------------------------------------------- hostile files */

/* A byte-level GGUF vocabulary {a, b, ab} with one merge entry. */
static void write_bpe_gguf(const char *path, const char *merge)
{
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    fwrite("GGUF", 1, 4, f);
    w_u32(f, 3);
    w_u64(f, 0); /* tensors */
    w_u64(f, 3); /* kvs */
    w_str(f, "tokenizer.ggml.model");
    w_u32(f, 8);
    w_str(f, "gpt2");
    w_str(f, "tokenizer.ggml.tokens");
    w_u32(f, 9);
    w_u32(f, 8);
    w_u64(f, 3);
    w_str(f, "a");
    w_str(f, "b");
    w_str(f, "ab");
    w_str(f, "tokenizer.ggml.merges");
    w_u32(f, 9);
    w_u32(f, 8);
    w_u64(f, 1);
    w_str(f, merge);
    fclose(f);
}

/* A merge without a space: the message quoted the entry from freed memory
 * (heap-use-after-free under ASan). */
Test(hostile, gguf_merge_without_space)
{
    char path[] = "/tmp/ss_test_merges_XXXXXX.gguf";
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    close(fd);
    ss_error err = {.msg = ""};
    ss_model m = {0};
    ss_tokenizer *t = NULL;
    write_bpe_gguf(path, "a b");
    cr_assert_eq(ss_gguf_open(path, &m.gguf, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_load(&m, &t, &err), 0, "%s", err.msg);
    ss_tokenizer_free(t);
    ss_gguf_close(m.gguf);
    write_bpe_gguf(path, "ab");
    cr_assert_eq(ss_gguf_open(path, &m.gguf, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_load(&m, &t, &err), -1);
    cr_assert(strstr(err.msg, path) &&
                  strstr(err.msg, "tokenizer.ggml.merges: entry 0 'ab' is not 'left right'"),
              "%s", err.msg);
    ss_gguf_close(m.gguf);
    unlink(path);
}

Test(hostile, gguf_scores_must_be_finite)
{
    char path[] = "/tmp/ss_test_scores_XXXXXX.gguf";
    int fd = mkstemps(path, 5);
    cr_assert_geq(fd, 0);
    close(fd);
    write_spm_gguf(path, NAN);
    ss_error err = {.msg = ""};
    ss_model m = {0};
    ss_tokenizer *t = NULL;
    cr_assert_eq(ss_gguf_open(path, &m.gguf, &err), 0, "%s", err.msg);
    cr_assert_eq(ss_tokenizer_load(&m, &t, &err), -1, "a NaN score loaded");
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "tokenizer.ggml.scores[5] = nan"), "%s",
              err.msg);
    ss_gguf_close(m.gguf);
    unlink(path);
}

Test(hostile, tokenizer_json_ids_and_duplicate_keys)
{
    char dir[] = "/tmp/ss_test_tokjson_XXXXXX";
    cr_assert(mkdtemp(dir));
    ss_error err = {.msg = ""};
    ss_tokenizer *t = NULL;
    /* one token at id 10^9 allocated tables for 10^9 tokens */
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1000000000},"
               " \"merges\": []}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    cr_assert_eq(ss_tokenizer_load_json(dir, &t, &err), -1);
    cr_assert(strstr(err.msg, "tokenizer.json: token id 1000000000, but model.vocab and "
                              "added_tokens hold 2 tokens"),
              "%s", err.msg);
    /* a repeated key: jansson keeps the last, silently */
    write_file(dir, "tokenizer.json",
               "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"a\": 1},"
               " \"merges\": []}, \"decoder\": {\"type\": \"ByteLevel\"}}");
    cr_assert_eq(ss_tokenizer_load_json(dir, &t, &err), -1);
    cr_assert(strstr(err.msg, "tokenizer.json") && strstr(err.msg, "duplicate object key"), "%s",
              err.msg);
    char p[600];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    rmdir(dir);
}
