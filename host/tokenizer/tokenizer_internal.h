/* tokenizer_internal.h - the tokenizer's tables, shared by the GGUF loader
 * (tokenizer.c), the tokenizer.json loader (tokenizer_json.c) and the
 * encoders (tokenizer.c for byte-level BPE, tokenizer_spm.c for
 * SentencePiece-style BPE). */
#ifndef SAFESTEER_TOKENIZER_INTERNAL_H
#define SAFESTEER_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "safesteer/tokenizer.h"

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. */
enum {
    SS_TT_NORMAL = 1,
    SS_TT_UNKNOWN = 2,
    SS_TT_CONTROL = 3,
    SS_TT_USER = 4,
    SS_TT_UNUSED = 5,
    SS_TT_BYTE = 6,
};

/* Where SentencePiece-style tokenizers put the "▁" prefix. */
enum { SS_PREFIX_NONE = 0, SS_PREFIX_FIRST = 1, SS_PREFIX_ALWAYS = 2 };

#define SS_TOK_MAX_PRE 4
#define SS_TOK_MAX_STOP 8

/* Open-addressing string -> id table over the token texts. */
typedef struct {
    uint32_t cap;      /* power of two */
    int32_t *slots;    /* [cap] token id or -1 */
} ss_strmap;

/* Open-addressing (left id, right id) -> (rank, merged id) table. */
typedef struct {
    uint64_t key;      /* left << 32 | right; UINT64_MAX = empty */
    int32_t rank;
    int32_t id;
} ss_pair_slot;

typedef struct {
    uint32_t cap;         /* power of two */
    ss_pair_slot *slots;  /* [cap] */
} ss_pairmap;

struct ss_tokenizer {
    int kind;                /* ss_tokenizer_kind */
    int n_vocab;
    char *text;              /* token texts, each NUL-terminated */
    uint32_t *text_off;      /* [n_vocab + 1] offsets into text */
    char *bytes;             /* decoded bytes of each token */
    uint32_t *bytes_off;     /* [n_vocab + 1] offsets into bytes */
    int8_t *type;            /* [n_vocab] SS_TT_* */
    float *scores;           /* [n_vocab] SentencePiece scores, or NULL */
    ss_strmap vocab;         /* text -> id */
    ss_pairmap merges;       /* pair -> rank; empty for score-merging SPM */
    int n_merges;
    int byte_id[256];        /* byte-level: id of the byte's mapped char;
                                SPM: id of <0xNN>; -1 if absent */
    pcre2_code *pre[SS_TOK_MAX_PRE]; /* split passes, each Isolated */
    int n_pre;
    int ignore_merges;       /* a piece that is a whole token skips merging */
    int fuse_unk;            /* consecutive unknown tokens become one */
    int spm_prefix;          /* SS_PREFIX_* */
    int spm_prefix_if_missing; /* Metaspace: no prefix if text starts with one */
    int spm_split;           /* Metaspace split=true: pieces start at "▁" */
    int strip_leading_space; /* decode drops the prefix space */
    int bos, eos, unk;       /* -1 if none */
    int add_bos;
    int32_t *special;        /* [n_special] ids matched literally in text,
                                longest text first */
    int n_special;
    uint8_t special_first[256]; /* 1 if some special text starts with it */
    int stop[SS_TOK_MAX_STOP];
    int n_stop;
    char *chat_template;     /* malloc'd or NULL */
};

const char *ss_tok_text(const ss_tokenizer *t, int id);

/* Allocates the per-token arrays for n_vocab tokens (texts added later with
 * ss_tok_set_texts). */
ss_tokenizer *ss_tok_alloc(int kind, ss_error *err);
/* Copies the texts (texts[i] of lens[i] bytes, NULL for a hole) into the
 * arena; types must already be set. */
int ss_tok_set_texts(ss_tokenizer *t, int n_vocab, const char *const *texts,
                     const size_t *lens, ss_error *err);
/* Sizes the merge table for n merges before ss_tok_add_merge. */
int ss_tok_reserve_merges(ss_tokenizer *t, uint64_t n, ss_error *err);
int ss_tok_add_merge(ss_tokenizer *t, const char *a, size_t alen, const char *b,
                     size_t blen, int rank, const char *where, ss_error *err);
/* Compiles a split regex (PCRE2, UTF + UCP) as the next pre-tokenizer pass. */
int ss_tok_add_pre(ss_tokenizer *t, const char *pattern, const char *where, ss_error *err);
/* After texts, types, merges and ids are in: hashes, byte tables, decoded
 * bytes, special and stop lists. */
int ss_tok_finish(ss_tokenizer *t, ss_error *err);
int ss_tok_merge_rank(const ss_tokenizer *t, int a, int b, int *merged);
int ss_tok_lookup(const ss_tokenizer *t, const char *s, size_t len);

/* A growable id list. */
typedef struct {
    int32_t *v;
    int n, cap;
} ss_idvec;

int ss_idvec_push(ss_idvec *v, int32_t id, ss_error *err);

/* Symbol-merging BPE over one piece of text.  Symbols start as the spans
 * [start[i], start[i] + len[i]) of s with ids id[i] (-1: no token); pairs
 * merge lowest priority first, leftmost on ties: merge rank when the
 * tokenizer has merges, else minus the score of the concatenated token.
 * Appends the final symbols' ids (byte fallback / unk for id -1). */
int ss_bpe_merge(const ss_tokenizer *t, const char *s, int n_sym, const int32_t *start,
                 const int32_t *len, const int32_t *id, ss_idvec *out, ss_error *err);

int ss_spm_encode_segment(const ss_tokenizer *t, const char *s, size_t n, int first,
                          ss_idvec *out, ss_error *err);

/* Regexes of the pre-tokenizers safesteer knows. */
extern const char ss_re_gpt2[];
extern const char ss_re_llama3[];
extern const char ss_re_digits[];

#endif
