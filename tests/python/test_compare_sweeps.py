"""scripts/device/compare_sweeps.py, the check of a CUDA sweep against the
CPU one, exercised here CPU against CPU (two thread counts give the same
tokens): identical runs pass; a token changed where the reference was sure
fails naming cell, prompt and position; the same change at a near-tie
passes as a near-tie; a perplexity off by more than its tolerance fails.
Also: --trace-tokens records hold the ids and top-2 gaps the check uses."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_safesteer

SCRIPT = REPO / "scripts" / "device" / "compare_sweeps.py"
DATA = REPO / "data" / "demo_prompts.jsonl"
CONFIG = f"""\
data:
  unsafe:
    file: {DATA}
    categories: [violence, crime]
  safe:
    file: {DATA}
    categories: [benign]
  fit: 3
  eval: 2
  fit_safe: 6
layers: [12]
strengths: [4]
generation:
  max_new: 6
  batch: 8
judges:
  llm:
    model: self
    kind: generic
    max_new: 3
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, safesteer_bin, default_model):
    tmp = tmp_path_factory.mktemp("compare")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG)
    for name, threads in (("a", "1"), ("b", "2")):
        run_safesteer(safesteer_bin, "sweep", cfg, "--model", default_model, "--out",
                      tmp / name, "--threads", threads, "--quiet", "--trace-tokens")
    return tmp


def compare(a, b, *args):
    return subprocess.run([sys.executable, str(SCRIPT), str(a), str(b), *args],
                          capture_output=True, text=True)


def records(run):
    return [json.loads(l) for l in (run / "generations.jsonl").read_text().splitlines()]


def rewrite(run, recs):
    (run / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_trace_records(runs):
    for r in records(runs / "a"):
        assert len(r["token_ids"]) == r["n_tokens"]
        # one gap per step: the step that chose a stop token too
        assert len(r["top2_gap"]) in (r["n_tokens"], r["n_tokens"] + 1)
        assert all(g >= 0 for g in r["top2_gap"])


def test_identical_runs_pass(runs):
    p = compare(runs / "a", runs / "b")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 cells: 4 identical, 0 with near-ties, 0 diverged; 0 problem(s)" in p.stdout


def first_sure_token(recs, above):
    for k, r in enumerate(recs):
        for t, gap in enumerate(r["top2_gap"][:len(r["token_ids"])]):
            if gap >= above:
                return k, t
    raise AssertionError("no token with a clear top-2 gap")


def test_changed_token_diverges_or_is_a_near_tie(runs, tmp_path):
    run = tmp_path / "changed"
    shutil.copytree(runs / "b", run)
    recs = records(run)
    k, t = first_sure_token(recs, 1.0)
    recs[k]["token_ids"][t] += 1
    rewrite(run, recs)
    p = compare(run, runs / "a")
    assert p.returncode == 1
    assert (f"diverged: cell {recs[k]['cell_id']} " in p.stdout and
            f"prompt {recs[k]['index']}: token {t} of" in p.stdout), p.stdout
    # the same change where the reference hesitated is a near-tie
    ref = tmp_path / "ref"
    shutil.copytree(runs / "a", ref)
    ref_recs = records(ref)
    ref_recs[k]["top2_gap"][t] = 0.1
    rewrite(ref, ref_recs)
    p = compare(run, ref)
    assert p.returncode == 0, p.stdout
    assert "near-tie: cell" in p.stdout and "1 with near-ties" in p.stdout


def test_perplexity_beyond_tolerance_fails(runs, tmp_path):
    run = tmp_path / "ppl"
    shutil.copytree(runs / "b", run)
    lines = (run / "summary.csv").read_text().splitlines()
    head = lines[0].split(",")
    col = head.index("perplexity")
    row = lines[1].split(",")
    row[col] = str(float(row[col]) * 1.2)
    lines[1] = ",".join(row)
    (run / "summary.csv").write_text("\n".join(lines) + "\n")
    p = compare(run, runs / "a")
    assert p.returncode == 1 and "perplexity" in p.stdout and "> 0.05" in p.stdout
    assert compare(run, runs / "a", "--ppl-rtol", "0.3").returncode == 0


def test_untraced_run_is_refused(runs, tmp_path):
    run = tmp_path / "plain"
    shutil.copytree(runs / "b", run)
    recs = records(run)
    for r in recs:
        del r["token_ids"]
    rewrite(run, recs)
    p = compare(run, runs / "a")
    assert p.returncode == 2 and "--trace-tokens" in p.stderr
