#!/usr/bin/env python3
"""Golden greedy continuations and next-token log-probabilities of the default
model from an independent implementation: llama.cpp through the PyPI package
llama-cpp-python, on the same GGUF file.

Recipe (slow: llama-cpp-python builds llama.cpp from source):
    python3 -m pip install llama-cpp-python==0.3.36
    python3 scripts/goldens/make_forward_goldens.py \
        --model ~/.cache/safesteer/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --out tests/golden/forward_smollm2.json \
        --out-f32 tests/golden/forward_smollm2_f32.json

Two golden files come out of one run:
  --out       llama.cpp on the Q4_1 GGUF as it is.  llama.cpp rounds the
              activations to 8 bits (q8_1) before each Q4_1 product, so its
              logits differ a little from an f32 computation on the same
              weights; greedy paths can part at near-ties.
  --out-f32   llama.cpp on an F32 copy of the same weights (every tensor
              dequantised by the gguf package, metadata copied) with an F32
              KV cache: the same function our CPU engine computes, so logits
              must agree closely and greedy paths must be identical.

For each prompt the file records the prompt's token ids (chat prompts are
rendered with the GGUF's own Jinja chat template via jinja2), the greedy
continuation (up to 32 tokens, stopping at <|endoftext|> / <|im_end|>), and
the top-8 log-probabilities at every step (step 0 = the prompt's next-token
distribution), so a test can tell a real mismatch from a near-tie.
"""
import argparse
import json
import math

import os
import tempfile

import gguf
import jinja2
import llama_cpp
import numpy as np

PROMPTS = [
    {"text": "The capital of France is", "chat": False},
    {"text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", "chat": False},
    {"text": "Once upon a time, in a small village by the sea,", "chat": False},
    {"text": "What are three tips for staying healthy?", "chat": True},
    {"text": "Explain why the sky is blue in one paragraph.", "chat": True},
    {"text": "How can I stay safe when walking home alone at night?", "chat": True},
    {"text": "Translate to French: I would like a cup of coffee, please.", "chat": True},
]
STEPS = 32
TOP = 8


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - (m + math.log(np.exp(x - m).sum()))


def write_f32_copy(src, dst):
    """Copies src GGUF to dst with every tensor dequantised to F32."""
    reader = gguf.GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        if name == "general.file_type":
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        writer.add_tensor(t.name, data.reshape([int(d) for d in reversed(t.shape)]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def run_oracle(model_path, threads, kv_f32):
    kv = {"type_k": 0, "type_v": 0} if kv_f32 else {}  # 0 = GGML_TYPE_F32
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=1024, n_threads=threads,
                          logits_all=True, verbose=False, seed=0, **kv)
    template = jinja2.Environment().from_string(
        llm.metadata["tokenizer.chat_template"])
    stop_ids = {llm.token_eos(), llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0],
                llm.tokenize(b"<|endoftext|>", add_bos=False, special=True)[0]}
    records = []
    for p in PROMPTS:
        if p["chat"]:
            text = template.render(messages=[{"role": "user", "content": p["text"]}],
                                   add_generation_prompt=True)
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        else:
            ids = llm.tokenize(p["text"].encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(ids)
        gen, steps = [], []
        stopped = False
        for _ in range(STEPS):
            lp = log_softmax(llm.scores[llm.n_tokens - 1])
            top = np.argsort(-lp, kind="stable")[:TOP]
            steps.append({"top_ids": [int(i) for i in top],
                          "top_logprobs": [float(lp[i]) for i in top]})
            nxt = int(top[0])
            if nxt in stop_ids:
                stopped = True
                break
            gen.append(nxt)
            llm.eval([nxt])
        records.append({"prompt": p["text"], "chat": p["chat"], "prompt_ids": ids,
                        "ids": gen, "stopped": stopped, "steps": steps,
                        "text": llm.detokenize(gen).decode("utf-8", "replace")})
        print(f"{p['text'][:40]!r}: {len(ids)} prompt tokens -> {records[-1]['text'][:60]!r}")
    return records


def save(path, records, model, weights):
    meta = {"oracle": f"llama-cpp-python {llama_cpp.__version__}",
            "model": os.path.basename(model), "weights": weights, "greedy_steps": STEPS,
            "top": TOP}
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": records}, f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--out-f32", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    save(args.out, run_oracle(args.model, args.threads, kv_f32=False), args.model,
         "as stored (Q4_1/Q8_0/F32); llama.cpp default f16 KV cache")
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "model-f32.gguf")
        write_f32_copy(args.model, f32)
        save(args.out_f32, run_oracle(f32, args.threads, kv_f32=True), args.model,
             "dequantised to F32 by the gguf package; F32 KV cache")


if __name__ == "__main__":
    main()
