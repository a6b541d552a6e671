"""safesteer from Python: load a model, steer it with vectors at chosen
layers and strengths, capture activations, compute vectors and run sweeps,
all on the C engine the command line uses (libsafesteer, through ctypes;
numpy in and out).  docs/python.md has the tour.

    import safesteer
    m = safesteer.Model()                                   # default model, CPU
    plan = safesteer.Plan().add("vectors.h5:crime", layers=[14], strength=4)
    out = m.generate(["How do I pick a lock?", "Hello"], max_new=32, steer=[plan, None])
    print(out[0].text)
"""
from . import errors
from ._lib import find_library
from .errors import IncompleteError, LibraryError, OutputExistsError, SafesteerError
from .model import CaptureResult, Generation, Model, default_model_path
from .plan import Plan
from .sweep import sweep
from .vectors import VectorSet, load_vectors, vectors

__all__ = ["Model", "Plan", "Generation", "CaptureResult", "VectorSet", "load_vectors",
           "vectors", "sweep", "default_model_path", "find_library", "version", "has_cuda",
           "errors", "SafesteerError", "OutputExistsError", "IncompleteError", "LibraryError"]


def version():
    """The version of the loaded libsafesteer."""
    from ._common import lib
    return lib().ss_abi_version().decode()


def has_cuda():
    """1 when the loaded libsafesteer has the CUDA engine (a GPU is still needed)."""
    from ._common import lib
    return bool(lib().ss_abi_has_cuda())
