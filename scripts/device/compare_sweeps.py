#!/usr/bin/env python3
"""compare_sweeps.py - checks a sweep run on one engine against the same
sweep on the reference engine (CUDA against the CPU): same cells, the same
generations token by token up to the first near-tie, per-cell metrics
within stated tolerances.  Both runs need `safesteer sweep --trace-tokens`
(records with token_ids and top2_gap).  Standard library only, so it runs
on the GPU machine as it is.

    compare_sweeps.py RUN REFERENCE_RUN [--tie 0.5] [--ppl-rtol 0.05] [--rel-atol 0.05]

A generation that differs from the reference is a near-tie when, at the
first token where they part, the reference's top-2 log-probability gap is
below --tie (the bf16 budget of docs/testing.md: the top token may differ
only where the CPU's top-2 gap < 0.5); any other difference is a
divergence.  In a cell whose generations are all identical, the text
measures (refusal rate, distinct-n, mean length) must be equal, perplexity
within --ppl-rtol (relative) and relevance within --rel-atol; the judge's
verdicts must be equal unless its own output differs (a judge near-tie,
reported).  Cells with near-ties are reported, not judged.  Exit 0 when
nothing diverged and every identical cell is within tolerance, 1 otherwise,
2 on unusable input."""
import argparse
import csv
import json
import math
import sys
from pathlib import Path

TEXT_MEASURES = ("refusal_rate", "distinct_1", "distinct_2", "mean_length")


def fail_input(msg):
    print(f"compare_sweeps: {msg}", file=sys.stderr)
    sys.exit(2)


def load_run(run):
    run = Path(run)
    gens_path = run / "generations.jsonl"
    if not gens_path.exists():
        fail_input(f"{gens_path}: missing (is {run} a finished sweep folder?)")
    gens = {}
    for n, line in enumerate(gens_path.read_text().splitlines(), 1):
        g = json.loads(line)
        if "token_ids" not in g:
            fail_input(f"{gens_path}:{n}: no token_ids (run the sweep with --trace-tokens)")
        gens[(g["cell_id"], g["index"])] = g
    if not (run / "summary.csv").exists():
        fail_input(f"{run / 'summary.csv'}: missing (the sweep in {run} did not finish)")
    with open(run / "summary.csv", newline="") as f:
        cells = {int(r["cell_id"]): r for r in csv.DictReader(f)}
    return gens, cells


def number(v):
    return float(v) if v not in ("", None) else math.nan


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def compare(run, ref, tie, ppl_rtol, rel_atol):
    gens, cells = load_run(run)
    ref_gens, ref_cells = load_run(ref)
    problems, notes = [], []
    if set(gens) != set(ref_gens):
        only = sorted(set(gens) ^ set(ref_gens))[:5]
        problems.append(f"the runs hold different generations (e.g. cell, index {only})")
        return problems, notes, {}
    status = {}  # cell -> identical | near-tie | diverged
    worst_gap = {}
    for key, g in sorted(gens.items()):
        r = ref_gens[key]
        cell = key[0]
        if g["token_ids"] == r["token_ids"]:
            status.setdefault(cell, "identical")
            continue
        p = first_difference(g["token_ids"], r["token_ids"])
        gaps = r.get("top2_gap") or []
        gap = gaps[p] if p < len(gaps) and gaps[p] is not None else math.inf
        where = (f"cell {cell} ({g['category']}, layer {g['layer']}, strength {g['strength']}) "
                 f"prompt {key[1]}: token {p} of {len(r['token_ids'])}")
        if gap < tie:
            if status.get(cell) != "diverged":
                status[cell] = "near-tie"
            notes.append(f"near-tie: {where}, reference top-2 gap {gap:.3f} < {tie}")
        else:
            status[cell] = "diverged"
            problems.append(f"diverged: {where}, reference top-2 gap {gap:.3f} >= {tie} "
                            f"(ids {g['token_ids'][p:p + 3]} vs {r['token_ids'][p:p + 3]})")
        worst_gap[cell] = min(worst_gap.get(cell, math.inf), gap)
    for cell, st in sorted(status.items()):
        if st != "identical":
            continue
        a, b = cells[cell], ref_cells[cell]
        for m in TEXT_MEASURES:
            if number(a[m]) != number(b[m]) and not (math.isnan(number(a[m])) and
                                                     math.isnan(number(b[m]))):
                problems.append(f"cell {cell}: {m} {a[m]} vs {b[m]} with identical generations")
        pa, pb = number(a["perplexity"]), number(b["perplexity"])
        if not (math.isnan(pa) and math.isnan(pb)) and not abs(pa - pb) <= ppl_rtol * abs(pb):
            problems.append(f"cell {cell}: perplexity {pa:.4g} vs {pb:.4g} "
                            f"(relative difference {abs(pa - pb) / abs(pb):.3g} > {ppl_rtol})")
        ra, rb = number(a["relevance"]), number(b["relevance"])
        if not (math.isnan(ra) and math.isnan(rb)) and not abs(ra - rb) <= rel_atol:
            problems.append(f"cell {cell}: relevance {ra:.4g} vs {rb:.4g} (> {rel_atol})")
        judged = [(gens[k], ref_gens[k]) for k in gens if k[0] == cell]
        if any(x.get("judge_output") != y.get("judge_output") for x, y in judged):
            notes.append(f"cell {cell}: the judge's own output differs (judge near-tie); "
                         f"unsafe_rate {a['unsafe_rate']} vs {b['unsafe_rate']}")
        elif number(a["unsafe_rate"]) != number(b["unsafe_rate"]) and not (
                math.isnan(number(a["unsafe_rate"])) and math.isnan(number(b["unsafe_rate"]))):
            problems.append(f"cell {cell}: unsafe_rate {a['unsafe_rate']} vs {b['unsafe_rate']} "
                            f"with identical generations and judge outputs")
    return problems, notes, status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("reference")
    ap.add_argument("--tie", type=float, default=0.5)
    ap.add_argument("--ppl-rtol", type=float, default=0.05)
    ap.add_argument("--rel-atol", type=float, default=0.05)
    a = ap.parse_args()
    problems, notes, status = compare(a.run, a.reference, a.tie, a.ppl_rtol, a.rel_atol)
    counts = {k: sum(1 for v in status.values() if v == k)
              for k in ("identical", "near-tie", "diverged")}
    for line in notes + problems:
        print(line)
    print(f"compare_sweeps: {len(status)} cells: {counts['identical']} identical, "
          f"{counts['near-tie']} with near-ties, {counts['diverged']} diverged; "
          f"{len(problems)} problem(s) (tie < {a.tie}, perplexity rtol {a.ppl_rtol}, "
          f"relevance atol {a.rel_atol})")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
