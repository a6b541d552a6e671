#!/usr/bin/env python3
"""CPU speed of safesteer beside llama.cpp (llama-cpp-python), same GGUF, same
threads, same prompt tokens, measured in one run.  A benchmark, not a test.

    python3 scripts/bench/cpu_vs_llamacpp.py [--model M] [--threads 2]
        [--prompt-tokens 512] [--decode 64] [--repeats 3]

Prefill: tokens/s for a --prompt-tokens prompt (Alpaca instructions joined,
cut to length).  Decode: tokens/s over --decode greedy steps after it.  Each
side runs --repeats times; the median is reported.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import time

REPO = pathlib.Path(__file__).resolve().parents[2]


def default_model():
    cache = os.environ.get("SAFESTEER_CACHE") or os.path.expanduser("~/.cache/safesteer")
    return os.environ.get("SAFESTEER_MODEL") or f"{cache}/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def prompt_text(shared):
    lines = [json.loads(l) for l in open(shared / "alpaca_instructions.jsonl")]
    return "\n".join(l["prompt"] for l in lines[:400])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--bin", default=str(REPO / "build" / "safesteer"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args()

    import llama_cpp
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=args.prompt_tokens + args.decode + 8,
                          n_batch=args.prompt_tokens, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    ids = llm.tokenize(prompt_text(pathlib.Path(args.shared)).encode(), add_bos=False)
    ids = ids[:args.prompt_tokens]
    text = llm.detokenize(ids).decode("utf-8", "ignore")

    ours_pf, ours_dec, ref_pf, ref_dec = [], [], [], []
    for _ in range(args.repeats):
        out = subprocess.run([args.bin, "generate", "--model", args.model, "--prompt", text,
                              "--max-new", str(args.decode), "--threads", str(args.threads),
                              "--json", "--ctx", str(args.prompt_tokens + args.decode + 8)],
                             capture_output=True, text=True, check=True)
        t = json.loads(out.stdout)["timing"]
        ours_pf.append(t["prefill_tokens"] / t["prefill_seconds"])
        ours_dec.append(t["decode_tokens"] / t["decode_seconds"])

        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        for _ in range(args.decode):
            nxt = llm.sample(temp=0.0)
            llm.eval([nxt])
        t2 = time.perf_counter()
        ref_pf.append(len(ids) / (t1 - t0))
        ref_dec.append(args.decode / (t2 - t1))
    rows = [("prefill tok/s", statistics.median(ours_pf), statistics.median(ref_pf)),
            ("decode tok/s", statistics.median(ours_dec), statistics.median(ref_dec))]
    print(f"model {pathlib.Path(args.model).name}, {len(ids)}-token prompt, {args.decode} "
          f"decode steps, {args.threads} threads, median of {args.repeats}")
    print(f"{'':16}{'safesteer':>12}{'llama.cpp':>12}{'ratio':>8}")
    for name, ours, ref in rows:
        print(f"{name:16}{ours:12.1f}{ref:12.1f}{ours / ref:8.2f}")


if __name__ == "__main__":
    main()
