"""`safesteer vectors` against an independent h5py + numpy recomputation of
mean-diff, pruned and pca vectors (docs/vectors.md), plus bad-input errors."""
import pathlib
import sys

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import run_safesteer  # noqa: E402
from make_synthetic_acts import category_blobs, write_capture  # noqa: E402

RTOL = 1e-5


def load_capture(path):
    with h5py.File(path, "r") as f:
        acts = f["acts"][...].astype(np.float64)
        cats = [s.decode() if isinstance(s, bytes) else s for s in f["prompts/category"][...]]
        labels = [s.decode() if isinstance(s, bytes) else s for s in f["prompts/label"][...]]
        layers = list(f["layers"][...])
        if "offsets" in f:
            off = f["offsets"][...]
            acts = np.stack([acts[off[i]:off[i + 1]].mean(axis=0) for i in range(len(cats))])
    return acts, np.array(cats), np.array(labels), layers


def reference(path, method, split=None, safe_category=None, safe_acts=None):
    """Vectors [C][L][d] per docs/vectors.md, from numpy only."""
    acts, cats, labels, _ = load_capture(path)
    train = np.ones(len(cats), bool) if split is None else split == 0
    names = sorted({c for c, lab in zip(cats, labels) if lab == "unsafe"} - {safe_category})
    out = []
    for c in names:
        unsafe = acts[(cats == c) & (labels == "unsafe") & train]
        if safe_acts is not None:
            safe = load_capture(safe_acts)[0]
        elif safe_category is not None:
            safe = acts[(cats == safe_category) & train]
        else:
            own = (cats == c) & (labels == "safe") & train
            if not own.any():
                own = (labels == "safe") & train
            safe = acts[own]
        m = safe.mean(axis=0)                       # [L][d]
        if method == "mean-diff":
            out.append(m - unsafe.mean(axis=0))
            continue
        diffs = m[None] - unsafe                    # [n][L][d]
        if method == "pruned":
            norms = np.linalg.norm(diffs, axis=2)   # [n][L]
            med = np.median(norms, axis=0)
            out.append(np.stack([diffs[norms[:, l] > med[l], l].mean(axis=0)
                                 for l in range(diffs.shape[1])]))
            continue
        md = m - unsafe.mean(axis=0)
        vecs = []
        for l in range(diffs.shape[1]):
            centred = diffs[:, l] - diffs[:, l].mean(axis=0)
            pc = np.linalg.svd(centred, full_matrices=False)[2][0]
            pc *= np.sign(pc @ md[l])
            vecs.append(pc * np.linalg.norm(md[l]))
        out.append(np.stack(vecs))
    return names, np.stack(out)


def compute(bin_, acts, out, *args):
    run_safesteer(bin_, "vectors", "--acts", acts, "--out", out, *args)
    with h5py.File(out, "r") as f:
        cats = [s.decode() if isinstance(s, bytes) else s for s in f["categories"][...]]
        return cats, f["vectors"][...], dict(f.attrs), {k: f[k][...] for k in f if k != "vectors"
                                                        and k != "categories"}


def assert_close(got, want):
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err < RTOL, f"max relative error {err:.3g}"


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    rng = np.random.default_rng(7)
    acts, cats, labels = category_blobs(rng, 3, 41, 17, 24, 4)
    # a fourth category without safe prompts of its own uses the shared pool
    extra = rng.normal(size=(15, 4, 24)).astype(np.float32) + 3
    acts = np.concatenate([acts, extra])
    cats = cats + ["lonely"] * 15
    labels = labels + ["unsafe"] * 15
    path = tmp_path_factory.mktemp("acts") / "acts.h5"
    write_capture(path, acts, [2, 5, 7, 9], cats, labels)
    return path


@pytest.mark.parametrize("method", ["mean-diff", "pruned"])
def test_matches_numpy(safesteer_bin, capture, tmp_path, method):
    cats, vec, attrs, ds = compute(safesteer_bin, capture, tmp_path / "v.h5", "--method",
                                   method, "--holdout", "0")
    names, want = reference(capture, method)
    assert cats == names
    assert_close(vec, want)
    assert attrs["format"] == "safesteer.vectors" and attrs["method"] == method
    assert list(ds["layers"]) == [2, 5, 7, 9]
    assert ds["safe_pool"][names.index("lonely")].decode() == "label:safe"
    np.testing.assert_allclose(ds["norms"], np.linalg.norm(want, axis=2), rtol=1e-5)
    unit = want / np.linalg.norm(want, axis=2, keepdims=True)
    np.testing.assert_allclose(ds["cosine"], np.einsum("ald,bld->lab", unit, unit), atol=1e-5)
    assert ((ds["separability"] >= 0) & (ds["separability"] <= 1)).all()
    if method == "pruned":
        # strictly above the median keeps floor(n/2) of n distinct norms
        assert (ds["counts_kept"] == (ds["counts_unsafe"] // 2)[:, None]).all()


def test_holdout_split_is_respected(safesteer_bin, capture, tmp_path):
    _, vec, attrs, ds = compute(safesteer_bin, capture, tmp_path / "v.h5", "--method", "pruned",
                                "--holdout", "0.3", "--seed", "11")
    split = ds["split"]
    assert 0.15 < split.mean() < 0.45
    assert_close(vec, reference(capture, "pruned", split=split)[1])
    _, _, _, ds2 = compute(safesteer_bin, capture, tmp_path / "v2.h5", "--holdout", "0.3",
                           "--seed", "11")
    assert (ds2["split"] == split).all()        # the split depends on the seed only
    _, _, _, ds3 = compute(safesteer_bin, capture, tmp_path / "v3.h5", "--holdout", "0.3",
                           "--seed", "12")
    assert (ds3["split"] != split).any()


def test_streaming_chunk_size_does_not_matter(safesteer_bin, capture, tmp_path):
    _, a, _, _ = compute(safesteer_bin, capture, tmp_path / "a.h5", "--method", "pruned",
                         "--chunk-rows", "3")
    _, b, _, _ = compute(safesteer_bin, capture, tmp_path / "b.h5", "--method", "pruned",
                         "--chunk-rows", "500")
    assert (a == b).all()


def test_f16_and_per_token_captures(safesteer_bin, tmp_path):
    rng = np.random.default_rng(3)
    acts, cats, labels = category_blobs(rng, 2, 20, 10, 16, 3)
    f16 = tmp_path / "f16.h5"
    write_capture(f16, acts.astype(np.float16), [0, 1, 2], cats, labels, dtype="f16")
    _, vec, _, _ = compute(safesteer_bin, f16, tmp_path / "v16.h5", "--holdout", "0")
    assert_close(vec, reference(f16, "mean-diff")[1])
    # per-token capture: 1..4 tokens per prompt, mean-pooled via /offsets
    ntok = rng.integers(1, 5, size=len(cats))
    off = np.concatenate([[0], np.cumsum(ntok)])
    tok = np.concatenate([acts[i][None] + rng.normal(size=(n, 3, 16)) for i, n in enumerate(ntok)])
    per_tok = tmp_path / "all.h5"
    write_capture(per_tok, tok, [0, 1, 2], cats, labels, offsets=off)
    _, vec, attrs, _ = compute(safesteer_bin, per_tok, tmp_path / "vall.h5", "--method", "pruned",
                               "--holdout", "0")
    assert attrs["pooling"] == "all"
    assert_close(vec, reference(per_tok, "pruned")[1])


def test_safe_category_and_safe_acts(safesteer_bin, capture, tmp_path):
    rng = np.random.default_rng(5)
    acts, cats, labels = category_blobs(rng, 2, 12, 0, 24, 4)
    cats = [c if i % 3 else "benign" for i, c in enumerate(cats)]
    labels = [lab if i % 3 else "benign" for i, lab in enumerate(labels)]
    path = tmp_path / "named.h5"
    write_capture(path, acts, [2, 5, 7, 9], cats, labels)
    names, vec, _, ds = compute(safesteer_bin, path, tmp_path / "v.h5", "--safe-category",
                                "benign", "--holdout", "0")
    assert names == ["cat0", "cat1"] and ds["safe_pool"][0].decode() == "category:benign"
    assert_close(vec, reference(path, "mean-diff", safe_category="benign")[1])
    # every prompt of another capture as the safe pool
    _, vec, attrs, ds = compute(safesteer_bin, capture, tmp_path / "v2.h5", "--safe-acts", path,
                                "--holdout", "0", "--method", "pruned")
    assert_close(vec, reference(capture, "pruned", safe_acts=path)[1])
    assert len(attrs["safe_source_sha256"]) == 64


def test_pca_direction(safesteer_bin, tmp_path):
    rng = np.random.default_rng(9)
    d, n = 20, 60
    axis = rng.normal(size=d)
    axis /= np.linalg.norm(axis)
    unsafe = 5 + rng.normal(size=(n, 2, d)) * 0.3 + rng.normal(size=(n, 2, 1)) * 4 * axis
    safe = rng.normal(size=(30, 2, d))
    acts = np.concatenate([unsafe, safe])
    path = tmp_path / "pca.h5"
    write_capture(path, acts, [1, 2], ["c"] * 90, ["unsafe"] * n + ["safe"] * 30)
    _, vec, attrs, _ = compute(safesteer_bin, path, tmp_path / "v.h5", "--method", "pca",
                               "--holdout", "0")
    want = reference(path, "pca")[1]
    assert_close(vec, want)
    assert attrs["pca_residual"] < 1e-12 and attrs["pca_iterations"] < 200
    _, again, _, _ = compute(safesteer_bin, path, tmp_path / "v2.h5", "--method", "pca",
                             "--holdout", "0")
    assert (vec == again).all()                 # deterministic


def expect_error(bin_, *args, contains, code=1):
    proc = run_safesteer(bin_, "vectors", *map(str, args), check=False)
    assert proc.returncode == code, proc.stderr
    for s in contains:
        assert s in proc.stderr, proc.stderr


def test_bad_inputs(safesteer_bin, capture, tmp_path):
    out = tmp_path / "v.h5"
    expect_error(safesteer_bin, "--acts", capture, "--out", out, "--layers", "3",
                 contains=[str(capture), "layer 3", "/layers holds 2,5,7,9"])
    expect_error(safesteer_bin, "--acts", capture, "--out", out, "--layers", "5,12", code=2,
                 contains=['--layers "5,12"', "layer 12 out of range", "layers 0..9"])
    expect_error(safesteer_bin, "--acts", capture, "--out", out, "--categories", "cat0,nope",
                 contains=[str(capture), '"nope"', "/prompts/label"])
    rng = np.random.default_rng(1)
    acts, cats, labels = category_blobs(rng, 2, 5, 3, 8, 2)
    acts[4, 1, 6] = np.nan
    bad = tmp_path / "nan.h5"
    write_capture(bad, acts, [0, 1], cats, labels)
    expect_error(safesteer_bin, "--acts", bad, "--out", out,
                 contains=[str(bad), "/acts prompt 4", "p00004", "layer 1", "dim 6", "nan"])
    one = tmp_path / "one.h5"
    write_capture(one, acts[:3] * 0 + 1, [0, 1], ["a", "a", "a"], ["unsafe", "safe", "safe"])
    expect_error(safesteer_bin, "--acts", one, "--out", out, "--method", "pruned",
                 "--holdout", "0", contains=['"a"', "pruning keeps none"])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something.else"
    expect_error(safesteer_bin, "--acts", tmp_path / "other.h5", "--out", out,
                 contains=["format", "something.else"])
    expect_error(safesteer_bin, "--acts", tmp_path / "absent.h5", "--out", out,
                 contains=[str(tmp_path / "absent.h5"), "No such file"])
    (tmp_path / "text.h5").write_text("not hdf5\n")
    expect_error(safesteer_bin, "--acts", tmp_path / "text.h5", "--out", out,
                 contains=[str(tmp_path / "text.h5"), "not an HDF5 file"])
    assert not out.exists()


def test_cluster_cli_recovers_blobs_and_vectors(safesteer_bin, tmp_path):
    """`safesteer cluster`: k chosen by silhouette, ARI against the categories,
    and cluster vectors = mean(safe pool) - mean(cluster members), from numpy."""
    rng = np.random.default_rng(21)
    acts, cats, labels = category_blobs(rng, 4, 45, 10, 24, 2, spread=1.0, sep=3.0)
    path = tmp_path / "blobs.h5"
    write_capture(path, acts, [3, 6], cats, labels)
    out = tmp_path / "cl.h5"
    proc = run_safesteer(safesteer_bin, "cluster", "--acts", path, "--layer", "6", "--k-range",
                         "2..7", "--metric", "l2", "--seed", "5", "--out", out)
    assert "ARI" in proc.stdout
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "safesteer.clusters" and f.attrs["k"] == 4
        assert f.attrs["ari"] > 0.95 and f.attrs["purity"] > 0.95
        assert list(f["k_values"][...]) == [2, 3, 4, 5, 6, 7]
        assert int(np.argmax(f["silhouette"][...])) == 2
        assign = f["assignments"][...]
        vec = f["vectors"][...]
        cent = f["centroids"][...]
    x = acts[:, 1].astype(np.float64)
    lab = np.array(labels)
    assert (assign[lab == "safe"] == -1).all() and (assign[lab != "safe"] >= 0).all()
    safe_mean = x[lab == "safe"].mean(axis=0)
    for k in range(4):
        members = x[assign == k]
        np.testing.assert_allclose(cent[k], members.mean(axis=0), rtol=1e-4, atol=1e-4)
        assert_close(vec[k], safe_mean - members.mean(axis=0))
    # the seed fixes the result
    run_safesteer(safesteer_bin, "cluster", "--acts", path, "--layer", "6", "--k-range", "2..7",
                  "--metric", "l2", "--seed", "5", "--out", tmp_path / "cl2.h5")
    with h5py.File(tmp_path / "cl2.h5", "r") as f:
        assert (f["assignments"][...] == assign).all()
    proc = run_safesteer(safesteer_bin, "cluster", "--acts", path, "--layer", "4", "--k", "3",
                         "--out", tmp_path / "x.h5", check=False)
    assert proc.returncode == 1 and "layer 4" in proc.stderr and str(path) in proc.stderr
