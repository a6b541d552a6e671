"""The CPU engine against an independent float64 numpy forward
(scripts/reference/llama_numpy.py) on the default model: next-token
log-probs and the hidden state of every token after every layer."""
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, run_json, run_safesteer

sys.path.insert(0, str(REPO / "scripts" / "reference"))
import llama_numpy  # noqa: E402

PROMPT = "The capital of France is"
TOP_K = 20


@pytest.fixture(scope="module")
def reference(default_model):
    return llama_numpy.load(str(default_model))


def test_logits_and_hidden_states_match_reference(safesteer_bin, default_model, reference,
                                                   tmp_path):
    r = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt", PROMPT,
                 "--max-new", "1", "--logprobs", TOP_K, "--json", "--threads", "2")
    ids = r["prompt_ids"]
    top_ids = np.array(r["logprobs"][0]["top_ids"])
    top_lp = np.array(r["logprobs"][0]["top_logprobs"])

    data = tmp_path / "prompt.jsonl"
    data.write_text('{"prompt": "%s"}\n' % PROMPT)
    acts = tmp_path / "acts.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", data,
                  "--pool", "all", "--layers", "all", "--out", acts, "--threads", "2", "--quiet")

    cfg, w = reference
    ref_h, ref_logits = llama_numpy.forward(cfg, w, ids)
    ref_lp = llama_numpy.log_softmax(ref_logits)
    lp_err = np.abs(top_lp - ref_lp[top_ids]).max()

    with h5py.File(acts) as f:
        h = f["acts"][:]  # [tokens][layers][d_model]
    assert h.shape == (len(ids), cfg["block_count"], cfg["embedding_length"])
    row_err = llama_numpy.row_errors(h.transpose(1, 0, 2), ref_h)
    print(f"max |d logprob| (top {TOP_K}) {lp_err:.2e}; hidden states: worst row relative "
          f"L2 {row_err.max():.2e} (layer {np.unravel_index(row_err.argmax(), row_err.shape)[0]})")
    assert lp_err < 1e-3
    assert row_err.max() < 1e-4
