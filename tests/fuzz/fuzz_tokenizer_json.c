/* fuzz_tokenizer_json.c - a Hugging Face tokenizer.json (and optionally
 * tokenizer_config.json after the line "\n#tokenizer_config#\n") through
 * ss_tokenizer_load_json, then encoding and decoding a fixed text.  Oracle:
 * ids of an accepted tokenizer stay inside its vocabulary and decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "safesteer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *tok, *cfg;
    size_t ntok, ncfg;
    fuzz_split(data, size, "\n#tokenizer_config#\n", &tok, &ntok, &cfg, &ncfg);
    const char *tok_path = fuzz_write("tok/tokenizer.json", tok, ntok);
    const char *cfg_path = fuzz_path("tok/tokenizer_config.json");
    if (cfg)
        fuzz_write("tok/tokenizer_config.json", cfg, ncfg);
    else
        remove(cfg_path);
    ss_error err;
    ss_tokenizer *t;
    if (ss_tokenizer_load_json(fuzz_path("tok"), &t, &err)) {
        if (!strstr(err.msg, "tokenizer_config.json"))
            fuzz_refused(&err, tok_path);
        return 0;
    }
    static const char text[] = "Hello  world\n\t<|im_end|> 1234 caf\xc3\xa9 \xe2\x96\x81x \xf0\x9f\x98\x80\xff";
    for (int special = 0; special < 2; special++) {
        int32_t *ids;
        int n;
        if (ss_tokenize(t, text, sizeof text - 1, special, &ids, &n, &err))
            continue;
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= ss_tokenizer_vocab_size(t))
                fuzz_reject("id %d outside the vocabulary of %d", ids[i],
                            ss_tokenizer_vocab_size(t));
        char *back;
        if (ss_detokenize(t, ids, n, special, &back, &err))
            fuzz_reject("ids from ss_tokenize do not decode: %s", err.msg);
        free(back);
        free(ids);
    }
    ss_tokenizer_free(t);
    return 0;
}
