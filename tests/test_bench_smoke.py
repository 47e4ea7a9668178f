"""The benchmark harness end to end, smoke-sized: locust in distributed mode, and the whole sweep + report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genserve.benchmarks.cli import main
from genserve.benchmarks.loadrun import LoadSpec, measure_point, read_samples

pytestmark = pytest.mark.slow


def test_locust_distributed_one_master_two_workers(served, tmp_path: Path) -> None:
    spec = LoadSpec("gan", users=4, duration_s=4, warmup_s=1, workers=2)
    prefix = tmp_path / "locust" / "distributed"
    result = measure_point(
        "distributed",
        spec,
        host=f"grpc://{served.grpc_url}",
        http_url=served.http_url,
        models=["gan"],
        server_pgid=served.pid,
        prefix=prefix,
    )
    samples = read_samples(prefix)
    assert len(set(samples["process"])) == 2, "both workers sent calls"
    assert result.ok > 0 and result.errors == 0, result.error_kinds
    assert result.p99 is not None and result.p50 <= result.p99
    assert result.triton["gan"]["requests"] >= result.ok
    assert prefix.with_name("distributed_stats.csv").exists()
    assert prefix.with_name("distributed.html").exists()


def test_smoke_sweep_writes_report_and_plots(tmp_path: Path) -> None:
    assert main(["--smoke", "--results-dir", str(tmp_path), "--name", "smoke"]) == 0
    out = tmp_path / "smoke"
    report = (out / "report.md").read_text()
    for section in (
        "## Targets",
        "## In-process baselines",
        "## gan: latency vs throughput",
        "## style_transfer: latency vs throughput",
        "## gan: server queue vs compute time",
        "## Batch sizes the server formed",
        "## Paced load",
        "## Two cores shared",
        "## Noise",
        "## Diffusion",
    ):
        assert section in report
    for png in (
        "latency_gan.png",
        "latency_style_transfer.png",
        "queue_compute_gan.png",
        "batch_sizes.png",
        "diffusion.png",
    ):
        assert (out / png).stat().st_size > 10_000
    results = json.loads((out / "results.json").read_text())
    systems = {p["tags"]["system"] for p in results["points"]}
    assert systems == {"genserve", "pytriton"}
    failed = [p["label"] for p in results["points"] if p["ok"] == 0]
    assert not failed, f"points without a successful call: {failed}"
