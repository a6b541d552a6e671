"""Build step of the safesteer distribution (metadata in pyproject.toml):
the `safesteer` package binds libsafesteer.so, so the wheel carries the
library the CMake build produced ($SAFESTEER_BUILD, else <repo>/build),
building it first when it is missing (cmake must be on PATH)."""
import os
import pathlib
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

REPO = pathlib.Path(__file__).resolve().parent.parent
LIB = "libsafesteer.so"


def built_library():
    build = pathlib.Path(os.environ.get("SAFESTEER_BUILD", REPO / "build"))
    lib = build / LIB
    if not lib.exists():
        print(f"safesteer: {lib} missing, building it with cmake")
        subprocess.run(["cmake", "-S", str(REPO), "-B", str(build),
                        "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "safesteer_shared",
                        "-j", str(os.cpu_count() or 1)], check=True)
    return lib


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = pathlib.Path(self.build_lib) / "safesteer" / LIB
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built_library(), dest)


class BinaryDistribution(Distribution):
    """The wheel holds a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
