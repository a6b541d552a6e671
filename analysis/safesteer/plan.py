"""Steering plans: entries of (vectors, layers, strengths, op, site,
normalisation) plus a position rule, turned into the C plan by the library's
one plan builder (ss_steer_plan_add_vectors), as `safesteer generate
--steer` and the sweep do."""
import ctypes as C
import os

import numpy as np

from . import _lib
from ._common import c_ints, call, lib, utf8
from .vectors import SITES, VectorSet

OPS = ("add", "ablate")


class Plan:
    """A steering plan for one sequence.

        Plan().add("vectors.h5:crime", layers=[12], strength=6)
        Plan(positions="generated").add(np_vector, layers=[10], strength=4)
        Plan().add("control.gguf", op="ablate")

    vectors: a "FILE[:CATEGORY]" reference (safesteer HDF5 vector file or
    llama.cpp control-vector GGUF), a VectorSet, or a numpy array
    [len(layers)][d_model] (or [d_model] for one layer).  layers: model
    layers (default: every layer the vectors have).  strength: one value or
    one per layer.  site: where to steer (default: the vectors' own).
    normalize: a capture file; each vector becomes its unit direction times
    that layer's mean activation norm (add only).  positions: all, prompt,
    generated or from:K, for the whole plan."""

    def __init__(self, positions="all"):
        self.positions = positions
        self.entries = []

    def add(self, vectors, layers=None, strength=1.0, *, category=None, site=None, op="add",
            normalize=None):
        if op not in OPS:
            raise ValueError(f"op {op!r} is not add or ablate")
        if site is not None and site not in SITES:
            raise ValueError(f"site {site!r} is not one of {', '.join(SITES)}")
        if layers is not None:
            layers = [int(layers)] if np.isscalar(layers) else [int(x) for x in layers]
        strengths = [float(strength)] if np.isscalar(strength) else [float(s) for s in strength]
        if isinstance(vectors, (str, os.PathLike)):
            source = os.fspath(vectors)
        elif isinstance(vectors, VectorSet):
            source = vectors
        else:
            if layers is None:
                raise ValueError("a vector array needs layers= (the model layer of each row)")
            source = VectorSet.from_array(vectors, layers, site or "resid_post")
        self.entries.append({"vectors": source, "layers": layers, "strengths": strengths,
                             "category": category, "site": site, "op": op,
                             "normalize": None if normalize is None else os.fspath(normalize)})
        return self

    def __repr__(self):
        parts = []
        for e in self.entries:
            v = e["vectors"]
            name = v if isinstance(v, str) else repr(v)
            parts.append(f"{e['op']} {name} layers={e['layers']} strength={e['strengths']}")
        return f"Plan(positions={self.positions!r}: " + "; ".join(parts) + ")"


class CompiledPlans:
    """The C plans of a batch (one per prompt, None = unsteered), with the
    vector files they read loaded once; freed together."""

    def __init__(self, plans, n_layers, d_model):
        self.vector_files = {}
        self.c_plans = []
        self.pointers = (C.POINTER(_lib.SteerPlan) * max(len(plans), 1))()
        try:
            for i, p in enumerate(plans):
                if p is None or not p.entries:
                    continue
                cp = _lib.SteerPlan()
                lib().ss_steer_plan_init(C.byref(cp), n_layers, d_model)
                self.c_plans.append(cp)
                call(lib().ss_positions_parse, utf8(p.positions), C.byref(cp.positions))
                for e in p.entries:
                    self._add(cp, e)
                self.pointers[i] = C.pointer(cp)
        except BaseException:
            self.free()
            raise

    def _vector_set(self, e):
        v = e["vectors"]
        if isinstance(v, VectorSet):
            return v, e["category"]
        ref = utf8(v)
        buf, name = C.create_string_buffer(len(ref) + 1), C.c_char_p()
        lib().ss_vectors_split_ref(ref, buf, len(buf), C.byref(name))
        path = buf.value.decode()
        name = e["category"] or (name.value.decode() if name.value else None)
        if path not in self.vector_files:
            self.vector_files[path] = VectorSet.load(path)
        return self.vector_files[path], name

    def _add(self, cp, e):
        vs, category = self._vector_set(e)
        layers = c_ints(e["layers"]) if e["layers"] is not None else None
        strengths = (C.c_float * len(e["strengths"]))(*e["strengths"])
        src = _lib.SteerSource(
            C.pointer(vs._c), utf8(category), SITES.index(e["site"]) if e["site"] else -1,
            C.cast(layers, C.POINTER(C.c_int)) if layers is not None else None,
            len(e["layers"]) if e["layers"] is not None else 0, strengths, len(e["strengths"]),
            OPS.index(e["op"]), utf8(e["normalize"]))
        call(lib().ss_steer_plan_add_vectors, C.byref(cp), C.byref(src))

    def free(self):
        for cp in self.c_plans:
            lib().ss_steer_plan_free(C.byref(cp))
        self.c_plans = []
