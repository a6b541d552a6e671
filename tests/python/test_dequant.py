"""`safesteer tensor` against the reference decoder, gguf-py's
gguf.quants.dequantize.  The comparison is EXACT (bit-identical float32,
NaNs matched by position): our decoders do the same float32 arithmetic.

- the default model: at least one tensor of each type it holds (Q8_0
  token_embd, Q4_1 projections, F32 norms);
- a GGUF synthesised here with gguf.GGUFWriter + gguf.quants.quantize holding
  F32, F16, BF16, Q8_0, Q4_0 and Q4_1 tensors (1-D, 2-D and 3-D, plus f16 /
  bf16 special values: inf, nan, subnormals, extremes).
"""
import numpy as np
import pytest

import gguf
from gguf import GGMLQuantizationType as Q

from conftest import run_safesteer

DEFAULT_TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.7.ffn_down.weight",
                   "blk.29.attn_v.weight", "blk.0.attn_norm.weight", "output_norm.weight"]


def assert_same(ours, ref, what):
    ref = np.asarray(ref, dtype=np.float32)
    assert ours.dtype == np.float32, what
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(ours), nan), f"{what}: NaN positions differ"
    a, b = ours[~nan].view(np.uint32), ref[~nan].view(np.uint32)
    bad = np.flatnonzero(a != b)
    assert bad.size == 0, (f"{what}: {bad.size} values differ, first at flat index {bad[0]}: "
                           f"{ours[~nan][bad[0]]!r} != {ref[~nan][bad[0]]!r}")


def dump(binary, model, name, tmp_path):
    out = tmp_path / (name + ".npy")
    run_safesteer(binary, "tensor", "--model", model, "--name", name, "--out", out)
    return np.load(out)


@pytest.fixture(scope="module")
def default_reader(default_model):
    return gguf.GGUFReader(str(default_model))


def test_default_model_every_type(safesteer_bin, default_model, default_reader, tmp_path):
    by_name = {t.name: t for t in default_reader.tensors}
    seen = set()
    for name in DEFAULT_TENSORS:
        t = by_name[name]
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        assert_same(dump(safesteer_bin, default_model, name, tmp_path), ref, name)
        seen.add(t.tensor_type)
    assert seen == {t.tensor_type for t in default_reader.tensors}, \
        "every tensor type in the default model must be covered"


def synth_tensors():
    rng = np.random.default_rng(7)
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 65504.0, 6e-8, -3e-5, 1e-40,
                        3.0e38, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -8,
                        -1.0 - 3 * 2.0 ** -8, 0.1, 1e5], dtype=np.float32)
    return [
        ("f32.matrix", Q.F32, rng.standard_normal((3, 64)).astype(np.float32)),
        ("f16.vector", Q.F16, rng.standard_normal(96).astype(np.float32)),
        ("f16.special", Q.F16, special),
        ("bf16.matrix", Q.BF16, rng.standard_normal((5, 32)).astype(np.float32) * 100),
        ("bf16.special", Q.BF16, special),
        ("q8_0.matrix", Q.Q8_0, rng.standard_normal((4, 128)).astype(np.float32)),
        ("q8_0.cube", Q.Q8_0, rng.standard_normal((2, 3, 64)).astype(np.float32) * 5),
        ("q4_0.matrix", Q.Q4_0, rng.standard_normal((6, 64)).astype(np.float32)),
        ("q4_1.matrix", Q.Q4_1, (rng.standard_normal((7, 96)) + 3).astype(np.float32)),
        ("q4_1.vector", Q.Q4_1, rng.uniform(-1, 0, 32).astype(np.float32)),
    ]


@pytest.fixture(scope="module")
def synth_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "all_types.gguf"
    w = gguf.GGUFWriter(str(path), "synthetic")
    for name, qtype, data in synth_tensors():
        if qtype == Q.F32:
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            with np.errstate(over="ignore"):
                w.add_tensor(name, data.astype(np.float16))
        else:
            q = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_synthesised_all_types(safesteer_bin, synth_gguf, tmp_path):
    reader = gguf.GGUFReader(str(synth_gguf))
    by_name = {t.name: t for t in reader.tensors}
    for name, qtype, data in synth_tensors():
        t = by_name[name]
        assert t.tensor_type == qtype, name
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        ours = dump(safesteer_bin, synth_gguf, name, tmp_path)
        assert ours.shape == data.shape, f"{name}: numpy shape must be the reversed GGUF dims"
        assert_same(ours, ref, name)
        if qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):  # and the decode is near the input
            step = np.abs(data).max() / (7 if qtype != Q.Q8_0 else 127)
            assert np.abs(ours - data).max() <= step * 1.01, name
