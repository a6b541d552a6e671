"""`safesteer capture` on the default model: every documented dataset and
attribute of a capture file (docs/hdf5-schema.md), readable with h5py alone;
and a capture killed with SIGKILL is refused without --resume, then resumed
to exactly the arrays of an uninterrupted run."""
import json
import os
import pathlib
import re
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, run_safesteer

DEMO = REPO / "data" / "demo_prompts.jsonl"
SHARED = REPO.parent / "shared" / "data"

ROOT_ATTRS = {
    "format": str, "format_version": np.integer, "toolkit_version": str, "model_name": str,
    "model_path": str, "model_sha256": str, "d_model": np.integer, "n_layers_model": np.integer,
    "site": str, "pooling": str, "mean_scope": str, "dtype": str, "chat": np.integer,
    "chat_template": str, "n_prompts": np.integer, "n_done": np.integer,
    "complete": np.integer, "prompts_sha256": str, "data_path": str, "norm_tokens": np.integer,
}


def strs(ds):
    return [s.decode() if isinstance(s, bytes) else s for s in ds[()]]


def check_common(f, n, layers, model, pooling):
    for key, typ in ROOT_ATTRS.items():
        assert key in f.attrs, f"missing root attribute {key}"
        assert isinstance(f.attrs[key], typ), f"{key} is {type(f.attrs[key])}"
    assert f.attrs["format"] == "safesteer.capture"
    assert f.attrs["format_version"] == 1
    assert f.attrs["complete"] == 1 and f.attrs["n_done"] == n == f.attrs["n_prompts"]
    assert f.attrs["pooling"] == pooling
    assert f.attrs["d_model"] == 576 and f.attrs["n_layers_model"] == 30
    assert re.fullmatch(r"[0-9a-f]{64}", f.attrs["model_sha256"])
    assert pathlib.Path(f.attrs["model_path"]).resolve() == pathlib.Path(model).resolve()
    assert list(f["layers"][()]) == layers and f["layers"].dtype == np.int32
    for name in ("text", "id", "category", "label"):
        assert f["prompts"][name].shape == (n,)
        assert h5py.check_string_dtype(f["prompts"][name].dtype).encoding == "utf-8"
    assert f["prompts/n_tokens"].dtype == np.int32 and f["prompts/n_tokens"].shape == (n,)
    assert (f["prompts/n_tokens"][()] > 0).all()
    assert f["layer_norms"].dtype == np.float32 and f["layer_norms"].shape == (len(layers),)
    assert (f["layer_norms"][()] > 0).all()
    assert f["layer_norm_sum"].dtype == np.float64


def test_schema_pooled_and_all(safesteer_bin, default_model, tmp_path):
    layers = [0, 14, 29]
    src = [json.loads(l) for l in open(DEMO)][:6]
    mean = tmp_path / "mean.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", DEMO,
                  "--limit", 6, "--layers", "0,14,29", "--pool", "mean", "--chat",
                  "--batch", 3, "--out", mean, "--quiet")
    with h5py.File(mean, "r") as f:
        check_common(f, 6, layers, default_model, "mean")
        assert f.attrs["chat"] == 1 and f.attrs["chat_template"] == "chatml"
        assert f.attrs["site"] == "resid_post" and f.attrs["dtype"] == "f32"
        assert f.attrs["mean_scope"] == "prompt"
        assert f["acts"].shape == (6, 3, 576) and f["acts"].dtype == np.float32
        assert strs(f["prompts/text"]) == [r["prompt"] for r in src]
        assert strs(f["prompts/id"]) == [r["id"] for r in src]
        assert strs(f["prompts/label"]) == [r["label"] for r in src]
        assert "offsets" not in f
        mean_acts = f["acts"][()]
    every = tmp_path / "all.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", DEMO,
                  "--limit", 6, "--layers", "0,14,29", "--pool", "all", "--chat",
                  "--batch", 3, "--out", every, "--quiet")
    with h5py.File(every, "r") as f:
        check_common(f, 6, layers, default_model, "all")
        off = f["offsets"][()]
        assert f["offsets"].dtype == np.int64 and off.shape == (7,) and off[0] == 0
        assert (np.diff(off) == f["prompts/n_tokens"][()]).all()
        assert f["acts"].shape == (off[-1], 3, 576)
        acts = f["acts"][()]
    for i in range(6):
        np.testing.assert_allclose(acts[off[i]:off[i + 1]].mean(0), mean_acts[i],
                                   rtol=1e-4, atol=1e-4)


def test_schema_response_and_f16(safesteer_bin, default_model, tmp_path):
    out = tmp_path / "resp.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data",
                  REPO / "data" / "demo_responses.csv", "--with-response", "--chat",
                  "--layers", "3-5", "--pool", "mean", "--dtype", "f16", "--site", "mlp_out",
                  "--out", out, "--quiet")
    with h5py.File(out, "r") as f:
        check_common(f, 4, [3, 4, 5], default_model, "mean")
        assert f.attrs["dtype"] == "f16" and f["acts"].dtype == np.float16
        assert f.attrs["site"] == "mlp_out" and f.attrs["mean_scope"] == "prompt+response"
        assert strs(f["prompts/response"])[0].startswith("Water only")
        assert (f["prompts/n_response_tokens"][()] > 5).all()


def test_existing_output_needs_force(safesteer_bin, default_model, tmp_path):
    out = tmp_path / "x.h5"
    args = ["capture", "--model", default_model, "--data", DEMO, "--limit", 2, "--layers",
            "1", "--out", out, "--quiet"]
    run_safesteer(safesteer_bin, *args)
    p = run_safesteer(safesteer_bin, *args, check=False)
    assert p.returncode == 1 and "--force" in p.stderr
    run_safesteer(safesteer_bin, *args, "--force")


def _shared_prompts(tmp_path, n):
    """n short prompts: alpaca instructions if shared data is there, else the demo set."""
    src = SHARED / "alpaca_instructions.jsonl"
    rows = [json.loads(l) for l in open(src)][:n] if src.exists() else \
        [json.loads(l) for l in open(DEMO)] * (n // 48 + 1)
    path = tmp_path / "kill.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(rows[:n]):
            f.write(json.dumps({"id": f"k{i}", "prompt": r["prompt"]}) + "\n")
    return path


def test_sigkill_then_resume_matches_uninterrupted(safesteer_bin, default_model, tmp_path):
    n = int(os.environ.get("SAFESTEER_KILL_TEST_PROMPTS", "200"))
    data = _shared_prompts(tmp_path, n)
    common = ["capture", "--model", default_model, "--data", data, "--layers", "0,15,29",
              "--pool", "mean", "--batch", 8]
    ref = tmp_path / "ref.h5"
    run_safesteer(safesteer_bin, *common, "--out", ref, "--quiet", timeout=3600)

    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([str(safesteer_bin), *map(str, common), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    done = 0
    deadline = time.time() + 1800
    for line in proc.stderr:  # progress: "capture: N/M prompts, ..."
        m = re.match(r"capture: (\d+)/(\d+) prompts", line)
        if m:
            done = int(m.group(1))
        if done >= 24 or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert 24 <= done < n, f"capture finished ({done}) before it could be killed"

    p = run_safesteer(safesteer_bin, *common, "--out", out, check=False)
    assert p.returncode == 1
    assert re.search(r"incomplete capture \(\d+ of %d prompts\); rerun with --resume or "
                     r"delete it" % n, p.stderr), p.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"] == 0 and done <= f.attrs["n_done"] < n

    p = run_safesteer(safesteer_bin, *common, "--out", out, "--resume", timeout=3600)
    assert "resuming" in p.stderr
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        assert f.attrs["complete"] == 1 and f.attrs["n_done"] == n
        np.testing.assert_array_equal(f["acts"][()], g["acts"][()])
        np.testing.assert_array_equal(f["prompts/n_tokens"][()], g["prompts/n_tokens"][()])
        np.testing.assert_allclose(f["layer_norms"][()], g["layer_norms"][()], rtol=1e-6)
        assert strs(f["prompts/id"]) == strs(g["prompts/id"])
