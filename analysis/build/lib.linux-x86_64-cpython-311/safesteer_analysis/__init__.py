"""Read safesteer's HDF5 / JSON / CSV artefacts into numpy and pandas, plot
them, and write HTML sweep reports. Pure Python: h5py, numpy, pandas,
matplotlib; no part of the C toolkit is imported."""
from .loaders import (Bench, Capture, Clusters, FormatError, SweepRun, Vectors, load_bench,
                      load_capture, load_clusters, load_generations, load_sweep,
                      load_sweep_results, load_vectors)

__version__ = "0.1.0"
__all__ = ["Bench", "Capture", "Clusters", "FormatError", "SweepRun", "Vectors", "load_bench",
           "load_capture", "load_clusters", "load_generations", "load_sweep",
           "load_sweep_results", "load_vectors"]
