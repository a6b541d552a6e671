/* tokenizer_spm.c - SentencePiece-style BPE: spaces become "▁" (U+2581),
 * a "▁" prefix marks the start of the text, characters merge by score
 * (GGUF "llama") or merge rank (tokenizer.json), and characters missing
 * from the vocabulary fall back to <0xNN> byte tokens. */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#define SS_SPACE_MARK "\xe2\x96\x81"

static int ss_utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* One piece of normalized text: characters are the initial symbols. */
static int ss_spm_piece(const ss_tokenizer *t, const char *s, size_t n, ss_idvec *out,
                        ss_error *err)
{
    if (t->ignore_merges) {
        int id = ss_tok_lookup(t, s, n);
        if (id >= 0)
            return ss_idvec_push(out, id, err);
    }
    int32_t *buf = ss_malloc(sizeof *buf * 3 * n, err);
    if (!buf)
        return -1;
    int32_t *start = buf, *len = buf + n, *id = buf + 2 * n;
    int n_sym = 0;
    for (size_t i = 0; i < n;) {
        size_t cl = (size_t)ss_utf8_len((uint8_t)s[i]);
        if (cl > n - i)
            cl = n - i;
        int cid = ss_tok_lookup(t, s + i, cl);
        int bytes_known = 1;
        for (size_t k = 0; k < cl; k++)
            bytes_known &= t->byte_id[(uint8_t)s[i + k]] >= 0;
        if (cid < 0 && t->n_merges && bytes_known) {
            /* tokenizer.json byte_fallback: byte tokens join the merging */
            for (size_t k = 0; k < cl; k++) {
                start[n_sym] = (int32_t)(i + k);
                len[n_sym] = 1;
                id[n_sym++] = t->byte_id[(uint8_t)s[i + k]];
            }
        } else {
            /* GGUF: an unknown character may still merge by its text and
             * falls back to bytes only if it stays alone */
            start[n_sym] = (int32_t)i;
            len[n_sym] = (int32_t)cl;
            id[n_sym++] = cid;
        }
        i += cl;
    }
    int rc = ss_bpe_merge(t, s, n_sym, start, len, id, out, err);
    free(buf);
    return rc;
}

int ss_spm_encode_segment(const ss_tokenizer *t, const char *s, size_t n, int first,
                          ss_idvec *out, ss_error *err)
{
    if (n == 0)
        return 0;
    int prefix = t->spm_prefix == SS_PREFIX_ALWAYS || (t->spm_prefix == SS_PREFIX_FIRST && first);
    if (prefix && t->spm_prefix_if_missing &&
        (s[0] == ' ' || (n >= 3 && memcmp(s, SS_SPACE_MARK, 3) == 0)))
        prefix = 0; /* Metaspace adds "▁" only where the text lacks one */
    char *norm = ss_malloc(3 * (n + 1), err);
    if (!norm)
        return -1;
    size_t k = 0;
    if (prefix) {
        memcpy(norm, SS_SPACE_MARK, 3);
        k = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(norm + k, SS_SPACE_MARK, 3);
            k += 3;
        } else {
            norm[k++] = s[i];
        }
    }
    int rc = 0;
    if (!t->spm_split) {
        rc = ss_spm_piece(t, norm, k, out, err);
    } else { /* Metaspace split: every "▁" starts a new piece */
        size_t from = 0;
        for (size_t i = 3; i + 3 <= k && !rc; i++) {
            if (memcmp(norm + i, SS_SPACE_MARK, 3) == 0) {
                rc = ss_spm_piece(t, norm + from, i - from, out, err);
                from = i;
            }
        }
        if (!rc)
            rc = ss_spm_piece(t, norm + from, k - from, out, err);
    }
    free(norm);
    return rc;
}
