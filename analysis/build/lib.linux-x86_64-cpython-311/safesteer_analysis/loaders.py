"""Readers for every safesteer artefact, with h5py / numpy / pandas only.

Each loader checks the file's `format` attribute (and `format_version`) first
and raises FormatError naming the file, the attribute and the value at fault.
Strings come back as `str` (h5py gives `bytes` for string datasets).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import h5py
import numpy as np
import pandas as pd

from . import schema


class FormatError(ValueError):
    """A file that is not the safesteer artefact the caller asked for."""

    def __init__(self, path, attribute, value, expected):
        self.path, self.attribute, self.value, self.expected = str(path), attribute, value, expected
        super().__init__(f"{path}: {attribute} is {value!r}, expected {expected}")


def _attrs(obj) -> dict:
    """h5py attributes as plain Python values (str, int, float, lists)."""
    out = {}
    for key, val in obj.attrs.items():
        if isinstance(val, bytes):
            val = val.decode("utf-8")
        elif isinstance(val, np.generic):
            val = val.item()
        elif isinstance(val, np.ndarray):
            val = val.tolist()
        out[key] = val
    return out


def _check_format(path, attrs: dict, expected: str, versions) -> None:
    if "format" not in attrs:
        raise FormatError(path, "attribute format", None, repr(expected))
    if attrs["format"] != expected:
        raise FormatError(path, "attribute format", attrs["format"], repr(expected))
    # format_version is optional (cluster and vector imports may omit it); a
    # newer one than we know is refused rather than misread.
    version = attrs.get("format_version")
    if version is not None and version not in versions:
        raise FormatError(path, "attribute format_version", version,
                          " or ".join(map(str, versions)))


def _column(ds):
    """A dataset as a list of str (1-D string data) or a numpy array."""
    return list(ds.asstr()[()]) if h5py.check_string_dtype(ds.dtype) else ds[()]


def _require(path, f, names) -> None:
    for name in names:
        if name not in f:
            raise FormatError(path, "dataset", f"/{name} missing", "it to be present")


# -- captures ---------------------------------------------------------------

@dataclasses.dataclass
class Capture:
    """A capture file. acts is [N][L][d] (or [T][L][d] with offsets [N+1]);
    with lazy=True it is the open h5py dataset, read on slicing."""
    path: pathlib.Path
    attrs: dict
    layers: np.ndarray          # int32 [L]: model layer of each acts column
    prompts: pd.DataFrame       # one row per prompt, capture order
    acts: object                # np.ndarray or h5py.Dataset [N|T][L][d]
    offsets: np.ndarray | None  # int64 [N+1] for pooling = all
    layer_norms: np.ndarray | None  # float32 [L]
    _file: h5py.File | None = None

    def layer_index(self, layer: int) -> int:
        hits = np.flatnonzero(self.layers == layer)
        if hits.size == 0:
            raise KeyError(f"{self.path}: layer {layer} was not captured "
                           f"(/layers holds {', '.join(map(str, self.layers))})")
        return int(hits[0])

    def pooled(self, layer: int) -> np.ndarray:
        """[N][d] float32 activations of one model layer, one row per prompt
        (per-token captures are mean-pooled over each prompt's rows)."""
        li = self.layer_index(layer)
        if self.offsets is None:
            return np.asarray(self.acts[:, li, :], dtype=np.float32)
        rows = np.asarray(self.acts[:, li, :], dtype=np.float64)        # [T][d]
        sums = np.add.reduceat(rows, self.offsets[:-1], axis=0)        # [N][d]
        counts = np.diff(self.offsets)[:, None]
        return (sums / np.maximum(counts, 1)).astype(np.float32)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_capture(path, lazy: bool = False, allow_incomplete: bool = False) -> Capture:
    path = pathlib.Path(path)
    f = h5py.File(path, "r")
    try:
        attrs = _attrs(f)
        _check_format(path, attrs, schema.CAPTURE_FORMAT, schema.CAPTURE_VERSIONS)
        if attrs.get(schema.CAPTURE_COMPLETE) != 1 and not allow_incomplete:
            raise FormatError(path, "attribute complete", attrs.get(schema.CAPTURE_COMPLETE),
                              f"1 (incomplete capture: {attrs.get('n_done')} of "
                              f"{attrs.get('n_prompts')} prompts; pass allow_incomplete=True)")
        _require(path, f, (schema.CAPTURE_LAYERS, schema.CAPTURE_ACTS, "prompts"))
        n_done = int(attrs.get("n_done", attrs.get("n_prompts", 0)))
        cols = {}
        for name in schema.CAPTURE_PROMPT_STR + schema.CAPTURE_PROMPT_OPTIONAL:
            key = f"prompts/{name}"
            if key in f:
                cols[name] = _column(f[key])[:n_done]
        prompts = pd.DataFrame(cols)
        offsets = f[schema.CAPTURE_OFFSETS][: n_done + 1] if schema.CAPTURE_OFFSETS in f else None
        norms = f[schema.CAPTURE_LAYER_NORMS][()] if schema.CAPTURE_LAYER_NORMS in f else None
        acts_ds = f[schema.CAPTURE_ACTS]
        if lazy:
            acts, handle = acts_ds, f
        else:
            rows = int(offsets[-1]) if offsets is not None else n_done
            acts, handle = acts_ds[:rows], None
        cap = Capture(path, attrs, f[schema.CAPTURE_LAYERS][()], prompts, acts, offsets,
                      norms, handle)
    except BaseException:
        f.close()
        raise
    if not lazy:
        f.close()
    return cap


# -- vectors ----------------------------------------------------------------

@dataclasses.dataclass
class Vectors:
    path: pathlib.Path
    attrs: dict
    vectors: np.ndarray         # float32 [C][L][d]
    categories: list[str]       # [C]
    layers: np.ndarray          # int32 [L]
    norms: np.ndarray           # float32 [C][L]
    cosine: np.ndarray          # float32 [L][C][C]
    extra: dict                 # optional datasets (separability, counts_*, split, ...)

    def vector(self, category: str, layer: int) -> np.ndarray:
        if category not in self.categories:
            raise KeyError(f"{self.path}: no category {category!r} "
                           f"(/categories holds {', '.join(self.categories)})")
        hits = np.flatnonzero(self.layers == layer)
        if hits.size == 0:
            raise KeyError(f"{self.path}: no layer {layer} "
                           f"(/layers holds {', '.join(map(str, self.layers))})")
        return self.vectors[self.categories.index(category), int(hits[0])]

    def table(self) -> pd.DataFrame:
        """One row per (category, layer): norm and, when stored, separability."""
        rows = []
        sep = self.extra.get("separability")
        for c, cat in enumerate(self.categories):
            for l, layer in enumerate(self.layers):
                row = {"category": cat, "layer": int(layer), "norm": float(self.norms[c, l])}
                if sep is not None:
                    row["separability"] = float(sep[c, l])
                rows.append(row)
        return pd.DataFrame(rows)


def cosine_matrices(vectors: np.ndarray) -> np.ndarray:
    """[C][L][d] -> [L][C][C] cosine similarities (0 for a zero vector, as the C writer)."""
    v = np.transpose(vectors.astype(np.float64), (1, 0, 2))      # [L][C][d]
    norms = np.linalg.norm(v, axis=2, keepdims=True)               # [L][C][1]
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return np.einsum("lcd,lkd->lck", unit, unit).astype(np.float32)


def load_vectors(path) -> Vectors:
    path = pathlib.Path(path)
    with h5py.File(path, "r") as f:
        attrs = _attrs(f)
        _check_format(path, attrs, schema.VECTORS_FORMAT, schema.VECTORS_VERSIONS)
        _require(path, f, schema.VECTORS_REQUIRED)
        vectors = f["vectors"][()]
        categories = _column(f["categories"])
        layers = f["layers"][()]
        if vectors.shape[:2] != (len(categories), len(layers)):
            raise FormatError(path, "dataset /vectors shape", vectors.shape,
                              f"[{len(categories)}][{len(layers)}][d] (/categories x /layers)")
        extra = {k: _column(f[k]) for k in schema.VECTORS_OPTIONAL if k in f}
    norms = extra.pop("norms", None)
    if norms is None:
        norms = np.linalg.norm(vectors, axis=2).astype(np.float32)
    cosine = extra.pop("cosine", None)
    if cosine is None:
        cosine = cosine_matrices(vectors)
    return Vectors(path, attrs, vectors, categories, layers, norms, cosine, extra)


# -- clusters ---------------------------------------------------------------

@dataclasses.dataclass
class Clusters:
    path: pathlib.Path
    attrs: dict
    assignments: np.ndarray     # int32 [N], -1 = safe pool
    centroids: np.ndarray       # float32 [K][d]
    k_scan: pd.DataFrame        # k, silhouette, inertia: one row per k tried
    cluster_sizes: np.ndarray   # int64 [K]
    contingency: pd.DataFrame   # [K][M]: rows cluster, columns category
    vectors: np.ndarray | None  # float32 [K][d] (only with a safe pool)


def load_clusters(path) -> Clusters:
    path = pathlib.Path(path)
    with h5py.File(path, "r") as f:
        attrs = _attrs(f)
        _check_format(path, attrs, schema.CLUSTERS_FORMAT, schema.CLUSTERS_VERSIONS)
        _require(path, f, schema.CLUSTERS_REQUIRED)
        k_scan = pd.DataFrame({"k": f["k_values"][()], "silhouette": f["silhouette"][()],
                               "inertia": f["inertia"][()]})
        cont = pd.DataFrame(f["contingency"][()], columns=_column(f["categories"]))
        cont.index.name = "cluster"
        vectors = f["vectors"][()] if "vectors" in f else None
        return Clusters(path, attrs, f["assignments"][()], f["centroids"][()], k_scan,
                        f["cluster_sizes"][()], cont, vectors)


# -- sweeps -----------------------------------------------------------------

@dataclasses.dataclass
class SweepRun:
    path: pathlib.Path
    attrs: dict
    cells: pd.DataFrame         # one row per cell, columns schema.SWEEP_CELL_COLUMNS
    generations: pd.DataFrame   # one row per (cell, prompt)
    config_yaml: str
    summary: pd.DataFrame | None

    def baseline(self) -> pd.DataFrame:
        return self.cells[self.cells["layer"] == schema.BASELINE_LAYER]

    def steered(self) -> pd.DataFrame:
        return self.cells[self.cells["layer"] != schema.BASELINE_LAYER]


def load_sweep_results(path) -> tuple[dict, pd.DataFrame]:
    """results.h5 -> (root attributes, cells DataFrame)."""
    path = pathlib.Path(path)
    with h5py.File(path, "r") as f:
        attrs = _attrs(f)
        _check_format(path, attrs, schema.SWEEP_FORMAT, schema.SWEEP_VERSIONS)
        if schema.SWEEP_CELLS_GROUP not in f:
            raise FormatError(path, "group", f"/{schema.SWEEP_CELLS_GROUP} missing",
                              "it to be present")
        group = f[schema.SWEEP_CELLS_GROUP]
        missing = [k for k in schema.SWEEP_CELL_KEYS if k not in group]
        if missing:
            raise FormatError(path, "dataset", f"/{schema.SWEEP_CELLS_GROUP}/{missing[0]} missing",
                              "it to be present")
        n = group["cell_id"].shape[0]
        cols = {}
        # Known columns first, in schema order, then anything newer the writer added.
        names = [k for k in schema.SWEEP_CELL_COLUMNS if k in group]
        names += sorted(k for k in group if k not in names and isinstance(group[k], h5py.Dataset))
        for name in names:
            ds = group[name]
            if ds.shape != (n,):
                raise FormatError(path, f"dataset /{schema.SWEEP_CELLS_GROUP}/{name} shape",
                                  ds.shape, f"({n},) like /{schema.SWEEP_CELLS_GROUP}/cell_id")
            cols[name] = _column(ds)
    return attrs, pd.DataFrame(cols)


def load_generations(path) -> pd.DataFrame:
    """generations.jsonl -> one row per generated response."""
    path = pathlib.Path(path)
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise FormatError(path, f"line {lineno}", line[:60], f"a JSON object ({e.msg})")
    df = pd.DataFrame(rows, columns=list(schema.SWEEP_GENERATION_FIELDS) if not rows else None)
    missing = [k for k in ("cell_id", "response") if k not in df.columns]
    if missing:
        raise FormatError(path, "field", f"{missing[0]} missing", "it in every record")
    return df


def load_sweep(run_dir) -> SweepRun:
    """A sweep run folder: results.h5 (required), generations.jsonl,
    config.resolved.yaml and summary.csv (each optional)."""
    run_dir = pathlib.Path(run_dir)
    results = run_dir / schema.SWEEP_RESULTS
    if not results.exists():
        raise FileNotFoundError(f"{run_dir}: no {schema.SWEEP_RESULTS} (not a sweep run folder?)")
    attrs, cells = load_sweep_results(results)
    gen_path = run_dir / schema.SWEEP_GENERATIONS
    generations = (load_generations(gen_path) if gen_path.exists()
                   else pd.DataFrame(columns=list(schema.SWEEP_GENERATION_FIELDS)))
    cfg_path = run_dir / schema.SWEEP_CONFIG
    config = cfg_path.read_text(encoding="utf-8") if cfg_path.exists() else attrs.get("config_yaml", "")
    sum_path = run_dir / schema.SWEEP_SUMMARY
    summary = pd.read_csv(sum_path) if sum_path.exists() else None
    return SweepRun(run_dir, attrs, cells, generations, config, summary)


# -- benchmarks -------------------------------------------------------------

@dataclasses.dataclass
class Bench:
    path: pathlib.Path
    raw: dict
    decode: pd.DataFrame        # one row per (batch, graphs)
    steering: pd.DataFrame      # one row per batch: none_ms, one_layer_ms, all_layers_ms,
                                # one_layer_overhead_pct, all_layers_overhead_pct

    @property
    def model(self) -> str:
        return self.raw["model"]

    @property
    def device(self) -> str:
        return self.raw["device"]


def load_bench(path) -> Bench:
    """`safesteer bench --json` output. It has no format key, so the check is
    that every documented key is there."""
    path = pathlib.Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(path, "content", f"invalid JSON at line {e.lineno}", "bench JSON") from e
    if not isinstance(raw, dict):
        raise FormatError(path, "top level", type(raw).__name__, "a JSON object")
    for key in schema.BENCH_REQUIRED:
        if key not in raw:
            raise FormatError(path, "key", f"{key} missing", "a safesteer bench JSON")
    decode = pd.DataFrame(raw["decode"])
    for key in schema.BENCH_DECODE_FIELDS:
        if key not in decode.columns:
            raise FormatError(path, "key", f"decode[].{key} missing", "a safesteer bench JSON")
    # one object (first bench version: batch 1) or a list with one per batch
    rows = raw["steering"] if isinstance(raw["steering"], list) else [raw["steering"]]
    for i, row in enumerate(rows):
        for key in schema.BENCH_STEERING_FIELDS:
            if key not in row:
                where = f"steering[{i}].{key}" if isinstance(raw["steering"], list) else \
                    f"steering.{key}"
                raise FormatError(path, "key", f"{where} missing", "a safesteer bench JSON")
    steering = pd.DataFrame([{"batch": 1, **row} for row in rows])
    base = steering["none_ms"].where(steering["none_ms"] > 0)
    for key in ("one_layer_ms", "all_layers_ms"):
        steering[key.replace("_ms", "_overhead_pct")] = 100.0 * (steering[key] - base) / base
    return Bench(path, raw, decode, steering)
