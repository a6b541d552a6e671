/* prompt.c - from user text (and chat settings) to prompt token ids. */
#include "safesteer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int ss_chat_family_for_model(const ss_model *m, const char *override_name, int *family,
                             ss_error *err)
{
    if (override_name)
        return ss_chat_family_parse(override_name, family, err);
    if (!m->chat_template)
        return ss_fail(err, "%s: the model has no chat template (tokenizer.chat_template); "
                            "name one: chatml, llama2 or llama3", m->path);
    if (ss_chat_family_detect(m->chat_template, family, err) < 0)
        return ss_fail_context(err, "%s", m->path);
    return 0;
}

int ss_encode_prompt(const ss_model *m, const ss_tokenizer *t, int chat_family,
                     const char *system, const char *text, int32_t **ids, int *n_ids,
                     ss_error *err)
{
    if (chat_family == SS_CHAT_NONE) {
        int32_t *body;
        int n_body;
        if (ss_tokenize(t, text, strlen(text), 0, &body, &n_body, err) < 0)
            return -1;
        int bos = ss_tokenizer_adds_bos(t) ? ss_tokenizer_bos(t) : -1;
        int n = n_body + (bos >= 0);
        int32_t *out = ss_malloc(sizeof(int32_t) * (size_t)(n ? n : 1), err);
        if (!out) {
            free(body);
            return -1;
        }
        if (bos >= 0)
            out[0] = bos;
        memcpy(out + (bos >= 0), body, sizeof(int32_t) * (size_t)n_body);
        free(body);
        *ids = out;
        *n_ids = n;
        return 0;
    }
    char *default_system = NULL;
    if (!system && m->chat_template)
        default_system = ss_chat_default_system(m->chat_template);
    ss_chat_msg msgs[2];
    int n_msgs = 0;
    const char *sys = system ? system : default_system;
    if (sys)
        msgs[n_msgs++] = (ss_chat_msg){"system", sys};
    msgs[n_msgs++] = (ss_chat_msg){"user", text};
    char *rendered = NULL;
    int rc = ss_chat_render(chat_family, msgs, n_msgs, 1, NULL, &rendered, err);
    free(default_system);
    if (rc < 0)
        return -1;
    rc = ss_tokenize(t, rendered, strlen(rendered), 1, ids, n_ids, err);
    free(rendered);
    return rc;
}
