"""A tiny ONNX model built with ``onnx.helper``: no torch, no training, a few kilobytes.

A test helper: it stands in for a real network where a test needs a model the server can load in
a second: ``y = x @ W + b`` with a dynamic batch dimension and fixed, seeded weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TINY_CONFIG = """\
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ {features} ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ {features} ] }} ]
instance_group [ {{ count: 1, kind: KIND_CPU }} ]
{batching}
"""


def tiny_affine_weights(features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The weights ``(W, b)`` of the tiny model, for computing its expected output."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((features, features)).astype(np.float32) / np.sqrt(features)
    bias = rng.standard_normal(features).astype(np.float32)
    return weight, bias


def tiny_affine_model(features: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Build ``y = x @ W + b`` for ``x`` of shape ``[batch, features]``."""
    weight, bias = tiny_affine_weights(features, seed)
    graph = helper.make_graph(
        nodes=[helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        name="tiny_affine",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_model(
    repository: Path,
    name: str = "tiny",
    *,
    features: int = 16,
    max_batch_size: int = 64,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 500,
) -> Path:
    """Write the tiny model and its ``config.pbtxt`` into ``repository/name``; return that folder."""
    folder = repository / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_affine_model(features), folder / "1" / "model.onnx")
    batching = (
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}"
        if dynamic_batching
        else ""
    )
    (folder / "config.pbtxt").write_text(
        TINY_CONFIG.format(name=name, max_batch_size=max_batch_size, features=features, batching=batching)
    )
    return folder
