"""Small synthetic artefacts in the documented schemas, written with h5py.

They let the notebook and the report run without the C toolkit or a model
(and exercise the loaders in tests). Numbers come from a seeded generator, so
the same seed writes the same files; they illustrate, they measure nothing.
"""
from __future__ import annotations

import json
import pathlib

import h5py
import numpy as np

from . import schema

CATEGORIES = ("crime", "hate", "self_harm", "violence")
STR = h5py.string_dtype("utf-8")


def write_capture(path, n_per_category: int = 8, layers=(2, 5, 8), d_model: int = 32,
                  seed: int = 0) -> pathlib.Path:
    """Pooled (mean) capture: n_per_category unsafe prompts per category plus
    as many safe ("benign") ones; each category sits around its own centre."""
    rng = np.random.default_rng(seed)
    cats = list(CATEGORIES) + ["benign"]
    centres = rng.normal(0, 3, size=(len(cats), len(layers), d_model))        # [K][L][d]
    ids, text, cat, label, acts = [], [], [], [], []
    for k, c in enumerate(cats):
        for i in range(n_per_category):
            ids.append(f"{c}-{i:03d}")
            text.append(f"synthetic {c} prompt {i} <with & \"markup\">")
            cat.append(c)
            label.append("safe" if c == "benign" else "unsafe")
            acts.append(centres[k] + rng.normal(0, 1, size=(len(layers), d_model)))
    acts = np.asarray(acts, dtype=np.float32)                                  # [N][L][d]
    n = len(ids)
    path = pathlib.Path(path)
    with h5py.File(path, "w") as f:
        for key, val in {"format": schema.CAPTURE_FORMAT, "toolkit_version": "synthetic",
                         "model_name": "synthetic", "model_path": "", "model_sha256": "0" * 64,
                         "data_path": "synthetic", "prompts_sha256": "0" * 64,
                         "site": "resid_post", "pooling": "mean", "mean_scope": "prompt",
                         "dtype": "f32", "chat_template": "none", "generation": ""}.items():
            f.attrs[key] = val
        for key, val in {"format_version": 1, "d_model": d_model, "n_layers_model": max(layers) + 1,
                         "chat": 0, "n_prompts": n, "n_done": n, "complete": 1,
                         "norm_tokens": n}.items():
            f.attrs[key] = np.int64(val)
        f["layers"] = np.asarray(layers, dtype=np.int32)
        for name, col in (("id", ids), ("text", text), ("category", cat), ("label", label)):
            f.create_dataset(f"prompts/{name}", data=col, dtype=STR)
        f["prompts/n_tokens"] = rng.integers(8, 40, size=n).astype(np.int32)
        f["acts"] = acts
        f["layer_norms"] = np.linalg.norm(acts, axis=2).mean(axis=0).astype(np.float32)
        f["layer_norm_sum"] = np.linalg.norm(acts, axis=2).sum(axis=0).astype(np.float64)
    return path


def write_vectors(capture_path, path) -> pathlib.Path:
    """Mean-diff vectors (mean(safe) - mean(unsafe_c)) of a pooled capture."""
    with h5py.File(capture_path, "r") as f:
        acts = f["acts"][()].astype(np.float64)                                 # [N][L][d]
        cat = np.asarray(f["prompts/category"].asstr()[()])
        label = np.asarray(f["prompts/label"].asstr()[()])
        layers = f["layers"][()]
        model_sha = f.attrs["model_sha256"]
    safe = acts[label == "safe"].mean(axis=0)                                   # [L][d]
    cats = sorted(set(cat[label == "unsafe"]))
    vecs = np.stack([safe - acts[(cat == c) & (label == "unsafe")].mean(axis=0) for c in cats])
    vecs = vecs.astype(np.float32)                                              # [C][L][d]
    unit = vecs / np.linalg.norm(vecs, axis=2, keepdims=True)
    path = pathlib.Path(path)
    with h5py.File(path, "w") as f:
        for key, val in {"format": schema.VECTORS_FORMAT, "method": "mean-diff",
                         "site": "resid_post", "pooling": "mean", "source_sha256": "0" * 64,
                         "model_name": "synthetic", "model_sha256": model_sha}.items():
            f.attrs[key] = val
        f.attrs["format_version"] = np.int64(1)
        f.attrs["d_model"] = np.int64(vecs.shape[2])
        f["vectors"] = vecs
        f.create_dataset("categories", data=cats, dtype=STR)
        f["layers"] = layers.astype(np.int32)
        f["norms"] = np.linalg.norm(vecs, axis=2).astype(np.float32)
        f["cosine"] = np.einsum("cld,kld->lck", unit, unit).astype(np.float32)
        f["separability"] = np.full(vecs.shape[:2], 0.9, dtype=np.float32)
    return path


def write_clusters(capture_path, path, layer_index: int = 1) -> pathlib.Path:
    """Clusters = the categories themselves (an ideal clustering), for plots."""
    with h5py.File(capture_path, "r") as f:
        acts = f["acts"][:, layer_index, :]                                     # [N][d]
        cat = np.asarray(f["prompts/category"].asstr()[()])
        label = np.asarray(f["prompts/label"].asstr()[()])
        layer = int(f["layers"][layer_index])
    unsafe = label != "safe"
    cats = list(dict.fromkeys(cat[unsafe]))
    assign = np.array([cats.index(c) if u else -1 for c, u in zip(cat, unsafe)], dtype=np.int32)
    cent = np.stack([acts[assign == k].mean(axis=0) for k in range(len(cats))])
    cent = cent / np.linalg.norm(cent, axis=1, keepdims=True)
    cont = np.zeros((len(cats), len(cats)), dtype=np.int64)
    for a, c in zip(assign[unsafe], cat[unsafe]):
        cont[a, cats.index(c)] += 1
    path = pathlib.Path(path)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = schema.CLUSTERS_FORMAT
        f.attrs["format_version"] = np.int64(1)
        f.attrs["metric"] = "cosine"
        for key, val in {"layer": layer, "k": len(cats), "n_clustered": int(unsafe.sum()),
                         "n_safe": int((~unsafe).sum()), "seed": 0}.items():
            f.attrs[key] = np.int64(val)
        for key in ("purity", "nmi", "ari", "silhouette"):
            f.attrs[key] = 1.0
        f["assignments"] = assign
        f["centroids"] = cent.astype(np.float32)
        f["k_values"] = np.array([len(cats)], dtype=np.int32)
        f["silhouette"] = np.array([0.5], dtype=np.float32)
        f["inertia"] = np.array([1.0], dtype=np.float32)
        f["cluster_sizes"] = cont.sum(axis=1)
        f.create_dataset("categories", data=cats, dtype=STR)
        f["contingency"] = cont
    return path


def write_sweep(run_dir, layers=(2, 5, 8), strengths=(2.0, 4.0, 8.0), methods=("mean-diff",),
                n_prompts: int = 4, seed: int = 0) -> pathlib.Path:
    """A sweep run folder (results.h5, generations.jsonl, summary.csv,
    config.resolved.yaml). Steering lowers the unsafe rate most at the middle
    layer and raises perplexity with strength."""
    rng = np.random.default_rng(seed)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = (f"model: synthetic\nvectors: synthetic.h5\nmethods: [{', '.join(methods)}]\n"
              f"categories: [{', '.join(CATEGORIES)}]\nlayers: {list(layers)}\n"
              f"strengths: {list(strengths)}\nprompts_per_category: {n_prompts}\n")
    cells, gens = [], []
    grid = [(m, c, -1, 0.0) for m in methods[:1] for c in CATEGORIES]
    grid += [(m, c, l, s) for m in methods for c in CATEGORIES for l in layers for s in strengths]
    mid = layers[len(layers) // 2]
    for cell_id, (method, cat, layer, strength) in enumerate(grid):
        effect = 0.0 if layer < 0 else strength / max(strengths) / (1 + abs(layer - mid) / 3)
        unsafe = float(np.clip(0.8 - 0.7 * effect + rng.normal(0, 0.03), 0, 1))
        refusal = float(np.clip(0.1 + 0.6 * effect + rng.normal(0, 0.03), 0, 1))
        ppl = float(8 + 10 * (strength / max(strengths)) ** 2 + rng.normal(0, 0.3))
        cells.append({"cell_id": cell_id, "category": cat, "method": method, "layer": layer,
                      "strength": strength, "site": "resid_post", "n_prompts": n_prompts,
                      "unsafe_rate": unsafe, "refusal_rate": refusal, "perplexity": ppl,
                      "distinct_1": 0.7 - 0.2 * effect, "distinct_2": 0.9 - 0.2 * effect,
                      "mean_length": 40.0 - 10 * effect, "relevance": 0.8 - 0.3 * effect})
        for p in range(n_prompts):
            is_unsafe = bool(rng.random() < unsafe)
            refused = bool(not is_unsafe and rng.random() < refusal)
            response = ("I can't help with that." if refused
                        else f"Synthetic answer {p} for <{cat}> & layer {layer}: \"quoted\"\n"
                             "second line </pre><script>alert(1)</script>")
            gens.append({"cell_id": cell_id, "category": cat, "method": method, "layer": layer,
                         "strength": strength, "prompt_id": f"{cat}-{p:03d}",
                         "prompt": f"synthetic {cat} prompt {p}", "response": response,
                         "refused": refused, "unsafe": is_unsafe,
                         "judge_output": "unsafe" if is_unsafe else "safe",
                         "perplexity": ppl, "relevance": 0.8 - 0.3 * effect, "n_tokens": 24})
    with h5py.File(run_dir / schema.SWEEP_RESULTS, "w") as f:
        f.attrs["format"] = schema.SWEEP_FORMAT
        f.attrs["format_version"] = np.int64(1)
        f.attrs["config_yaml"] = config
        f.attrs["model_name"] = "synthetic"
        f.attrs["model_sha256"] = "0" * 64
        for name in schema.SWEEP_CELL_COLUMNS:
            col = [row[name] for row in cells]
            if isinstance(col[0], str):
                f.create_dataset(f"{schema.SWEEP_CELLS_GROUP}/{name}", data=col, dtype=STR)
            elif name in ("cell_id", "layer", "n_prompts"):
                f[f"{schema.SWEEP_CELLS_GROUP}/{name}"] = np.asarray(col, dtype=np.int32)
            else:
                f[f"{schema.SWEEP_CELLS_GROUP}/{name}"] = np.asarray(col, dtype=np.float64)
    with open(run_dir / schema.SWEEP_GENERATIONS, "w", encoding="utf-8") as fh:
        for g in gens:
            fh.write(json.dumps(g) + "\n")
    with open(run_dir / schema.SWEEP_SUMMARY, "w", encoding="utf-8") as fh:
        fh.write(",".join(schema.SWEEP_CELL_COLUMNS) + "\n")
        for row in cells:
            fh.write(",".join(str(row[k]) for k in schema.SWEEP_CELL_COLUMNS) + "\n")
    (run_dir / schema.SWEEP_CONFIG).write_text(config, encoding="utf-8")
    return run_dir


def write_example(out_dir) -> dict:
    """Writes capture.h5, vectors.h5, clusters.h5 and run/ under out_dir."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cap = write_capture(out / "capture.h5")
    return {"capture": cap, "vectors": write_vectors(cap, out / "vectors.h5"),
            "clusters": write_clusters(cap, out / "clusters.h5"),
            "run": write_sweep(out / "run")}
