"""`safesteer generate` behaviour on the default model: streaming equals the
JSON record, seeded sampling is reproducible, stop strings cut the text, and
bad input fails with a clear message and a non-zero exit."""
import json

import numpy as np

from conftest import run_json, run_safesteer, write_control_vector

PROMPT = "Write a short poem about the sea."


def test_streamed_text_equals_json_text(safesteer_bin, default_model):
    args = ["generate", "--model", default_model, "--chat", "--prompt", PROMPT, "--max-new", 24]
    streamed = run_safesteer(safesteer_bin, *args)
    record = run_json(safesteer_bin, *args, "--json")
    assert streamed.stdout == record["text"] + "\n"
    assert len(record["ids"]) == 24 or record["stop_reason"] == "eos"
    assert "decode" in streamed.stderr and "tok/s" in streamed.stderr


def test_seeded_sampling_is_reproducible(safesteer_bin, default_model):
    args = ["generate", "--model", default_model, "--chat", "--prompt", PROMPT, "--max-new", 32,
            "--temperature", 1.0, "--top-p", 0.95, "--json"]
    a = run_json(safesteer_bin, *args, "--seed", 11)
    b = run_json(safesteer_bin, *args, "--seed", 11)
    assert a["ids"] == b["ids"]
    others = [run_json(safesteer_bin, *args, "--seed", s)["ids"] for s in (12, 13, 14)]
    assert any(o != a["ids"] for o in others), "four seeds gave the same sample"


def test_stop_string_cuts_the_text(safesteer_bin, default_model):
    full = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt",
                    "The capital of France is", "--max-new", 16, "--json")
    assert "." in full["text"]
    cut = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt",
                   "The capital of France is", "--max-new", 16, "--json", "--stop", ".")
    assert cut["stop_reason"] == "stop_string"
    assert cut["text"] == full["text"][:full["text"].index(".")]


def test_logprobs_are_normalised_and_sorted(safesteer_bin, default_model):
    rec = run_json(safesteer_bin, "generate", "--model", default_model, "--prompt", "Hello",
                   "--max-new", 4, "--logprobs", 5, "--json")
    assert len(rec["logprobs"]) >= 4
    for step, chosen in zip(rec["logprobs"], rec["ids"]):
        lps = step["top_logprobs"]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert step["top_ids"][0] == chosen  # greedy picks the most likely token


def test_prompt_longer_than_context_is_an_error(safesteer_bin, default_model):
    proc = run_safesteer(safesteer_bin, "generate", "--model", default_model, "--ctx", 16,
                         "--prompt", "word " * 40, check=False)
    assert proc.returncode == 1
    assert "prompt 0 has 41 tokens; the context holds 16" in proc.stderr


def test_missing_model_names_the_file(safesteer_bin, tmp_path):
    missing = tmp_path / "nope.gguf"
    proc = run_safesteer(safesteer_bin, "generate", "--model", missing, "--prompt", "hi",
                         check=False)
    assert proc.returncode == 1
    assert str(missing) in proc.stderr


def test_bad_option_values_are_usage_errors(safesteer_bin, default_model):
    for args, text in ((["--temperature", "-1"], "--temperature"),
                       (["--top-p", "0"], "--top-p"),
                       (["--max-new", "ten"], "not an integer"),
                       (["--device", "tpu"], "tpu")):
        proc = run_safesteer(safesteer_bin, "generate", "--model", default_model, "--prompt",
                             "hi", *args, check=False)
        assert proc.returncode == 2, args
        assert text in proc.stderr, (args, proc.stderr)


def test_overflowing_steering_is_an_error(safesteer_bin, default_model, tmp_path):
    """A vector whose scaled values overflow f32 makes every logit NaN: that is
    a clear error, never tokens sampled from NaN."""
    cv = tmp_path / "huge.gguf"
    write_control_vector(cv, {10: np.full(576, 3e38, dtype=np.float32)})
    proc = run_safesteer(safesteer_bin, "generate", "--model", default_model, "--prompt", "hi",
                         "--max-new", "4", "--steer", cv, "--strength", "4", check=False)
    assert proc.returncode == 1
    assert "the logits are not finite" in proc.stderr, proc.stderr


def test_steer_groups(safesteer_bin, default_model, tmp_path):
    """Each --steer takes the --layers/--strength/--ablate after it (options
    given before the first --steer are its own); a repeated option within one
    group, and an ablation sharing its site and layer, are errors."""
    cv = tmp_path / "cv.gguf"
    rng = np.random.default_rng(3)
    write_control_vector(cv, {10: rng.normal(size=576).astype(np.float32),
                              12: rng.normal(size=576).astype(np.float32)})
    base = ["generate", "--model", default_model, "--prompt", "hi", "--max-new", "1", "--json",
            "--logprobs", "3"]

    def lp(*args):
        return run_json(safesteer_bin, *base, *args)["logprobs"][0]["top_logprobs"]

    assert lp("--layers", "10", "--steer", cv, "--strength", "4") == \
        lp("--steer", cv, "--layers", "10", "--strength", "4")
    both = lp("--steer", cv, "--layers", "10", "--strength", "4",
              "--steer", cv, "--layers", "12", "--strength", "4")
    assert both == lp("--steer", cv, "--layers", "10,12", "--strength", "4")
    assert both != lp("--steer", cv, "--layers", "10", "--strength", "4")

    proc = run_safesteer(safesteer_bin, *base, "--steer", cv, "--layers", "10", "--layers", "12",
                         check=False)
    assert proc.returncode == 2 and "--layers given twice for one --steer" in proc.stderr
    proc = run_safesteer(safesteer_bin, *base, "--steer", cv, "--layers", "10",
                         "--steer", cv, "--layers", "10", "--ablate", check=False)
    assert proc.returncode == 1
    assert "both steer resid_post at layer 10, and entry 1 ablates" in proc.stderr, proc.stderr
