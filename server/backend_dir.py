"""Build the backend directory the embedded server passes to ``--backend-directory``.

It holds the Python backend with the stub of the running Python version beside
``libtriton_python.so`` (where the backend looks for it), and a Python-based ``onnxruntime``
backend, so a model whose config says ``platform: "onnxruntime_onnx"`` loads unchanged: the same
configs the native ONNX Runtime backend reads in NVIDIA's container.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from genserve.server.triton_install import TritonInstall

ONNXRUNTIME_BACKEND_SOURCE = Path(__file__).with_name("onnxruntime_backend.py")


def build_backend_dir(target: Path, install: TritonInstall) -> Path:
    """Lay out ``python/`` and ``onnxruntime/`` backends under ``target`` and return it."""
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    # Copies, not links: Triton refuses a backend library whose real path leaves this folder.
    for item in install.python_backend_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(install.stub, python_dir / install.stub.name)

    onnxruntime_dir = target / "onnxruntime"
    onnxruntime_dir.mkdir(exist_ok=True)
    shutil.copy2(ONNXRUNTIME_BACKEND_SOURCE, onnxruntime_dir / "model.py")
    return target
