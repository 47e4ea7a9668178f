"""``genserve-client`` against the embedded server: every command writes its files and prints timing."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.client import encode_png
from genserve.client.cli import main


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_health_generate_and_diffuse(served, protocol, tmp_path, capsys):
    url = served.grpc_url if protocol == "grpc" else served.http_url
    common = ["--url", url, "--protocol", protocol, "--timeout", "30"]
    assert main(["health", *common]) == 0
    assert "ready" in capsys.readouterr().out
    assert (
        main(["generate", *common, "--labels", "1", "2", "--seeds", "3", "4", "--out", str(tmp_path / "g")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        "000_label1.png",
        "001_label2.png",
        "sheet.png",
    ]
    out = tmp_path / "d"
    assert main(["diffuse", *common, "--labels", "5", "--steps", "3", "--progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "step 1/3" in printed and "time " in printed and (out / "sheet.png").exists()


def test_stylize_writes_a_png(served, tmp_path, capsys):
    photo = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    (tmp_path / "photo.png").write_bytes(encode_png(photo))
    (tmp_path / "style.png").write_bytes(encode_png(photo[::-1]))
    out = tmp_path / "out.png"
    args = [str(tmp_path / "photo.png"), str(tmp_path / "style.png"), "--size", "256", "--out", str(out)]
    assert main(["stylize", "--url", served.grpc_url, *args]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "wrote 256x192 image" in capsys.readouterr().out


def test_bad_input_exits_2_with_the_reason(served, capsys):
    assert main(["generate", "--url", served.grpc_url, "--labels", "12"]) == 2
    assert "InvalidInputError: label=12 is out of range; allowed range [0, 9]" in capsys.readouterr().err
