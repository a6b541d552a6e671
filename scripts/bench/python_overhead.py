"""What the Python layer costs on batched generation: the default model,
16 prompts x 32 greedy tokens, through `safesteer.Model.generate` and
through `safesteer generate --prompt-file --json` (one batch each), run in
turns.  Prints the median wall time of each call, the engine's own time
(prefill + decode, which both report) and the difference.

    python3 scripts/bench/python_overhead.py [--bin build/safesteer] [--runs 5] [--threads 2]
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "analysis"))
import safesteer  # noqa: E402

PROMPTS = [json.loads(line)["prompt"] for line in
           (REPO / "data" / "demo_prompts.jsonl").read_text().splitlines()][:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "build" / "safesteer"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    model = safesteer.default_model_path()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(PROMPTS) + "\n")
    m = safesteer.Model(model, threads=a.threads, max_seqs=len(PROMPTS))
    cmd = [a.bin, "generate", "--model", model, "--prompt-file", f.name, "--chat", "--json",
           "--max-new", "32", "--threads", str(a.threads)]
    py_wall, py_engine, cli_wall, cli_engine = [], [], [], []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        out = m.generate(PROMPTS, max_new=32, chat=True)
        py_wall.append(time.perf_counter() - t0)
        py_engine.append(m.last_timing["prefill_seconds"] + m.last_timing["decode_seconds"])
        t0 = time.perf_counter()
        recs = [json.loads(line) for line in
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()]
        cli_wall.append(time.perf_counter() - t0)
        t = recs[0]["timing"]
        cli_engine.append(t["prefill_seconds"] + t["decode_seconds"])
        assert [g.ids for g in out] == [r["ids"] for r in recs]
    med = statistics.median
    print(f"default model, {len(PROMPTS)} prompts x 32 tokens, {a.threads} threads, "
          f"median of {a.runs} runs taken in turns:")
    print(f"  Python generate(): {med(py_wall):.3f} s wall, engine {med(py_engine):.3f} s, "
          f"outside the engine {med(py_wall) - med(py_engine):.3f} s "
          f"({100 * (med(py_wall) / med(py_engine) - 1):+.1f}%)")
    print(f"  CLI generate --prompt-file: {med(cli_wall):.3f} s wall (model load included), "
          f"engine {med(cli_engine):.3f} s")
    print(f"  Python wall / CLI engine: {med(py_wall) / med(cli_engine):.3f}")


if __name__ == "__main__":
    main()
