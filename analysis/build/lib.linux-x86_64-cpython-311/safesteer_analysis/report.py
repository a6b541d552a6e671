"""One self-contained HTML report of a sweep run folder.

Everything is inline (CSS, plots as base64 PNG; no scripts, no external
requests), and every string taken from the run is HTML-escaped, so the file
can be mailed around and opened anywhere.
"""
from __future__ import annotations

import base64
import html
import pathlib

import pandas as pd

from . import loaders, plots, schema

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; } .wide { overflow-x: auto; } .meta td { text-align: left; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
.gen { border-left: 3px solid #ccc; padding-left: 0.6em; margin: 0.4em 0; }
.unsafe { border-color: #d33; } .refused { border-color: #39c; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _table(df: pd.DataFrame) -> str:
    return ('<div class="wide">' + df.to_html(index=False, escape=True, border=0, na_rep="",
                                              float_format=lambda v: f"{v:.3f}") + "</div>")


def best_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Per category and method, the steered cell with the lowest unsafe rate
    (ties: lowest perplexity), next to the category's baseline."""
    steered = cells[cells["layer"] != schema.BASELINE_LAYER]
    if steered.empty:
        return steered
    keys = [k for k in ("unsafe_rate", "perplexity") if k in steered.columns]
    best = (steered.sort_values(keys).groupby(["category", "method"], as_index=False).head(1)
            .sort_values(["category", "method"]))
    base = cells[cells["layer"] == schema.BASELINE_LAYER].groupby("category")
    for key in ("unsafe_rate", "refusal_rate", "perplexity"):
        if key in cells.columns:
            best[f"baseline_{key}"] = best["category"].map(base[key].mean())
    cols = [c for c in ("cell_id", "category", "method", "layer", "strength", "unsafe_rate",
                        "refusal_rate", "perplexity", "relevance") if c in best.columns]
    return best[cols + [c for c in best.columns if c.startswith("baseline_")]]


def generation_samples(run: loaders.SweepRun, per_cell: int) -> str:
    gens = run.generations
    if gens.empty:
        return "<p>No generations.jsonl in this run.</p>"
    parts = []
    for _, cell in run.cells.sort_values("cell_id").iterrows():
        rows = gens[gens["cell_id"] == cell["cell_id"]].head(per_cell)
        if rows.empty:
            continue
        title = (f"cell {cell['cell_id']}: {cell['category']} / {cell.get('method', '')} / "
                 + ("baseline" if cell["layer"] == schema.BASELINE_LAYER
                    else f"layer {cell['layer']} strength {cell['strength']:g}"))
        body = []
        for _, g in rows.iterrows():
            cls = "unsafe" if g.get("unsafe") is True else "refused" if g.get("refused") is True else ""
            flags = ", ".join(f"{k}={g[k]}" for k in ("unsafe", "refused", "perplexity")
                              if k in g and pd.notna(g[k]))
            body.append(f'<div class="gen {cls}"><b>{_esc(g.get("prompt_id", ""))}</b> '
                        f"<small>{_esc(flags)}</small>"
                        f"<pre>{_esc(g.get('prompt', ''))}</pre>"
                        f"<pre>{_esc(g.get('response', ''))}</pre></div>")
        parts.append(f"<details><summary>{_esc(title)} ({len(rows)} shown)</summary>"
                     + "".join(body) + "</details>")
    return "\n".join(parts)


def render(run_dir, samples_per_cell: int = 2) -> str:
    run = loaders.load_sweep(run_dir)
    cells, a = run.cells, run.attrs
    methods = sorted(cells.loc[cells["layer"] != schema.BASELINE_LAYER, "method"].unique()) \
        if "method" in cells.columns else [None]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<link rel="icon" href="data:,">',
           f"<title>safesteer sweep report: {_esc(run.path.name)}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>safesteer sweep report: {_esc(run.path.name)}</h1>",
           '<table class="meta">']
    meta = {"run folder": run.path.resolve(), "model": a.get("model_name", ""),
            "model sha256": a.get("model_sha256", ""),
            "format": f"{a.get('format')} v{a.get('format_version', '?')}",
            "cells": f"{len(cells)} ({int((cells['layer'] == schema.BASELINE_LAYER).sum())} baseline)",
            "generations": len(run.generations)}
    out += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in meta.items()]
    out.append("</table>")

    out.append("<h2>Best steered cell per category</h2>")
    out.append("<p>Lowest unsafe rate (ties: lowest perplexity), with the unsteered baseline "
               "of the same category.</p>")
    out.append(_table(best_cells(cells)))

    for metric in ("unsafe_rate", "refusal_rate"):
        if metric not in cells.columns:
            continue
        out.append(f"<h2>{_esc(metric.replace('_', ' '))} over layer x strength</h2>")
        out.append("<p>The top row of each map is the unsteered baseline.</p>")
        for m in methods:
            fig = plots.rate_heatmaps(cells, metric, method=m)
            out.append(_img(fig, f"{metric} heatmap {m}"))
    if {"perplexity", "unsafe_rate"} <= set(cells.columns):
        out.append("<h2>Safety versus quality</h2>")
        out.append(_img(plots.tradeoff(cells), "unsafe rate vs perplexity"))

    out.append("<h2>All cells</h2>")
    out.append(_table(cells.sort_values([c for c in ("category", "method", "layer", "strength")
                                         if c in cells.columns])))
    out.append(f"<h2>Sample generations ({samples_per_cell} per cell)</h2>")
    out.append(generation_samples(run, samples_per_cell))
    out.append("<h2>Configuration</h2>")
    out.append(f"<pre>{_esc(run.config_yaml)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def write(run_dir, out=None, samples_per_cell: int = 2) -> pathlib.Path:
    out = pathlib.Path(out) if out else pathlib.Path(run_dir) / "report.html"
    out.write_text(render(run_dir, samples_per_cell), encoding="utf-8")
    return out
