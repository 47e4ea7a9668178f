"""The ``gan`` endpoint as one ONNX graph: its latents and images equal the numpy contract's, bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from genserve.client import contract
from genserve.export import gan_graph
from genserve.server.model_names import INPUT_BOUNDS_METADATA

from conftest import REPOSITORY

GENERATOR = REPOSITORY / "gan_generator" / "1" / "model.onnx"
SEEDS = np.concatenate(
    [
        np.arange(300),
        [contract.MAX_SEED, 2**32 - 1, 2**32, 2**53 + 1],
        np.random.default_rng(3).integers(0, 2**63 - 1, 300),
    ]
)


def latent_session(size: int, stream: int) -> ort.InferenceSession:
    builder = gan_graph._Builder()
    z = gan_graph.latent_nodes(builder, "seed", size, stream)
    graph = helper.make_graph(
        builder.nodes,
        "latent",
        [helper.make_tensor_value_info("seed", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info(z, TensorProto.FLOAT, ["batch", size])],
        builder.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("size", "stream"), [(64, 0), (7, 0), (100, 0), (1024, 3)])
def test_onnx_latents_equal_seeded_normal_bit_for_bit(size, stream):
    (latents,) = latent_session(size, stream).run(None, {"seed": SEEDS.astype(np.int64).reshape(-1, 1)})
    expected = contract.seeded_normal(SEEDS, size, stream)
    assert latents.dtype == np.float32 and latents.shape == expected.shape
    assert latents.tobytes() == expected.tobytes()


def test_exact_log_and_cos_sin_are_accurate():
    u = np.concatenate([np.random.default_rng(0).random(100_000), [1.0, 2.0**-53, 0.5, np.nextafter(1.0, 0)]])
    u = u[u > 0]
    assert np.max(np.abs(contract.exact_log(u) - np.log(u)) / np.maximum(np.abs(np.log(u)), 1e-300)) < 2e-15
    cos, sin = contract.exact_cos_sin(u)
    assert np.max(np.abs(cos - np.cos(2 * np.pi * u))) < 2e-15
    assert np.max(np.abs(sin - np.sin(2 * np.pi * u))) < 2e-15
    z = contract.seeded_normal(np.arange(2000), 64).ravel()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # still standard normal


def test_endpoint_graph_images_equal_the_numpy_path(tmp_path):
    path = gan_graph.write_gan_endpoint(GENERATOR, tmp_path / "gan.onnx")
    assert gan_graph.endpoint_mismatches(path, GENERATOR, SEEDS[:256]) == 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["seed", "label"]
    meta = session.get_modelmeta().custom_metadata_map
    assert "label" in meta[INPUT_BOUNDS_METADATA]


@pytest.mark.parametrize("label", [-1, contract.NUM_CLASSES])
def test_endpoint_graph_fails_on_an_invalid_label_rather_than_drawing(tmp_path, label):
    path = gan_graph.write_gan_endpoint(GENERATOR, tmp_path / "gan.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="out of data bounds"):
        session.run(None, {"seed": np.ones((2, 1), np.int64), "label": np.array([[1], [label]], np.int64)})
