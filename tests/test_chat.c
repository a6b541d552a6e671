/* test_chat.c - chat template rendering against what jinja2 renders for the
 * real templates (SmolLM2's ChatML from its GGUF, Meta's Llama-2 and
 * Llama-3 templates; the expected strings were rendered by jinja2 and are
 * re-checked live by tests/python/test_tokenizer_parity.py), family
 * detection and default-system extraction. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "safesteer/tokenizer.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template, verbatim. */
static const char smollm2_template[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

static const ss_chat_msg pirate[] = {{"system", "You are a pirate."},
                                     {"user", "Hello there"},
                                     {"assistant", "Arr, ahoy!"},
                                     {"user", "多少钱？ 😀\nline two"}};
static const ss_chat_msg padded[] = {{"user", "  padded question \n"},
                                     {"assistant", " Four. "},
                                     {"user", "And 3+3?"}};

static char *render(int family, const ss_chat_msg *m, int n, int gen, const char *dflt)
{
    char *out = NULL;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_chat_render(family, m, n, gen, dflt, &out, &err), 0, "%s", err.msg);
    return out;
}

Test(chat, chatml_default_system_from_template)
{
    char *dflt = ss_chat_default_system(smollm2_template);
    cr_assert_str_eq(dflt, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    ss_chat_msg hi = {"user", "Hi"};
    char *s = render(SS_CHAT_CHATML, &hi, 1, 1, dflt);
    cr_assert_str_eq(s, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                        "trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                        "<|im_start|>assistant\n");
    free(s);
    free(dflt);
}

Test(chat, chatml_multi_turn_with_system)
{
    char *s = render(SS_CHAT_CHATML, pirate, 4, 0, "unused default");
    cr_assert_str_eq(s, "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\n"
                        "Hello there<|im_end|>\n<|im_start|>assistant\nArr, ahoy!<|im_end|>\n"
                        "<|im_start|>user\n多少钱？ 😀\nline two<|im_end|>\n");
    free(s);
}

Test(chat, llama2_system_and_turns)
{
    char *s = render(SS_CHAT_LLAMA2, pirate, 4, 1, NULL);
    cr_assert_str_eq(s, "<s>[INST] <<SYS>>\nYou are a pirate.\n<</SYS>>\n\nHello there [/INST] "
                        "Arr, ahoy! </s><s>[INST] 多少钱？ 😀\nline two [/INST]");
    free(s);
    s = render(SS_CHAT_LLAMA2, padded, 3, 1, NULL);
    cr_assert_str_eq(s, "<s>[INST] padded question [/INST] Four. </s><s>[INST] And 3+3? [/INST]");
    free(s);
}

Test(chat, llama2_roles_must_alternate)
{
    ss_chat_msg two_users[] = {{"user", "a"}, {"user", "b"}};
    char *out = NULL;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_chat_render(SS_CHAT_LLAMA2, two_users, 2, 1, NULL, &out, &err), -1);
    cr_assert(strstr(err.msg, "alternate"), "%s", err.msg);
}

Test(chat, llama3_turns_trimmed)
{
    char *s = render(SS_CHAT_LLAMA3, pirate, 4, 1, NULL);
    cr_assert_str_eq(s, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                        "You are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                        "Hello there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
                        "Arr, ahoy!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                        "多少钱？ 😀\nline two<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(s);
    s = render(SS_CHAT_LLAMA3, padded, 3, 0, NULL);
    cr_assert_str_eq(s, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                        "padded question<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
                        "\n\nFour.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                        "And 3+3?<|eot_id|>");
    free(s);
}

Test(chat, family_detect_and_parse)
{
    int f = -1;
    ss_error err = {.msg = ""};
    cr_assert_eq(ss_chat_family_detect(smollm2_template, &f, &err), 0);
    cr_assert_eq(f, SS_CHAT_CHATML);
    cr_assert_eq(ss_chat_family_detect("{{ bos_token + '[INST] ' }}", &f, &err), 0);
    cr_assert_eq(f, SS_CHAT_LLAMA2);
    cr_assert_eq(ss_chat_family_detect("{{ '<|start_header_id|>' }}", &f, &err), 0);
    cr_assert_eq(f, SS_CHAT_LLAMA3);
    cr_assert_eq(ss_chat_family_detect("{{ \" <|begin_of_text|><|start_header_id|>user<|end_"
                                       "header_id|>...<BEGIN UNSAFE CONTENT CATEGORIES>\\nS1: "
                                       "...S14: Code Interpreter Abuse.\\n...\" }}",
                                       &f, &err), 0);
    cr_assert_eq(f, SS_CHAT_LLAMA_GUARD3);
    cr_assert_eq(ss_chat_family_detect("{{ '### Human: ' }}", &f, &err), -1);
    cr_assert(strstr(err.msg, "name one: chatml, llama2 or llama3"), "%s", err.msg);
    cr_assert_eq(ss_chat_family_detect(NULL, &f, &err), -1);
    cr_assert(strstr(err.msg, "name one: chatml, llama2 or llama3"), "%s", err.msg);
    for (int fam = SS_CHAT_NONE; fam <= SS_CHAT_LLAMA_GUARD3; fam++) {
        cr_assert_eq(ss_chat_family_parse(ss_chat_family_name(fam), &f, &err), 0);
        cr_assert_eq(f, fam);
    }
    cr_assert_eq(ss_chat_family_parse("vicuna", &f, &err), -1);
    cr_assert(strstr(err.msg, "vicuna"), "%s", err.msg);
}

Test(chat, default_system_only_for_fixed_text)
{
    /* Qwen-style: an escaped "\n" inside the string literal. */
    char *s = ss_chat_default_system(
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou\\'re helpful."
        "<|im_end|>\\n' }}{% endif %}");
    cr_assert_str_eq(s, "You're helpful.");
    free(s);
    /* The system turn comes from the messages: no fixed default. */
    cr_assert_null(ss_chat_default_system(
        "{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"));
    cr_assert_null(ss_chat_default_system("{{ '<|start_header_id|>' }}"));
    cr_assert_null(ss_chat_default_system(NULL));
}
