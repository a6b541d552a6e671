/* tokenizer.h - byte-level BPE (GPT-2 / SmolLM2 / Llama-3) and
 * SentencePiece-style BPE with byte fallback (Llama-2), loaded from GGUF
 * metadata or a Hugging Face tokenizer.json; chat templates. */
#ifndef SAFESTEER_TOKENIZER_H
#define SAFESTEER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "safesteer/util.h"
#include "safesteer/model.h"

typedef struct ss_tokenizer ss_tokenizer;

typedef enum { SS_TOK_BYTE_BPE = 0, SS_TOK_SPM_BPE = 1 } ss_tokenizer_kind;

/* From the model: GGUF metadata (tokenizer.ggml.*) or the folder's
 * tokenizer.json + tokenizer_config.json. */
int ss_tokenizer_load(const ss_model *m, ss_tokenizer **out, ss_error *err);
void ss_tokenizer_free(ss_tokenizer *t);
/* From a folder's tokenizer.json (+ tokenizer_config.json for add_bos,
 * bos/eos tokens and chat_template) alone, without model weights. */
int ss_tokenizer_load_json(const char *folder, ss_tokenizer **out, ss_error *err);
/* The chat template stored with the tokenizer (GGUF tokenizer.chat_template
 * or tokenizer_config.json chat_template), or NULL. */
const char *ss_tokenizer_chat_template(const ss_tokenizer *t);

int ss_tokenizer_kind_of(const ss_tokenizer *t);
int ss_tokenizer_vocab_size(const ss_tokenizer *t);
int ss_tokenizer_bos(const ss_tokenizer *t);   /* -1 if none */
int ss_tokenizer_eos(const ss_tokenizer *t);
/* 1 if the tokenizer wants BOS prepended to plain (non-chat) text. */
int ss_tokenizer_adds_bos(const ss_tokenizer *t);
/* 1 if id ends a turn or the text (EOS, <|im_end|>, <|eot_id|>, ...). */
int ss_tokenizer_is_stop(const ss_tokenizer *t, int id);
/* Id of a token given its exact text, or -1. */
int ss_tokenizer_find(const ss_tokenizer *t, const char *text);

/* Encodes len bytes of UTF-8 text.  Special/added tokens written in the text
 * (e.g. "<|im_start|>") become their ids when parse_special is 1.  BOS is
 * never added here.  *ids is malloc'd; the caller frees it. */
int ss_tokenize(const ss_tokenizer *t, const char *text, size_t len, int parse_special,
                int32_t **ids, int *n_ids, ss_error *err);

/* Bytes of one token as it contributes to decoded text (byte-level tokens
 * mapped back to raw bytes, "▁" to space, <0xNN> to the byte). */
int ss_token_bytes(const ss_tokenizer *t, int id, const char **bytes, size_t *len);

/* Decodes ids into a malloc'd NUL-terminated string.  skip_special drops
 * control tokens.  SentencePiece's leading-space removal is applied when
 * the first id is the first token of the text (strip_leading_space = 1). */
int ss_detokenize(const ss_tokenizer *t, const int32_t *ids, int n_ids, int skip_special,
                  char **text, ss_error *err);

/* Streaming decode: feed ids one at a time; emits only complete UTF-8
 * characters, holding back a partial one until its remaining bytes come. */
typedef struct {
    const ss_tokenizer *tok;
    char pending[8];
    int n_pending;
    int n_fed;          /* tokens fed so far (SentencePiece leading space) */
    int skip_special;
} ss_stream_decoder;

void ss_stream_init(ss_stream_decoder *s, const ss_tokenizer *t, int skip_special);
/* Writes up to cap bytes of newly completed text to out; returns the count
 * (a token's text is at most a few hundred bytes, cap 1024 is always enough). */
size_t ss_stream_feed(ss_stream_decoder *s, int id, char *out, size_t cap);
/* Flushes held-back bytes of an unfinished character (as U+FFFD). */
size_t ss_stream_finish(ss_stream_decoder *s, char *out, size_t cap);

/* ---------------------------------------------------------------- chat */

typedef enum {
    SS_CHAT_NONE = 0,     /* plain text, no template */
    SS_CHAT_CHATML = 1,   /* <|im_start|>role\n...<|im_end|>\n (SmolLM2, Qwen) */
    SS_CHAT_LLAMA2 = 2,   /* <s>[INST] <<SYS>>...<</SYS>> ... [/INST] */
    SS_CHAT_LLAMA3 = 3,   /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    SS_CHAT_LLAMA_GUARD3 = 4, /* Llama Guard 3 8B: the conversation inside its safety task */
} ss_chat_family;

/* "chatml", "llama2", "llama3", "llama-guard3", "none" (for --chat-template and info). */
const char *ss_chat_family_name(int family);
int ss_chat_family_parse(const char *name, int *family, ss_error *err);
/* Recognises the family from a Jinja template string; unknown -> error that
 * suggests --chat-template. */
int ss_chat_family_detect(const char *template_str, int *family, ss_error *err);

typedef struct {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} ss_chat_msg;

/* Renders messages as the model's chat template would, with the assistant
 * header appended when add_generation_prompt is 1.  Includes BOS text where
 * the template writes it (Llama-2/3); ChatML adds the template's default
 * system prompt when none is given (default_system may be NULL). */
int ss_chat_render(int family, const ss_chat_msg *msgs, int n_msgs, int add_generation_prompt,
                   const char *default_system, char **out, ss_error *err);
/* The default system prompt written in a ChatML template (SmolLM2's
 * "You are a helpful AI assistant named SmolLM, ..."), malloc'd, or NULL. */
char *ss_chat_default_system(const char *template_str);

/* ---------------------------------------------------------------- prompts */

/* Token ids for one prompt, shared by generate, capture and sweeps.
 * chat_family SS_CHAT_NONE: the text as is (BOS first when the tokenizer
 * adds it).  Otherwise the text is the user turn, rendered through the
 * template with the generation prompt, after an optional system turn (NULL:
 * the template's own default, if any); special-token text in the rendered
 * template is parsed, in the user's text too (as the reference chat
 * implementations do).  *ids is malloc'd. */
int ss_encode_prompt(const ss_model *m, const ss_tokenizer *t, int chat_family,
                     const char *system, const char *text, int32_t **ids, int *n_ids,
                     ss_error *err);
/* The chat family to use: override_name if given ("chatml", ...), else
 * detected from the model's template; a model without a template is an
 * error naming the model file and suggesting --chat-template. */
int ss_chat_family_for_model(const ss_model *m, const char *override_name, int *family,
                             ss_error *err);

#endif
