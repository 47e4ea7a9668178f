"""The README's Python examples run, unchanged but for the server address and repository path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from genserve.client import encode_png
from genserve.server.paths import MODEL_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_an_example_per_endpoint_sync_and_async():
    text = "\n".join(BLOCKS)
    for call in ("generate(", "stylize(", "diffuse(", "diffuse_stream(", "AsyncClient", "except "):
        assert call in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, served, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    (tmp_path / "painting.png").write_bytes(encode_png(photo[::-1]))
    code = BLOCKS[index].replace("localhost:8001", served.grpc_url).replace("localhost:8000", served.http_url)
    code = code.replace('"model_repository"', repr(str(MODEL_REPOSITORY)))
    exec(compile(code, f"{README.name} example {index}", "exec"), {"__name__": "__readme__"})
    if "save_png" in code:
        assert (tmp_path / "digits.png").exists()
    if "label=42" in code:
        assert "label=42 is out of range; allowed range [0, 9]" in capsys.readouterr().out
