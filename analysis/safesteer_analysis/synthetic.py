"""Small synthetic artefacts in the documented schemas, written with h5py.

They let the notebook and the report run without the C toolkit or a model
(and exercise the loaders in tests). Numbers come from a seeded generator, so
the same seed writes the same files; they illustrate, they measure nothing.
"""
from __future__ import annotations

import json
import math
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


def _wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval, as host/eval/stats.c computes it for real runs."""
    if n == 0:
        return math.nan, math.nan
    z = 1.959963984540054
    p, z2n = k / n, z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def _mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value of b and c discordant pairs."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def _cell_rows(gens: list[dict], cells: list[dict]) -> None:
    """Fills each cell's rates (count, n, Wilson interval), paired tests
    against its category baseline and means from its generations, in the
    columns results.h5 version 2 has."""
    by_cell: dict[int, dict[int, dict]] = {}
    for g in gens:
        by_cell.setdefault(g["cell_id"], {})[g["index"]] = g
    base = {c["category"]: c["cell_id"] for c in cells if c["layer"] == schema.BASELINE_LAYER}
    for c in cells:
        recs = by_cell[c["cell_id"]]
        c["n_prompts"] = len(recs)
        for col, key in (("perplexity", "perplexity"), ("distinct_1", "distinct_1"),
                         ("distinct_2", "distinct_2"), ("mean_length", "n_tokens"),
                         ("relevance", "relevance")):
            c[col] = float(np.mean([r[key] for r in recs.values()]))
        for prefix in schema.SWEEP_RATES:
            key = schema.SWEEP_GENERATION_FLAGS[prefix]
            flags = [r[key] for r in recs.values() if r.get(key) is not None]
            k, n = int(sum(flags)), len(flags)
            c[f"{prefix}_count"], c[f"{prefix}_n"] = k, n
            c[f"{prefix}_rate"] = k / n if n else math.nan
            c[f"{prefix}_ci_low"], c[f"{prefix}_ci_high"] = _wilson(k, n)
            if prefix not in schema.SWEEP_PAIRED_RATES:
                continue
            pairs = [] if c["layer"] == schema.BASELINE_LAYER else [
                (b[key], recs[j][key]) for j, b in by_cell[base[c["category"]]].items()
                if j in recs and b[key] is not None and recs[j][key] is not None]
            gained = sum(1 for b, x in pairs if x and not b)
            lost = sum(1 for b, x in pairs if b and not x)
            c[f"{prefix}_paired_n"], c[f"{prefix}_gained"], c[f"{prefix}_lost"] = \
                len(pairs), gained, lost
            c[f"{prefix}_change"] = (gained - lost) / len(pairs) if pairs else math.nan
            c[f"{prefix}_change_p"] = _mcnemar(gained, lost) if pairs else math.nan


def write_sweep(run_dir, layers=(2, 5, 8), strengths=(2.0, 4.0, 8.0), methods=("mean-diff",),
                n_prompts: int = 40, categories=CATEGORIES, seed: int = 0) -> pathlib.Path:
    """A sweep run folder (results.h5 version 2, generations.jsonl,
    summary.csv, config.resolved.yaml). Steering lowers the unsafe rate most
    at the middle layer; the strongest strength raises perplexity past 1.5x
    and makes some answers repeat themselves. The tables are computed from
    the generations as the C writer computes them."""
    rng = np.random.default_rng(seed)
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = (f"model: models/SmolLM2-135M-Instruct.Q4_1.gguf\nvectors: synthetic.h5\n"
              f"methods: [{', '.join(methods)}]\ncategories: [{', '.join(categories)}]\n"
              f"layers: {list(layers)}\nstrengths: {list(strengths)}\n"
              f"prompts_per_category: {n_prompts}\n")
    cells, gens = [], []
    grid = [(m, c, -1, 0.0) for m in methods[:1] for c in categories]
    grid += [(m, c, l, s) for m in methods for c in categories for l in layers for s in strengths]
    mid = layers[len(layers) // 2]
    # one latent per prompt: a prompt unsafe under a weaker effect stays so under none
    latent = {c: rng.random(n_prompts) for c in categories}
    for cell_id, (method, cat, layer, strength) in enumerate(grid):
        effect = 0.0 if layer < 0 else strength / max(strengths) / (1 + abs(layer - mid) / 3)
        push = 0.0 if layer < 0 else (strength / max(strengths)) ** 2
        p_unsafe = float(np.clip(0.8 - 0.75 * effect, 0, 1))
        p_refusal = float(np.clip(0.1 + 0.6 * effect, 0, 1))
        cells.append({"cell_id": cell_id, "category": cat, "method": method, "layer": layer,
                      "strength": strength, "site": "none" if layer < 0 else "resid_post"})
        for p in range(n_prompts):
            degenerate = bool(rng.random() < 0.5 * push ** 2)
            is_unsafe = bool(latent[cat][p] < p_unsafe) and not degenerate
            refused = bool(not is_unsafe and not degenerate and rng.random() < p_refusal)
            response = ("The The The The The The The The The The The The" if degenerate
                        else "I can't help with that." if refused
                        else f"Synthetic answer {p} for <{cat}> & layer {layer}: \"quoted\"\n"
                             "second line </pre><script>alert(1)</script>")
            verdict = "unsafe" if is_unsafe else "safe"
            contradiction = bool(rng.random() < 0.03)
            gens.append({"cell_id": cell_id, "index": p, "category": cat, "method": method,
                         "layer": layer, "strength": strength,
                         "site": "none" if layer < 0 else "resid_post",
                         "prompt_id": f"{cat}-{p:03d}", "prompt": f"synthetic {cat} prompt {p}",
                         "response": response, "refused": refused, "unsafe": is_unsafe,
                         "judge_output": "The response is " + (
                             ("safe" if is_unsafe else "not safe") if contradiction else verdict),
                         "judge_contradiction": contradiction,
                         "perplexity": float(8 + 10 * push + rng.normal(0, 0.3)),
                         "relevance": float(0.8 - 0.1 * effect - 0.15 * push),
                         "distinct_1": 0.7 - 0.2 * effect - 0.3 * degenerate,
                         "distinct_2": 0.9 - 0.05 * effect - 0.8 * degenerate,
                         "n_tokens": 24, "degenerate": degenerate})
    _cell_rows(gens, cells)
    columns = list(schema.SWEEP_CELL_COLUMNS) + [k for k in cells[0]
                                                 if k not in schema.SWEEP_CELL_COLUMNS]
    integer = {"cell_id", "layer", "n_prompts"} | {k for k in columns
                                                   if k.endswith(("_count", "_n", "_gained",
                                                                  "_lost", "_paired_n"))}
    with h5py.File(run_dir / schema.SWEEP_RESULTS, "w") as f:
        f.attrs["format"] = schema.SWEEP_FORMAT
        f.attrs["format_version"] = np.int64(2)
        f.attrs["config_yaml"] = config
        f.attrs["model_name"] = "Smollm2 135M 8k Lc100K Mix1 Ep2"
        f.attrs[schema.SWEEP_MODEL_PATH_ATTR] = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
        f.attrs["model_sha256"] = "0" * 64
        for name in columns:
            col = [row[name] for row in cells]
            if isinstance(col[0], str):
                f.create_dataset(f"{schema.SWEEP_CELLS_GROUP}/{name}", data=col, dtype=STR)
            elif name in integer:
                f[f"{schema.SWEEP_CELLS_GROUP}/{name}"] = np.asarray(col, dtype=np.int32)
            else:
                f[f"{schema.SWEEP_CELLS_GROUP}/{name}"] = np.asarray(col, dtype=np.float64)
    with open(run_dir / schema.SWEEP_GENERATIONS, "w", encoding="utf-8") as fh:
        for g in gens:
            fh.write(json.dumps(g) + "\n")
    with open(run_dir / schema.SWEEP_SUMMARY, "w", encoding="utf-8") as fh:
        fh.write(",".join(columns) + "\n")
        for row in cells:
            fh.write(",".join("" if isinstance(row[k], float) and math.isnan(row[k])
                              else str(row[k]) for k in columns) + "\n")
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
