"""`safesteer vectors export/import`: llama.cpp control-vector GGUF files
checked with the gguf package, and export -> import bitwise round trips."""
import pathlib
import sys

import gguf
import h5py
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from conftest import run_safesteer, write_control_vector  # noqa: E402
from make_synthetic_acts import category_blobs, write_capture  # noqa: E402


def make_vectors(bin_, tmp, d=24, layers=(1, 3, 4)):
    rng = np.random.default_rng(2)
    acts, cats, labels = category_blobs(rng, 2, 20, 10, d, len(layers))
    acts_path = tmp / "acts.h5"
    write_capture(acts_path, acts, list(layers), cats, labels)
    out = tmp / "vec.h5"
    run_safesteer(bin_, "vectors", "--acts", acts_path, "--out", out)
    with h5py.File(out, "r") as f:
        return out, f["vectors"][...], list(f["layers"][...])


def field_str(reader, key):
    field = reader.fields[key]
    return bytes(field.parts[field.data[0]]).decode()


def test_export_opens_with_gguf_reader(safesteer_bin, tmp_path):
    vec_path, vec, layers = make_vectors(safesteer_bin, tmp_path)
    cv = tmp_path / "cv.gguf"
    run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category", "cat1",
                  "--out", cv, "--scale", "0.5")
    r = gguf.GGUFReader(cv)
    assert field_str(r, "general.architecture") == "controlvector"
    assert field_str(r, "controlvector.model_hint") == "llama"
    lc = r.fields["controlvector.layer_count"]
    assert int(lc.parts[lc.data[0]][0]) == 3
    tensors = {t.name: t for t in r.tensors}
    assert sorted(tensors) == ["direction.1", "direction.3", "direction.4"]
    for row, layer in enumerate(layers):
        t = tensors[f"direction.{layer}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(t.shape) == [24]
        np.testing.assert_array_equal(np.asarray(t.data), np.float32(0.5) * vec[1, row])


def test_export_import_is_bitwise(safesteer_bin, tmp_path):
    vec_path, vec, layers = make_vectors(safesteer_bin, tmp_path)
    cv = tmp_path / "cv.gguf"
    back = tmp_path / "back.h5"
    run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category", "cat0",
                  "--out", cv)
    run_safesteer(safesteer_bin, "vectors", "import", "--in", cv, "--out", back, "--category",
                  "cat0")
    with h5py.File(back, "r") as f:
        assert f.attrs["format"] == "safesteer.vectors"
        assert f.attrs["method"] == "control-vector"
        assert f.attrs["site"] == "resid_post"
        assert list(f["layers"][...]) == layers
        assert f["vectors"].shape == (1, 3, 24)
        assert f["vectors"][0].tobytes() == vec[0].tobytes()
    # and a second export of the import is byte-identical to the first
    cv2 = tmp_path / "cv2.gguf"
    run_safesteer(safesteer_bin, "vectors", "export", "--in", back, "--out", cv2)
    assert cv.read_bytes() == cv2.read_bytes()


def test_import_gguf_written_by_gguf_package(safesteer_bin, tmp_path):
    """A file in the layout llama.cpp's cvector-generator / repeng write."""
    rng = np.random.default_rng(4)
    dirs = {n: rng.normal(size=16).astype(np.float32) for n in (5, 2, 9)}
    path = tmp_path / "ext.gguf"
    write_control_vector(path, dirs)
    out = tmp_path / "ext.h5"
    run_safesteer(safesteer_bin, "vectors", "import", "--in", path, "--out", out)
    with h5py.File(out, "r") as f:
        assert list(f["layers"][...]) == [2, 5, 9]
        for row, n in enumerate([2, 5, 9]):
            assert f["vectors"][0, row].tobytes() == dirs[n].tobytes()


def test_layer_zero_and_model_checks(safesteer_bin, tmp_path, default_model):
    vec_path, _, _ = make_vectors(safesteer_bin, tmp_path, layers=(0, 2))
    cv = tmp_path / "cv.gguf"
    proc = run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category",
                         "cat0", "--out", cv, check=False)
    assert proc.returncode == 1 and "layer 0" in proc.stderr and str(vec_path) in proc.stderr
    run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category", "cat0",
                  "--out", cv, "--skip-layer0")
    assert [t.name for t in gguf.GGUFReader(cv).tensors] == ["direction.2"]
    # d_model 24 against the default model's 576
    proc = run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category",
                         "cat0", "--out", cv, "--skip-layer0", "--model", default_model,
                         check=False)
    assert proc.returncode == 1
    assert "d_model is 24" in proc.stderr and "576" in proc.stderr
    assert str(default_model) in proc.stderr
    # a matching width passes and takes the hint from the model's architecture
    vec_path, _, _ = make_vectors(safesteer_bin, tmp_path, d=576, layers=(1, 29))
    run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category", "cat0",
                  "--out", cv, "--model", default_model)
    assert field_str(gguf.GGUFReader(cv), "controlvector.model_hint") == "llama"


def test_missing_category_is_named(safesteer_bin, tmp_path):
    vec_path, _, _ = make_vectors(safesteer_bin, tmp_path)
    proc = run_safesteer(safesteer_bin, "vectors", "export", "--in", vec_path, "--category",
                         "nope", "--out", tmp_path / "x.gguf", check=False)
    assert proc.returncode == 1
    assert '"nope"' in proc.stderr and "cat0" in proc.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
