"""End-to-end sweep tests: resume after SIGKILL, shards + merge, config
errors with file:line, and the no-steering baseline in every table.  Uses a
tiny greedy config on the default model (skipped when it is absent)."""
import csv
import json
import os
import pathlib
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, assert_same, run_safesteer, tables

DATA = REPO / "data" / "demo_prompts.jsonl"

TINY = """\
data:
  unsafe:
    file: {data}
    categories: [violence, crime]
  safe:
    file: {data}
    categories: [benign]
  fit: 3
  eval: 2
  fit_safe: 6
  seed: 3
layers: [{layer}]
strengths: {{from: 4, to: 8, step: 4}}
generation:
  max_new: 4
  temperature: 0
  batch: 4
"""


def write_cfg(tmp_path, name="tiny.yaml", layer=12, extra=""):
    p = tmp_path / name
    p.write_text(TINY.format(data=DATA, layer=layer) + extra)
    return p


def sweep(binary, model, cfg, out, *args, check=True):
    return run_safesteer(binary, "sweep", cfg, "--model", model, "--out", out, "--threads", "2",
                         "--quiet", *args, check=check)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, safesteer_bin, default_model):
    tmp = tmp_path_factory.mktemp("sweep")
    cfg = write_cfg(tmp)
    out = tmp / "full"
    sweep(safesteer_bin, default_model, cfg, out)
    return tmp, cfg, out


def test_tables_have_baseline_and_columns(full_run):
    _, _, out = full_run
    cells, attrs, gens, summary = tables(out)
    assert attrs["format"] == "safesteer.sweep" and attrs["format_version"] == 2
    assert "layers: [12]" in attrs["config_yaml"]
    assert len(attrs["model_sha256"]) == 64
    # 2 categories x (baseline + 1 method x 1 layer x 2 strengths)
    assert list(cells["cell_id"]) == list(range(6))
    cats = [c.decode() if isinstance(c, bytes) else c for c in cells["category"]]
    methods = [m.decode() if isinstance(m, bytes) else m for m in cells["method"]]
    for cat in ("violence", "crime"):
        base = [i for i in range(6) if cats[i] == cat and methods[i] == "none"]
        assert len(base) == 1 and cells["layer"][base[0]] == -1
        assert cells["strength"][base[0]] == 0
    assert list(cells["strength"][1:3]) == [4, 8]
    assert all(n == 2 for n in cells["n_prompts"])
    assert np.all((cells["refusal_rate"] >= 0) & (cells["refusal_rate"] <= 1))
    assert np.all(cells["perplexity"] > 1) and np.all(np.isfinite(cells["relevance"]))
    assert np.all(np.isnan(cells["unsafe_rate"]))  # no LLM judge configured
    assert np.all(cells["unsafe_n"] == 0) and np.all(cells["judge_contradiction_n"] == 0)
    assert np.all(cells["refusal_n"] == 2) and np.all(cells["degenerate_n"] == 2)
    assert np.all(cells["refusal_ci_low"] <= cells["refusal_rate"])
    assert os.path.exists(attrs["model_path"])  # the report names the model by its file
    rows = list(csv.DictReader(summary.splitlines()))
    assert [r["method"] for r in rows].count("none") == 2
    assert {r["layer"] for r in rows if r["method"] == "none"} == {"-1"}
    assert len(gens) == 12
    base_gens = [g for g in gens if g["method"] == "none"]
    assert len(base_gens) == 4 and all(g["layer"] == -1 for g in base_gens)
    for g in gens:
        assert 1 <= g["n_tokens"] <= 4 and isinstance(g["refused"], bool)
    # steering changes the text somewhere in the grid
    texts = {(g["prompt_id"], g["cell_id"] % 3): g["response"] for g in gens}
    assert any(texts[(p, 0)] != texts[(p, 2)] for p, _ in texts)
    for f in ("config.resolved.yaml", "capture_resid_post.h5",
              "vectors_resid_post_mean-diff.h5"):
        assert (out / f).exists()


def test_resume_after_sigkill_equals_full_run(full_run, safesteer_bin, default_model):
    tmp, cfg, full = full_run
    out = tmp / "killed"
    cmd = [str(safesteer_bin), "sweep", str(cfg), "--model", str(default_model), "--out",
           str(out), "--threads", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "cells_done.txt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if done.exists() and done.read_text().strip():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(done.read_text().split())
    assert 0 < n_done < 6
    assert not (out / "results.h5").exists()
    # without --resume the folder is refused
    r = sweep(safesteer_bin, default_model, cfg, out, check=False)
    assert r.returncode != 0 and "--resume" in r.stderr
    sweep(safesteer_bin, default_model, cfg, out, "--resume")
    assert_same(full, out)


def test_shards_merged_equal_full_run(full_run, safesteer_bin, default_model):
    tmp, cfg, full = full_run
    for i in range(2):
        sweep(safesteer_bin, default_model, cfg, tmp / f"shard{i}", "--shard", f"{i}/2")
    one = tables(tmp / "shard0")[0]["cell_id"]
    assert 0 < len(one) < 6
    r = run_safesteer(safesteer_bin, "merge", tmp / "merged", tmp / "shard0", check=False)
    assert r.returncode == 1 and "shard 1/2 is missing" in r.stderr, r.stderr
    run_safesteer(safesteer_bin, "merge", tmp / "merged", tmp / "shard0", tmp / "shard1")
    assert_same(full, tmp / "merged")
    assert (tmp / "merged" / "vectors_resid_post_mean-diff.h5").exists()
    # a folder that holds a run is never merged over
    before = {p.name: p.read_bytes() for p in (tmp / "merged").iterdir()}
    r = run_safesteer(safesteer_bin, "merge", tmp / "merged", tmp / "shard0", tmp / "shard1",
                      check=False)
    assert r.returncode == 1 and "already holds a run" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in (tmp / "merged").iterdir()} == before


@pytest.mark.parametrize("edit,line,needle", [
    (lambda t: t.replace("  batch: 4\n", "  batch: 4\n  colour: red\n"), 18, "unknown key"),
    (lambda t: t.replace("max_new: 4", "max_new: six"), 15, "must be an integer"),
    (lambda t: t.replace("demo_prompts.jsonl\n    categories: [benign]",
                         "missing.jsonl\n    categories: [benign]"), 6, "not found"),
    (lambda t: t.replace("layers: [12]", "layers: [12, 30]"), 12, "beyond the model"),
    (lambda t: t.replace("[violence, crime]", "[violence,\n      nosuchcat]"), 5, "nosuchcat"),
])
def test_config_errors_name_file_and_line(tmp_path, safesteer_bin, default_model, edit, line,
                                          needle):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(edit(TINY.format(data=DATA, layer=12)))
    r = sweep(safesteer_bin, default_model, cfg, tmp_path / "out", check=False)
    assert r.returncode != 0
    assert f"{cfg}:{line}:" in r.stderr, r.stderr
    assert needle in r.stderr
