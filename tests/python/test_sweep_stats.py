"""The statistics of a sweep's tables against scipy: every rate's count and
95% Wilson interval, and each steered cell's exact McNemar test against its
category baseline on the same prompts (also in the analysis package's
synthetic runs); and merge's refusal of unfinished or missing shards.  The run folders are written here (no model needed) and
`safesteer merge` finalises them, as it does a real sweep's shards."""
import csv
import json
import math
import sys

import h5py
import numpy as np
import pytest
from scipy.stats import binomtest

from conftest import REPO, run_safesteer

sys.path.insert(0, str(REPO / "analysis"))  # importable without `pip install ./analysis`
from safesteer_analysis import loaders, synthetic  # noqa: E402

RATES = {"unsafe": "unsafe", "refusal": "refused", "degenerate": "degenerate",
         "judge_contradiction": "judge_contradiction"}
PAIRED = ("unsafe", "refusal", "degenerate")
N_PROMPTS = 25


def write_shard(folder, records, n_cells, shard=0, shards=1, complete=True, done=None):
    folder.mkdir(parents=True)
    (folder / "config.resolved.yaml").write_text("synthetic: true\n")
    info = {"model_name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
            "model_path": "/models/SmolLM2-135M-Instruct.Q4_1.gguf", "model_sha256": "0" * 64,
            "n_cells": n_cells, "shard": shard, "shards": shards}
    if complete:
        info["complete"] = True
    (folder / "run.json").write_text(json.dumps(info))
    ids = sorted({r["cell_id"] for r in records}) if done is None else done
    (folder / "cells_done.txt").write_text("".join(f"{i}\n" for i in ids))
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def synthetic_records(seed=0):
    """2 categories x (baseline + 3 steered cells) x 25 prompts; some verdicts
    missing (null) and one steered record dropped, so counts and pairs differ."""
    rng = np.random.default_rng(seed)
    recs, cell = [], 0
    for cat in ("crime", "violence"):
        for layer, strength, p in ((-1, 0.0, 0.7), (10, 2.0, 0.5), (10, 4.0, 0.3), (12, 8.0, 0.1)):
            for j in range(N_PROMPTS):
                if cell == 2 and j == 3:
                    continue
                unsafe = bool(rng.random() < p)
                recs.append({
                    "cell_id": cell, "index": j, "category": cat,
                    "method": "none" if layer < 0 else "mean-diff", "layer": layer,
                    "strength": strength, "site": "none" if layer < 0 else "resid_post",
                    "prompt_id": f"{cat}-{j}", "response": "r",
                    "refused": bool(rng.random() < 1 - p),
                    "unsafe": None if rng.random() < 0.1 else unsafe,
                    "judge_contradiction": None if rng.random() < 0.5 else bool(rng.random() < 0.2),
                    "degenerate": bool(rng.random() < strength / 10),
                    "perplexity": float(3 + strength), "n_tokens": 8})
            cell += 1
    return recs, cell


@pytest.fixture(scope="module")
def merged(tmp_path_factory, safesteer_bin):
    tmp = tmp_path_factory.mktemp("stats")
    recs, n_cells = synthetic_records()
    write_shard(tmp / "shard0", recs, n_cells)
    run_safesteer(safesteer_bin, "merge", tmp / "out", tmp / "shard0")
    with h5py.File(tmp / "out" / "results.h5", "r") as f:
        cells = {k: f["cells"][k][()] for k in f["cells"]}
        attrs = dict(f.attrs)
    rows = list(csv.DictReader((tmp / "out" / "summary.csv").read_text().splitlines()))
    return recs, cells, attrs, rows


def by_cell(recs):
    out = {}
    for r in recs:
        out.setdefault(r["cell_id"], {})[r["index"]] = r
    return out


def test_rates_carry_counts_and_wilson_intervals(merged):
    recs, cells, attrs, rows = merged
    assert attrs["format_version"] == 2
    assert attrs["rate_interval"] == "Wilson score interval, 95%"
    assert attrs["model_path"] == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    cell_recs = by_cell(recs)
    checked = 0
    for row, cid in enumerate(cells["cell_id"]):
        for prefix, key in RATES.items():
            flags = [r[key] for r in cell_recs[cid].values() if r[key] is not None]
            k, n = sum(flags), len(flags)
            assert cells[f"{prefix}_count"][row] == k and cells[f"{prefix}_n"][row] == n
            assert cells[f"{prefix}_rate"][row] == pytest.approx(k / n, rel=1e-15)
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert cells[f"{prefix}_ci_low"][row] == pytest.approx(ci.low, rel=1e-12, abs=1e-15)
            assert cells[f"{prefix}_ci_high"][row] == pytest.approx(ci.high, rel=1e-12)
            for col in ("count", "n", "rate", "ci_low", "ci_high"):
                assert float(rows[row][f"{prefix}_{col}"]) == pytest.approx(
                    float(cells[f"{prefix}_{col}"][row]), rel=1e-15)
            checked += 1
    assert checked == 8 * 4
    # one dropped record and the null verdicts make n differ between cells and rates
    assert len(set(cells["unsafe_n"])) > 1 and cells["refusal_n"][2] == N_PROMPTS - 1


def test_steered_cells_carry_exact_mcnemar_against_their_baseline(merged):
    recs, cells, _, rows = merged
    cell_recs = by_cell(recs)
    cats = [c.decode() if isinstance(c, bytes) else c for c in cells["category"]]
    baseline = {cats[i]: int(cells["cell_id"][i]) for i in range(len(cats))
                if cells["layer"][i] == -1}
    tested = 0
    for row, cid in enumerate(cells["cell_id"]):
        for prefix in PAIRED:
            key = RATES[prefix]
            if cells["layer"][row] == -1:
                assert math.isnan(cells[f"{prefix}_change_p"][row])
                assert rows[row][f"{prefix}_change_p"] == ""
                continue
            base = cell_recs[baseline[cats[row]]]
            pairs = [(base[j][key], r[key]) for j, r in cell_recs[cid].items()
                     if j in base and base[j][key] is not None and r[key] is not None]
            gained = sum(1 for b, s in pairs if s and not b)
            lost = sum(1 for b, s in pairs if b and not s)
            assert cells[f"{prefix}_paired_n"][row] == len(pairs)
            assert (cells[f"{prefix}_gained"][row], cells[f"{prefix}_lost"][row]) == (gained, lost)
            assert cells[f"{prefix}_change"][row] == pytest.approx((gained - lost) / len(pairs))
            # exact McNemar: the two-sided binomial test of the discordant pairs
            want = binomtest(min(gained, lost), gained + lost, 0.5).pvalue if gained + lost else 1
            assert cells[f"{prefix}_change_p"][row] == pytest.approx(want, rel=1e-9)
            assert float(rows[row][f"{prefix}_change_p"]) == pytest.approx(want, rel=1e-9)
            tested += 1
    assert tested == 6 * 3
    assert min(cells["unsafe_change_p"][cells["layer"] != -1]) < 0.01  # p 0.7 -> 0.1 shows


def test_merge_names_an_unfinished_shard(tmp_path, safesteer_bin):
    recs, n_cells = synthetic_records()
    half = [r for r in recs if r["cell_id"] < 4]
    write_shard(tmp_path / "s0", half, n_cells, 0, 2)
    write_shard(tmp_path / "s1", [r for r in recs if r["cell_id"] == 4], n_cells, 1, 2,
                complete=False)
    r = run_safesteer(safesteer_bin, "merge", tmp_path / "m", tmp_path / "s0", tmp_path / "s1",
                      check=False)
    assert r.returncode == 1
    assert f"{tmp_path / 's1'}: shard 1/2 is not finished (1 cells done so far)" in r.stderr
    assert not (tmp_path / "m").exists()
    r = run_safesteer(safesteer_bin, "merge", tmp_path / "m", tmp_path / "s0", check=False)
    assert r.returncode == 1 and "shard 1/2 is missing" in r.stderr, r.stderr
    r = run_safesteer(safesteer_bin, "merge", tmp_path / "m", tmp_path / "s0", tmp_path / "s0",
                      check=False)
    assert r.returncode == 1 and "are both shard 0/2" in r.stderr, r.stderr


def test_synthetic_tables_follow_the_same_statistics(tmp_path):
    """The analysis package's synthetic runs (demo report, notebook) carry
    the statistics a real run's tables do, computed the same way."""
    run = loaders.load_sweep(synthetic.write_sweep(tmp_path / "run", n_prompts=12))
    cells = run.cells
    for _, c in cells.iterrows():
        for prefix in RATES:
            k, n = int(c[f"{prefix}_count"]), int(c[f"{prefix}_n"])
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert (c[f"{prefix}_ci_low"], c[f"{prefix}_ci_high"]) == pytest.approx(
                (ci.low, ci.high), rel=1e-12, abs=1e-15)
        if c["layer"] != -1:
            b, l_ = int(c["unsafe_gained"]), int(c["unsafe_lost"])
            want = binomtest(min(b, l_), b + l_, 0.5).pvalue if b + l_ else 1
            assert c["unsafe_change_p"] == pytest.approx(want, rel=1e-9)
