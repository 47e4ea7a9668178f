"""The before -> after fast-path benchmark: config patching, medians, and a smoke-sized real run."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from genserve.benchmarks import fastpath

from conftest import REPOSITORY


def test_instances_and_threads_patch_keeps_a_valid_config(tmp_path):
    config = tmp_path / "config.pbtxt"
    config.write_text((REPOSITORY / "gan" / "config.pbtxt").read_text())
    fastpath.with_instances_and_threads(config, 1, 2)
    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert [group.count for group in parsed.instance_group] == [1]
    assert parsed.parameters["intra_op_thread_count"].string_value == "2"
    assert config.read_text().count("intra_op_thread_count") == 1


def test_summary_takes_medians_and_the_in_process_ratio():
    def point(variant, throughput, round_index):
        return {
            "network": "n",
            "variant": variant,
            "concurrency": 32,
            "round": round_index,
            "throughput": throughput,
            "p50_s": 0.01,
            "p99_s": 0.02,
            "server_cpu_s_per_call": 0.001,
            "client_cpu_s_per_call": 0.0001,
        }

    points = [point("after", t, i) for i, t in enumerate((100.0, 300.0, 200.0))] + [point("before", 50.0, 0)]
    baselines = [{"network": "n", "rates": {1: 10.0, 32: r}} for r in (400.0, 1000.0, 500.0)]
    rows = {r["variant"]: r for r in fastpath.summarize(points, baselines)}
    assert rows["after"]["images_per_s"] == 200.0 and rows["after"]["rounds"] == 3
    assert rows["after"]["served_over_in_process"] == pytest.approx(200.0 / 500.0)
    assert "| n | before | 32 | 50 |" in fastpath.markdown(list(rows.values()), {**_meta()})


def _meta() -> dict:
    return {"before": "HEAD", "rounds": 1, "window_ms": 300, "host": "test"}


@pytest.mark.slow
def test_fastpath_smoke_run_compares_two_revisions(tmp_path):
    argv = ["--before", "HEAD", "--rounds", "1", "--request-count", "10", "--concurrency", "2"]
    argv += ["--networks", "gan_digits", "--out", str(tmp_path)]
    argv += ["--diffusion-users", "1", "--diffusion-seconds", "0", "--diffusion-steps", "2"]
    assert fastpath.main(argv) == 0
    result = json.loads((tmp_path / "fastpath.json").read_text())
    assert {r["variant"] for r in result["summary"]} == {"before", "after"}
    assert all(r["images_per_s"] > 0 and r["server_us_per_call"] > 0 for r in result["summary"])
    assert {r["variant"] for r in result["diffusion"]} == {"before", "after"}
    assert all(r["efficiency"] > 0 and r["avg_unet_batch"] >= 1 for r in result["diffusion"])
