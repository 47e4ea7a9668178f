"""Gatys-style optimization: the explicit gradient, the numpy loop, and ``method="optimize"`` served.

The served tests use the 256 canvas and a few iterations: they check batching across requests,
cancellation and bad input, not image quality (the quality figures are measured offline, see
``genserve.export.style_optimize_quality``).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from genserve.export.style import VGGEncoder
from genserve.export.style_optimize import GatysWeights, StyleGradient, StyleTargets, reference_loss
from genserve.server.gatys import optimize_loop

from conftest import REPOSITORY

torch.set_num_threads(2)


def test_explicit_gradient_equals_autograd() -> None:
    torch.manual_seed(0)
    encoder = VGGEncoder(seed=0)
    weights = GatysWeights(style_weight=3.0, tv_weight=0.5)
    content = torch.rand(2, 3, 24, 32) * 2 - 1
    style = torch.rand(2, 3, 16, 24) * 2 - 1
    image = (content + 0.2 * torch.randn(content.shape)).clamp(-1, 1).requires_grad_(True)
    alpha = torch.tensor([1.0, 0.25])
    loss = reference_loss(encoder, image, content, style, alpha, weights)
    loss.sum().backward()
    with torch.no_grad():
        targets = StyleTargets(encoder)(content, style)
        gradient, explicit_loss = StyleGradient(encoder, weights)(image.detach(), *targets, alpha)
    assert torch.allclose(explicit_loss, loss.detach(), rtol=1e-5)
    scale = image.grad.abs().max()
    assert float((gradient - image.grad).abs().max() / scale) < 1e-5
    # alpha weighs the style term per row: at alpha 0 only content and smoothness remain.
    no_style = reference_loss(encoder, image.detach(), content, style, torch.zeros(2), weights)
    assert torch.all(no_style < loss.detach())


def test_optimize_loop_descends_and_stays_in_range() -> None:
    target = np.linspace(-1.5, 1.5, 2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    loop = optimize_loop(np.zeros_like(target), iterations=200, learning_rate=0.05)
    call = next(loop)
    try:
        while True:
            assert call.image.min() >= -1 and call.image.max() <= 1
            call = loop.send(2 * (call.image - target))  # gradient of ||x - target||^2
    except StopIteration as done:
        result = done.value
    assert np.abs(result - np.clip(target, -1, 1)).max() < 0.05
    with pytest.raises(ValueError, match="iterations=0 is out of range"):
        next(optimize_loop(target, iterations=0))


def test_exported_gradient_matches_autograd() -> None:
    from genserve.export.style_optimize_export import check_gradient_parity

    targets = REPOSITORY / "style_targets" / "1" / "model.onnx"
    gradient = REPOSITORY / "style_gradient" / "1" / "model.onnx"
    figures = check_gradient_parity(VGGEncoder(seed=0), targets, gradient, GatysWeights())
    assert figures["max_rel_err"] < 1e-3
    assert {check["batch"] for check in figures["checks"]} == {1, 3}


# -- served -------------------------------------------------------------------------------------
def optimize_inputs(
    rng: np.random.Generator, *, method: str = "optimize", iterations: int | None = 3
) -> list:
    content = rng.integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)
    style = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    arrays = {"content_pixels": (content, "UINT8"), "style_pixels": (style, "UINT8")}
    arrays["size"] = (np.array([[256]], dtype=np.int32), "INT32")
    arrays["method"] = (np.array([[method.encode()]], dtype=np.object_), "BYTES")
    if iterations is not None:
        arrays["iterations"] = (np.array([[iterations]], dtype=np.int32), "INT32")
    inputs = []
    for name, (array, dtype) in arrays.items():
        item = grpcclient.InferInput(name, list(array.shape), dtype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def gradient_stats(client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    """(inference_count, execution_count) of style_gradient."""
    stats = client.get_inference_statistics("style_gradient", as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


@pytest.fixture(scope="module")
def grpc(served):
    client = grpcclient.InferenceServerClient(served.grpc_url)
    yield client
    client.close()


@pytest.mark.slow
def test_concurrent_optimize_requests_share_gradient_executions(grpc, served) -> None:
    iterations, requests = 3, 4
    rows_before, executions_before = gradient_stats(grpc)
    results: list = [None] * requests
    clients = [grpcclient.InferenceServerClient(served.grpc_url) for _ in range(requests)]
    inputs = [optimize_inputs(np.random.default_rng(i), iterations=iterations) for i in range(requests)]
    barrier = threading.Barrier(requests)

    def call(index: int) -> None:
        barrier.wait()  # all at once, so that Triton hands them to the instances together
        try:
            # A queue timeout of 10 minutes (the config allows overrides): on a loaded host a
            # request may wait while both instances optimize.
            result = clients[index].infer("style_transfer", inputs[index], timeout=600_000_000)
            results[index] = result.as_numpy("image")
        except InferenceServerException as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    for image in results:
        assert isinstance(image, np.ndarray), image
        assert image.shape == (1, 192, 256, 3)  # 96x128 -> longer side 256
    rows, executions = gradient_stats(grpc)
    assert rows - rows_before == requests * iterations  # one gradient row per request and step
    assert executions - executions_before < requests * iterations  # steps of requests shared executions


@pytest.mark.slow
def test_cancelled_optimize_request_stops_its_iterations(grpc, served) -> None:
    rows_before, _ = gradient_stats(grpc)
    done = threading.Event()
    context = grpc.async_infer(
        "style_transfer",
        optimize_inputs(np.random.default_rng(7), iterations=300),
        callback=lambda result, error: done.set(),
    )
    deadline = time.monotonic() + 120
    while gradient_stats(grpc)[0] == rows_before and time.monotonic() < deadline:
        time.sleep(0.2)  # wait for its first step
    context.cancel()
    at_cancel = gradient_stats(grpc)[0]
    assert done.wait(60)
    # Steps already in flight finish; then the count stays put (a step takes seconds on a busy host).
    previous, stable_since = at_cancel, time.monotonic()
    while time.monotonic() - stable_since < 8 and time.monotonic() < deadline + 60:
        time.sleep(1)
        current = gradient_stats(grpc)[0]
        if current != previous:
            previous, stable_since = current, time.monotonic()
    assert previous - at_cancel <= 2  # stopped at its next step, not after 300
    assert grpc.is_server_ready()


@pytest.mark.parametrize(
    ("method", "iterations", "message"),
    [
        ("magic", None, "method='magic' is not allowed; allowed: feed_forward, optimize"),
        ("optimize", 0, r"iterations=0 is out of range; allowed range \[1, 300\]"),
        ("optimize", 301, r"iterations=301 is out of range; allowed range \[1, 300\]"),
    ],
)
def test_bad_method_or_iterations_is_rejected_by_name(grpc, method, iterations, message) -> None:
    rows_before, _ = gradient_stats(grpc)
    inputs = optimize_inputs(np.random.default_rng(0), method=method, iterations=iterations)
    with pytest.raises(InferenceServerException, match=message):
        grpc.infer("style_transfer", inputs)
    assert gradient_stats(grpc)[0] == rows_before  # rejected before any step ran
    assert grpc.is_server_ready()


def test_torchvision_vgg19_file_switches_the_optimization_encoder(tmp_path) -> None:
    from test_style import torchvision_state_dict

    from genserve.export.style_optimize_export import optimizer_encoder

    state = torchvision_state_dict(seed=5)  # torchvision's key layout, random values
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    style_weights = REPOSITORY.parent / "export" / "weights" / "style.safetensors"
    encoder, described = optimizer_encoder(style_weights, path)
    assert described["kind"] == "torchvision" and len(described["weights_sha256"]) == 64
    assert torch.equal(encoder.features[19].weight, state["features.19.weight"])
    seeded, described = optimizer_encoder(style_weights, None)
    assert described == {"kind": "seeded", "seed": 0}
    # The gradient network built on the file's weights is the file's: it differs from the seeded one.
    content = torch.rand(1, 3, 16, 16) * 2 - 1
    image = content.flip(3)
    alpha = torch.ones(1)
    with torch.no_grad():
        real = StyleGradient(encoder)(image, *StyleTargets(encoder)(content, content), alpha)[0]
        fake = StyleGradient(seeded)(image, *StyleTargets(seeded)(content, content), alpha)[0]
    assert not torch.allclose(real, fake)
