#!/usr/bin/env python3
"""Write one tiny random Llama twice: as a Hugging Face folder (config.json,
model.safetensors, tokenizer files) and as an F32 GGUF, converted the way
llama.cpp's convert_hf_to_gguf.py does it (Q/K rows permuted so rotary
pairs become (2i, 2i+1); Llama-3 rope scaling stored as the per-frequency
tensor rope_freqs.weight).  Loading both through safesteer must give the
same logits; tests/python/test_loader_agreement.py checks that.

The tokenizer is the default model's (SmolLM2, vocab 49152): its GGUF
tokenizer metadata is copied, and tokenizer.json is built from it with
scripts/goldens/tokenizer_json.py.

    python3 tests/python/make_tiny_llama.py --out DIR [--tokenizer-from M.gguf]
writes DIR/tiny-llama-hf/ and DIR/tiny-llama.gguf.
"""
import argparse
import json
import math
import os
import pathlib
import struct
import sys

import numpy as np
import gguf

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "goldens"))
sys.path.insert(0, str(REPO / "scripts" / "reference"))
import llama_numpy  # noqa: E402  (bf16 rounding)
try:
    import tokenizer_json  # build_tokenizer_json / read_gguf_metadata
except ImportError:  # the HF folder then gets no tokenizer.json
    tokenizer_json = None

# Sizes: GQA (4 query heads on 2 kv heads), head_dim 16, untied lm_head and
# Llama-3.1 style rope scaling.  high_freq_factor 16 puts two of the eight
# rotary frequencies in the smoothing band, which the GGUF loader needs to
# recover the llama3 parameters from rope_freqs.weight.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "vocab_size": 49152,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 16.0, "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def default_gguf():
    if os.environ.get("SAFESTEER_MODEL"):
        return pathlib.Path(os.environ["SAFESTEER_MODEL"])
    cache = os.environ.get("SAFESTEER_CACHE") or os.path.expanduser("~/.cache/safesteer")
    return pathlib.Path(cache) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def random_weights(seed):
    """HF-named float32 arrays in HF shapes ([out, in])."""
    c = CONFIG
    rng = np.random.default_rng(seed)
    d, hd, ff, v = c["hidden_size"], c["head_dim"], c["intermediate_size"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]

    def lin(out, inp):  # scaled so activations keep unit size through the layers
        return (rng.standard_normal((out, inp)) / math.sqrt(inp)).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, d)).astype(np.float32)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = norm()
        w[p + "self_attn.q_proj.weight"] = lin(nh * hd, d)
        w[p + "self_attn.k_proj.weight"] = lin(nkv * hd, d)
        w[p + "self_attn.v_proj.weight"] = lin(nkv * hd, d)
        w[p + "self_attn.o_proj.weight"] = lin(d, nh * hd)
        w[p + "post_attention_layernorm.weight"] = norm()
        w[p + "mlp.gate_proj.weight"] = lin(ff, d)
        w[p + "mlp.up_proj.weight"] = lin(ff, d)
        w[p + "mlp.down_proj.weight"] = lin(d, ff)
    w["model.norm.weight"] = norm()
    w["lm_head.weight"] = (4.0 * lin(v, d))  # logits spread over a few nats
    return w


def round_to(arr, dtype):
    """float32 values exactly representable in dtype (F32, F16, BF16; nearest,
    ties to even), so a copy stored as F32 holds the same numbers."""
    if dtype == "F16":
        return arr.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return llama_numpy.bf16(arr).astype(np.float32)
    return arr


def encode(arr, dtype):
    """Little-endian bytes of float32 arr (already round_to dtype) as dtype."""
    if dtype == "F16":
        return np.ascontiguousarray(arr, dtype="<f2").tobytes()
    if dtype == "BF16":
        u = np.ascontiguousarray(arr, dtype="<f4").view("<u4")
        return (u >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(arr, dtype="<f4").tobytes()


def write_safetensors(path, tensors, dtype="F32"):
    """The safetensors format: u64 header length, JSON header, raw data."""
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, arr in tensors.items():
        data = encode(arr, dtype)
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def permute_qk(w, n_head):
    """llama.cpp's Q/K row permutation: within each head, rows (i, i + hd/2)
    become neighbours (2i, 2i + 1)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors():
    """Per-frequency factors as convert_hf_to_gguf.py writes rope_freqs.weight."""
    c, rs = CONFIG, CONFIG["rope_scaling"]
    hd, base = c["head_dim"], c["rope_theta"]
    orig, low, high, factor = (rs["original_max_position_embeddings"], rs["low_freq_factor"],
                               rs["high_freq_factor"], rs["factor"])
    out = []
    for i in range(0, hd, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / hd))
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_tensors(w):
    c = CONFIG
    out = {"token_embd.weight": w["model.embed_tokens.weight"],
           "output_norm.weight": w["model.norm.weight"],
           "output.weight": w["lm_head.weight"],
           "rope_freqs.weight": llama3_rope_factors()}
    for l in range(c["num_hidden_layers"]):
        for hf, gg in GGUF_NAMES.items():
            arr = w[f"model.layers.{l}.{hf}.weight"]
            if gg == "attn_q":
                arr = permute_qk(arr, c["num_attention_heads"])
            elif gg == "attn_k":
                arr = permute_qk(arr, c["num_key_value_heads"])
            out[f"blk.{l}.{gg}.weight"] = arr
    return out


def read_tokenizer_metadata(src):
    """tokenizer.* keys of the source GGUF as plain Python values."""
    if tokenizer_json is not None:
        md = tokenizer_json.read_gguf_metadata(src)
        return {k: v for k, v in md.items() if k.startswith("tokenizer.")}
    r = gguf.GGUFReader(src)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.")}


def add_tokenizer(writer, md):
    def enc(s):
        return s.encode("utf-8", errors="surrogateescape")

    writer.add_tokenizer_model(md["tokenizer.ggml.model"])
    writer.add_tokenizer_pre(md["tokenizer.ggml.pre"])
    writer.add_token_list([enc(t) for t in md["tokenizer.ggml.tokens"]])
    writer.add_token_types(list(md["tokenizer.ggml.token_type"]))
    writer.add_token_merges([enc(m) for m in md["tokenizer.ggml.merges"]])
    for key, add in (("bos_token_id", writer.add_bos_token_id),
                     ("eos_token_id", writer.add_eos_token_id),
                     ("unknown_token_id", writer.add_unk_token_id),
                     ("padding_token_id", writer.add_pad_token_id)):
        if "tokenizer.ggml." + key in md:
            add(int(md["tokenizer.ggml." + key]))
    if "tokenizer.ggml.add_bos_token" in md:
        writer.add_add_bos_token(bool(md["tokenizer.ggml.add_bos_token"]))
    if "tokenizer.ggml.add_space_prefix" in md:
        writer.add_add_space_prefix(bool(md["tokenizer.ggml.add_space_prefix"]))
    if "tokenizer.chat_template" in md:
        writer.add_chat_template(md["tokenizer.chat_template"])


def write_gguf(path, w, tok_md):
    c = CONFIG
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_key_length(c["head_dim"])
    writer.add_value_length(c["head_dim"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_vocab_size(c["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    add_tokenizer(writer, tok_md)
    for name, arr in gguf_tensors(w).items():
        writer.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_hf(folder, w, src, dtype="F32"):
    """config.json, model.safetensors (tensors stored as dtype) and, when the
    tokenizer_json helper is importable, tokenizer.json +
    tokenizer_config.json.  Returns whether the tokenizer files were written."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=2))
    write_safetensors(folder / "model.safetensors", w, dtype)
    if tokenizer_json is None:
        return False
    (folder / "tokenizer.json").write_text(tokenizer_json.build_tokenizer_json(src),
                                           encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(tokenizer_json.build_tokenizer_config(src),
                                                  encoding="utf-8")
    return True


def make(out_dir, src=None, seed=0, dtype="F32"):
    """Writes both copies, the HF one stored as dtype and the GGUF one as F32
    holding the same values; returns (hf_folder, gguf_path, has_hf_tokenizer)."""
    out_dir = pathlib.Path(out_dir)
    src = pathlib.Path(src or default_gguf())
    w = {name: round_to(arr, dtype) for name, arr in random_weights(seed).items()}
    hf, gg = out_dir / "tiny-llama-hf", out_dir / "tiny-llama.gguf"
    has_tok = write_hf(hf, w, src, dtype)
    write_gguf(gg, w, read_tokenizer_metadata(src))
    return hf, gg, has_tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--tokenizer-from", help="GGUF whose tokenizer is copied "
                    "(default: the default model)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    hf, gg, has_tok = make(a.out, a.tokenizer_from, a.seed)
    print(f"wrote {hf} and {gg}")
    if not has_tok:
        print("note: scripts/goldens/tokenizer_json.py not found; the Hugging Face folder "
              "has no tokenizer.json", file=sys.stderr)


if __name__ == "__main__":
    main()
