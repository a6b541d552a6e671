"""Matplotlib figures of captures, vectors, sweeps and benchmarks.

Figures are built with matplotlib.figure.Figure and the Agg canvas, never
through pyplot, so nothing depends on (or changes) the global backend:
headless runs, tests and notebooks all behave the same. Each function returns
a Figure; save() / to_png() write it.
"""
from __future__ import annotations

import io
import pathlib

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure

from . import schema

DPI = 100
# Font sizes in pixels, in the PNG and in the report, which shows figures at
# their own size (MAX_FIGURE_WIDTH fits its page): numbers written on cells,
# and legends and notes (never below 11 px).
LABEL_PX, SMALL_PX = 15, 12
LABEL_PT, SMALL_PT = LABEL_PX * 72 / DPI, SMALL_PX * 72 / DPI
MAX_FIGURE_WIDTH = 12.0      # inches


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(min(width, MAX_FIGURE_WIDTH), height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def relative_luminance(rgb) -> float:
    """WCAG 2 relative luminance of an sRGB colour (components 0..1)."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(rgb)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(a, b) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_colour(background) -> str:
    """Black or white, whichever contrasts more with the background."""
    return "black" if contrast_ratio("black", background) >= contrast_ratio("white", background) \
        else "white"


def _annotate_grid(ax, grid, cmap, vmin, vmax, fmt, marks=None):
    """Writes each finite value of grid on its cell, LABEL_PX tall, in the
    text colour that contrasts with the cell; marks[i][j] (optional) is
    appended to the text."""
    norm, colours = Normalize(vmin=vmin, vmax=vmax), colormaps[cmap]
    for (i, j), val in np.ndenumerate(grid):
        if np.isfinite(val):
            mark = marks[i][j] if marks is not None else ""
            ax.text(j, i, fmt(val) + mark, ha="center", va="center", fontsize=LABEL_PT,
                    color=text_colour(colours(norm(val))))


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def save(fig: Figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    fig.savefig(path, format=path.suffix.lstrip(".") or "png")
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


# -- sweeps -----------------------------------------------------------------

def rate_heatmaps(cells: pd.DataFrame, metric: str = "unsafe_rate", method: str | None = None,
                  vmin: float = 0.0, vmax: float = 1.0, cmap: str | None = None,
                  min_n: int | None = None) -> Figure:
    """One heatmap per category: rows = layers (plus a 'baseline' row holding
    the unsteered value in every column), columns = strengths. Cells sharing a
    (layer, strength) (e.g. several sites) are averaged. Default colours: red
    = unsafe for unsafe_rate, blue scale for anything else. Each value is
    written on its cell in black or white, whichever contrasts more; with
    min_n, a value from fewer generations than that (the rate's _n column)
    gets a '*'."""
    cmap = cmap or ("RdYlGn_r" if metric == "unsafe_rate" else "Blues")
    if metric not in cells.columns:
        raise KeyError(f"no column {metric!r} in the cells table")
    if method is None and "method" in cells.columns and cells["method"].nunique() > 0:
        method = sorted(cells.loc[cells["layer"] != schema.BASELINE_LAYER, "method"].unique())[0]
    n_col = metric.replace("_rate", "") + "_n"
    n_col = n_col if min_n is not None and n_col in cells.columns else None
    cats = sorted(cells["category"].unique())
    # panels widen with the strengths so that each number keeps its size
    n_strengths = max(1, cells.loc[cells["layer"] != schema.BASELINE_LAYER, "strength"].nunique())
    panel = max(3.6, 1.4 + 0.55 * n_strengths)
    rows, cols = _grid(len(cats), max_cols=max(1, min(3, int((MAX_FIGURE_WIDTH - 1) // panel))))
    fig = _figure(panel * cols + 1.0, 3.0 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image, any_mark = None, False
    for ax, cat in zip(axes, cats):
        sub = cells[cells["category"] == cat]
        base = sub[sub["layer"] == schema.BASELINE_LAYER]
        steered = sub[sub["layer"] != schema.BASELINE_LAYER]
        if method is not None and "method" in steered.columns:
            steered = steered[steered["method"] == method]
        table = steered.pivot_table(index="layer", columns="strength", values=metric,
                                    aggfunc="mean").sort_index()
        strengths = list(table.columns) or [0.0]
        grid = table.to_numpy(dtype=float).reshape(len(table.index), len(strengths))
        labels = [str(int(l)) for l in table.index]
        marks = None
        if n_col:
            small = steered.pivot_table(index="layer", columns="strength", values=n_col,
                                        aggfunc="min").sort_index().reindex(
                                            index=table.index, columns=table.columns)
            marks = [["*" if n < min_n else "" for n in row] for row in small.to_numpy()]
        if len(base):
            grid = np.vstack([np.full((1, len(strengths)), float(base[metric].mean())), grid])
            labels = ["baseline"] + labels
            if marks is not None:
                base_mark = "*" if base[n_col].min() < min_n else ""
                marks = [[base_mark] * len(strengths)] + marks
        image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                          origin="upper")
        _annotate_grid(ax, grid, cmap, vmin, vmax, lambda v: f"{v:.2f}", marks)
        any_mark |= marks is not None and any("*" in m for row in marks for m in row)
        if len(base):
            ax.axhline(0.5, color="black", linewidth=1.5)
        ax.set_xticks(range(len(strengths)), [f"{s:g}" for s in strengths])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("strength")
        ax.set_ylabel("layer")
        ax.set_title(cat)
    for ax in axes[len(cats):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(cats)]), label=metric.replace("_", " "))
    fig.suptitle(f"{metric.replace('_', ' ')} over layer x strength"
                 + (f" ({method})" if method else "")
                 + (f"; * fewer than {min_n} generations" if any_mark else ""))
    return fig


def _pareto(points: np.ndarray) -> np.ndarray:
    """Rows of [x, y] not dominated when both are minimised, sorted by x."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    front, best = [], np.inf
    for i in order:
        if points[i, 1] < best:
            front.append(points[i])
            best = points[i, 1]
    return np.asarray(front)


def tradeoff(cells: pd.DataFrame, x: str = "perplexity", y: str = "unsafe_rate",
             selected=None, within=None) -> Figure:
    """Safety versus quality per category: every steered cell as a point
    (colour = method), the Pareto front of each method as a line, and the
    unsteered baseline as a star. within (a boolean Series over cells, e.g.
    selection.against_baseline's within_bounds) greys out the cells outside
    the quality bounds; selected (cell ids) rings the chosen cells. The x axis
    is logarithmic when x spans more than a factor of 10."""
    cats = sorted(cells["category"].unique())
    methods = sorted(cells.loc[cells["layer"] != schema.BASELINE_LAYER, "method"].unique())
    rows, cols = _grid(len(cats), max_cols=3)
    fig = _figure(3.8 * cols, 3.2 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    inside = within if within is not None else pd.Series(True, index=cells.index)
    chosen = set(selected if selected is not None else [])
    xs = cells[x].dropna() if x in cells.columns else pd.Series(dtype=float)
    log_x = len(xs) > 0 and xs.min() > 0 and xs.max() / xs.min() > 10
    for ax, cat in zip(axes, cats):
        sub = cells[cells["category"] == cat].dropna(subset=[x, y])
        steered = sub[sub["layer"] != schema.BASELINE_LAYER]
        out = steered[~inside.reindex(steered.index, fill_value=True)]
        if len(out):
            ax.scatter(out[x], out[y], s=22, marker="x", color="0.6",
                       label="outside quality bounds")
        for m in methods:
            pts = steered[(steered["method"] == m) & inside.reindex(steered.index,
                                                                    fill_value=True)]
            if pts.empty:
                continue
            ax.scatter(pts[x], pts[y], s=14, alpha=0.5, color=colours[m])
            front = _pareto(pts[[x, y]].to_numpy(dtype=float))
            ax.plot(front[:, 0], front[:, 1], "-o", ms=3, color=colours[m], label=m)
        best = steered[steered["cell_id"].isin(chosen)]
        if len(best):
            ax.scatter(best[x], best[y], s=220, facecolors="none", edgecolors="red",
                       linewidths=2, label="best within bounds", zorder=4)
        base = sub[sub["layer"] == schema.BASELINE_LAYER]
        if len(base):
            ax.scatter(base[x], base[y], marker="*", s=160, color="black", label="baseline",
                       zorder=3)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " "))
        ax.set_title(cat)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a category with no scored cells has none
            ax.legend(fontsize=SMALL_PT)
        else:
            ax.text(0.5, 0.5, f"no cells with both {x} and {y}", ha="center", va="center",
                    transform=ax.transAxes, fontsize=SMALL_PT)
    for ax in axes[len(cats):]:
        ax.set_visible(False)
    fig.suptitle(f"{y.replace('_', ' ')} vs {x} (lines: Pareto front per method)")
    return fig


# -- captures and vectors ---------------------------------------------------

def pca_basis(x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k principal axes of rows x [n][d] by SVD: (mean [d], axes [k][d],
    explained variance ratio [k]). The sign of each axis is fixed so that its
    largest-magnitude component is positive (deterministic plots)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:k]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    axes = axes * signs[:, None]
    var = s ** 2
    return mean, axes, var[:k] / var.sum() if var.sum() > 0 else np.zeros(len(axes))


def pca_projection(capture, layer: int, vectors=None) -> Figure:
    """Pooled activations of one layer in their first two principal
    components, coloured by category (x = unsafe, o = safe). Each category
    vector w_c (from a vector file at the same layer) is drawn as an arrow
    starting at that category's unsafe mean: w_c = mean(safe) - mean(unsafe_c),
    so the arrow ends at the safe mean it points to."""
    acts = capture.pooled(layer)                                          # [N][d]
    mean, axes, ratio = pca_basis(acts)
    proj = (acts - mean) @ axes.T                                         # [N][2]
    prompts = capture.prompts
    cats = sorted(prompts["category"].unique())
    labels = prompts["label"] if "label" in prompts else pd.Series([""] * len(prompts))
    fig = _figure(7.0, 5.6)
    ax = fig.subplots()
    colours = {c: f"C{i % 10}" for i, c in enumerate(cats)}
    for c in cats:
        sel = (prompts["category"] == c).to_numpy()
        safe = sel & (labels == "safe").to_numpy()
        other = sel & ~safe
        if other.any():
            ax.scatter(proj[other, 0], proj[other, 1], s=18, marker="x", color=colours[c],
                       label=c or "(none)")
        if safe.any():
            ax.scatter(proj[safe, 0], proj[safe, 1], s=18, marker="o", facecolors="none",
                       edgecolors=colours[c], label=f"{c or '(none)'} (safe)")
    if vectors is not None and layer in set(int(l) for l in vectors.layers):
        for c in vectors.categories:
            sel = ((prompts["category"] == c) & (labels != "safe")).to_numpy()
            if not sel.any():
                continue
            start = proj[sel].mean(axis=0)
            delta = vectors.vector(c, layer).astype(np.float64) @ axes.T
            ax.annotate("", xy=start + delta, xytext=start,
                        arrowprops=dict(arrowstyle="->", lw=2, color=colours.get(c, "black")))
            # Labels at the tails: every arrow ends at the same safe mean.
            ax.text(*start, f"w[{c}] ", fontsize=8, ha="right", va="bottom",
                    color=colours.get(c, "black"))
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.1f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.1f}% var)" if len(ratio) > 1 else "PC2")
    ax.set_title(f"{capture.attrs.get('site', '')} layer {layer}: PCA of pooled activations")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return fig


def cosine_matrices(vectors, layers=None, max_layers: int = 8) -> Figure:
    """Cosine similarity between category vectors, one matrix per layer
    (at most max_layers, evenly spaced, unless layers is given)."""
    all_layers = [int(l) for l in vectors.layers]
    if layers is None:
        pick = np.unique(np.linspace(0, len(all_layers) - 1, min(max_layers, len(all_layers)))
                         .round().astype(int))
        layers = [all_layers[i] for i in pick]
    rows, cols = _grid(len(layers))
    n = len(vectors.categories)
    side = max(2.6, 0.45 * n + 1.2)
    fig = _figure(side * cols + 1.0, side * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, layer in zip(axes, layers):
        m = vectors.cosine[all_layers.index(layer)]
        image = ax.imshow(m, cmap="coolwarm", vmin=-1, vmax=1)
        if n <= 8:
            _annotate_grid(ax, m, "coolwarm", -1, 1, lambda v: f"{v:.2f}")
        ax.set_xticks(range(n), vectors.categories, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), vectors.categories, fontsize=7)
        ax.set_title(f"layer {layer}")
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(layers)]), label="cosine")
    fig.suptitle("cosine similarity of category vectors")
    return fig


def cluster_contingency(clusters) -> Figure:
    """Prompts of each category in each cluster (rows = clusters)."""
    cont = clusters.contingency
    fig = _figure(1.0 + 0.7 * cont.shape[1], 1.2 + 0.45 * cont.shape[0])
    ax = fig.subplots()
    grid = cont.to_numpy()
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    _annotate_grid(ax, grid, "Blues", grid.min(), grid.max(), lambda v: str(int(v)))
    ax.set_xticks(range(cont.shape[1]), cont.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(cont.shape[0]), [str(i) for i in cont.index])
    ax.set_ylabel("cluster")
    a = clusters.attrs
    ax.set_title(f"layer {a.get('layer')} k={a.get('k')}  NMI {a.get('nmi', float('nan')):.2f} "
                 f"ARI {a.get('ari', float('nan')):.2f}", fontsize=9)
    fig.colorbar(image, ax=ax, label="prompts")
    return fig


# -- benchmarks -------------------------------------------------------------

def bench_throughput(benches) -> Figure:
    """Decode tokens/s against batch size, one line per (model, CUDA graphs)."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    for i, b in enumerate(benches):
        for graphs, style in ((False, "--"), (True, "-")):
            d = b.decode[b.decode["graphs"] == graphs].sort_values("batch")
            if d.empty:
                continue
            ax.plot(d["batch"], d["tokens_per_s"], style + "o", color=f"C{i}",
                    label=f"{b.model} ({'graphs' if graphs else 'no graphs'})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("decode tokens/s")
    devices = sorted({b.device for b in benches})
    ax.set_title("decode throughput on " + ", ".join(devices), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return fig


def bench_steering(benches) -> Figure:
    """Decode step time without steering, steering one layer and all layers,
    per bench file and batch size, with the overhead in percent above each bar."""
    groups = [(b, row) for b in benches for _, row in b.steering.iterrows()]
    fig = _figure(2.2 + 2.4 * len(groups), 4.2)
    ax = fig.subplots()
    keys = (("none_ms", "none"), ("one_layer_ms", "one layer"), ("all_layers_ms", "all layers"))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        xs = np.arange(len(groups)) + (k - 1) * width
        bars = ax.bar(xs, [row[key] for _, row in groups], width, label=label, color=f"C{k}")
        if key != "none_ms":
            pct = [row[key.replace("_ms", "_overhead_pct")] for _, row in groups]
            ax.bar_label(bars, [f"{p:+.1f}%" for p in pct], fontsize=7)
    ax.set_xticks(range(len(groups)),
                  [f"{b.model}\n{b.device}\nbatch {int(row['batch'])}" for b, row in groups],
                  fontsize=7)
    ax.set_ylabel("decode step ms")
    ax.set_title("steering overhead")
    ax.legend(fontsize=7)
    return fig
