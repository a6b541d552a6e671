"""Writes capture-schema HDF5 files (format "safesteer.capture", see
docs/hdf5-schema.md) from synthetic activations, for the vector and cluster
tests.  Usable as a module (write_capture, category_blobs) or a script:

    python make_synthetic_acts.py --out acts.h5 --categories 3 --per-category 40 \
        --d-model 32 --layers 0,1,2 --seed 1
"""
import argparse
import hashlib

import h5py
import numpy as np


def write_capture(path, acts, layers, categories, labels, ids=None, dtype="f32",
                  offsets=None, model_sha256=None, site="resid_post", n_done=None):
    """acts: float array [N][L][d] (pooled) or [T][L][d] with offsets int64[N+1]."""
    acts = np.asarray(acts, dtype=np.float32)
    n = len(categories)
    d = acts.shape[2]
    if ids is None:
        ids = [f"p{i:05d}" for i in range(n)]
    str_t = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "safesteer.capture"
        f.attrs["format_version"] = 1
        f.attrs["toolkit_version"] = "synthetic"
        f.attrs["model_name"] = "synthetic"
        f.attrs["model_path"] = "synthetic"
        f.attrs["model_sha256"] = model_sha256 or hashlib.sha256(b"synthetic").hexdigest()
        f.attrs["d_model"] = d
        f.attrs["n_layers_model"] = int(max(layers)) + 1
        f.attrs["site"] = site
        f.attrs["pooling"] = "all" if offsets is not None else "mean"
        f.attrs["dtype"] = dtype
        f.attrs["n_prompts"] = n
        f.attrs["n_done"] = n if n_done is None else n_done
        f.attrs["complete"] = 1
        f.create_dataset("layers", data=np.asarray(layers, dtype=np.int32))
        f.create_dataset("prompts/text", data=[f"text {i}" for i in range(n)], dtype=str_t)
        f.create_dataset("prompts/id", data=list(ids), dtype=str_t)
        f.create_dataset("prompts/category", data=list(categories), dtype=str_t)
        f.create_dataset("prompts/label", data=list(labels), dtype=str_t)
        ntok = (np.diff(offsets) if offsets is not None else np.ones(n)).astype(np.int32)
        f.create_dataset("prompts/n_tokens", data=ntok)
        f.create_dataset("acts", data=acts.astype(np.float16 if dtype == "f16" else np.float32),
                         chunks=(min(16, acts.shape[0]), acts.shape[1], d))
        if offsets is not None:
            f.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
        f.create_dataset("layer_norms", data=np.linalg.norm(acts, axis=2).mean(axis=0)
                         .astype(np.float32))


def category_blobs(rng, n_cat, per_cat, n_safe_per_cat, d, n_layers, spread=1.0, sep=6.0):
    """Unsafe prompts of n_cat categories around distinct centres, plus safe
    prompts of the same categories around a shared benign centre.  Returns
    acts [N][L][d], categories [N], labels [N]."""
    centres = rng.normal(size=(n_cat, n_layers, d)) * sep
    benign = rng.normal(size=(n_layers, d)) * sep
    acts, cats, labels = [], [], []
    for c in range(n_cat):
        for _ in range(per_cat):
            acts.append(centres[c] + rng.normal(size=(n_layers, d)) * spread)
            cats.append(f"cat{c}")
            labels.append("unsafe")
        for _ in range(n_safe_per_cat):
            acts.append(benign + rng.normal(size=(n_layers, d)) * spread)
            cats.append(f"cat{c}")
            labels.append("safe")
    order = rng.permutation(len(cats))
    acts = np.asarray(acts, dtype=np.float32)[order]
    return acts, [cats[i] for i in order], [labels[i] for i in order]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--categories", type=int, default=3)
    ap.add_argument("--per-category", type=int, default=40)
    ap.add_argument("--safe-per-category", type=int, default=20)
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--layers", default="0,1,2")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    layers = [int(x) for x in a.layers.split(",")]
    rng = np.random.default_rng(a.seed)
    acts, cats, labels = category_blobs(rng, a.categories, a.per_category, a.safe_per_category,
                                        a.d_model, len(layers))
    write_capture(a.out, acts, layers, cats, labels, dtype=a.dtype)


if __name__ == "__main__":
    main()
