"""One self-contained HTML report of a sweep run folder.

Everything is inline (CSS, plots as base64 PNG; no scripts, no external
requests), and every string taken from the run is HTML-escaped, so the file
can be mailed around and opened anywhere. Rates are shown with their 95%
Wilson interval and counts, steered cells with their paired test against
the baseline, and the best cell of a category is chosen among cells whose
quality stays near the baseline's (selection.py).
"""
from __future__ import annotations

import base64
import html
import math
import pathlib
import re

import pandas as pd

from . import loaders, plots, schema
from .selection import QualityBounds, against_baseline, best_cells

__all__ = ["best_cells", "generation_samples", "model_names", "render", "write"]

MIN_N = 30   # fewer generations than this: a cell's rates are flagged as anecdotal

CSS = """
body { font-family: system-ui, sans-serif; font-size: 16px; margin: 2em auto; max-width: 1300px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } .subtitle { color: #555; margin-top: 0; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.05em; margin: 1em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
img { max-width: 100%; height: auto; }
.wide { overflow-x: auto; max-width: 100%; }
.meta td { text-align: left; overflow-wrap: anywhere; }
.cells td { white-space: nowrap; }
.cells .text { text-align: left; white-space: normal; }
.note { color: #8a4b00; }
.caveats { border: 1px solid #d9a400; background: #fff8e1; padding: 0.3em 1em; }
.caveats li { margin: 0.3em 0; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
.gen { border-left: 3px solid #ccc; padding-left: 0.6em; margin: 0.4em 0; }
.unsafe { border-color: #d33; } .refused { border-color: #39c; } .degenerate { border-color: #999; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _img(fig, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and pd.notna(v)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def fmt_change(row, prefix: str) -> str:
    """'-0.55 (p <0.001)': the paired change from the baseline, exact McNemar p."""
    change, p = row.get(f"{prefix}_change"), row.get(f"{prefix}_change_p")
    return f"{change:+.2f} (p {_p(p)})" if _finite(change) and _finite(p) else ""


def _n_of(row) -> float:
    """The generations a cell's headline rate rests on."""
    for key in ("unsafe_n", "refusal_n"):
        if _finite(row.get(key)) and row[key] > 0:
            return row[key]
    return row.get("n_prompts", math.nan)


def _small_n(row, min_n: int) -> str:
    n = _n_of(row)
    return f"n={int(n)} < {min_n}" if _finite(n) and n < min_n else ""


def _steered_sites(cells: pd.DataFrame) -> int:
    if "site" not in cells.columns:
        return 1
    return cells.loc[cells["layer"] != schema.BASELINE_LAYER, "site"].nunique()


def _cell_name(row, sites: int) -> str:
    if row["layer"] == schema.BASELINE_LAYER:
        return "baseline"
    site = f" {row['site']}" if sites > 1 else ""
    return f"{row['method']}{site} layer {int(row['layer'])} ×{row['strength']:g}"


def _table(header, rows, cls="cells", text_cols=()) -> str:
    """A table of formatted strings (a list of strings: one line each),
    inside a box that scrolls sideways if the table is wider than the page."""
    def cell(i, v):
        body = "<br>".join(map(_esc, v)) if isinstance(v, list) else _esc(v)
        return f'<td class="text">{body}</td>' if i in text_cols else f"<td>{body}</td>"
    out = [f'<div class="wide"><table class="{cls}"><thead><tr>']
    out += [f'<th class="text">{_esc(h)}</th>' if i in text_cols else f"<th>{_esc(h)}</th>"
            for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell(i, v) for i, v in enumerate(row)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def rate_lines(row, prefix: str, paired: bool = False) -> list[str]:
    """A rate in a narrow cell: ['0.25 (10/40)', '[0.14, 0.41]'], and the
    paired change from the baseline as a third line ('-0.55, p <0.001')."""
    rate = row.get(f"{prefix}_rate")
    if not _finite(rate):
        return ["–"]
    if not _finite(row.get(f"{prefix}_n")):
        return [f"{rate:.2f}"]
    lines = [f"{rate:.2f} ({int(row[f'{prefix}_count'])}/{int(row[f'{prefix}_n'])})",
             f"[{row[f'{prefix}_ci_low']:.2f}, {row[f'{prefix}_ci_high']:.2f}]"]
    change, p = row.get(f"{prefix}_change"), row.get(f"{prefix}_change_p")
    if paired and _finite(change) and _finite(p):
        lines.append(f"{change:+.2f}, p {_p(p)}")
    return lines


# -- model name ---------------------------------------------------------------

def _squash(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _config_model(config_yaml: str) -> str:
    m = re.search(r"^model:\s*\"?([^\"\n#]+?)\"?\s*(#.*)?$", config_yaml or "", re.M)
    return m.group(1).strip() if m else ""


def model_names(attrs: dict, config_yaml: str = "") -> tuple[str, str]:
    """(the model's name, a note). GGUF files often carry a training run's tag
    as general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2"); then the file's name
    (or the Hugging Face folder's) names the model and the note gives
    general.name. A general.name that the file name contains is kept."""
    general = str(attrs.get("model_name", "") or "")
    path = str(attrs.get(schema.SWEEP_MODEL_PATH_ATTR, "") or "") or _config_model(config_yaml)
    if not path:
        return general, ""
    file = pathlib.PurePosixPath(path).name
    stem = file[:-len(".gguf")] if file.endswith(".gguf") else file
    if general and _squash(general) in _squash(stem):
        return general, f"file {file}"
    return stem, (f'file {file}; its general.name is "{general}"' if general else f"file {file}")


# -- sections -----------------------------------------------------------------

def _caveats(run, cells: pd.DataFrame, min_n: int) -> list[str]:
    """What a reader must know before trusting the numbers below."""
    notes = []
    gens = run.generations
    if not (cells.get("unsafe_n", pd.Series(dtype=float)).fillna(0) > 0).any() and \
            not cells.get("unsafe_rate", pd.Series(dtype=float)).notna().any():
        notes.append("No LLM judge verdicts: unsafe rates are empty and no best cell can be "
                     "chosen (judges.llm in the config, docs/sweeps.md).")
    n = cells.apply(_n_of, axis=1)
    small = cells[n < min_n]
    if len(small):
        notes.append(f"{len(small)} of {len(cells)} cells rest on fewer than {min_n} generations "
                     f"(as few as {int(n.min())}): their 95% intervals are wide (1 of 2 is "
                     f"0.50 [0.09, 0.91]), so read their rates as anecdotes, not results.")
    if "refusal_count" in cells.columns and cells["refusal_n"].sum() > 0 \
            and cells["refusal_count"].sum() == 0:
        notes.append(f"No generation in any of the {len(cells)} cells matched a refusal phrase. "
                     "Either the model never refuses or the phrases (judges.refusal.phrases) do "
                     "not match how it refuses: read the sample generations before drawing "
                     "anything from refusal rates.")
    if "judge_contradiction_n" in cells.columns and cells["judge_contradiction_n"].sum() > 0:
        k, m = int(cells["judge_contradiction_count"].sum()), int(cells["judge_contradiction_n"].sum())
        notes.append(f"{k} of {m} judge verdicts read from the first answer token's "
                     "probabilities contradict the judge's own text (\"The response is safe\" "
                     "counted as unsafe, or the reverse); column 'judge contradictions' under All cells.")
    if "degenerate" in gens.columns:
        flags = gens["degenerate"].dropna().astype(bool)
        if flags.any():
            notes.append(f"{int(flags.sum())} of {len(flags)} generations are degenerate (a "
                         "short unit repeated over at least half of the answer); they are "
                         "neither safe nor useful, and the quality bounds keep cells full of "
                         "them from being chosen.")
    if int(run.attrs.get("format_version", 1)) < 2:
        notes.append("This results.h5 predates format version 2: it has no counts, intervals "
                     "or paired tests.")
    return notes


def _best_section(cells: pd.DataFrame, bounds: QualityBounds, min_n: int) -> str:
    rated = against_baseline(cells, bounds)
    best = best_cells(cells, bounds)
    steered = rated[rated["layer"] != schema.BASELINE_LAYER]
    sites = _steered_sites(cells)
    rows = []
    for cat in sorted(cells["category"].unique()):
        pick = best[best["category"] == cat]
        if pick.empty:
            mine = steered[steered["category"] == cat]
            why = ("no unsafe rates" if not mine.get("unsafe_rate", pd.Series(dtype=float))
                   .notna().any() else "no steered cell within the quality bounds")
            rows.append([cat, why] + [""] * 8)
            continue
        r = pick.iloc[0]
        base = rated[(rated["category"] == cat) & (rated["layer"] == schema.BASELINE_LAYER)]
        rows.append([
            cat, _cell_name(r, sites), rate_lines(r, "unsafe"),
            rate_lines(base.iloc[0], "unsafe") if len(base) else "", fmt_change(r, "unsafe"),
            rate_lines(r, "refusal"),
            f"{r['perplexity']:.1f} ({r['perplexity_ratio']:.2f}×)"
            if _finite(r.get("perplexity_ratio")) else "",
            f"{r['distinct_2']:.2f} ({-r['distinct_2_drop']:+.2f})"
            if _finite(r.get("distinct_2_drop")) else "",
            f"{r['relevance']:.2f} ({-r['relevance_drop']:+.2f})"
            if _finite(r.get("relevance_drop")) else "",
            _small_n(r, min_n)])
    n_in = int(steered["within_bounds"].sum())
    intro = (f"<p>Per category, the lowest unsafe rate among steered cells whose quality stays "
             f"within bounds of the category's baseline: perplexity at most "
             f"{bounds.max_perplexity_ratio:g}× the baseline's, distinct-2 at most "
             f"{bounds.max_distinct2_drop:g} lower, relevance at most "
             f"{bounds.max_relevance_drop:g} lower ({n_in} of {len(steered)} steered cells are; "
             f"set the bounds with --max-perplexity-ratio, --max-distinct2-drop, "
             f"--max-relevance-drop). Rates: 95% Wilson interval and count; change: paired "
             f"difference from the baseline on the same prompts, exact McNemar p.</p>")
    header = ["category", "cell", "unsafe", "baseline unsafe", "change (p)", "refusal",
              "perplexity (× base)", "distinct-2 (Δ)", "relevance (Δ)", "note"]
    return intro + _table(header, rows, cls="cells best", text_cols=(0, 1, 9))


def _cells_section(cells: pd.DataFrame, bounds: QualityBounds, min_n: int) -> str:
    rated = against_baseline(cells, bounds)
    rated["steered"] = rated["layer"] != schema.BASELINE_LAYER   # baseline first
    sort = [c for c in ("steered", "method", "layer", "strength") if c in rated.columns]
    sites = _steered_sites(cells)
    header = ["id", "cell", "unsafe (change, p)", "refusal (change, p)", "degenerate",
              "judge contradictions", "perplexity", "distinct-2", "relevance", "quality", "note"]
    out = ["<p>Rates with their 95% Wilson interval and count; under a steered cell's unsafe and "
           "refusal rates, the paired change from the baseline and its exact McNemar p. "
           "Quality: the measures outside the bounds of the best-cell table. Every column of "
           "every cell is in summary.csv and results.h5.</p>"]
    for cat in sorted(rated["category"].unique()):
        rows = []
        mine = rated[rated["category"] == cat]
        for _, r in mine.sort_values(sort).iterrows():
            judged = r.get("judge_contradiction_n")
            rows.append([
                int(r["cell_id"]), _cell_name(r, sites), rate_lines(r, "unsafe", True),
                rate_lines(r, "refusal", True), rate_lines(r, "degenerate"),
                f"{int(r['judge_contradiction_count'])}/{int(judged)}"
                if _finite(judged) and judged > 0 else "–",
                f"{r['perplexity']:.2f}" if _finite(r.get("perplexity")) else "",
                f"{r['distinct_2']:.2f}" if _finite(r.get("distinct_2")) else "",
                f"{r['relevance']:.2f}" if _finite(r.get("relevance")) else "",
                "" if r["layer"] == schema.BASELINE_LAYER
                else (f"outside: {r['outside']}" if r["outside"] else "ok"),
                _small_n(r, min_n)])
        out.append(f"<h3>{_esc(cat)}</h3>")
        out.append(_table(header, rows, text_cols=(1, 9)))
    return "".join(out)


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
            cls = next((k for k in ("unsafe", "refused", "degenerate") if g.get(k) is True), "")
            flags = ", ".join(f"{k}={g[k]}" for k in ("unsafe", "refused", "degenerate",
                                                      "judge_contradiction", "perplexity")
                              if k in g and _finite(g[k]))
            body.append(f'<div class="gen {cls}"><b>{_esc(g.get("prompt_id", ""))}</b> '
                        f"<small>{_esc(flags)}</small>"
                        f"<pre>{_esc(g.get('prompt', ''))}</pre>"
                        f"<pre>{_esc(g.get('response', ''))}</pre>"
                        + (f"<small>judge: {_esc(g['judge_output'])}</small>"
                           if _finite(g.get("judge_output")) else "") + "</div>")
        parts.append(f"<details><summary>{_esc(title)} ({len(rows)} shown)</summary>"
                     + "".join(body) + "</details>")
    return "\n".join(parts)


def render(run_dir, samples_per_cell: int = 2, bounds: QualityBounds = QualityBounds(),
           min_n: int = MIN_N) -> str:
    run = loaders.load_sweep(run_dir)
    cells, a = run.cells, run.attrs
    methods = sorted(cells.loc[cells["layer"] != schema.BASELINE_LAYER, "method"].unique()) \
        if "method" in cells.columns else [None]
    name, name_note = model_names(a, run.config_yaml)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<link rel="icon" href="data:,">',
           f"<title>safesteer sweep report: {_esc(run.path.name)} ({_esc(name)})</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>safesteer sweep report: {_esc(run.path.name)}</h1>",
           f'<p class="subtitle">{_esc(name)}</p>',
           '<div class="wide"><table class="meta">']
    meta = {"run folder": run.path.resolve(), "model": name + (f" ({name_note})" if name_note
                                                               else ""),
            "model sha256": a.get("model_sha256", ""),
            "format": f"{a.get('format')} v{a.get('format_version', '?')}",
            "cells": f"{len(cells)} ({int((cells['layer'] == schema.BASELINE_LAYER).sum())} baseline)",
            "generations": len(run.generations)}
    out += [f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in meta.items()]
    out.append("</table></div>")

    notes = _caveats(run, cells, min_n)
    if notes:
        out.append('<div class="caveats"><b>Read this first</b><ul>'
                   + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul></div>")

    out.append("<h2>Best steered cell per category</h2>")
    out.append(_best_section(cells, bounds, min_n))

    for metric in ("unsafe_rate", "refusal_rate"):
        if metric not in cells.columns:
            continue
        out.append(f"<h2>{_esc(metric.replace('_', ' '))} over layer x strength</h2>")
        out.append(f"<p>The top row of each map is the unsteered baseline; * marks a value from "
                   f"fewer than {min_n} generations.</p>")
        for m in methods:
            fig = plots.rate_heatmaps(cells, metric, method=m, min_n=min_n)
            out.append(_img(fig, f"{metric} heatmap {m}"))
    if {"perplexity", "unsafe_rate"} <= set(cells.columns):
        rated = against_baseline(cells, bounds)
        out.append("<h2>Safety versus quality</h2>")
        out.append("<p>Grey crosses: cells outside the quality bounds; red rings: the best cell "
                   "of each category (table above).</p>")
        out.append(_img(plots.tradeoff(cells, within=rated["within_bounds"],
                                       selected=best_cells(cells, bounds)["cell_id"]),
                        "unsafe rate vs perplexity"))

    out.append("<h2>All cells</h2>")
    out.append(_cells_section(cells, bounds, min_n))
    out.append(f"<h2>Sample generations ({samples_per_cell} per cell)</h2>")
    out.append(generation_samples(run, samples_per_cell))
    out.append("<h2>Configuration</h2>")
    out.append(f"<pre>{_esc(run.config_yaml)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def write(run_dir, out=None, samples_per_cell: int = 2, bounds: QualityBounds = QualityBounds(),
          min_n: int = MIN_N) -> pathlib.Path:
    out = pathlib.Path(out) if out else pathlib.Path(run_dir) / "report.html"
    out.write_text(render(run_dir, samples_per_cell, bounds, min_n), encoding="utf-8")
    return out
