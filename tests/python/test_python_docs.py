"""docs/python.md's Python blocks, run as written, in order, in one
interpreter, from a scratch folder linking the repository's data/ (later
blocks use what earlier ones made).  A documented example that stops
working fails here; the printed values are checked where the docs state
them."""
import os
import re
import subprocess
import sys

from conftest import REPO

DOC = REPO / "docs" / "python.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_docs_python_examples_run(tmp_path, default_model):
    blocks = python_blocks()
    assert len(blocks) >= 5
    (tmp_path / "data").symlink_to(REPO / "data")
    script = tmp_path / "examples.py"
    script.write_text("\n".join(blocks))
    env = dict(os.environ, PYTHONPATH=str(REPO / "analysis"), SAFESTEER_MODEL=str(default_model))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "30 576" in out
    assert "(48, 2, 576) [10 14]" in out
    assert "['crime', 'hate', 'self_harm', 'violence'] (4, 2, 576)" in out
    assert "cell_id,category,method,layer,strength,site,n_prompts" in out
    assert "sweep " in out
    assert '"3,40": layer 40 out of range (model has layers 0..29)' in out
    assert (tmp_path / "crime.gguf").exists() and (tmp_path / "runs" / "tiny" / "results.h5").exists()
