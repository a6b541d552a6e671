"""Hostile inputs through the command line (issue 13): a model, tokenizer,
capture or vector file damaged in one field makes the command exit with a
code in 1..127, say which file, field and value, and write nothing.  Each
input is a tiny valid file (tests/fuzz/make_seeds.py makes the same ones for
the fuzzers) with the damage applied here."""
import struct
import sys

import gguf
import h5py
import numpy as np
import pytest

from conftest import REPO, run_safesteer

sys.path.insert(0, str(REPO / "tests" / "fuzz"))
import make_seeds  # noqa: E402


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "tiny.gguf"
    path.write_bytes(make_seeds.llama_gguf("byte-level", gguf.GGMLQuantizationType.F32))
    return path


def tensor_info_fields(path, name):
    """File offsets of a tensor info's type and data offset fields."""
    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == name)
    # parts: name length, name, n_dims, dims, type, data offset
    at = t.field.offset + sum(p.nbytes for p in t.field.parts[:4])
    return at, at + 4


def patched(src, dst, edits):
    data = bytearray(src.read_bytes())
    for at, value in edits:
        data[at:at + len(value)] = value
    dst.write_bytes(bytes(data))
    return dst


def expect_refused(binary, args, *needles, out=None):
    proc = run_safesteer(binary, *args, check=False)
    assert 1 <= proc.returncode <= 127, (proc.returncode, proc.stderr)
    for n in needles:
        assert n in proc.stderr, f"{n!r} not in {proc.stderr!r}"
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return proc


def damaged(tiny_gguf, tmp_path, kind):
    """The tiny model with one class of damage from issue 13."""
    dst = tmp_path / f"{kind}.gguf"
    type_at, offset_at = tensor_info_fields(tiny_gguf, "blk.0.attn_norm.weight")
    k_type, k_offset = tensor_info_fields(tiny_gguf, "blk.0.attn_k.weight")
    q_offset = struct.unpack_from("<Q", tiny_gguf.read_bytes(),
                                  tensor_info_fields(tiny_gguf, "blk.0.attn_q.weight")[1])[0]
    edits = {
        "norm_type": [(type_at, struct.pack("<I", gguf.GGMLQuantizationType.F16))],
        "negative_type": [(k_type, struct.pack("<i", -1))],
        "shared": [(k_offset, struct.pack("<Q", q_offset))],
        "unaligned": [(k_offset, struct.pack("<Q", q_offset + 4))],
        "version1": [(4, struct.pack("<I", 1))],
    }[kind]
    return patched(tiny_gguf, dst, edits)


@pytest.mark.parametrize("kind,needles", [
    ("norm_type", ["blk.0.attn_norm.weight (F16, 32 values, 64 bytes)", "gap of 64 bytes"]),
    ("negative_type", ["blk.0.attn_k.weight", "type id 4294967295"]),
    ("shared", ["blk.0.attn_k.weight", "overlaps tensor"]),
    ("unaligned", ["blk.0.attn_k.weight", "not a multiple of the alignment 32"]),
    ("version1", ["GGUF version 1"]),
])
def test_info_refuses_damaged_gguf(safesteer_bin, tiny_gguf, tmp_path, kind, needles):
    path = damaged(tiny_gguf, tmp_path, kind)
    expect_refused(safesteer_bin, ["info", path], path.name, *needles)


def test_truncated_gguf_refused_by_info(safesteer_bin, tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    for keep in (100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{keep}.gguf"
        path.write_bytes(data[:keep])
        expect_refused(safesteer_bin, ["info", path], path.name)


def test_tensor_writes_nothing_for_a_damaged_model(safesteer_bin, tiny_gguf, tmp_path):
    path = damaged(tiny_gguf, tmp_path, "norm_type")
    out = tmp_path / "norm.npy"
    expect_refused(safesteer_bin, ["tensor", "--model", path, "--name",
                                   "blk.0.attn_norm.weight", "--out", out], path.name, out=out)


def test_non_finite_norm_named_at_load(safesteer_bin, tiny_gguf, tmp_path):
    """Before: 'the logits are not finite', no file or tensor named."""
    r = gguf.GGUFReader(tiny_gguf)
    t = next(t for t in r.tensors if t.name == "output_norm.weight")
    at = int(t.data_offset) + 4 * 5
    path = patched(tiny_gguf, tmp_path / "nan_norm.gguf", [(at, struct.pack("<f", np.nan))])
    expect_refused(safesteer_bin, ["info", path], path.name,
                   "tensor output_norm.weight has nan at row 0, column 5")


def test_tokenize_refuses_a_damaged_vocabulary(safesteer_bin, tiny_gguf, tmp_path):
    """A merge without its space: the message used to quote freed memory."""
    field = gguf.GGUFReader(tiny_gguf).fields["tokenizer.ggml.merges"]
    first = field.data[0]  # index of the first string's bytes among the parts
    at = field.offset + sum(p.nbytes for p in field.parts[:first])
    path = patched(tiny_gguf, tmp_path / "merges.gguf", [(at + 2, b"x")])  # "Ġ t" -> "Ġxt"
    expect_refused(safesteer_bin, ["tokenize", "--model", path, "hello"], path.name,
                   "tokenizer.ggml.merges: entry 0 '\u0120xt' is not 'left right'")


def test_vectors_write_nothing_for_a_damaged_capture(safesteer_bin, tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "python"))
    import make_synthetic_acts
    rng = np.random.default_rng(0)
    acts, cats, labels = make_synthetic_acts.category_blobs(rng, 2, 4, 4, 8, 2)
    path = tmp_path / "acts.h5"
    make_synthetic_acts.write_capture(path, acts, [1, 2], cats, labels)
    with h5py.File(path, "a") as f:
        del f.attrs["d_model"]
    out = tmp_path / "vectors.h5"
    expect_refused(safesteer_bin, ["vectors", "--acts", path, "--out", out], path.name,
                   "attribute d_model is missing", out=out)


def test_steering_refuses_a_damaged_vector_file(safesteer_bin, default_model, tmp_path):
    path = tmp_path / "vectors.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "safesteer.vectors"
        f.attrs["method"] = "mean-diff"
        f.create_dataset("vectors", data=np.zeros((1, 1, 576), np.float32))
    expect_refused(safesteer_bin, ["generate", "--model", default_model, "--steer", path,
                                   "--layers", "3", "--prompt", "hello"], path.name,
                   "attribute site is missing")
