"""Pure logic of the benchmarks: config rewriting, statistics deltas, FLOP counting, mix parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from genserve.benchmarks import tritonstats
from genserve.benchmarks.baselines import NetworkBaseline
from genserve.benchmarks.batching_knobs import with_delay
from genserve.benchmarks.calls import Target
from genserve.benchmarks.diffusion_bench import in_process_rate
from genserve.benchmarks.flops import count_flops
from genserve.benchmarks.pbtxt import read_config
from genserve.benchmarks.repository import build_repository
from genserve.benchmarks.tables import best_under_bound
from genserve.server.paths import MODEL_REPOSITORY


def test_configs_are_edited_as_messages(tmp_path: Path) -> None:
    repo = with_delay(MODEL_REPOSITORY, tmp_path / "r", "diffusion_unet", 1234)
    config = read_config(repo / "diffusion_unet" / "config.pbtxt")
    original = read_config(MODEL_REPOSITORY / "diffusion_unet" / "config.pbtxt")
    assert config.dynamic_batching.max_queue_delay_microseconds == 1234
    assert original.dynamic_batching.max_queue_delay_microseconds != 1234
    assert config.model_warmup == original.model_warmup
    gan = "gan/config.pbtxt"
    assert read_config(repo / gan) == read_config(MODEL_REPOSITORY / gan)


def test_batching_off_repository_keeps_max_batch_size(tmp_path: Path) -> None:
    repo = build_repository(tmp_path / "r", "gan", batching=False)
    for model in ("gan", "gan_generator"):
        text = (repo / model / "config.pbtxt").read_text()
        assert "dynamic_batching {" not in text
        assert "max_batch_size: 256" in text
        assert not read_config(repo / model / "config.pbtxt").HasField("dynamic_batching")
    assert not (MODEL_REPOSITORY / "gan" / "config.pbtxt").read_text().count("removed for the batching-off")


def test_stats_delta_and_derived_figures() -> None:
    before = {"m": tritonstats.ModelStats("m", 10, 0, 20, 10, 1.0, 2.0, {1: 10})}
    after = {"m": tritonstats.ModelStats("m", 30, 1, 100, 20, 3.0, 6.0, {1: 10, 8: 10})}
    d = tritonstats.delta(before, after)["m"]
    assert (d.requests, d.rows, d.executions, d.batches) == (20, 80, 10, {8: 10})
    assert d.avg_batch == 8.0
    assert d.queue_per_request_s == pytest.approx(0.1)
    assert d.compute_per_request_s == pytest.approx(0.2)


def test_flop_counter_counts_matmul_and_conv(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, dtype=np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    model = helper.make_model(
        helper.make_graph([node], "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 18)]
    )
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    assert count_flops(path) == 2 * (4 * 8 * 8) * (3 * 3 * 3)


def test_in_process_rate_weights_batches_by_time() -> None:
    baseline = NetworkBaseline("n", 1.0, {1: 100.0, 4: 200.0})
    # 10 executions of 1 row (0.1 s) and 10 of 4 rows (0.2 s): 50 rows in 0.3 s.
    assert in_process_rate(baseline, {"1": 10, "4": 10}) == pytest.approx(50 / 0.3)


def test_best_under_bound_ignores_points_with_errors() -> None:
    def point(throughput: float, p99: float, errors: int = 0) -> dict:
        return {"throughput": throughput, "images_per_s": throughput, "p99": p99, "errors": errors, "ok": 1}

    curve = [point(10, 0.01), point(50, 0.05), point(90, 0.5), point(60, 0.02, errors=3)]
    assert best_under_bound(curve, 0.1)["throughput"] == 50


def test_target_parses_protocol_and_rejects_others() -> None:
    assert Target.parse("grpc://127.0.0.1:8001") == Target("grpc", "127.0.0.1:8001")
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        Target.parse("tcp://127.0.0.1:1")
