"""The CPU engine against an independent float64 numpy forward
(scripts/reference/llama_numpy.py) on the default model: next-token
log-probs and the hidden state of every token after every layer, plain and
steered."""
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, run_json, run_safesteer, write_control_vector

sys.path.insert(0, str(REPO / "scripts" / "reference"))
import llama_numpy  # noqa: E402

PROMPT = "The capital of France is"
TOP_K = 20


@pytest.fixture(scope="module")
def reference(default_model):
    return llama_numpy.load(str(default_model))


def capture_all(binary, model, site, tmp_path):
    """Every token at every layer of PROMPT at one site: [layers][tokens][d]."""
    data = tmp_path / "prompt.jsonl"
    data.write_text('{"prompt": "%s"}\n' % PROMPT)
    acts = tmp_path / f"acts_{site}.h5"
    run_safesteer(binary, "capture", "--model", model, "--data", data, "--pool", "all",
                  "--layers", "all", "--site", site, "--out", acts, "--threads", "2", "--quiet")
    with h5py.File(acts) as f:
        return f["acts"][:].transpose(1, 0, 2)  # stored [tokens][layers][d_model]


def test_logits_and_every_capture_site_match_reference(safesteer_bin, default_model, reference,
                                                   tmp_path):
    r = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt", PROMPT,
                 "--max-new", "1", "--logprobs", TOP_K, "--json", "--threads", "2")
    ids = r["prompt_ids"]
    top_ids = np.array(r["logprobs"][0]["top_ids"])
    top_lp = np.array(r["logprobs"][0]["top_logprobs"])

    cfg, w = reference
    blocks = {}
    ref_h, ref_logits = llama_numpy.forward(cfg, w, ids, blocks=blocks)
    ref_lp = llama_numpy.log_softmax(ref_logits)
    lp_err = np.abs(top_lp - ref_lp[top_ids]).max()

    site_err = {}
    for site, ref in (("resid_post", ref_h), ("attn_out", blocks["attn_out"]),
                      ("mlp_out", blocks["mlp_out"])):
        h = capture_all(safesteer_bin, default_model, site, tmp_path)
        assert h.shape == ref.shape
        site_err[site] = llama_numpy.row_errors(h, ref).max()
    print(f"max |d logprob| (top {TOP_K}) {lp_err:.2e}; worst row relative L2 per site "
          + ", ".join(f"{k} {v:.2e}" for k, v in site_err.items()))
    assert lp_err < 1e-3
    for site, e in site_err.items():
        assert e < 1e-4, site


def write_h5_vectors(path, site, layer, vec):
    """A one-category safesteer vector file (docs/vectors.md) written by h5py."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "safesteer.vectors"
        f.attrs["site"] = site
        f.attrs["method"] = "mean-diff"
        f["vectors"] = vec.reshape(1, 1, -1)
        f["categories"] = np.array(["test"], dtype=h5py.string_dtype())
        f["layers"] = np.array([layer], dtype=np.int32)


@pytest.mark.parametrize("site, op, positions, begin", [
    ("resid_post", "add", "all", 0), ("resid_post", "add", "from:3", 3),
    ("resid_post", "ablate", "all", 0), ("attn_out", "add", "from:3", 3),
    ("mlp_out", "ablate", "all", 0)])
def test_steered_logprobs_match_reference(safesteer_bin, default_model, reference, tmp_path,
                                          site, op, positions, begin):
    """Steering as the engine applies it (site, position rule, add or
    ablate) against the reference doing the same by hand.  resid_post
    vectors come as a llama.cpp control vector, the other sites as a
    safesteer vector file."""
    layer, alpha = 10, 4.0
    cfg, w = reference
    if op == "add":
        vec = np.random.default_rng(7).normal(size=cfg["embedding_length"]).astype(np.float32)
    else:  # a direction the activations there really have, so ablating it matters
        ids = run_json(safesteer_bin, "tokenize", "--model", default_model, "--json", PROMPT)
        blocks = {}
        hidden, _ = llama_numpy.forward(cfg, w, ids, blocks=blocks)
        acts = hidden if site == "resid_post" else blocks[site]
        vec = acts[layer, begin:].mean(axis=0).astype(np.float32)
    if site == "resid_post":
        path = tmp_path / "cv.gguf"
        write_control_vector(path, {layer: vec})
    else:
        path = tmp_path / "v.h5"
        write_h5_vectors(path, site, layer, vec)
    args = ["generate", "--model", default_model, "--prompt", PROMPT, "--max-new", "1",
            "--logprobs", TOP_K, "--json", "--threads", "2", "--steer", path,
            "--positions", positions]
    args += ["--ablate"] if op == "ablate" else ["--strength", alpha]
    r = run_json(safesteer_bin, *args)
    top_ids = np.array(r["logprobs"][0]["top_ids"])
    top_lp = np.array(r["logprobs"][0]["top_logprobs"])

    steer = {"site": site, "layer": layer, "vec": vec, "alpha": alpha, "op": op, "begin": begin}
    ref_lp = llama_numpy.log_softmax(llama_numpy.forward(cfg, w, r["prompt_ids"],
                                                         steer=steer)[1])
    plain_lp = llama_numpy.log_softmax(llama_numpy.forward(cfg, w, r["prompt_ids"])[1])
    err = np.abs(top_lp - ref_lp[top_ids]).max()
    moved = np.abs(ref_lp[top_ids] - plain_lp[top_ids]).max()
    print(f"{site} {op} {positions}: max |d logprob| vs reference {err:.2e}, steering moved "
          f"them by up to {moved:.3f}")
    assert moved > 0.05, "the steering in this test hardly changes the output"
    assert err < 1e-3


def test_plan_mixing_sites_and_ops_matches_reference(safesteer_bin, default_model, reference,
                                                     tmp_path):
    """Three --steer groups in one run: resid_post add at layer 8 (a llama.cpp
    control vector), attn_out ablate and mlp_out add at layer 12 (safesteer
    vector files), positions from:2, against the reference applying all three
    by hand."""
    cfg, w = reference
    d, begin = cfg["embedding_length"], 2
    rng = np.random.default_rng(11)
    ids = run_json(safesteer_bin, "tokenize", "--model", default_model, "--json", PROMPT)
    blocks = {}
    llama_numpy.forward(cfg, w, ids, blocks=blocks)
    u = blocks["attn_out"][12, begin:].mean(axis=0).astype(np.float32)
    v_res = rng.normal(size=d).astype(np.float32)
    v_mlp = rng.normal(size=d).astype(np.float32)
    write_control_vector(tmp_path / "cv.gguf", {8: v_res})
    write_h5_vectors(tmp_path / "attn.h5", "attn_out", 12, u)
    write_h5_vectors(tmp_path / "mlp.h5", "mlp_out", 12, v_mlp)
    r = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt", PROMPT,
                 "--max-new", "1", "--logprobs", TOP_K, "--json", "--threads", "2",
                 "--positions", f"from:{begin}",
                 "--steer", tmp_path / "cv.gguf", "--strength", "3",
                 "--steer", tmp_path / "attn.h5", "--ablate",
                 "--steer", tmp_path / "mlp.h5", "--strength", "-2")
    top_ids = np.array(r["logprobs"][0]["top_ids"])
    top_lp = np.array(r["logprobs"][0]["top_logprobs"])
    steer = [
        {"site": "resid_post", "layer": 8, "vec": v_res, "alpha": 3.0, "op": "add",
         "begin": begin},
        {"site": "attn_out", "layer": 12, "vec": u, "alpha": 1.0, "op": "ablate",
         "begin": begin},
        {"site": "mlp_out", "layer": 12, "vec": v_mlp, "alpha": -2.0, "op": "add",
         "begin": begin}]
    ref_lp = llama_numpy.log_softmax(llama_numpy.forward(cfg, w, r["prompt_ids"],
                                                         steer=steer)[1])
    plain_lp = llama_numpy.log_softmax(llama_numpy.forward(cfg, w, r["prompt_ids"])[1])
    err = np.abs(top_lp - ref_lp[top_ids]).max()
    moved = np.abs(ref_lp[top_ids] - plain_lp[top_ids]).max()
    # each entry matters: dropping any one moves the reference by more than the tolerance
    for k in range(3):
        part = llama_numpy.log_softmax(llama_numpy.forward(
            cfg, w, r["prompt_ids"], steer=steer[:k] + steer[k + 1:])[1])
        assert np.abs(part[top_ids] - ref_lp[top_ids]).max() > 1e-2, f"entry {k} has no effect"
    print(f"mixed plan: max |d logprob| vs reference {err:.2e}, steering moved them by up to "
          f"{moved:.3f}")
    assert err < 1e-3
