"""The Python package (analysis/safesteer) against the command line on the
default model: generation token for token and log-prob for log-prob
(unsteered and with several plans in one batch), captures bit for bit,
vectors equal, sweeps equal; C errors raised with the C message; Ctrl-C
stops a long call; a fresh virtual environment installs the package."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, run_json, run_safesteer, write_control_vector

sys.path.insert(0, str(REPO / "analysis"))
import safesteer  # noqa: E402

DEMO = REPO / "data" / "demo_prompts.jsonl"
PROMPTS = ["The capital of France is", "Give me three tips for a job interview.", "Hello"]


@pytest.fixture(scope="module")
def model(default_model):
    m = safesteer.Model(default_model, threads=2, max_seqs=3)
    yield m
    m.close()


def cli_generate(binary, model_path, prompts, *extra):
    """`safesteer generate --json` of prompts in one batch: one record each."""
    args = ["generate", "--model", model_path, "--chat", "--json", "--logprobs", "5",
            "--max-new", "16", "--threads", "2"]
    for p in prompts:
        args += ["--prompt", p]
    out = run_safesteer(binary, *args, *extra).stdout
    return [json.loads(line) for line in out.splitlines()]


def assert_same(gen, rec):
    """A Generation equals a CLI record: ids, text, stop reason, and every
    step's top ids and log-probabilities exactly."""
    assert gen.prompt_ids == rec["prompt_ids"]
    assert gen.ids == rec["ids"]
    assert gen.text == rec["text"]
    assert gen.stop_reason == rec["stop_reason"]
    assert len(gen.logprobs) == len(rec["logprobs"])
    for (ids, lps), step in zip(gen.logprobs, rec["logprobs"]):
        assert ids.tolist() == step["top_ids"]
        assert [float(x) for x in lps] == step["top_logprobs"]


def test_generate_equals_cli_unsteered(safesteer_bin, default_model, model):
    got = model.generate(PROMPTS, max_new=16, chat=True, logprobs=5)
    for gen, rec in zip(got, cli_generate(safesteer_bin, default_model, PROMPTS)):
        assert_same(gen, rec)


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory):
    """A llama.cpp control vector written by `gguf` and a safesteer vector
    file written by the package, both random."""
    tmp = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(0)
    cv = tmp / "cv.gguf"
    write_control_vector(cv, {10: (rng.normal(size=576) * 0.5).astype(np.float32),
                              12: (rng.normal(size=576) * 0.5).astype(np.float32)})
    h5 = tmp / "b.h5"
    safesteer.VectorSet.from_array(rng.normal(size=(1, 576)).astype(np.float32), [14],
                                   category="b").save(h5)
    return cv, h5


def test_plans_per_prompt_in_one_batch_equal_cli(safesteer_bin, default_model, model,
                                                 vector_files):
    """Three prompts, three plans (control vector at layer 10, none, an
    ablation from a vector file at 14), one batch; the CLI runs the same
    batch once per plan and prompt i of the run with plan i must match."""
    cv, h5 = vector_files
    plans = [safesteer.Plan().add(cv, layers=[10], strength=4), None,
             safesteer.Plan(positions="from:3").add(f"{h5}:b", layers=14, op="ablate")]
    got = model.generate(PROMPTS, max_new=16, chat=True, logprobs=5, steer=plans)
    runs = [cli_generate(safesteer_bin, default_model, PROMPTS, "--steer", cv, "--layers", "10",
                         "--strength", "4"),
            cli_generate(safesteer_bin, default_model, PROMPTS),
            cli_generate(safesteer_bin, default_model, PROMPTS, "--steer", f"{h5}:b",
                         "--layers", "14", "--ablate", "--positions", "from:3")]
    for i in range(3):
        assert_same(got[i], runs[i][i])
    unsteered = runs[1]
    assert got[0].logprobs[0][1].tolist() != unsteered[0]["logprobs"][0]["top_logprobs"]
    # a numpy vector gives the same plan as its file
    arr = safesteer.load_vectors(h5).vector("b", 14)
    again = model.generate(PROMPTS[2], max_new=16, logprobs=5, steer=safesteer.Plan(
        positions="from:3").add(arr, layers=[14], op="ablate"))
    assert again.ids == got[2].ids


def test_tokenizer_and_chat_equal_cli(safesteer_bin, default_model, model):
    rec = run_json(safesteer_bin, "tokenize", "--model", default_model, "--json", "Hello there")
    assert model.tokenize("Hello there") == rec
    assert model.detokenize(rec) == "Hello there"
    chat = run_json(safesteer_bin, "tokenize", "--model", default_model, "--chat", "--json",
                    "Hello there")
    assert model.encode("Hello there", chat=True) == chat
    assert model.chat("Hello there").endswith("<|im_start|>assistant\n")
    info = model.info
    assert info["n_layers"] == 30 and info["d_model"] == 576 and info["format"] == "gguf"


def demo_rows(n):
    return [json.loads(line) for line in DEMO.read_text().splitlines()][:n]


@pytest.mark.parametrize("pool", ["mean", "all"])
def test_capture_equals_cli_file_bit_for_bit(safesteer_bin, default_model, model, tmp_path,
                                             pool):
    rows = demo_rows(6)
    cli = tmp_path / "cli.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", DEMO,
                  "--limit", 6, "--layers", "0,14,29", "--pool", pool, "--chat", "--batch", 3,
                  "--threads", 2, "--out", cli, "--quiet")
    got = model.capture([r["prompt"] for r in rows], layers=[0, 14, 29], pool=pool, batch=3)
    mine = tmp_path / "py.h5"
    model.capture_to(mine, [r["prompt"] for r in rows], layers="0,14,29", pool=pool, batch=3,
                     ids=[r["id"] for r in rows], categories=[r["category"] for r in rows],
                     labels=[r["label"] for r in rows], data_path=str(DEMO))
    with h5py.File(cli, "r") as f, h5py.File(mine, "r") as g:
        assert got.acts.tobytes() == f["acts"][()].tobytes()
        assert got.n_tokens.tolist() == f["prompts/n_tokens"][()].tolist()
        assert got.layer_norms.tobytes() == f["layer_norms"][()].tobytes()
        assert got.layers.tolist() == [0, 14, 29]
        if pool == "all":
            assert got.offsets.tolist() == f["offsets"][()].tolist()
            assert got.prompt(1).shape == (got.offsets[2] - got.offsets[1], 3, 576)
        for name in ("acts", "layers", "layer_norms", "prompts/n_tokens", "prompts/id",
                     "prompts/category", "prompts/label", "prompts/text"):
            assert np.array_equal(f[name][()], g[name][()]), name
        for key in ("model_sha256", "prompts_sha256", "site", "pooling", "chat_template",
                    "complete", "n_done", "data_path"):
            assert f.attrs[key] == g.attrs[key], key


def test_vectors_equal_cli(safesteer_bin, default_model, tmp_path):
    rows = demo_rows(48)
    cap = tmp_path / "acts.h5"
    run_safesteer(safesteer_bin, "capture", "--model", default_model, "--data", DEMO,
                  "--limit", 48, "--layers", "10,14", "--batch", 8, "--threads", 2,
                  "--out", cap, "--quiet")
    for method in ("mean-diff", "pruned", "pca"):
        out = tmp_path / f"{method}.h5"
        run_safesteer(safesteer_bin, "vectors", "--acts", cap, "--method", method, "--out",
                      out, "--quiet")
        ref = safesteer.load_vectors(out)
        got = safesteer.vectors(cap, method=method)
        assert got.categories == ref.categories
        assert got.vectors.tobytes() == ref.vectors.tobytes()
        np.testing.assert_array_equal(got.separability, ref.separability)
    # the same prompts captured in memory give the same vectors
    with safesteer.Model(default_model, threads=2, max_seqs=8) as m8:
        acts = m8.capture([r["prompt"] for r in rows], layers=[10, 14], chat=False, batch=8)
    mem = safesteer.vectors(acts, labels=[r["label"] for r in rows],
                            categories=[r["category"] for r in rows])
    ref = safesteer.load_vectors(tmp_path / "mean-diff.h5")
    assert mem.vectors.tobytes() == ref.vectors.tobytes()
    assert mem.counts["unsafe"].tolist() == ref.counts["unsafe"].tolist()


def test_c_errors_raise_with_the_c_message(model, tmp_path):
    with pytest.raises(safesteer.SafesteerError, match="/nonexistent/model.gguf"):
        safesteer.Model("/nonexistent/model.gguf")
    with pytest.raises(safesteer.SafesteerError,
                       match=r"layer 40 out of range \(model has layers 0\.\.29\)"):
        model.capture(["Hi"], layers=[3, 40])
    with pytest.raises(safesteer.SafesteerError, match="vectors have d_model 100, the model 576"):
        model.generate("Hi", max_new=2,
                       steer=safesteer.Plan().add(np.ones(100, np.float32), layers=[3]))
    with pytest.raises(safesteer.SafesteerError, match="no such file|No such file"):
        safesteer.load_vectors(tmp_path / "missing.h5")
    with pytest.raises(safesteer.SafesteerError, match="unknown position rule \"soon\""):
        model.generate("Hi", max_new=2, steer=safesteer.Plan(positions="soon").add(
            np.ones(576, np.float32), layers=[3]))
    out = tmp_path / "x.h5"
    model.capture_to(out, ["Hi"], layers=[1])
    with pytest.raises(safesteer.OutputExistsError, match="is a complete capture"):
        model.capture_to(out, ["Hi"], layers=[1])


def test_sweep_equals_cli(safesteer_bin, default_model, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""\
data:
  unsafe: {{file: {DEMO}, categories: [crime]}}
  safe: {{file: {DEMO}, categories: [benign]}}
  fit: 3
  eval: 2
  fit_safe: 4
layers: [12]
strengths: [4]
generation: {{max_new: 4, batch: 4}}
""")
    run_safesteer(safesteer_bin, "sweep", cfg, "--model", default_model, "--out",
                  tmp_path / "cli", "--threads", 2, "--quiet")
    reports = []
    safesteer.sweep(cfg, tmp_path / "py", model=default_model, threads=2,
                    progress=reports.append)
    assert (tmp_path / "py" / "summary.csv").read_text() == \
        (tmp_path / "cli" / "summary.csv").read_text()
    assert (tmp_path / "py" / "generations.jsonl").read_text() == \
        (tmp_path / "cli" / "generations.jsonl").read_text()
    assert reports and reports[-1]["final"] and reports[-1]["task"] == "sweep"


def test_ctrl_c_stops_a_long_generation(default_model):
    """SIGINT during generate(): the C loop stops at its next progress
    report and the call raises KeyboardInterrupt; the process exits at once."""
    code = ("import sys, safesteer\n"
            f"m = safesteer.Model({str(default_model)!r}, threads=2)\n"
            "print('ready', flush=True)\n"
            "try:\n"
            "    m.generate(['Write a long story.'], max_new=100000, chat=True)\n"
            "except KeyboardInterrupt as e:\n"
            "    print('interrupted:', e, flush=True)\n"
            "    sys.exit(3)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO / "analysis"))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(2.5)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert "interrupted: generate: stopped at" in out
    assert time.time() - t0 < 10


def test_fresh_venv_installs_the_package(tmp_path, default_model):
    """`pip install ./analysis` in a new virtual environment copies the
    built libsafesteer.so into the package, which then runs on its own."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    py = venv / "bin" / "python"
    # the library's build (conftest sets it from SAFESTEER_BIN when unset)
    build = pathlib.Path(os.environ.get("SAFESTEER_BUILD", REPO / "build"))
    env = dict(os.environ, SAFESTEER_BUILD=str(build))
    env.pop("SAFESTEER_LIB", None)
    subprocess.run([py, "-m", "pip", "install", "-q", str(REPO / "analysis")], check=True,
                   env=env, timeout=600)
    out = subprocess.run([py, "-c", "import safesteer, safesteer_analysis\n"
                          "print(safesteer.find_library())\n"
                          f"m = safesteer.Model({str(default_model)!r}, threads=2)\n"
                          "print(m.generate('The capital of France is', max_new=3, chat=False)"
                          ".text)"], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env=env)
    lib, text = out.stdout.splitlines()[:2]
    assert lib.startswith(str(venv)) and lib.endswith("safesteer/libsafesteer.so")
    assert text.strip().startswith("Paris")


def test_gil_is_released_during_generation(model):
    """Another Python thread keeps running while the engine generates."""
    import threading
    ticks, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=count)
    t.start()
    t0 = time.time()
    before = ticks[0]
    model.generate(PROMPTS, max_new=24, chat=True)
    during = ticks[0] - before
    stop.set()
    t.join()
    assert time.time() - t0 > 0.5 and during > 100_000, during
