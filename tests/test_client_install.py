"""The client installs and imports in a fresh virtual environment with only its declared dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import sys

import genserve.client
import genserve.client._aio_grpc
import genserve.client._aio_http
from genserve.client import AsyncClient, Client

Client("127.0.0.1:1").close()
Client("127.0.0.1:1", protocol="http").close()
AsyncClient("127.0.0.1:1")
heavy = ("torch", "onnx", "onnxruntime", "onnxscript", "PIL", "genserve.server", "genserve.export")
print(sorted(name for name in heavy if name in sys.modules))
"""


@pytest.mark.slow
def test_client_imports_in_a_fresh_venv_with_only_its_dependencies(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    # The project's declared dependencies only (numpy, tritonclient[grpc,http]); no extras.
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    for absent in ("torch", "onnxruntime", "onnx=", "pillow"):
        assert absent not in installed
    done = subprocess.run(
        [str(python), "-c", CHECK], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
    usage = subprocess.run([str(venv / "bin" / "genserve-client"), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "generate" in usage.stdout
