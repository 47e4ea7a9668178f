"""The client-overhead benchmark runs end to end (a few iterations; no timing assertion)."""

from __future__ import annotations

import json

from genserve.benchmarks import client_overhead


def test_client_overhead_benchmark_runs(served, tmp_path, capsys):
    out = tmp_path / "overhead.json"
    argv = [
        "--iterations",
        "4",
        "--warmup",
        "1",
        "--grpc-url",
        served.grpc_url,
        "--http-url",
        served.http_url,
    ]
    assert client_overhead.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "grpc" in printed and "http" in printed and "ratio" in printed
    results = json.loads(out.read_text())
    for protocol in ("grpc", "http"):
        assert results[protocol]["iterations"] == 4
        assert results[protocol]["ratio"] > 0
