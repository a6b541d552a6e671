"""Shared fixtures and helpers: where the safesteer binary and the default
model are, running the CLI, and comparing sweep run folders."""
import json
import os
import pathlib
import subprocess

import h5py
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"

# the Python package (analysis/safesteer) loads the libsafesteer.so of the
# build the tests run against
if os.environ.get("SAFESTEER_BIN"):
    os.environ.setdefault("SAFESTEER_BUILD", str(pathlib.Path(os.environ["SAFESTEER_BIN"]).parent))


def _default_model():
    if os.environ.get("SAFESTEER_MODEL"):
        return pathlib.Path(os.environ["SAFESTEER_MODEL"])
    cache = os.environ.get("SAFESTEER_CACHE") or os.path.expanduser("~/.cache/safesteer")
    return pathlib.Path(cache) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def safesteer_bin():
    path = pathlib.Path(os.environ.get("SAFESTEER_BIN", REPO / "build" / "safesteer"))
    if not path.exists():
        pytest.fail(f"safesteer binary not found at {path} (build first or set SAFESTEER_BIN)")
    return path


@pytest.fixture(scope="session")
def default_model():
    path = _default_model()
    if not path.exists():
        pytest.skip(f"default model not found at {path} (run scripts/fetch-model.sh)")
    return path


def run_safesteer(binary, *args, check=True, timeout=600):
    """Runs the CLI and returns the CompletedProcess (text mode)."""
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"safesteer {' '.join(map(str, args))} exited "
                             f"{proc.returncode}: {proc.stderr}")
    return proc


def run_json(binary, *args, **kw):
    return json.loads(run_safesteer(binary, *args, **kw).stdout)


def write_control_vector(path, directions):
    """A llama.cpp control-vector GGUF written by the `gguf` package, in the
    layout cvector-generator and repeng write: {N: vector} becomes tensor
    direction.N, which steers the output of block N (docs/steering.md)."""
    import gguf
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "llama")
    w.add_int32("controlvector.layer_count", len(directions))
    for n, v in directions.items():
        w.add_tensor(f"direction.{n}", v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def tables(run):
    """Everything a finished run reports, for equality checks."""
    run = pathlib.Path(run)
    with h5py.File(run / "results.h5", "r") as f:
        cells = {k: f["cells"][k][()] for k in f["cells"]}
        attrs = {k: f.attrs[k] for k in f.attrs}
    gens = [json.loads(l) for l in (run / "generations.jsonl").read_text().splitlines()]
    return cells, attrs, gens, (run / "summary.csv").read_text()


def assert_same(a, b):
    ca, aa, ga, sa = tables(a)
    cb, ab, gb, sb = tables(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        if ca[k].dtype.kind == "f":
            np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
        else:
            assert list(ca[k]) == list(cb[k]), k
    assert aa == ab
    assert ga == gb
    assert sa == sb
