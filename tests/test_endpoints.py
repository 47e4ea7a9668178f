"""The three endpoints on the real embedded server, called through Triton's own clients."""

from __future__ import annotations

import io
import json
import queue
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from genserve.client import contract
from genserve.client.contract import DIFFUSION_MAX_IMAGES, NUM_CLASSES

from conftest import REPOSITORY


# -- helpers -----------------------------------------------------------------------------------
def tensor(module, name: str, array: np.ndarray, dtype: str):
    item = module.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


def gan_inputs(module, seeds, labels, seed_dtype="INT64"):
    seeds = np.asarray(seeds, dtype=np.int64 if seed_dtype == "INT64" else np.float32).reshape(-1, 1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    return [tensor(module, "seed", seeds, seed_dtype), tensor(module, "label", labels, "INT64")]


@pytest.fixture(scope="module")
def http(served):
    client = httpclient.InferenceServerClient(served.http_url, concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(served):
    client = grpcclient.InferenceServerClient(served.grpc_url)
    yield client
    client.close()


def stats(client, model: str) -> dict:
    return client.get_inference_statistics(model)["model_stats"][0]


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# -- gan ---------------------------------------------------------------------------------------
def test_gan_images_are_uint8_nhwc(http):
    images = http.infer("gan", gan_inputs(httpclient, [1, 2, 3], [0, 5, 9])).as_numpy("image")
    assert images.dtype == np.uint8 and images.shape == (3, 32, 32, 1)
    assert images.max() > images.min()  # not a constant image
    assert not np.array_equal(images[0], images[1])


def test_gan_same_seed_same_bytes_over_http_grpc_alone_and_batched(served, http, grpc):
    seeds, labels = np.arange(100, 140), np.arange(40) % NUM_CLASSES
    alone = http.infer("gan", gan_inputs(httpclient, [seeds[7]], [labels[7]])).as_numpy("image")[0]
    over_grpc = grpc.infer("gan", gan_inputs(grpcclient, [seeds[7]], [labels[7]])).as_numpy("image")[0]
    batched = grpc.infer("gan", gan_inputs(grpcclient, seeds, labels)).as_numpy("image")
    assert alone.tobytes() == over_grpc.tobytes() == batched[7].tobytes()

    # Concurrent single-row requests end up in shared dynamic batches: still the same bytes.
    with ThreadPoolExecutor(max_workers=8) as pool:
        singles = list(
            pool.map(lambda i: grpc.infer("gan", gan_inputs(grpcclient, [seeds[i]], [labels[i]])), range(40))
        )
    for i, result in enumerate(singles):
        assert result.as_numpy("image")[0].tobytes() == batched[i].tobytes()


def test_gan_serves_the_images_of_the_numpy_latents(grpc):
    # The endpoint is one ONNX graph; its bytes equal seeded_normal -> generator -> to_uint8 in numpy.
    seeds, labels = np.array([0, 5, 2**40, contract.MAX_SEED]), np.array([3, 1, 4, 1])
    served = grpc.infer("gan", gan_inputs(grpcclient, seeds, labels)).as_numpy("image")
    session = ort.InferenceSession(str(REPOSITORY / "gan_generator" / "1" / "model.onnx"))
    (images,) = session.run(["image"], {"z": contract.seeded_normal(seeds, 64), "label": labels})
    assert served.tobytes() == contract.to_uint8(images).tobytes()


@pytest.mark.parametrize(
    ("seeds", "labels", "seed_dtype", "message"),
    [
        ([1], [10], "INT64", r"label=10 is out of range; allowed range \[0, 9\]"),
        ([1], [-1], "INT64", r"label=-1 is out of range; allowed range \[0, 9\]"),
        ([-5], [1], "INT64", r"seed=-5 is out of range; allowed range \[0, 9223372036854775807\]"),
        ([1.0], [1], "FP32", r"input 'seed' data-type is 'FP32', but model 'gan' expects 'INT64'"),
        (np.arange(257), np.zeros(257), "INT64", r"batch-size must be <= 256"),
    ],
)
def test_gan_rejects_invalid_input_by_name(http, grpc, seeds, labels, seed_dtype, message):
    with pytest.raises(InferenceServerException, match=message):
        http.infer("gan", gan_inputs(httpclient, seeds, labels, seed_dtype))
    with pytest.raises(InferenceServerException, match=message):
        grpc.infer("gan", gan_inputs(grpcclient, seeds, labels, seed_dtype))
    assert http.is_server_ready() and http.is_model_ready("gan")


def test_gan_wrong_shape_is_rejected(http):
    seeds = tensor(httpclient, "seed", np.ones((2, 2), np.int64), "INT64")
    labels = tensor(httpclient, "label", np.ones((2, 1), np.int64), "INT64")
    with pytest.raises(
        InferenceServerException, match=r"unexpected shape for input 'seed'.*Expected \[-1,1\]"
    ):
        http.infer("gan", [seeds, labels])


def test_bad_row_does_not_fail_its_batch_mates(grpc):
    def call(i: int):
        label = NUM_CLASSES + 3 if i % 5 == 0 else i % NUM_CLASSES
        try:
            return grpc.infer("gan", gan_inputs(grpcclient, [i], [label])).as_numpy("image")
        except InferenceServerException as error:
            return error

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(call, range(40)))
    for i, result in enumerate(results):
        if i % 5 == 0:
            assert isinstance(result, InferenceServerException) and "label=13" in str(result)
        else:
            assert isinstance(result, np.ndarray) and result.shape == (1, 32, 32, 1)


# -- style transfer ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:180]
    content = np.stack([xx % 256, yy * 2 % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    style = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    return content, style


def style_request(module, content, style, *, alpha=None, size=None, outputs=("image", "size")):
    inputs = []
    for name, image in (("content", content), ("style", style)):
        if isinstance(image, bytes):
            inputs.append(tensor(module, name, np.array([[image]], dtype=np.object_), "BYTES"))
        else:
            inputs.append(tensor(module, f"{name}_pixels", image[None], "UINT8"))
    if alpha is not None:
        inputs.append(tensor(module, "alpha", np.array([[alpha]], np.float32), "FP32"))
    if size is not None:
        inputs.append(tensor(module, "size", np.array([[size]], np.int32), "INT32"))
    return inputs, [module.InferRequestedOutput(name) for name in outputs]


def test_style_transfer_bytes_and_pixels_agree(http, grpc, photos):
    content, style = photos
    inputs, outputs = style_request(httpclient, png_bytes(content), png_bytes(style), alpha=0.8)
    from_bytes = http.infer("style_transfer", inputs, outputs=outputs)
    image = from_bytes.as_numpy("image")
    assert image.dtype == np.uint8 and image.shape == (1, 171, 256, 3)  # longer side 180 -> canvas 256
    assert from_bytes.as_numpy("size").tolist() == [[256]]
    inputs, outputs = style_request(grpcclient, content, style, alpha=0.8, outputs=("image", "image_png"))
    from_pixels = grpc.infer("style_transfer", inputs, outputs=outputs)
    assert from_pixels.as_numpy("image").tobytes() == image.tobytes()
    decoded = np.asarray(Image.open(io.BytesIO(from_pixels.as_numpy("image_png")[0, 0])))
    np.testing.assert_array_equal(decoded, image[0])


def test_style_transfer_size_and_alpha(http, photos):
    content, style = photos
    inputs, outputs = style_request(httpclient, content, style, size=512, alpha=0.0)
    result = http.infer("style_transfer", inputs, outputs=outputs)
    assert result.as_numpy("image").shape == (1, 341, 512, 3)
    assert result.as_numpy("size").tolist() == [[512]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c, s: style_request(httpclient, b"not an image", s), "content: not a decodable image"),
        (lambda c, s: style_request(httpclient, png_bytes(c)[:60], s), "content: corrupt image"),
        (
            lambda c, s: style_request(httpclient, c, huge_png()),
            r"style: image is 5000x4000; at most \d+ pixels",
        ),
        (
            lambda c, s: style_request(httpclient, c, s, alpha=1.5),
            r"alpha=1.5 is out of range; allowed range \[0, 1\]",
        ),
        (lambda c, s: style_request(httpclient, c, s, alpha=float("nan")), "alpha must be finite"),
        (
            lambda c, s: style_request(httpclient, c, s, size=300),
            r"size=300 is not allowed; allowed sizes \[256, 512\]",
        ),
        (
            lambda c, s: style_request(httpclient, c[:4], s),
            "content_pixels: image is 180x4; each side must be at least 8",
        ),
        (lambda c, s: (style_request(httpclient, c, s)[0][1:], None), "give exactly one of 'content'"),
    ],
)
def test_style_transfer_rejects_bad_images_before_running(http, photos, make, message):
    network_before = int(stats(http, "style_network")["inference_count"])
    inputs, outputs = make(*photos)
    with pytest.raises(InferenceServerException, match=message):
        http.infer("style_transfer", inputs, outputs=outputs)
    assert int(stats(http, "style_network")["inference_count"]) == network_before
    assert http.is_server_ready()


def huge_png() -> bytes:
    # 20 megapixels of one colour compress to a few kilobytes: rejected from the header alone.
    return png_bytes(np.zeros((4000, 5000, 3), np.uint8))


# -- diffusion ---------------------------------------------------------------------------------
def diffusion_inputs(labels, seeds, **scalars):
    inputs = [
        tensor(grpcclient, "label", np.asarray(labels, np.int64), "INT64"),
        tensor(grpcclient, "seed", np.asarray(seeds, np.int64), "INT64"),
    ]
    kinds = {"steps": (np.int32, "INT32"), "preview_every": (np.int32, "INT32")}
    for name, value in scalars.items():
        dtype, triton = kinds.get(name, (np.float32, "FP32"))
        inputs.append(tensor(grpcclient, name, np.array([value], dtype), triton))
    return inputs


def run_diffusion(url: str, requests: dict[str, list], timeout: float = 180) -> dict[str, list[np.ndarray]]:
    """Send every request on one stream; return each request's images per response, in order."""
    client = grpcclient.InferenceServerClient(url)
    done: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: done.put((result, error)))
    try:
        for request_id, inputs in requests.items():
            client.async_stream_infer(
                "diffusion", inputs, request_id=request_id, enable_empty_final_response=False
            )
        pending = {request_id: [] for request_id in requests}
        finished: dict[str, list] = {}
        while pending:
            result, error = done.get(timeout=timeout)
            if error is not None:
                raise error
            response = result.get_response()
            pending[response.id].append(result)
            if response.parameters["triton_final_response"].bool_param:
                finished[response.id] = pending.pop(response.id)
        return finished
    finally:
        client.stop_stream()
        client.close()


def test_diffusion_streams_previews_then_the_final_image(served):
    results = run_diffusion(
        served.grpc_url, {"a": diffusion_inputs([3, 7], [11, 12], steps=6, preview_every=2)}
    )
    steps = [int(r.as_numpy("step")[0]) for r in results["a"]]
    assert steps == [2, 4, 6]
    final = results["a"][-1].as_numpy("image")
    assert final.dtype == np.uint8 and final.shape == (2, 32, 32, 1)


def test_diffusion_same_seed_same_bytes_over_grpc_http_alone_and_batched(served):
    settings = {"steps": 8, "guidance": 2.0}
    results = run_diffusion(
        served.grpc_url,
        {
            "alone": diffusion_inputs([4], [77], **settings),
            "grid": diffusion_inputs([1, 4, 9], [5, 77, 6], **settings),
            "other": diffusion_inputs([2], [3], steps=5),
        },
    )
    alone = results["alone"][-1].as_numpy("image")[0]
    grid = results["grid"][-1].as_numpy("image")
    assert alone.tobytes() == grid[1].tobytes()
    body = json.dumps({"label": [4], "seed": [77], "steps": 8, "guidance": 2.0}).encode()
    request = urllib.request.Request(f"http://{served.http_url}/v2/models/diffusion/generate", data=body)
    with urllib.request.urlopen(request, timeout=60) as response:
        over_http = np.array(json.loads(response.read())["image"], dtype=np.uint8).reshape(alone.shape)
    assert over_http.tobytes() == alone.tobytes()


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (diffusion_inputs([3], [1], steps=-1), r"steps=-1 is out of range; allowed range \[1, 1000\]"),
        (
            diffusion_inputs([3], [1], steps=100000),
            r"steps=100000 is out of range; allowed range \[1, 1000\]",
        ),
        (diffusion_inputs([12], [1]), r"label=12 is out of range; allowed range \[0, 9\]"),
        (diffusion_inputs([3], [1], guidance=float("nan")), "guidance must be finite"),
        (diffusion_inputs([3], [1], guidance=float("inf")), "guidance must be finite"),
        (diffusion_inputs([3], [1], eta=2.0), r"eta=2.0 is out of range; allowed range \[0, 1\]"),
        (diffusion_inputs([3, 4], [1]), "input 'seed' has 1 values; expected 2, one per row"),
        (
            diffusion_inputs(np.zeros(DIFFUSION_MAX_IMAGES + 1), np.zeros(DIFFUSION_MAX_IMAGES + 1)),
            rf"label has {DIFFUSION_MAX_IMAGES + 1} values; allowed 1\.\.{DIFFUSION_MAX_IMAGES}",
        ),
    ],
)
def test_diffusion_rejects_invalid_input_by_name(served, http, inputs, message):
    with pytest.raises(InferenceServerException, match=message):
        run_diffusion(served.grpc_url, {"bad": inputs})
    assert http.is_server_ready()


def test_diffusion_wrong_dtype_is_rejected(served):
    inputs = diffusion_inputs([3], [1])
    inputs[0] = tensor(grpcclient, "label", np.array([3.0], np.float32), "FP32")
    with pytest.raises(
        InferenceServerException, match="input 'label' data-type is 'FP32', but model 'diffusion'"
    ):
        run_diffusion(served.grpc_url, {"bad": inputs})


def test_unet_steps_of_concurrent_requests_share_batches(served, http):
    before = stats(http, "diffusion_unet")
    # guidance 1 = one UNet row per image, so batching can only come from joining requests.
    requests = {f"r{i}": diffusion_inputs([i % 10], [i], steps=20, guidance=1.0) for i in range(8)}
    results = run_diffusion(served.grpc_url, requests)
    assert len(results) == 8
    after = stats(http, "diffusion_unet")
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 8 * 20
    assert executions <= inferences / 2, (executions, inferences)


def test_cancelling_a_stream_stops_sampling(served, http):
    before = int(stats(http, "diffusion_unet")["inference_count"])
    client = grpcclient.InferenceServerClient(served.grpc_url)
    client.start_stream(callback=lambda result, error: None)
    client.async_stream_infer("diffusion", diffusion_inputs([1], [1], steps=1000, guidance=1.0))
    time.sleep(1.0)
    client.stop_stream(cancel_requests=True)
    client.close()
    time.sleep(0.5)  # the step in flight finishes
    first = int(stats(http, "diffusion_unet")["inference_count"])
    time.sleep(1.5)
    assert int(stats(http, "diffusion_unet")["inference_count"]) == first  # no more UNet steps
    assert first - before < 1000  # stopped well before its 1000 steps
