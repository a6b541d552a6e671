"""Sweeps on synthetic models (random weights of a named shape with a real
tokenizer: the text is noise, the timing real), the batch a sweep chooses
when its config gives none, and throughput.json: what each run generated
and where its time went.  On the CPU with the smollm2-135m shape; the same
run on a GPU with the llama3-8b shape is in scripts/device/run.sh."""
import json

import pytest

from conftest import REPO, run_safesteer

DATA = REPO / "data" / "demo_prompts.jsonl"

CONFIG = """\
data:
  unsafe:
    file: {data}
    categories: [hate, violence]
  safe:
    file: {data}
    categories: [benign]
  fit: 2
  eval: 3
  fit_safe: 4
layers: [10]
strengths: [4, 8]
generation:
  max_new: 6
{batch}judges:
  llm:
    model: self
    kind: generic
    max_new: 3
"""


def write_cfg(tmp_path, batch=""):
    p = tmp_path / "cfg.yaml"
    p.write_text(CONFIG.format(data=DATA, batch=batch))
    return p


@pytest.fixture(scope="module")
def synthetic(default_model):
    return f"synthetic:smollm2-135m,seed=5,tokenizer={default_model}"


def sweep(binary, model, cfg, out, *args, check=True):
    return run_safesteer(binary, "sweep", cfg, "--model", model, "--out", out, "--threads", "2",
                         "--quiet", *args, check=check)


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, safesteer_bin, synthetic):
    tmp = tmp_path_factory.mktemp("synthetic")
    out = tmp / "run"
    r = sweep(safesteer_bin, synthetic, write_cfg(tmp), out)
    return tmp, out, r


def test_synthetic_model_sweeps_and_reports_throughput(auto_run):
    tmp, out, r = auto_run
    gens = [json.loads(l) for l in (out / "generations.jsonl").read_text().splitlines()]
    # 2 categories x (baseline + 2 strengths) x 3 prompts
    assert len(gens) == 18
    tp = json.loads((out / "throughput.json").read_text())
    assert tp["generations"] == 18
    assert tp["generated_tokens"] == sum(g["n_tokens"] for g in gens) > 0
    assert tp["prompt_tokens"] > 18
    for k in ("capture_seconds", "generate_seconds", "quality_seconds", "judge_seconds"):
        assert tp[k] > 0, k
    parts = tp["generate_seconds"] + tp["quality_seconds"] + tp["judge_seconds"]
    assert parts <= tp["loop_seconds"] <= parts + 5
    assert tp["generated_tokens_per_second"] == pytest.approx(
        tp["generated_tokens"] / tp["loop_seconds"])
    # the CLI's summary line says the same
    assert f"{tp['generations']} generations, {tp['generated_tokens']} tokens" in r.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["model_name"] == "smollm2-135m (synthetic)"


def test_batch_chosen_when_not_given(auto_run):
    """On the CPU the sweep takes 16 sequences, never more than it has
    generations (18 here: 16); the number goes into config.resolved.yaml,
    run.json and throughput.json."""
    tmp, out, _ = auto_run
    tp = json.loads((out / "throughput.json").read_text())
    info = json.loads((out / "run.json").read_text())
    assert tp["batch"] == info["batch"] == 16
    assert tp["batch_auto"] is True and info["batch_auto"] is True
    assert "  batch: 16\n" in (out / "config.resolved.yaml").read_text()


def small_cfg(tmp_path, batch="", name="small.yaml"):
    """One category, baseline + one strength, 2 prompts, no judge: 4 generations."""
    text = (CONFIG.format(data=DATA, batch=batch)
            .replace("categories: [hate, violence]", "categories: [hate]")
            .replace("strengths: [4, 8]", "strengths: [4]").replace("eval: 3", "eval: 2"))
    p = tmp_path / name
    p.write_text(text[:text.index("judges:")])
    return p


def test_batch_capped_by_generations(tmp_path, safesteer_bin, synthetic):
    sweep(safesteer_bin, synthetic, small_cfg(tmp_path, "  batch: auto\n"), tmp_path / "run")
    tp = json.loads((tmp_path / "run" / "throughput.json").read_text())
    assert tp["generations"] == 4 and tp["batch"] == 4 and tp["batch_auto"] is True
    assert tp["judge_seconds"] == 0


def test_resume_keeps_the_batch_it_ran_with(tmp_path, safesteer_bin, synthetic):
    """A folder run with an explicit batch resumes from a config without one:
    the sweep takes the folder's batch, so units and resolved config agree."""
    out = tmp_path / "run"
    sweep(safesteer_bin, synthetic, small_cfg(tmp_path, "  batch: 3\n"), out)
    done = (out / "cells_done.txt").read_text()
    sweep(safesteer_bin, synthetic, small_cfg(tmp_path, "", "auto.yaml"), out, "--resume")
    assert (out / "cells_done.txt").read_text() == done
    assert "  batch: 3\n" in (out / "config.resolved.yaml").read_text()
    tp = json.loads((out / "throughput.json").read_text())
    assert tp["batch"] == 3 and tp["generations"] == 0 and tp["batch_auto"] is True


@pytest.mark.parametrize("bad", ["0", "many", "2000"])
def test_bad_batch_named_with_its_line(tmp_path, safesteer_bin, synthetic, bad):
    cfg = small_cfg(tmp_path, f"  batch: {bad}\n")
    r = sweep(safesteer_bin, synthetic, cfg, tmp_path / "run", check=False)
    assert r.returncode != 0 and f"{cfg}:15: batch" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_synthetic_specs_name_what_is_wrong(safesteer_bin, default_model):
    cases = [("synthetic:llama4", "unknown model shape \"llama4\""),
             ("synthetic:smollm2-135m,colour=red", "unknown option colour=red"),
             ("synthetic:smollm2-135m,seed=x", "seed \"x\" is not a number"),
             ("synthetic:smollm2-135m,tokenizer=/nonexistent.gguf", "/nonexistent.gguf")]
    for spec, needle in cases:
        r = run_safesteer(safesteer_bin, "info", "--model", spec, check=False)
        assert r.returncode == 1 and needle in r.stderr, (spec, r.stderr)
    r = run_safesteer(safesteer_bin, "generate", "--model", "synthetic:smollm2-135m",
                      "--prompt", "hi", check=False)
    assert r.returncode == 1 and "add tokenizer=GGUF" in r.stderr
    # weights drawn on the GPU: the CPU engine refuses instead of running on nothing
    r = run_safesteer(safesteer_bin, "generate", "--model",
                      f"synthetic:smollm2-135m,weights=device,tokenizer={default_model}",
                      "--prompt", "hi", check=False)
    assert r.returncode == 1 and "runs only on the CUDA engine" in r.stderr
    info = json.loads(run_safesteer(safesteer_bin, "info", "--json", "--model",
                                    f"synthetic:llama3-8b,weights=device,"
                                    f"tokenizer={default_model}").stdout)
    assert info["format"] == "synthetic" and info["n_layers"] == 32
    assert info["vocab_size"] == 49152  # the tokenizer's, so every token id embeds
