"""The CPU engine against llama.cpp (goldens from llama-cpp-python on the same
GGUF, see scripts/goldens/make_forward_goldens.py).

- Prompt token ids must be identical (tokenizer + chat template).
- The greedy continuation must be identical, except that once the two
  implementations reach a step where llama.cpp's top-2 log-probabilities are
  within NEAR_TIE of each other they may legitimately pick different tokens;
  the comparison stops there (the test reports it).
- Log-probabilities of llama.cpp's top-8 tokens at every compared step agree
  within LOGPROB_TOL (llama.cpp multiplies Q4_1 weights by activations it
  rounds to 8 bits; we dequantise to f32, hence a small tolerance).
"""
import json

import pytest

from conftest import GOLDEN, run_json

NEAR_TIE = 0.15
LOGPROB_TOL = 0.08

GOLDEN_FILE = GOLDEN / "forward_smollm2.json"


def records():
    return json.loads(GOLDEN_FILE.read_text())["records"]


@pytest.mark.parametrize("rec", records(), ids=lambda r: r["prompt"][:24])
def test_greedy_matches_llama_cpp(safesteer_bin, default_model, rec):
    args = ["generate", "--model", default_model, "--prompt", rec["prompt"], "--max-new",
            len(rec["steps"]), "--logprobs", 8, "--json", "--threads", 2]
    if rec["chat"]:
        args.append("--chat")
    out = run_json(safesteer_bin, *args)
    assert out["prompt_ids"] == rec["prompt_ids"]

    ours_steps = out["logprobs"]
    compared = 0
    for s, gold in enumerate(rec["steps"]):
        assert s < len(ours_steps), f"we stopped after {s} steps, llama.cpp went on"
        ours = dict(zip(ours_steps[s]["top_ids"], ours_steps[s]["top_logprobs"]))
        for tid, glp in zip(gold["top_ids"], gold["top_logprobs"]):
            if tid in ours:
                assert abs(ours[tid] - glp) < LOGPROB_TOL, (
                    f"step {s} token {tid}: ours {ours[tid]:.4f} vs llama.cpp {glp:.4f}")
        compared += 1
        our_pick = ours_steps[s]["top_ids"][0]
        if our_pick != gold["top_ids"][0]:
            gap = gold["top_logprobs"][0] - gold["top_logprobs"][1]
            assert gap < NEAR_TIE, (f"step {s}: we pick {our_pick}, llama.cpp "
                                    f"{gold['top_ids'][0]} with a clear margin {gap:.3f}")
            return  # a near-tie: the continuations may part here
    assert out["ids"] == rec["ids"]
    assert (out["stop_reason"] == "eos") == rec["stopped"]
    assert compared == len(rec["steps"])
