#!/usr/bin/env python3
"""Write tests/golden/tokenizer_smollm2.jsonl: every string of
scripts/goldens/tokenizer_strings.jsonl (one JSON string per line) encoded by
the Hugging Face `tokenizers` library with the GGUF's own vocabulary, merges
and SmolLM2 pre-tokenizer (see tokenizer_json.py).  Special-token text such
as "<|im_start|>" is matched as the special token, as `tokenizers` does.

    python3 scripts/goldens/make_tokenizer_goldens.py --model PATH.gguf
"""
import argparse
import json
import os
import sys

from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from tokenizer_json import build_tokenizer_json  # noqa: E402


def load_strings(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    cache = os.environ.get("SAFESTEER_CACHE", os.path.expanduser("~/.cache/safesteer"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(cache, "models",
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--strings", default=os.path.join(HERE, "tokenizer_strings.jsonl"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden",
                                                  "tokenizer_smollm2.jsonl"))
    a = ap.parse_args()
    tok = Tokenizer.from_str(build_tokenizer_json(a.model))
    strings = load_strings(a.strings)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"{a.out}: {len(strings)} strings", file=sys.stderr)


if __name__ == "__main__":
    main()
