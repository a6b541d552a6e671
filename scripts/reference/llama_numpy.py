#!/usr/bin/env python3
"""An independent Llama forward in float64 numpy over a GGUF file, exact or
with the CUDA engine's bf16 rounding.

tests/python/test_reference_forward.py checks the CPU engine's logits and
every layer's hidden states against the exact mode.  Run as a script, it
prints the error budget of bf16 arithmetic on the device test's prompt:
what the CPU/CUDA device tests (tests/device/) must allow.

The CUDA engine rounds to bf16 at exactly these points (cuda/engine_cuda.cu):
weight matrices and the embedding table, every matmul input (normed
activations, attention output, SwiGLU output) and the K/V cache; everything
else (residual stream, norms, softmax, accumulation) is f32.  `jitter`
perturbs each activation by a relative N(0, jitter) before it is rounded:
the size of the summation-order differences between two correct bf16
engines, so two jittered runs show how far those alone carry.

    .venv/bin/python scripts/reference/llama_numpy.py [MODEL.gguf] [--tokens 1,504,...]
"""
import argparse
import os

import gguf
import numpy as np

DEVICE_TEST_TOKENS = "1,504,2683,314,253,1345,30,216,9"  # tests/device/test_cuda_capture.c


def bf16(x):
    """Round-to-nearest-even to bf16 (via f32, as the engines hold it), as float64."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def field(reader, key):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0] == gguf.GGUFValueType.STRING else v.item()


def load(path):
    """(config dict, {tensor name: float64 array [out][in]}) of a GGUF file."""
    r = gguf.GGUFReader(path)
    arch = field(r, "general.architecture")
    cfg = {k: field(r, f"{arch}.{k}") for k in
           ("block_count", "embedding_length", "attention.head_count",
            "attention.head_count_kv", "attention.layer_norm_rms_epsilon")}
    base = f"{arch}.rope.freq_base"
    cfg["rope.freq_base"] = field(r, base) if base in r.fields else 10000.0
    w = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        w[t.name] = a.reshape([int(n) for n in reversed(t.shape)])
    w.setdefault("output.weight", w["token_embd.weight"])
    return cfg, w


def forward(cfg, w, toks, rounded=False, jitter=0.0, seed=0, steer=None, blocks=None):
    """Hidden states after each block [n_layers][T][d] and the last token's
    logits [vocab]; rounded: bf16 where the CUDA engine rounds.  steer:
    None, one entry {"site", "layer", "vec", "alpha", "op": "add" | "ablate",
    "begin"} or a list of them, the steering of docs/steering.md at positions
    >= begin (entries at one site and layer apply in list order).  blocks:
    a dict to receive the attention and MLP block outputs (capture sites
    attn_out, mlp_out), each [n_layers][T][d]."""
    L, d = cfg["block_count"], cfg["embedding_length"]
    H, KVH = cfg["attention.head_count"], cfg["attention.head_count_kv"]
    hd, eps = d // H, cfg["attention.layer_norm_rms_epsilon"]
    rng = np.random.default_rng(seed)
    rw = bf16 if rounded else (lambda a: a)  # stored weights

    def ra(a):  # an activation as stored for a matmul or the cache
        if not rounded:
            return a
        return bf16(a * (1 + jitter * rng.standard_normal(a.shape)) if jitter else a)

    T = len(toks)
    ang = np.outer(np.arange(T), cfg["rope.freq_base"] ** (-np.arange(0, hd, 2) / hd))
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # GGUF llama layout: rotate pairs (2i, 2i+1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def lin(x, name):
        return ra(x) @ rw(w[name]).T

    entries = [] if steer is None else [steer] if isinstance(steer, dict) else list(steer)

    def steered(a, site, layer):  # a [T][d] at one site, steered in place
        for e in entries:
            if e["site"] != site or e["layer"] != layer:
                continue
            rows = a[e["begin"]:]
            v = np.asarray(e["vec"], np.float64)
            if e["op"] == "add":
                rows += e["alpha"] * v
            else:
                u = v / np.linalg.norm(v)
                rows -= np.outer(rows @ u, u)
        return a

    x = rw(w["token_embd.weight"][toks])
    hidden, attn_out, mlp_out = [], [], []
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        p = f"blk.{l}."
        h = norm(x, w[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q.weight").reshape(T, H, hd))
        k = ra(rope(lin(h, p + "attn_k.weight").reshape(T, KVH, hd)))
        v = ra(lin(h, p + "attn_v.weight").reshape(T, KVH, hd))
        att = np.empty((T, H, hd))
        for j in range(H):
            s = q[:, j] @ k[:, j // (H // KVH)].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, j] = (s / s.sum(-1, keepdims=True)) @ v[:, j // (H // KVH)]
        attn_out.append(steered(lin(att.reshape(T, -1), p + "attn_output.weight"),
                                "attn_out", l))
        x = x + attn_out[-1]
        h = norm(x, w[p + "ffn_norm.weight"])
        gate, up = lin(h, p + "ffn_gate.weight"), lin(h, p + "ffn_up.weight")
        mlp_out.append(steered(lin(gate / (1 + np.exp(-gate)) * up, p + "ffn_down.weight"),
                               "mlp_out", l))
        x = steered(x + mlp_out[-1], "resid_post", l)
        hidden.append(x.copy())
    logits = lin(norm(x[-1], w["output_norm.weight"]), "output.weight")
    if blocks is not None:
        blocks["attn_out"], blocks["mlp_out"] = np.array(attn_out), np.array(mlp_out)
    return np.array(hidden), logits


def log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def kl(ref_logits, logits):
    """KL(softmax(ref) || softmax(logits)) in nats."""
    rp, lp = log_softmax(ref_logits), log_softmax(logits)
    return float((np.exp(rp) * (rp - lp)).sum())


def row_errors(h, ref):
    """Relative L2 error of every row [n_layers][T]."""
    return np.linalg.norm(h - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


def main():
    ap = argparse.ArgumentParser(description="bf16 error budget of a GGUF model")
    ap.add_argument("model", nargs="?", default=os.path.join(
        os.environ.get("SAFESTEER_CACHE", os.path.expanduser("~/.cache/safesteer")),
        "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tokens", default=DEVICE_TEST_TOKENS)
    a = ap.parse_args()
    toks = [int(t) for t in a.tokens.split(",")]
    cfg, w = load(a.model)
    ref_h, ref_l = forward(cfg, w, toks)
    print(f"{a.model}, {len(toks)} tokens; row norms at the last layer "
          f"{np.round(np.linalg.norm(ref_h[-1], axis=-1), 1)}")
    print(f"{'comparison':34} {'worst row':>9} {'logits relL2':>12} {'KL':>9} {'top-1':>11}")

    def line(name, h, lg, base_h, base_l):
        rel_l = np.linalg.norm(lg - base_l) / np.linalg.norm(base_l)
        print(f"{name:34} {row_errors(h, base_h).max():9.4f} {rel_l:12.4f} "
              f"{kl(base_l, lg):9.2e} {int(np.argmax(base_l)):5d}/{int(np.argmax(lg)):<5d}")

    b_h, b_l = forward(cfg, w, toks, rounded=True)
    line("bf16 vs exact", b_h, b_l, ref_h, ref_l)
    for seed in (1, 2):
        j_h, j_l = forward(cfg, w, toks, rounded=True, jitter=1e-7, seed=seed)
        line(f"bf16 jittered 1e-7 (seed {seed}) vs bf16", j_h, j_l, b_h, b_l)
    top = np.sort(ref_l)[::-1]
    print(f"exact top-2 logit gap {top[0] - top[1]:.3f}")


if __name__ == "__main__":
    main()
