"""Locate the Triton Inference Server that ships inside the ``nvidia-pytriton`` wheel.

Only its files are used (the ``tritonserver`` binary, its shared libraries, the Python backend and
the per-Python-version backend stubs), never PyTriton's own Python API.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path


class TritonNotInstalledError(RuntimeError):
    """The Triton server files could not be found in this environment."""


@dataclass(frozen=True)
class TritonInstall:
    """Paths of one Triton installation.

    Attributes:
        binary: The ``tritonserver`` executable.
        library_dir: Folder of the shared libraries the binary links against.
        python_backend_dir: Folder holding ``libtriton_python.so``.
        stub: The ``triton_python_backend_stub`` built for the running Python version.
    """

    binary: Path
    library_dir: Path
    python_backend_dir: Path
    stub: Path

    @classmethod
    def find(cls) -> TritonInstall:
        """Find the installation from the ``nvidia-pytriton`` wheel.

        Raises:
            TritonNotInstalledError: naming the missing file and how to install it.
        """
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise TritonNotInstalledError(
                "the 'nvidia-pytriton' wheel is not installed; install genserve with the 'server' "
                "extra (pip install 'genserve[server]') or run 'make demo' once"
            )
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        root = package_dir / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "bin" / "tritonserver",
            library_dir=package_dir.parent / "nvidia_pytriton.libs",
            python_backend_dir=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        )
        install.check()
        return install

    def check(self) -> None:
        """Raise :class:`TritonNotInstalledError` naming the first file that is missing."""
        for what, path in (
            ("tritonserver binary", self.binary),
            ("Triton shared library folder", self.library_dir),
            ("Python backend library", self.python_backend_dir / "libtriton_python.so"),
            ("Python backend stub for this Python version", self.stub),
        ):
            if not path.exists():
                raise TritonNotInstalledError(f"{what} not found at {path}")
