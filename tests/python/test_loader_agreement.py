"""The same tiny random Llama as a Hugging Face folder (safetensors stored as
F32, BF16 or F16) and as a llama.cpp-style F32 GGUF holding the same values
(Q/K rows permuted, llama3 rope scaling as rope_freqs.weight; see
make_tiny_llama.py) must give the same next-token distribution through
`safesteer generate`: the greedy ids agree and the top-K log-probabilities
of every step agree within 1e-4.

A control GGUF written WITHOUT the Q/K permutation must disagree, which shows
the comparison is sensitive to the rotary pairing each loader reports.
"""
import subprocess

import numpy as np
import pytest

import make_tiny_llama
from conftest import run_json

PROMPT = "The quick brown fox jumps over the lazy dog because"
TOL = 1e-4
TOP_K = 8
STEPS = 4


@pytest.fixture(scope="module")
def generate_available(safesteer_bin):
    proc = subprocess.run([str(safesteer_bin), "generate", "--help"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("this safesteer has no `generate` command yet")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, default_model):
    if make_tiny_llama.tokenizer_json is None:
        pytest.skip("scripts/goldens/tokenizer_json.py is missing: the HF folder would have "
                    "no tokenizer.json")
    return make_tiny_llama.make(tmp_path_factory.mktemp("tiny"), default_model)


@pytest.fixture(scope="module", params=["F32", "BF16", "F16"])
def tiny_stored_as(request, tmp_path_factory, default_model):
    if make_tiny_llama.tokenizer_json is None:
        pytest.skip("scripts/goldens/tokenizer_json.py is missing: the HF folder would have "
                    "no tokenizer.json")
    return make_tiny_llama.make(tmp_path_factory.mktemp("tiny"), default_model,
                                dtype=request.param)


def generate(binary, model):
    return run_json(binary, "generate", "--model", model, "--prompt", PROMPT, "--max-new", STEPS,
                    "--logprobs", TOP_K, "--json", "--threads", 2)


def first_step_gap(a, b):
    """Largest |logprob difference| over the first step's top-K of a."""
    la, lb = a["logprobs"][0], b["logprobs"][0]
    other = dict(zip(lb["top_ids"], lb["top_logprobs"]))
    return max(abs(lp - other.get(i, -np.inf)) for i, lp in zip(la["top_ids"], la["top_logprobs"]))


def test_hf_and_gguf_agree(safesteer_bin, generate_available, tiny_stored_as):
    hf, gg, _ = tiny_stored_as
    a, b = generate(safesteer_bin, hf), generate(safesteer_bin, gg)
    assert a["prompt_ids"] == b["prompt_ids"]
    assert len(a["prompt_ids"]) > 5  # several positions, so rotary pairing matters
    assert a["ids"] == b["ids"], "greedy continuations differ"
    for s, (sa, sb) in enumerate(zip(a["logprobs"], b["logprobs"])):
        assert sa["top_ids"] == sb["top_ids"], f"step {s}: top-{TOP_K} ids differ"
        diff = np.abs(np.array(sa["top_logprobs"]) - np.array(sb["top_logprobs"])).max()
        assert diff <= TOL, f"step {s}: log-probabilities differ by {diff:.2e} (> {TOL})"


def test_unpermuted_gguf_disagrees(safesteer_bin, generate_available, tiny, default_model,
                                   tmp_path, monkeypatch):
    hf, _, _ = tiny
    monkeypatch.setattr(make_tiny_llama, "permute_qk", lambda w, n_head: w)
    w = make_tiny_llama.random_weights(0)
    md = make_tiny_llama.read_tokenizer_metadata(default_model)
    bad = tmp_path / "unpermuted.gguf"
    make_tiny_llama.write_gguf(bad, w, md)
    gap = first_step_gap(generate(safesteer_bin, hf), generate(safesteer_bin, bad))
    assert gap > 100 * TOL, f"wrong rotary pairing changed log-probabilities by only {gap:.2e}"
