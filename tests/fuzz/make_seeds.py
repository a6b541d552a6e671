#!/usr/bin/env python3
"""Seed corpora for the fuzz targets in tests/fuzz: tiny valid inputs, made
the way tests/python/make_tiny_llama.py makes its models (gguf-py for GGUF,
the same safetensors writer), HDF5 files written with h5py as
tests/python/make_synthetic_acts.py writes captures and turned into the
recipes the HDF5 targets take (tests/fuzz/fuzz_h5.h), plus real prompt
files cut short.

    python3 tests/fuzz/make_seeds.py --out DIR

writes DIR/<target>/ (one folder per fuzz target, named as the binaries
fuzz_<target>) and DIR/tokenizers/ (the tokenizers fuzz_tokenize loads, through
$SS_FUZZ_TOKENIZERS).  Deterministic: the same files on every run.
"""
import argparse
import json
import pathlib
import struct
import sys
import tempfile

import gguf
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
import make_synthetic_acts  # noqa: E402
import make_tiny_llama  # noqa: E402
import tokenizer_json  # noqa: E402

# Quantised types need rows of 32: every inner dimension is a multiple of 32.
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
SEP_SAFETENSORS = b"\n#safetensors#\n"       # fuzz_hf_model.c
SEP_TOKENIZER_CONFIG = b"\n#tokenizer_config#\n"  # fuzz_tokenizer_json.c
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ w", "r e", "Ġ s", "o r",
          "l l", "Ġw or", "Ġs t"]


def byte_level_vocab():
    """GPT-2 byte characters, the merged tokens, then the special tokens."""
    chars = [chr(c) for c in gpt2_byte_chars()]
    tokens = list(chars)
    for m in MERGES:
        a, b = m.split(" ")
        if a + b not in tokens:
            tokens.append(a + b)
    types = [1] * len(tokens) + [3] * len(SPECIALS)
    return tokens + SPECIALS, types


def gpt2_byte_chars():
    """GPT-2's byte -> code point map, as a list indexed by byte."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = b
        else:
            out[b] = 256 + n
            n += 1
    return [out[b] for b in range(256)]


def spm_vocab():
    """A SentencePiece-style vocabulary: pieces with scores, <0xNN> bytes."""
    pieces = ["<unk>", "<s>", "</s>", "\u2581", "h", "e", "l", "o", "w", "r", "d", "\u2581h",
              "ll", "\u2581he", "llo", "\u2581hello", "or", "\u2581w", "ld"]
    scores = [0.0, 0.0, 0.0] + [-float(i) for i in range(1, len(pieces) - 2)]
    types = [2, 3, 3] + [1] * (len(pieces) - 3)
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    scores += [0.0] * 256
    types += [6] * 256
    return pieces, scores, types


def add_byte_level_tokenizer(w):
    tokens, types = byte_level_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                        "{{ m['content'] }}<|im_end|>\n{% endfor %}")
    return len(tokens)


def add_spm_tokenizer(w):
    pieces, scores, types = spm_vocab()
    w.add_tokenizer_model("llama")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    return len(pieces)


def weights(vocab, seed, tied):
    """HF-named float32 arrays ([out, in]) for CONFIG and this vocabulary."""
    c = dict(CONFIG, vocab_size=vocab)
    saved = make_tiny_llama.CONFIG
    make_tiny_llama.CONFIG = c
    try:
        w = make_tiny_llama.random_weights(seed)
    finally:
        make_tiny_llama.CONFIG = saved
    if tied:
        del w["lm_head.weight"]
    return w


def through_file(name, write):
    """The bytes write(path) puts in a scratch file called name."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / name
        write(path)
        return path.read_bytes()


def gguf_bytes(fill, arch="llama"):
    """The file a GGUFWriter filled by fill(writer) writes."""
    def write(path):
        w = gguf.GGUFWriter(str(path), arch)
        fill(w)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return through_file("seed.gguf", write)


def llama_gguf(tokenizer, qtype, tied=False, seed=0):
    def write(w):
        vocab = (add_spm_tokenizer if tokenizer == "spm" else add_byte_level_tokenizer)(w)
        c = CONFIG
        w.add_name(f"fuzz seed {tokenizer} {qtype.name}")
        w.add_block_count(c["num_hidden_layers"])
        w.add_context_length(c["max_position_embeddings"])
        w.add_embedding_length(c["hidden_size"])
        w.add_feed_forward_length(c["intermediate_size"])
        w.add_head_count(c["num_attention_heads"])
        w.add_head_count_kv(c["num_key_value_heads"])
        w.add_key_length(c["head_dim"])
        w.add_rope_freq_base(c["rope_theta"])
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
        hf = weights(vocab, seed, tied)
        names = {"model.embed_tokens.weight": "token_embd.weight",
                 "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
        for hfname, gg in make_tiny_llama.GGUF_NAMES.items():
            names[f"model.layers.0.{hfname}.weight"] = f"blk.0.{gg}.weight"
        for hfname, arr in hf.items():
            if arr.ndim == 1:  # norms stay F32, as llama.cpp writes them
                w.add_tensor(names[hfname], arr)
            else:
                q = gguf.quants.quantize(arr, qtype)
                w.add_tensor(names[hfname], q, raw_shape=q.shape, raw_dtype=qtype)
    return gguf_bytes(write)


def tokenizer_only_gguf(tokenizer):
    def write(w):
        (add_spm_tokenizer if tokenizer == "spm" else add_byte_level_tokenizer)(w)
    return gguf_bytes(write)


def control_vector_gguf(layers, d, seed):
    def write(w):
        w.add_string("controlvector.model_hint", "llama")
        w.add_int32("controlvector.layer_count", len(layers))
        rng = np.random.default_rng(seed)
        for layer in layers:
            w.add_tensor(f"direction.{layer}", rng.standard_normal(d).astype(np.float32))
    return gguf_bytes(write, arch="controlvector")


def safetensors_bytes(tensors, dtype):
    return through_file("seed.safetensors",
                        lambda path: make_tiny_llama.write_safetensors(path, tensors, dtype))


def byte_level_tokenizer_json():
    """tokenizer.json and tokenizer_config.json as scripts/goldens builds them."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "tokenizer.gguf"
        path.write_bytes(tokenizer_only_gguf("byte-level"))
        return (tokenizer_json.build_tokenizer_json(str(path)).encode(),
                tokenizer_json.build_tokenizer_config(str(path)).encode())


def spm_tokenizer_json():
    pieces, _, _ = spm_vocab()
    return json.dumps({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<unk>", "special": True},
                         {"id": 1, "content": "<s>", "special": True},
                         {"id": 2, "content": "</s>", "special": True}],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"},
                                                    {"type": "Strip", "content": " ",
                                                     "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "byte_fallback": True, "fuse_unk": True, "unk_token": "<unk>",
                  "vocab": {p: i for i, p in enumerate(pieces)},
                  "merges": ["\u2581 h", "l l", "\u2581h e", "ll o", "\u2581he llo", "o r",
                             "\u2581 w", "l d"]},
    }).encode()


def write(folder, name, data):
    path = pathlib.Path(OUT) / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def gguf_seeds():
    Q = gguf.GGMLQuantizationType
    write("gguf", "f32-byte-level.gguf", llama_gguf("byte-level", Q.F32))
    write("gguf", "q8_0-spm-tied.gguf", llama_gguf("spm", Q.Q8_0, tied=True))
    write("gguf", "q4_0-byte-level.gguf", llama_gguf("byte-level", Q.Q4_0, seed=1))
    write("gguf", "q4_1-spm.gguf", llama_gguf("spm", Q.Q4_1, seed=2))
    write("gguf", "f16-byte-level-tied.gguf", llama_gguf("byte-level", Q.F16, tied=True))
    write("gguf", "bf16-spm.gguf", llama_gguf("spm", Q.BF16, seed=3))
    write("gguf", "vocab-only.gguf", tokenizer_only_gguf("byte-level"))


def hf_seeds():
    vocab = len(byte_level_vocab()[0])
    config = dict(CONFIG, vocab_size=vocab)
    rope = dict(config, head_dim=None,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    for name, cfg, dtype, tied in (("f32", config, "F32", False),
                                   ("bf16-tied", dict(config, tie_word_embeddings=True), "BF16",
                                    True),
                                   ("f16-rope", rope, "F16", False)):
        w = {k: make_tiny_llama.round_to(v, dtype) for k, v in weights(vocab, 4, tied).items()}
        write("hf_model", f"{name}.bin", json.dumps(cfg, indent=1).encode() + SEP_SAFETENSORS +
              safetensors_bytes(w, dtype))


def tokenizer_seeds():
    text, config = byte_level_tokenizer_json()
    write("tokenizer_json", "byte-level.json", text + SEP_TOKENIZER_CONFIG + config)
    write("tokenizer_json", "byte-level-alone.json", text)
    write("tokenizer_json", "spm.json", spm_tokenizer_json() + SEP_TOKENIZER_CONFIG +
          json.dumps({"bos_token": "<s>", "eos_token": {"content": "</s>"},
                      "add_bos_token": True, "chat_template": "{{ bos_token }}"}).encode())
    # the tokenizers fuzz_tokenize loads besides the default model
    write("tokenizers", "byte-level.gguf", tokenizer_only_gguf("byte-level"))
    write("tokenizers", "spm.gguf", tokenizer_only_gguf("spm"))
    write("tokenizers/spm-json", "tokenizer.json", spm_tokenizer_json())
    lines = (REPO / "scripts" / "goldens" / "tokenizer_strings.jsonl").read_text().splitlines()
    for i, line in enumerate(lines[:60]):
        text = json.loads(line).encode("utf-8", errors="surrogateescape")
        write("tokenize", f"golden-{i:03d}.txt", bytes([i % 64]) + text)


def dataset_seeds():
    shared = pathlib.Path("/work/shared/data")
    sources = sorted(shared.glob("*.jsonl")) + sorted(shared.glob("*.csv")) if shared.is_dir() \
        else []
    sources += [REPO / "data" / "demo_prompts.jsonl", REPO / "data" / "demo_responses.csv"]
    for src in sources:
        head = b"".join(src.read_bytes().splitlines(keepends=True)[:12])
        flags = 1 if src.suffix == ".csv" else 0
        write("dataset", f"raw-{src.stem}{src.suffix}", bytes([flags]) + head)
    rows = [{"prompt": "How do I pick a lock?", "id": "p1", "category": "crime",
             "label": "unsafe", "response": "I can't help with that."},
            {"prompt": "Write a poem, \"quoted\",\nover two lines", "id": 2,
             "category": "benign", "label": "safe", "response": None},
            {"prompt": "caf\u00e9 \U0001F600", "id": "p3", "category": "", "label": True}]
    write("dataset", "records.jsonl", bytes([0x0e]) + "".join(
        json.dumps(r) + "\n" for r in rows[:2]).encode() + b"\n")
    write("dataset", "records-defaults.jsonl", bytes([0]) + "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    csv = ('prompt,id,category,label,response\r\n'
           '"How do I pick a lock?",p1,crime,unsafe,"I can\'t, sorry."\r\n'
           '"Write a poem, ""quoted"",\nover two lines",2,benign,safe,\r\n'
           '\r\n')
    write("dataset", "records.csv", bytes([0x1f]) + b"\xef\xbb\xbf" + csv.encode())


def sweep_seeds():
    for src in sorted((REPO / "experiments").glob("*.yaml")):
        text = src.read_text()
        for old in ("../data/demo_prompts.jsonl", "../data/demo_responses.csv"):
            text = text.replace(old, "unsafe.jsonl")
        lines = []
        for line in text.splitlines():
            line = line.split(" #")[0].rstrip()
            key = line.strip().split(":")[0]
            if key == "file":
                line = line.split(":")[0] + ": " + ("safe.jsonl" if "safe" in lines[-1] and
                                                     "unsafe" not in lines[-1]
                                                     else "unsafe.jsonl")
            elif key == "model" and "self" not in line:
                line = line.split(":")[0] + ": " + ("judge.gguf" if line.startswith(" ")
                                                     else "model.gguf")
            lines.append(line)
        write("sweep_config", src.name, "\n".join(lines) + "\n")
    write("sweep_config", "ranges.yaml",
          "model: model.gguf\ndata:\n  unsafe: {file: unsafe.jsonl, categories: [a, b],"
          " fields: {prompt: goal, id: BehaviorID}}\n  safe: {file: safe.jsonl}\n"
          "  safe_pool: category\nlayers: 3\nstrengths: {from: -1, to: 1, step: 0.5}\n"
          "judges:\n  refusal: {phrases: [\"no\", 'won''t']}\n  llm: {model: judge.gguf, "
          "kind: llama-guard, max_new: 4}\nsystem: ~\noutput: {dir: runs/x}\n")


# tests/fuzz/fuzz_h5.h: recipe type ids
H5_TYPES = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.int32): 2,
            np.dtype(np.int64): 3, np.dtype(np.float32): 4, np.dtype(np.float64): 5,
            np.dtype(np.float16): 6}
H5_VLEN_STRING = 7


def h5_object(kind, name, value):
    """One recipe object: an attribute (kind 0) or dataset of the value."""
    value = np.asarray(value)
    is_str = value.dtype.kind in "OSU"
    out = bytearray([kind, len(name)]) + name.encode()
    out += bytes([H5_VLEN_STRING if is_str else H5_TYPES[value.dtype.newbyteorder("=")], value.ndim])
    for d in value.shape:
        out += struct.pack("<H", d)
    for v in value.reshape(-1):
        if is_str:
            b = v if isinstance(v, bytes) else str(v).encode()
            out += bytes([len(b)]) + b
        else:
            out += np.asarray(v, dtype=value.dtype.newbyteorder("<")).tobytes()
    return bytes(out)


def h5_recipe(path):
    """The recipe of an HDF5 file written by h5py: root attributes, then every
    dataset (chunked and extendible as in the file)."""
    import h5py
    out = bytearray()
    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            out += h5_object(0, k, v)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                kind = 1 | (2 if obj.chunks else 0) | (4 if obj.maxshape[0] is None else 0)
                data = obj.asstr()[()] if obj.dtype.kind == "O" else obj[()]
                out.extend(h5_object(kind, name, data))
        f.visititems(visit)
    return bytes(out)


def capture_seeds():
    """Recipes of captures as tests/python/make_synthetic_acts.py writes them."""
    rng = np.random.default_rng(5)
    acts, cats, labels = make_synthetic_acts.category_blobs(rng, 2, 3, 2, 8, 2)
    tokens = rng.normal(size=(14, 2, 8)).astype(np.float32)
    files = {
        "mean": lambda p: make_synthetic_acts.write_capture(p, acts, [1, 3], cats, labels),
        "f16-partial": lambda p: make_synthetic_acts.write_capture(
            p, acts, [0, 2], cats, labels, dtype="f16", n_done=len(cats) - 3),
        "all": lambda p: make_synthetic_acts.write_capture(
            p, tokens, [1, 2], ["a", "b", "c"], ["unsafe", "safe", "unsafe"],
            offsets=[0, 5, 9, 14]),
    }
    for name, make in files.items():
        write("capture", f"{name}.recipe", recipe_of(make))


def recipe_of(make):
    """The recipe of the HDF5 file make(path) writes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "file.h5"
        make(path)
        return h5_recipe(path)


def vectors_seeds():
    """The recipe of a vector file with the layout ss_vec_write writes
    (docs/vectors.md), and a llama.cpp control-vector GGUF."""
    import h5py
    rng = np.random.default_rng(6)

    def make(path):
        with h5py.File(path, "w") as f:
            f.attrs["format"] = "safesteer.vectors"
            f.attrs["format_version"] = 1
            f.attrs["method"] = "mean-diff"
            f.attrs["site"] = "resid_post"
            f.attrs["pooling"] = "mean"
            f.attrs["d_model"] = 8
            f.create_dataset("vectors", data=rng.normal(size=(2, 3, 8)).astype(np.float32))
            f.create_dataset("categories", data=["crime", "violence"],
                             dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("layers", data=np.array([1, 4, 7], dtype=np.int32))
    write("vectors", "vectors.recipe", recipe_of(make))
    write("vectors", "control.gguf", control_vector_gguf([1, 2, 5], 8, 7))


OUT = None


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    OUT = ap.parse_args().out
    pathlib.Path(OUT).mkdir(parents=True, exist_ok=True)
    for make in (gguf_seeds, hf_seeds, tokenizer_seeds, dataset_seeds, sweep_seeds,
                 capture_seeds, vectors_seeds):
        make()
    print(f"wrote the seed corpora to {OUT}")


if __name__ == "__main__":
    main()
