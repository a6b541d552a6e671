"""Steering vector sets (ss_vector_set): loaded from safesteer HDF5 files or
llama.cpp control-vector GGUF files, built from arrays, or computed from
captures by the C code (mean-diff, pruned, pca)."""
import ctypes as C
import os
import tempfile

import numpy as np

from . import _lib
from ._common import array, c_ints, c_strings, call, interruptible, lib, sink, strings, utf8

METHODS = ("mean-diff", "pruned", "pca")
SITES = ("resid_post", "attn_out", "mlp_out")


def _site(name):
    if name not in SITES:
        raise ValueError(f"site {name!r} is not one of {', '.join(SITES)}")
    return SITES.index(name)


class VectorSet:
    """Vectors [categories][layers][d_model] and what they came from.  The
    arrays are copies; the C set stays alive for steering plans."""

    def __init__(self, c_set):
        self._c = c_set            # owned: freed with the object

    def __del__(self):
        if getattr(self, "_c", None) is not None and _lib._LIB is not None:
            lib().ss_vectors_free(C.byref(self._c))
            self._c = None

    # ------------------------------------------------------------ construction

    @classmethod
    def load(cls, path):
        """A safesteer vector file (HDF5) or a llama.cpp control vector (GGUF)."""
        v = _lib.VectorSet()
        call(lib().ss_vectors_load, utf8(os.fspath(path)), C.byref(v))
        return cls(v)

    @classmethod
    def from_array(cls, vectors, layers, site="resid_post", category="array"):
        """One category from vectors [len(layers)][d_model] (or [d_model] for
        one layer) at model layers `layers`."""
        a = np.ascontiguousarray(vectors, dtype=np.float32)
        layers = [int(layers)] if np.isscalar(layers) else [int(x) for x in layers]
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[0] != len(layers):
            raise ValueError(f"vector array of shape {tuple(np.shape(vectors))} for "
                             f"{len(layers)} layers: expected [{len(layers)}][d_model]")
        v = _lib.VectorSet()
        lay = c_ints(layers, C.c_int32)
        call(lib().ss_vectors_from_array, utf8(category), _site(site), lay, len(layers),
             a.shape[1], a.ctypes.data_as(C.POINTER(C.c_float)), C.byref(v))
        return cls(v)

    # ------------------------------------------------------------ contents

    @property
    def path(self):
        return self._c.path.decode()

    @property
    def categories(self):
        return strings(self._c.categories, self._c.n_categories)

    @property
    def layers(self):
        return array(self._c.layers, self._c.n_layers, np.int32)

    @property
    def site(self):
        return SITES[self._c.site]

    @property
    def method(self):
        return self._c.method.decode()

    @property
    def d_model(self):
        return self._c.d_model

    @property
    def vectors(self):
        c = self._c
        n = c.n_categories * c.n_layers * c.d_model
        return array(c.vectors, n, np.float32).reshape(c.n_categories, c.n_layers, c.d_model)

    @property
    def norms(self):
        c = self._c
        return array(c.norms, c.n_categories * c.n_layers, np.float32).reshape(
            c.n_categories, c.n_layers)

    @property
    def cosine(self):
        c = self._c
        return array(c.cosine, c.n_layers * c.n_categories ** 2, np.float32).reshape(
            c.n_layers, c.n_categories, c.n_categories)

    @property
    def separability(self):
        """[categories][layers] held-out threshold accuracy, or None."""
        c = self._c
        if not c.separability:
            return None
        return array(c.separability, c.n_categories * c.n_layers, np.float32).reshape(
            c.n_categories, c.n_layers)

    @property
    def counts(self):
        """{"unsafe": [C], "safe": [C]} training prompts, or None."""
        c = self._c
        if not c.counts_unsafe:
            return None
        return {"unsafe": array(c.counts_unsafe, c.n_categories, np.int64),
                "safe": array(c.counts_safe, c.n_categories, np.int64)}

    def vector(self, category=None, layer=None):
        """The [d_model] vector of a category at a model layer (the only
        category / layer when None)."""
        cats, lays = self.categories, list(self.layers)
        ci = cats.index(category) if category is not None else 0
        li = lays.index(layer) if layer is not None else 0
        return self.vectors[ci, li]

    def __repr__(self):
        return (f"VectorSet({self.path or 'in memory'}: {self._c.n_categories} categories x "
                f"{self._c.n_layers} layers x {self.d_model}, {self.method}, {self.site})")

    # ------------------------------------------------------------ output

    def save(self, path):
        """Writes the set as a safesteer vector file (written whole)."""
        call(lib().ss_vectors_write, utf8(os.fspath(path)), C.byref(self._c))
        return path

    def export_control_vector(self, path, category=None, scale=1.0, model_hint="llama",
                              skip_layer0=False):
        """Category `category` as a llama.cpp control-vector GGUF
        (direction.N for layers N >= 1)."""
        cats = self.categories
        if category is None and len(cats) != 1:
            raise ValueError(f"the set holds {len(cats)} categories ({', '.join(cats)}): "
                             "name one")
        ci = cats.index(category) if category is not None else 0
        skipped = C.c_int(0)
        call(lib().ss_control_vector_write, utf8(os.fspath(path)), C.byref(self._c), ci,
             float(scale), utf8(model_hint), int(skip_layer0), C.byref(skipped))
        return path


def load_vectors(path):
    """VectorSet.load(path)."""
    return VectorSet.load(path)


def _write_capture(path, acts, layers, categories, labels, n_layers_model, site, offsets=None):
    """A capture file (docs/hdf5-schema.md) holding arrays made in Python, for
    ss_vectors_compute to read."""
    import h5py
    acts = np.ascontiguousarray(acts, dtype=np.float32)
    n = len(categories)
    per_token = offsets is not None
    if len(labels) != n or (not per_token and acts.shape[0] != n):
        raise ValueError(f"{acts.shape[0]} activation rows, {n} categories and {len(labels)} "
                         "labels: one of each per prompt")
    if acts.ndim != 3 or acts.shape[1] != len(layers):
        raise ValueError(f"activations of shape {acts.shape}: expected [N][{len(layers)} "
                         "layers][d_model]")
    strs = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "safesteer.capture", "format_version": 1,
                        "d_model": acts.shape[2], "n_layers_model": n_layers_model,
                        "n_prompts": n, "n_done": n, "complete": 1, "site": site,
                        "pooling": "all" if per_token else "mean", "model_name": "",
                        "model_sha256": ""})
        f["layers"] = np.asarray(layers, dtype=np.int32)
        f.create_dataset("prompts/id", data=[f"row-{i}" for i in range(n)], dtype=strs)
        f.create_dataset("prompts/category", data=list(categories), dtype=strs)
        f.create_dataset("prompts/label", data=list(labels), dtype=strs)
        f["acts"] = acts
        if per_token:
            f["offsets"] = np.asarray(offsets, dtype=np.int64)


def vectors(acts, labels=None, categories=None, method="mean-diff", layers=None,
            selected=None, holdout=0.2, seed=0, unsafe_label="unsafe", safe_label="safe",
            safe_category=None, safe_acts=None, pca_iters=200, n_layers_model=None,
            site="resid_post", progress=False):
    """Category steering vectors computed by the C code.

    acts: a capture file path, a CaptureResult, or an array [N][L][d] of
    pooled activations at model layers `layers`.  For a CaptureResult or an
    array, labels[N] ("unsafe" / "safe" by default) and categories[N] name
    each prompt.  selected: the model layers to compute (default all);
    selected categories come from the data.  The other options are those of
    `safesteer vectors`."""
    from .model import CaptureResult
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(acts, (str, os.PathLike)):
            path = os.fspath(acts)
        else:
            if labels is None or categories is None:
                raise ValueError("labels and categories are needed for in-memory activations")
            offsets = None
            if isinstance(acts, CaptureResult):
                layers, offsets, site = acts.layers, acts.offsets, acts.site
                n_layers_model = n_layers_model or acts.n_layers_model
                acts = acts.acts
            if layers is None:
                raise ValueError("layers: the model layer of each activation row is needed")
            path = os.path.join(tmp, "acts.h5")
            _write_capture(path, acts, list(layers), categories, labels,
                           n_layers_model or int(max(layers)) + 1, site, offsets)
        o = _lib.VecOptions()
        lib().ss_vec_options_init(C.byref(o))
        keep = []
        o.acts_path = utf8(path)
        o.safe_acts_path = utf8(os.fspath(safe_acts)) if safe_acts else None
        o.unsafe_label, o.safe_label = utf8(unsafe_label), utf8(safe_label)
        o.safe_category = utf8(safe_category)
        o.method = METHODS.index(method)
        o.holdout, o.seed, o.pca_iters = float(holdout), int(seed), int(pca_iters)
        if selected is not None:
            sel = c_ints(selected)
            keep.append(sel)
            o.layers, o.n_layers = C.cast(sel, C.POINTER(C.c_int)), len(selected)
        v = _lib.VectorSet()
        with interruptible() as state:
            o.progress, cb = sink(state, progress)
            call(lib().ss_vectors_compute, C.byref(o), C.byref(v))
        return VectorSet(v)
