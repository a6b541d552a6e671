#!/usr/bin/env python3
"""Build a Hugging Face `tokenizers` tokenizer.json from a GGUF file's
tokenizer metadata (tokenizer.ggml.*), so the reference `tokenizers` library
can encode with exactly the GGUF's vocabulary and merges.

build_tokenizer_json(gguf_path) -> str is imported by other scripts and
tests; keep its name.  Run as a script to write a tokenizer folder:

    python3 scripts/goldens/tokenizer_json.py --model M.gguf --out DIR
"""
import argparse
import json
import os
import struct

# tokenizer.ggml.pre -> the pre_tokenizer Hugging Face uses for it.
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def _pre_tokenizer(pre):
    if pre == "smollm":  # SmolLM2: every digit alone, then the GPT-2 regex
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, _byte_level(True)]}
    if pre in ("default", "gpt2", "gpt-2"):
        return _byte_level(True)
    if pre in ("llama-bpe", "llama3", "llama-v3"):
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated",
             "invert": False}, _byte_level(False)]}
    raise ValueError(f"tokenizer.ggml.pre {pre!r} has no known Hugging Face pre-tokenizer")


# GGUF metadata value types: scalar struct formats; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_metadata(gguf_path):
    """The key/value metadata of a GGUF v2/v3 file (tensor infos skipped).
    A small reader of our own: gguf.GGUFReader parses every array element
    into numpy parts and takes ~15 s on a 49k-token vocabulary."""
    with open(gguf_path, "rb") as f:
        head = f.read(24)
        magic, version, _n_tensors, n_kv = struct.unpack("<4sIQQ", head)
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"{gguf_path}: not a GGUF v2/v3 file")
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return v

    def string():
        nonlocal pos
        n = take("<Q")
        s = buf[pos:pos + n].decode("utf-8", errors="surrogateescape")
        pos += n
        return s

    def value(vtype):
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            etype, n = take("<I"), take("<Q")
            if etype in _SCALARS:
                fmt = _SCALARS[etype]
                size = struct.calcsize(fmt)
                vals = list(struct.unpack_from("<%d%s" % (n, fmt[1]), buf, pos))
                pos += n * size
                return vals
            return [value(etype) for _ in range(n)]
        return take(_SCALARS[vtype])

    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    return meta


def read_gguf_tokenizer(gguf_path):
    """The tokenizer.* metadata of a GGUF file as plain Python values."""
    md = read_gguf_metadata(gguf_path)
    model = md.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{gguf_path}: tokenizer.ggml.model {model!r} is not byte-level BPE "
                         "(gpt2)")
    tokens = md["tokenizer.ggml.tokens"]
    return {
        "tokens": tokens,
        "types": md.get("tokenizer.ggml.token_type", [1] * len(tokens)),
        "merges": md["tokenizer.ggml.merges"],
        "pre": md.get("tokenizer.ggml.pre", "default"),
        "bos": md.get("tokenizer.ggml.bos_token_id"),
        "eos": md.get("tokenizer.ggml.eos_token_id"),
        "add_bos": bool(md.get("tokenizer.ggml.add_bos_token", False)),
        "chat_template": md.get("tokenizer.chat_template"),
    }


def build_tokenizer_json(gguf_path):
    """tokenizer.json text equivalent to the GGUF's byte-level BPE tokenizer:
    its vocabulary and merges, the pre-tokenizer named by tokenizer.ggml.pre,
    a ByteLevel decoder, and control tokens (token_type 3) as special added
    tokens (user-defined ones, type 4, as non-special added tokens)."""
    m = read_gguf_tokenizer(gguf_path)
    added = [{"id": i, "content": tok, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": ty == 3}
             for i, (tok, ty) in enumerate(zip(m["tokens"], m["types"])) if ty in (3, 4)]
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(m["pre"]),
        "post_processor": None,
        "decoder": _byte_level(True),
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": m["pre"] in ("llama-bpe", "llama3", "llama-v3"),
            "vocab": {tok: i for i, tok in enumerate(m["tokens"])},
            "merges": list(m["merges"]),
        },
    }
    return json.dumps(tj, ensure_ascii=False)


def build_tokenizer_config(gguf_path):
    """tokenizer_config.json text: BOS/EOS tokens, add_bos_token, chat template."""
    m = read_gguf_tokenizer(gguf_path)
    cfg = {"add_bos_token": m["add_bos"]}
    if m["bos"] is not None:
        cfg["bos_token"] = m["tokens"][m["bos"]]
    if m["eos"] is not None:
        cfg["eos_token"] = m["tokens"][m["eos"]]
    if m["chat_template"]:
        cfg["chat_template"] = m["chat_template"]
    return json.dumps(cfg, ensure_ascii=False, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--out", required=True, help="folder for tokenizer.json and "
                    "tokenizer_config.json")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(build_tokenizer_json(a.model))
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write(build_tokenizer_config(a.model))


if __name__ == "__main__":
    main()
