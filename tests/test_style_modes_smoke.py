"""The style-methods benchmark runs end to end against the served repository (smoke size)."""

from __future__ import annotations

import json

import pytest

from genserve.benchmarks import style_modes


@pytest.mark.slow
def test_style_modes_smoke_writes_results(served, tmp_path, monkeypatch):
    monkeypatch.setattr(style_modes, "RESULTS", tmp_path)
    assert style_modes.main(["--smoke", "--url", served.grpc_url, "--name", "smoke"]) == 0
    summary = json.loads((tmp_path / "smoke" / "style_modes.json").read_text())
    assert {(row["method"], row["size"]) for row in summary["rows"]} == {
        ("feed_forward", 256),
        ("optimize", 256),
    }
    assert all(row["median_s"] > 0 for row in summary["rows"])
