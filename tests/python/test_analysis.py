"""analysis/safesteer_analysis: every loader on files the C binary writes in
this test run (capture, vectors, cluster, a tiny sweep) and
on synthetic h5py files; every plot rendered to PNG; the HTML report; the
walkthrough notebook executed top to bottom with nbclient."""
import json
import os
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, run_safesteer
from test_sweep import write_cfg

sys.path.insert(0, str(REPO / "analysis"))  # importable without `pip install ./analysis`
import safesteer_analysis as sa  # noqa: E402
from safesteer_analysis import plots, report, schema, synthetic  # noqa: E402

DEMO = REPO / "data" / "demo_prompts.jsonl"
NOTEBOOK = REPO / "analysis" / "notebooks" / "walkthrough.ipynb"
BENCH_JSON = sorted((REPO / "docs" / "bench").glob("*.json"))
LAYERS = [5, 10, 20]

# -- files written by the C binary -----------------------------------------

@pytest.fixture(scope="session")
def c_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("c_artefacts")


@pytest.fixture(scope="session")
def c_prompts(c_dir):
    """3 unsafe prompts of each of the 4 demo categories plus 6 benign ones."""
    rows, seen = [], {}
    for line in open(DEMO, encoding="utf-8"):
        r = json.loads(line)
        limit = 6 if r["label"] == "safe" else 3
        if seen.get(r["category"], 0) < limit:
            rows.append(r)
            seen[r["category"]] = seen.get(r["category"], 0) + 1
    path = c_dir / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, rows


@pytest.fixture(scope="session")
def c_capture(safesteer_bin, default_model, c_prompts, c_dir):
    out = c_dir / "acts.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", c_prompts[0],
                  "--chat", "--layers", ",".join(map(str, LAYERS)), "--pool", "mean",
                  "--out", out, "--quiet")
    return out


@pytest.fixture(scope="session")
def c_vectors(safesteer_bin, c_capture, c_dir):
    out = c_dir / "vectors.h5"
    run_safesteer(safesteer_bin, "vectors", "--acts", c_capture, "--out", out, "--holdout", "0")
    return out


@pytest.fixture(scope="session")
def c_clusters(safesteer_bin, c_capture, c_dir):
    out = c_dir / "clusters.h5"
    run_safesteer(safesteer_bin, "cluster", "--acts", c_capture, "--layer", "10", "--k", "4",
                  "--out", out)
    return out


@pytest.fixture(scope="session")
def c_sweep(safesteer_bin, default_model, c_dir):
    out = c_dir / "sweep"
    run_safesteer(safesteer_bin, "sweep", write_cfg(c_dir), "--model", default_model, "--out",
                  out, "--threads", 2, "--quiet")
    return out


# -- synthetic files (h5py only) --------------------------------------------

@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    return synthetic.write_example(tmp_path_factory.mktemp("synthetic"))


# -- loaders on C output ----------------------------------------------------

def test_capture_loader_on_c_capture(c_capture, c_prompts):
    rows = c_prompts[1]
    cap = sa.load_capture(c_capture)
    assert cap.attrs["format"] == schema.CAPTURE_FORMAT and cap.attrs["pooling"] == "mean"
    assert list(cap.layers) == LAYERS
    assert isinstance(cap.acts, np.ndarray) and cap.acts.shape == (len(rows), 3, 576)
    assert list(cap.prompts["id"]) == [r["id"] for r in rows]
    assert list(cap.prompts["category"]) == [r["category"] for r in rows]
    assert list(cap.prompts["text"]) == [r["prompt"] for r in rows]
    assert (cap.prompts["n_tokens"] > 0).all()
    np.testing.assert_array_equal(cap.pooled(10), cap.acts[:, 1, :])
    with pytest.raises(KeyError, match="layer 7 was not captured"):
        cap.pooled(7)
    with sa.load_capture(c_capture, lazy=True) as lazy:
        assert isinstance(lazy.acts, h5py.Dataset)
        np.testing.assert_array_equal(lazy.pooled(20), cap.acts[:, 2, :])


def test_capture_loader_pools_per_token_capture(safesteer_bin, default_model, c_prompts,
                                                c_capture, c_dir):
    """pool=all keeps every prompt token; pooled() averaged over /offsets must
    equal the C mean pooling of the same prompts."""
    out = c_dir / "acts_all.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", c_prompts[0],
                  "--chat", "--layers", "10", "--pool", "all", "--limit", "4", "--out", out,
                  "--quiet")
    per_token = sa.load_capture(out)
    assert per_token.offsets is not None and per_token.offsets[0] == 0
    assert per_token.acts.shape[0] == per_token.offsets[-1]
    np.testing.assert_array_equal(np.diff(per_token.offsets), per_token.prompts["n_tokens"])
    mean = sa.load_capture(c_capture).pooled(10)[:4]
    got = per_token.pooled(10)
    assert np.abs(got - mean).max() <= 1e-4 * np.abs(mean).max()


def test_vectors_loader_on_c_vectors(c_vectors, c_capture):
    vec = sa.load_vectors(c_vectors)
    cap = sa.load_capture(c_capture)
    assert vec.categories == ["crime", "hate", "self_harm", "violence"]
    assert list(vec.layers) == LAYERS and vec.vectors.shape == (4, 3, 576)
    # --holdout 0: mean-diff over every prompt, recomputed from the loaded capture.
    labels, cats = cap.prompts["label"].to_numpy(), cap.prompts["category"].to_numpy()
    acts = cap.acts.astype(np.float64)
    for c, name in enumerate(vec.categories):
        want = acts[labels == "safe"].mean(0) - acts[(labels == "unsafe") & (cats == name)].mean(0)
        assert np.abs(vec.vectors[c] - want).max() <= 1e-5 * np.abs(want).max()
    np.testing.assert_allclose(vec.cosine, sa.loaders.cosine_matrices(vec.vectors), atol=1e-5)
    np.testing.assert_allclose(vec.norms, np.linalg.norm(vec.vectors, axis=2), rtol=1e-5)
    table = vec.table()
    assert len(table) == 12 and set(table.columns) >= {"category", "layer", "norm", "separability"}
    np.testing.assert_array_equal(vec.vector("hate", 10), vec.vectors[1, 1])


def test_clusters_loader_on_c_clusters(c_clusters, c_capture):
    cl = sa.load_clusters(c_clusters)
    labels = sa.load_capture(c_capture).prompts["label"].to_numpy()
    assert cl.attrs["layer"] == 10 and cl.attrs["k"] == 4
    assert (cl.assignments[labels == "safe"] == -1).all()
    assert set(cl.assignments[labels != "safe"]) <= set(range(4))
    assert cl.centroids.shape == (4, 576) and cl.vectors.shape == (4, 576)
    assert sorted(cl.contingency.columns) == ["crime", "hate", "self_harm", "violence"]
    np.testing.assert_array_equal(cl.contingency.sum(axis=1).to_numpy(), cl.cluster_sizes)
    assert cl.contingency.to_numpy().sum() == cl.attrs["n_clustered"] == 12
    assert list(cl.k_scan["k"]) == [4]


def test_sweep_loader_on_c_sweep(c_sweep):
    run = sa.load_sweep(c_sweep)
    assert run.attrs["format"] == schema.SWEEP_FORMAT
    assert set(schema.SWEEP_CELL_KEYS) <= set(run.cells.columns)
    assert len(run.baseline()) >= 1 and len(run.steered()) >= 1
    assert set(run.generations["cell_id"]) <= set(run.cells["cell_id"])
    html = report.render(c_sweep)
    assert html.count("data:image/png;base64,") >= 3


@pytest.mark.parametrize("path", BENCH_JSON, ids=[p.stem for p in BENCH_JSON])
def test_bench_loader_on_c_bench_json(path):
    b = sa.load_bench(path)
    raw = json.loads(path.read_text())
    assert b.model == raw["model"] and len(b.decode) == len(raw["decode"])
    assert set(b.decode["batch"]) == {r["batch"] for r in raw["decode"]}
    rows = raw["steering"] if isinstance(raw["steering"], list) else [raw["steering"]]
    assert len(b.steering) == len(rows)
    for got, s in zip(b.steering.to_dict("records"), rows):
        want = 100 * (s["all_layers_ms"] - s["none_ms"]) / s["none_ms"]
        assert got["all_layers_overhead_pct"] == pytest.approx(want)
        assert got["batch"] == s.get("batch", 1)


# -- loaders on synthetic files and their errors ----------------------------

def test_loaders_on_synthetic_files(synth):
    cap = sa.load_capture(synth["capture"])
    assert cap.acts.shape == (40, 3, 32) and list(cap.layers) == [2, 5, 8]
    vec = sa.load_vectors(synth["vectors"])
    assert vec.categories == list(synthetic.CATEGORIES)
    cl = sa.load_clusters(synth["clusters"])
    assert (cl.contingency.to_numpy() == np.diag(cl.cluster_sizes)).all()
    run = sa.load_sweep(synth["run"])
    assert list(run.cells.columns)[:14] == list(schema.SWEEP_CELL_COLUMNS)
    assert {f"{r}_ci_high" for r in schema.SWEEP_RATES} <= set(run.cells.columns)
    assert len(run.cells) == 4 + 4 * 3 * 3 and len(run.baseline()) == 4
    assert run.cells["category"].map(type).eq(str).all()
    assert len(run.generations) == 40 * len(run.cells)
    assert run.summary is not None and len(run.summary) == len(run.cells)
    assert "strengths" in run.config_yaml


def _retag(src, dst, **attrs):
    dst.write_bytes(pathlib.Path(src).read_bytes())
    with h5py.File(dst, "a") as f:
        for key, val in attrs.items():
            if val is None:
                del f.attrs[key]
            else:
                f.attrs[key] = val
    return dst


def test_loaders_reject_wrong_files(synth, tmp_path):
    wrong = _retag(synth["capture"], tmp_path / "wrong.h5", format="safesteer.vectors")
    with pytest.raises(sa.FormatError) as e:
        sa.load_capture(wrong)
    assert str(wrong) in str(e.value) and "format" in str(e.value)
    assert "safesteer.vectors" in str(e.value) and "safesteer.capture" in str(e.value)
    with pytest.raises(sa.FormatError, match="safesteer.vectors"):
        sa.load_clusters(synth["vectors"])
    with pytest.raises(sa.FormatError, match="attribute format is None"):
        sa.load_vectors(_retag(synth["vectors"], tmp_path / "nofmt.h5", format=None))
    with pytest.raises(sa.FormatError, match="format_version is 2"):
        sa.load_capture(_retag(synth["capture"], tmp_path / "v2.h5", format_version=np.int64(2)))
    partial = _retag(synth["capture"], tmp_path / "partial.h5", complete=np.int64(0),
                     n_done=np.int64(5))
    with pytest.raises(sa.FormatError, match="incomplete capture: 5 of 40"):
        sa.load_capture(partial)
    assert sa.load_capture(partial, allow_incomplete=True).acts.shape[0] == 5

    run = tmp_path / "run"
    synthetic.write_sweep(run)
    with h5py.File(run / schema.SWEEP_RESULTS, "a") as f:
        del f["cells/layer"]
    with pytest.raises(sa.FormatError, match="/cells/layer missing"):
        sa.load_sweep(run)
    with pytest.raises(FileNotFoundError, match="results.h5"):
        sa.load_sweep(tmp_path)
    bad = tmp_path / "gen.jsonl"
    bad.write_text('{"cell_id": 0, "response": "x"}\n{oops\n')
    with pytest.raises(sa.FormatError, match="line 2"):
        sa.load_generations(bad)
    for path in BENCH_JSON:
        bench = json.loads(path.read_text())
        steering = bench["steering"]
        del (steering[-1] if isinstance(steering, list) else steering)["none_ms"]
        (tmp_path / "b.json").write_text(json.dumps(bench))
        with pytest.raises(sa.FormatError, match=r"steering(\[\d+\])?\.none_ms missing"):
            sa.load_bench(tmp_path / "b.json")


# -- plots ------------------------------------------------------------------

def _png(fig, path):
    plots.save(fig, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, f"{path}: {len(data)} bytes"


def test_pca_basis_matches_covariance_eigenvectors():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)) @ np.diag([5, 3, 1, 0.5, 0.2, 0.1])
    _, axes, ratio = plots.pca_basis(x)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    np.testing.assert_allclose(np.abs(axes @ evecs[:, ::-1][:, :2]), np.eye(2), atol=1e-8)
    np.testing.assert_allclose(ratio, evals[::-1][:2] / evals.sum(), rtol=1e-8)


def test_plots_on_c_files(c_capture, c_vectors, c_clusters, tmp_path):
    cap, vec = sa.load_capture(c_capture), sa.load_vectors(c_vectors)
    _png(plots.pca_projection(cap, 10, vec), tmp_path / "pca.png")
    _png(plots.cosine_matrices(vec), tmp_path / "cosine.png")
    _png(plots.cluster_contingency(sa.load_clusters(c_clusters)), tmp_path / "clusters.png")


def test_plots_on_sweep_and_bench(synth, tmp_path):
    cells = sa.load_sweep(synth["run"]).cells
    _png(plots.rate_heatmaps(cells, "unsafe_rate"), tmp_path / "unsafe.png")
    _png(plots.rate_heatmaps(cells, "refusal_rate"), tmp_path / "refusal.png")
    _png(plots.tradeoff(cells), tmp_path / "tradeoff.png")
    benches = [sa.load_bench(p) for p in BENCH_JSON]
    _png(plots.bench_throughput(benches), tmp_path / "throughput.png")
    _png(plots.bench_steering(benches), tmp_path / "steering.png")
    with pytest.raises(KeyError, match="no column"):
        plots.rate_heatmaps(cells, "judge_score")


def test_pareto_front():
    pts = np.array([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0], [2.0, 6.0]])
    np.testing.assert_array_equal(plots._pareto(pts), [[1, 5], [2, 3], [4, 1]])


# -- report -----------------------------------------------------------------

def test_report_is_self_contained_and_escaped(synth, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run([sys.executable, "-m", "safesteer_analysis", "report", str(synth["run"]),
                           "--out", str(out), "--samples", "1"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "analysis")})
    assert proc.returncode == 0, proc.stderr
    html = out.read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == 3   # unsafe, refusal, trade-off
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<details>") == 40                       # one per cell with samples
    best = report.best_cells(sa.load_sweep(synth["run"]).cells)
    assert len(best) == 4 and (best["unsafe_rate"] <= best["baseline_unsafe_rate"]).all()
    bad = subprocess.run([sys.executable, "-m", "safesteer_analysis", "report", str(tmp_path)],
                         capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "analysis")})
    assert bad.returncode == 1 and "no results.h5" in bad.stderr


# -- notebook ---------------------------------------------------------------

def _execute_notebook(tmp_path, monkeypatch, **env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key in ("SAFESTEER_CAPTURE", "SAFESTEER_VECTORS", "SAFESTEER_RUN"):
        monkeypatch.delenv(key, raising=False)
    for key, val in env.items():
        monkeypatch.setenv(key, str(val))
    monkeypatch.setenv("PYTHONPATH", str(REPO / "analysis"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = sum(1 for c in nb.cells for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {}))
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    return images, text


def test_notebook_runs_on_synthetic_fallback(tmp_path, monkeypatch, default_model):
    images, text = _execute_notebook(tmp_path, monkeypatch)
    assert images == 5 and "(synthetic)" in text   # pca, cosine, 2 heatmaps, trade-off
    assert "report.html" in text
    # section 4 steered the default model through the safesteer API
    assert f"model: {default_model}" in text and "separability at layer 14" in text


def test_notebook_runs_on_c_capture(c_capture, c_vectors, synth, tmp_path, monkeypatch):
    images, text = _execute_notebook(tmp_path, monkeypatch, SAFESTEER_CAPTURE=c_capture,
                                     SAFESTEER_VECTORS=c_vectors, SAFESTEER_RUN=synth["run"])
    assert images == 5 and str(c_capture) in text and "(synthetic)" not in text
