"""The README's command-line block, run as written on the default model.

Each line of the block under "## The command line" runs with bash in a
scratch folder that holds links to the repository's data/ and experiments/,
with $B set to the binary under test, in order (later lines read what earlier
ones wrote).  Lines that need a GPU (`--device cuda`) run only where
SAFESTEER_TEST_CUDA=1.  A README example that stops working fails here."""
import os
import pathlib
import re
import subprocess

import h5py
import pytest

from conftest import REPO


def readme_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## The command line\n\n```sh\n(.*?)```", text, re.S)
    assert block, "README.md: no ```sh block under '## The command line'"
    lines = []
    for line in block.group(1).splitlines():
        code = line.split("  #", 1)[0].strip()  # drop the trailing comment
        if code and not code.startswith("B="):
            lines.append(code)
    return lines


def test_readme_block_is_found():
    cmds = readme_commands()
    assert len(cmds) >= 10
    assert all(c.startswith("$B ") for c in cmds), cmds


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("readme")
    for name in ("data", "experiments"):
        (d / name).symlink_to(REPO / name)
    return d


def test_readme_commands_run(safesteer_bin, default_model, scratch):
    env = dict(os.environ, B=str(safesteer_bin), SAFESTEER_MODEL=str(default_model))
    gpu = os.environ.get("SAFESTEER_TEST_CUDA") == "1"
    ran = 0
    for cmd in readme_commands():
        if "--device cuda" in cmd and not gpu:
            continue
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", cmd], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (f"README line failed (exit {proc.returncode}): {cmd}\n"
                                      f"{proc.stderr[-2000:]}")
        ran += 1
    assert ran >= 10

    # what the lines say they make
    with h5py.File(scratch / "acts.h5", "r") as f:
        assert f.attrs["complete"] == 1
        assert list(f["layers"][:]) == [10, 14]
    with h5py.File(scratch / "vectors.h5", "r") as f:
        cats = [c.decode() if isinstance(c, bytes) else c for c in f["categories"][:]]
        assert "crime" in cats
    assert (scratch / "crime.gguf").read_bytes()[:4] == b"GGUF"
    assert (scratch / "clusters.h5").exists()
    for run in ("runs/demo", "runs/all"):
        assert (scratch / run / "results.h5").exists()
    # the merged shards hold the same cells as the single run
    rows = {r: sorted((scratch / r / "summary.csv").read_text().splitlines())
            for r in ("runs/demo", "runs/all")}
    assert rows["runs/demo"] == rows["runs/all"]
    assert len(rows["runs/demo"]) > 1
    assert (scratch / "runs/demo/report.html").stat().st_size > 1000
