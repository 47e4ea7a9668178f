"""The client without a server: argument checks, error mapping, retries, images, signatures, SSE."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from genserve.client import (
    DeadlineExceededError,
    GenserveError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
    SignatureMismatchError,
    UnavailableError,
    contact_sheet,
    contract,
    encode_png,
    errors,
)
from genserve.client._requests import (
    diffusion_request,
    gan_request,
    style_request,
    with_image_bound,
)
from genserve.client._retry import Deadline, RetryPolicy, call_with_retries
from genserve.client._sse import decode_event, error_from_text, generate_body, parse_data_line, split_url
from genserve.client.shm import Layout
from genserve.client.signatures import check_signature, model_infos

RNG = np.random.default_rng(0)


# -- argument checks --------------------------------------------------------------------------
def test_gan_request_shapes_and_random_seeds_are_drawn_once():
    request = gan_request([1, 2, 3], None, RNG)
    assert request.model == "gan"
    assert request.inputs["label"].tolist() == [[1], [2], [3]]
    seeds = request.inputs["seed"]
    assert seeds.shape == (3, 1) and seeds.dtype == np.int64
    assert (seeds >= 0).all()
    assert gan_request(7, [5], RNG).inputs["seed"].tolist() == [[5]]


@pytest.mark.parametrize(
    ("labels", "seeds", "message"),
    [
        ([11], None, "label=11 is out of range; allowed range [0, 9]"),
        ([-1], None, "label=-1 is out of range; allowed range [0, 9]"),
        ([], None, "label has 0 values; allowed 1..256 images per request"),
        (list(range(10)) * 26, None, "label has 260 values; allowed 1..256 images per request"),
        ([1.5], None, "label must be integers; got float64"),
        ([[1, 2]], None, "label must be one integer or a 1-D sequence"),
        ([1, 2], [3], "seed has 1 values; expected 2, one per label"),
        ([1], [-4], "seed=-4 is out of range; allowed range [0, 9223372036854775807]"),
    ],
)
def test_gan_arguments_are_checked_with_the_servers_messages(labels, seeds, message):
    with pytest.raises(InvalidInputError) as caught:
        gan_request(labels, seeds, RNG)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "steps=0 is out of range; allowed range [1, 1000]"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"steps": True}, "steps must be a number"),
        ({"guidance": float("nan")}, "guidance must be finite; allowed range [0, 20]"),
        ({"guidance": 21.0}, "guidance=21.0 is out of range; allowed range [0, 20]"),
        ({"eta": -0.1}, "eta=-0.1 is out of range; allowed range [0, 1]"),
        ({"preview_every": -1}, "preview_every=-1 is out of range"),
    ],
)
def test_diffusion_arguments_are_checked(settings, message):
    arguments = {"steps": 10, "guidance": 2.0, "eta": 0.0, "preview_every": 0, **settings}
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        diffusion_request([1], None, rng=RNG, **arguments)


def test_diffusion_request_has_no_batch_dim_and_allows_sixteen_images():
    request = diffusion_request(
        list(range(10)) + [0] * 6, None, steps=5, guidance=1.0, eta=0.0, preview_every=2, rng=RNG
    )
    assert request.inputs["label"].shape == (16,)
    assert request.inputs["steps"].dtype == np.int32 and request.inputs["steps"].shape == (1,)
    assert request.inputs["guidance"].dtype == np.float32
    assert not request.queue_timeout
    with pytest.raises(InvalidInputError, match="label has 17 values; allowed 1..16"):
        diffusion_request([0] * 17, None, steps=5, guidance=1.0, eta=0.0, preview_every=0, rng=RNG)


def test_style_inputs_from_bytes_paths_arrays_and_pil(tmp_path):
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    png = encode_png(pixels)
    path = tmp_path / "content.png"
    path.write_bytes(png)
    from PIL import Image

    request = style_request(path, style=Image.fromarray(pixels), alpha=0.5, size=256)
    assert request.inputs["content"].dtype == np.object_ and request.inputs["content"][0, 0] == png
    assert request.inputs["style_pixels"].shape == (1, 20, 30, 3)
    assert request.inputs["alpha"].tolist() == [[0.5]]
    assert request.inputs["size"].tolist() == [[256]]
    assert request.output_bounds == {"image": 256 * 256 * 3}
    request = style_request(png, style=pixels, alpha=1.0, size=None)
    assert set(request.inputs) == {"content", "style_pixels", "alpha"}
    assert request.output_bounds == {"image": 512 * 512 * 3}


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (np.zeros((8, 8), np.uint8), {}, "content_pixels: expected uint8 [H, W, 3] pixels"),
        (np.zeros((8, 8, 3), np.float32), {}, "content_pixels: expected uint8 [H, W, 3] pixels; got float32"),
        (b"", {}, "content: encoded image is empty"),
        (b"x" * (contract.MAX_ENCODED_IMAGE_BYTES + 1), {}, "at most 20971520 allowed"),
        ("/no/such/file.png", {}, "content: cannot read image file '/no/such/file.png'"),
        (3, {}, "content must be a file path, encoded image bytes, a PIL image or uint8"),
        (b"png", {"alpha": 1.5}, "alpha=1.5 is out of range; allowed range [0, 1]"),
        (b"png", {"size": 300}, "size=300 is not allowed; allowed sizes [256, 512]"),
    ],
)
def test_style_arguments_are_checked(content, kwargs, message):
    arguments = {"alpha": 1.0, "size": None, **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        style_request(content, b"style", **arguments)
    assert message in str(caught.value)


def test_image_bound_comes_from_fixed_output_dims():
    request = gan_request([1, 2], [1, 2], RNG)
    assert with_image_bound(request, {"image": (-1, 32, 32, 1)}).output_bounds == {"image": 2 * 1024}
    assert with_image_bound(request, {"image": (-1, -1, -1, 3)}).output_bounds == {}


def test_shared_memory_layout_keeps_bytes_inline_and_aligns():
    request = with_image_bound(gan_request([1, 2, 3], [1, 2, 3], RNG), {"image": (-1, 32, 32, 1)})
    layout = Layout.plan(request)
    assert layout.inputs == {"seed": (0, 24), "label": (64, 24)}
    assert layout.outputs == {"image": (128, 3072)}
    assert layout.size == 128 + 3072
    style = style_request(b"png", np.zeros((8, 8, 3), np.uint8), 1.0, 256)
    assert "content" not in Layout.plan(style).inputs


# -- error mapping ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("message", "status", "expected"),
    [
        ("label=13 is out of range; allowed range [0, 9]", "StatusCode.INVALID_ARGUMENT", InvalidInputError),
        ("label=13 is out of range; allowed range [0, 9]", "400", InvalidInputError),
        ("diffusion: label=11 is out of range; allowed range [0, 9]", None, InvalidInputError),
        ("Exceeds maximum queue size", "StatusCode.UNAVAILABLE", OverloadedError),
        ("Exceeds maximum queue size", "503", OverloadedError),
        ("diffusion: overloaded, 64 requests already sampling; retry later", None, OverloadedError),
        ("Request timeout expired", "StatusCode.UNAVAILABLE", DeadlineExceededError),
        ("Request timeout expired", "503", DeadlineExceededError),
        ("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError),
        ("Request for unknown model: 'nope' is not found", "StatusCode.NOT_FOUND", ModelNotFoundError),
        ("Request for unknown model: 'nope' is not found", "404", ModelNotFoundError),
        (
            "failed to connect to all addresses; last error: UNKNOWN",
            "StatusCode.UNAVAILABLE",
            UnavailableError,
        ),
        ("Socket closed", "StatusCode.UNAVAILABLE", UnavailableError),
        ("Locally cancelled by application!", "StatusCode.CANCELLED", errors.CancelledError),
        ("diffusion: request cancelled", None, errors.CancelledError),
        ("gan: onnx runtime failed", "StatusCode.INTERNAL", ServerError),
        ("gan: onnx runtime failed", "500", ServerError),
        ("HTTP end point doesn't support models with decoupled transaction policy", "501", ServerError),
    ],
)
def test_triton_errors_map_to_one_hierarchy(message, status, expected):
    error = errors.translate(InferenceServerException(msg=message, status=status), model="gan")
    assert type(error) is expected
    assert isinstance(error, GenserveError)
    assert error.message == message and error.status == status and error.model == "gan"
    assert error.retryable == (expected in (OverloadedError, UnavailableError))


def test_socket_and_timeout_errors_are_wrapped():
    assert isinstance(errors.translate(ConnectionRefusedError(111, "refused")), UnavailableError)
    assert isinstance(errors.translate(TimeoutError()), DeadlineExceededError)
    assert isinstance(errors.translate(RuntimeError("boom")), ServerError)
    import http.client

    assert isinstance(errors.translate(http.client.RemoteDisconnected("gone")), UnavailableError)


def test_messages_say_what_to_do_and_do_not_repeat_the_model():
    error = errors.translate(
        InferenceServerException(msg="Exceeds maximum queue size", status="503"), model="gan"
    )
    assert str(error).startswith("gan: Exceeds maximum queue size (retry later with backoff")
    error = errors.translate(
        InferenceServerException(msg="style_transfer: content: corrupt", status="400"), model="style_transfer"
    )
    assert str(error) == "style_transfer: content: corrupt"


def test_deadline_exceeded_is_a_timeout_error():
    assert issubclass(DeadlineExceededError, TimeoutError)


# -- retries ----------------------------------------------------------------------------------
class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self, deadline):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_retries_retryable_errors_then_succeeds():
    sleeps = []
    attempt = Flaky([OverloadedError("full"), UnavailableError("down")])
    result = call_with_retries(
        attempt, deadline=Deadline(10), policy=RetryPolicy(retries=2), sleep=sleeps.append
    )
    assert result == "ok" and attempt.calls == 3
    assert len(sleeps) == 2 and sleeps[0] <= 0.05 and sleeps[1] <= 0.1


def test_gives_up_after_the_retry_budget_and_never_retries_other_errors():
    attempt = Flaky([UnavailableError("down")] * 5)
    with pytest.raises(UnavailableError):
        call_with_retries(attempt, deadline=Deadline(10), policy=RetryPolicy(retries=2), sleep=lambda s: None)
    assert attempt.calls == 3
    for error in (InvalidInputError("bad"), DeadlineExceededError("late"), ModelNotFoundError("gone")):
        attempt = Flaky([error])
        with pytest.raises(type(error)):
            call_with_retries(
                attempt, deadline=Deadline(10), policy=RetryPolicy(retries=5), sleep=lambda s: None
            )
        assert attempt.calls == 1


def test_never_sleeps_past_the_deadline():
    attempt = Flaky([OverloadedError("full")] * 3)
    policy = RetryPolicy(retries=5, backoff=10.0, max_backoff=10.0)
    sleeps = []
    with pytest.raises(OverloadedError):
        call_with_retries(attempt, deadline=Deadline(0.001), policy=policy, sleep=sleeps.append)
    assert attempt.calls == 1 or all(s < 0.001 for s in sleeps)


def test_non_idempotent_calls_are_retried_only_when_the_server_did_not_run_them():
    policy = RetryPolicy(retries=3)
    assert policy.should_retry(OverloadedError("full"), 0, idempotent=False)
    assert not policy.should_retry(UnavailableError("connection lost"), 0, idempotent=False)
    assert policy.should_retry(UnavailableError("connection lost"), 0, idempotent=True)
    assert not policy.should_retry(DeadlineExceededError("late"), 0, idempotent=True)
    attempt = Flaky([UnavailableError("connection lost")])
    with pytest.raises(UnavailableError):
        call_with_retries(
            attempt, deadline=Deadline(10), policy=policy, idempotent=False, sleep=lambda s: None
        )
    assert attempt.calls == 1


def test_backoff_grows_exponentially_with_full_jitter():
    policy = RetryPolicy(backoff=0.1, max_backoff=1.0)
    rng = random.Random(0)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8


# -- signatures and models --------------------------------------------------------------------
GAN_METADATA = {
    "name": "gan",
    "inputs": [
        {"name": "seed", "datatype": "INT64", "shape": ["-1", "1"]},
        {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
    ],
    "outputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, 32, 32, 1]}],
}


def test_signature_check_accepts_the_served_form_and_returns_output_dims():
    assert check_signature("gan", GAN_METADATA) == {"image": (-1, 32, 32, 1)}


def test_signature_check_names_every_difference():
    metadata = json.loads(json.dumps(GAN_METADATA))
    metadata["inputs"][0]["datatype"] = "INT32"
    metadata["inputs"].pop(1)
    metadata["outputs"][0]["shape"] = [-1, 32, 32]
    with pytest.raises(SignatureMismatchError) as caught:
        check_signature("gan", metadata)
    text = str(caught.value)
    assert "input 'seed' is INT32 [-1, 1] on the server; this client expects INT64 [-1, 1]" in text
    assert "input 'label' INT64 [-1, 1] is missing on the server" in text
    assert "output 'image' is UINT8 [-1, 32, 32]" in text


def test_every_endpoint_has_a_signature():
    assert set(contract.CONTRACT) == set(contract.ENDPOINTS)


def test_model_infos_sort_and_report_state():
    rows = model_infos(
        [
            {"name": "gan", "version": "10", "state": "READY"},
            {"name": "gan", "version": "2", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "diffusion", "version": "1", "state": "READY"},
        ]
    )
    assert [(r.name, r.version, r.ready) for r in rows] == [
        ("diffusion", "1", True),
        ("gan", "2", False),
        ("gan", "10", True),
    ]
    assert rows[1].reason == "unloaded"


# -- HTTP generate extension ------------------------------------------------------------------
def test_generate_body_and_events():
    request = diffusion_request([1, 2], [3, 4], steps=5, guidance=1.5, eta=0.0, preview_every=0, rng=RNG)
    body = json.loads(generate_body(request))
    assert body == {
        "label": [1, 2],
        "seed": [3, 4],
        "steps": 5,
        "guidance": 1.5,
        "eta": 0.0,
        "preview_every": 0,
    }
    event = parse_data_line(b'data: {"image": ' + json.dumps([7] * 2048).encode() + b', "step": 5}\n')
    outputs = decode_event(event, request, {"image": (-1, 32, 32, 1), "step": (1,)})
    assert outputs["image"].shape == (2, 32, 32, 1) and outputs["image"].dtype == np.uint8
    assert outputs["step"].tolist() == [5]
    assert parse_data_line(b"\n") is None and parse_data_line(b": comment") is None
    with pytest.raises(OverloadedError):
        decode_event({"error": "diffusion: overloaded, 64 requests already sampling"}, request, {})


def test_http_error_bodies():
    error = error_from_text(
        'data: {"error":"diffusion: label=11 is out of range; allowed range [0, 9]"}\n\n', 400, "diffusion"
    )
    assert isinstance(error, InvalidInputError) and error.status == "400"
    assert isinstance(error_from_text('{"error":"Request for unknown model"}', 404, "x"), ModelNotFoundError)
    assert split_url("http://localhost:8000") == ("localhost", 8000)
    with pytest.raises(ValueError):
        split_url("localhost")


# -- images -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4), (5, 7, 2)])
def test_png_round_trips_through_pillow(shape):
    from PIL import Image

    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(image))))
    assert np.array_equal(decoded.reshape(image.shape), image)


def test_contact_sheet_tiles_and_scales():
    images = np.stack([np.full((4, 4, 1), i * 20, np.uint8) for i in range(5)])
    sheet = contact_sheet(images, columns=3, scale=2, padding=1)
    assert sheet.shape == (2 * 9 + 1, 3 * 9 + 1, 1)
    assert sheet[1, 1, 0] == 0 and sheet[1, 10, 0] == 20 and sheet[10, 1, 0] == 60
    with pytest.raises(InvalidInputError):
        contact_sheet(np.zeros((0, 4, 4, 1), np.uint8))


def test_pil_images_and_encoded_files_become_the_same_pixels_or_bytes(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(2).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    from_pil = style_request(Image.fromarray(pixels), pixels, 1.0, None).inputs
    assert np.array_equal(from_pil["content_pixels"][0], pixels)
    assert np.array_equal(from_pil["style_pixels"][0], pixels)
    grey = Image.fromarray(pixels[:, :, 0])
    assert style_request(grey, pixels, 1.0, None).inputs["content_pixels"].shape == (1, 9, 11, 3)
