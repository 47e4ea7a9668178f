"""Triton's perf_analyzer, installed pinned, drives the real server and reports its own CPU per call."""

from __future__ import annotations

import pytest

from genserve.benchmarks import perf_analyzer
from genserve.benchmarks.loadrun import process_group_cpu_s


def test_input_data_has_one_entry_per_row_without_the_batch_axis():
    data = perf_analyzer.gan_input_data(rows=3)
    assert [entry["seed"]["content"] for entry in data["data"]] == [[1000], [1001], [1002]]
    assert data["data"][2]["label"] == {"content": [2], "shape": [1]}


def test_completed_calls_sum_every_trial():
    stdout = "  Request count: 120\n  Throughput: 60 infer/sec\n  Request count: 80\n"
    assert perf_analyzer._completed_calls(stdout) == 200


@pytest.mark.slow
def test_perf_analyzer_measures_the_gan_endpoint(served):
    binary = perf_analyzer.install()
    point = perf_analyzer.measure(
        served.grpc_url,
        "gan",
        2,
        perf_analyzer.gan_input_data(rows=8),
        request_count=20,
        server_cpu=lambda: process_group_cpu_s(served.pid or 0),
        binary=binary,
    )
    assert point.throughput > 0 and 0 < point.p50_s <= point.p99_s
    assert point.client_cpu_s_per_call > 0 and point.server_cpu_s_per_call > 0
    with pytest.raises(RuntimeError, match="perf_analyzer failed"):
        perf_analyzer.measure(
            served.grpc_url, "no_such_model", 1, perf_analyzer.gan_input_data(2), binary=binary
        )
