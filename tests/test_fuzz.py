"""Property-based bad inputs for every endpoint over both protocols, sent raw (past the client's checks).

Each request takes a valid request and breaks one input (a value out of range, NaN, a wrong dtype or
shape, an input missing or unknown, a batch too large, a corrupt image). Every answer must be a
client error (HTTP 4xx, gRPC INVALID_ARGUMENT) whose message names what was wrong, and the server
must stay ready. The server is the project's repository behind the front proxy, as users reach it.
"""

from __future__ import annotations

import http.client
import json
import queue
from dataclasses import dataclass, field

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from genserve.client import InvalidInputError
from genserve.client.errors import translate
from genserve.client.images import encode_png

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY_PNG = encode_png(np.full((8, 8, 3), 120, np.uint8))


@dataclass
class Seen:
    """The distinct bad inputs sent, as (protocol, endpoint, what was broken)."""

    kinds: set[tuple[str, str, str]] = field(default_factory=set)


SEEN = Seen()


def gan_inputs() -> dict[str, np.ndarray]:
    return {"seed": np.array([[7]], np.int64), "label": np.array([[3]], np.int64)}


def style_inputs() -> dict[str, np.ndarray]:
    return {
        "content": np.array([[TINY_PNG]], np.object_),
        "style": np.array([[TINY_PNG]], np.object_),
        "alpha": np.array([[0.5]], np.float32),
        "size": np.array([[256]], np.int32),
    }


def diffusion_inputs() -> dict[str, np.ndarray]:
    return {
        "label": np.array([1], np.int64),
        "seed": np.array([1], np.int64),
        "steps": np.array([2], np.int32),
        "guidance": np.array([1.0], np.float32),
        "eta": np.array([0.0], np.float32),
        "preview_every": np.array([0], np.int32),
    }


VALID = {"gan": gan_inputs, "style_transfer": style_inputs, "diffusion": diffusion_inputs}
BATCHED = {"gan": True, "style_transfer": True, "diffusion": False}
OUT_OF_RANGE = {
    ("gan", "label"): st.one_of(st.integers(-(2**40), -1), st.integers(10, 2**40)),
    ("gan", "seed"): st.integers(-(2**62), -1),
    ("diffusion", "label"): st.one_of(st.integers(-(2**40), -1), st.integers(10, 2**40)),
    ("diffusion", "steps"): st.one_of(st.integers(-(2**31), 0), st.integers(1001, 2**31 - 1)),
    ("diffusion", "guidance"): st.one_of(
        st.floats(-1e30, -0.01), st.floats(20.01, 1e30), st.just(float("nan"))
    ),
    ("diffusion", "eta"): st.one_of(st.floats(-1e30, -0.01), st.floats(1.01, 1e30), st.just(float("nan"))),
    ("diffusion", "preview_every"): st.integers(-(2**31), -1),
    ("style_transfer", "alpha"): st.one_of(
        st.floats(-1e30, -0.01), st.floats(1.01, 1e30), st.just(float("nan"))
    ),
    ("style_transfer", "size"): st.integers(-(2**31), 2**31 - 1).filter(lambda v: v not in (256, 512)),
}


@st.composite
def bad_request(draw, endpoint: str, protocol: str) -> tuple[str, str, dict[str, np.ndarray]]:
    """(what was broken, the input it names, the inputs) for one bad request to ``endpoint``."""
    inputs = VALID[endpoint]()
    names = sorted(inputs)
    kinds = ["missing", "unknown input"]
    if not (endpoint == "diffusion" and protocol == "http"):  # generate's JSON carries no dtype
        kinds.append("wrong dtype")
    kinds += [name for (model, name) in OUT_OF_RANGE if model == endpoint]
    if endpoint == "style_transfer":
        kinds += ["corrupt image", "empty image", "pixels without 3 channels"]
    if endpoint == "gan":
        kinds += ["batch too large", "rows disagree"]
    if endpoint == "diffusion":
        kinds += ["no images", "too many images"]
    kind = draw(st.sampled_from(kinds))
    if kind == "missing":
        name = draw(st.sampled_from([n for n in names if n in ("seed", "label", "content")]))
        del inputs[name]
    elif kind == "wrong dtype":
        name = draw(st.sampled_from([n for n in names if inputs[n].dtype != np.object_]))
        wrong = np.float64 if inputs[name].dtype.kind in "iu" else np.int16
        inputs[name] = inputs[name].astype(wrong)
    elif kind == "unknown input":
        name = draw(st.sampled_from(["sed", "labels", "latent", "x"]))
        inputs[name] = np.zeros_like(inputs["seed" if "seed" in inputs else "alpha"])
    elif kind == "corrupt image":
        name = draw(st.sampled_from(["content", "style"]))
        # Cut before the end of the compressed pixels (the last 30 bytes: their tail, checksums, end).
        inputs[name] = np.array([[TINY_PNG[: draw(st.integers(1, len(TINY_PNG) - 30))]]], np.object_)
    elif kind == "empty image":
        name = draw(st.sampled_from(["content", "style"]))
        inputs[name] = np.array([[b""]], np.object_)
    elif kind == "pixels without 3 channels":
        name = "content_pixels"
        del inputs["content"]
        inputs[name] = np.zeros((1, 8, 8, draw(st.sampled_from([1, 2, 4]))), np.uint8)
    elif kind == "batch too large":
        name = "seed"  # Triton names the batch size; the rows come from every input
        rows = draw(st.integers(257, 2000))
        inputs = {"seed": np.ones((rows, 1), np.int64), "label": np.ones((rows, 1), np.int64)}
    elif kind == "rows disagree":
        name = "seed|label"  # either may be named: they disagree with each other
        inputs["label"] = np.array([[1], [2]], np.int64)
    elif kind == "no images":
        name = "label"
        inputs["label"], inputs["seed"] = np.zeros(0, np.int64), np.zeros(0, np.int64)
    elif kind == "too many images":
        name = "label"
        rows = draw(st.integers(17, 200))
        inputs["label"], inputs["seed"] = np.ones(rows, np.int64), np.ones(rows, np.int64)
    else:
        name = kind
        value = draw(OUT_OF_RANGE[(endpoint, name)])
        inputs[name] = np.full(inputs[name].shape, value, inputs[name].dtype)
    return kind, name, inputs


def _grpc_inputs(arrays: dict[str, np.ndarray]) -> list:
    tensors = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def send_grpc(url: str, endpoint: str, arrays: dict[str, np.ndarray]) -> Exception | None:
    """The error of one raw gRPC request (a stream for the decoupled diffusion), or None."""
    with grpcclient.InferenceServerClient(url) as client:
        if endpoint != "diffusion":
            try:
                client.infer(endpoint, _grpc_inputs(arrays), client_timeout=60)
            except InferenceServerException as error:
                return error
            return None
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put(error), stream_timeout=60)
        try:
            client.async_stream_infer(endpoint, _grpc_inputs(arrays), enable_empty_final_response=True)
            while True:
                error = answers.get(timeout=60)
                if error is not None:
                    return error
        except queue.Empty:
            return None
        finally:
            client.stop_stream(cancel_requests=True)


def send_http(url: str, endpoint: str, arrays: dict[str, np.ndarray]) -> Exception | None:
    """The error of one raw HTTP request (``generate`` for the decoupled diffusion), or None."""
    if endpoint == "diffusion":
        host, port = url.split(":")
        body = {name: array.tolist() for name, array in arrays.items()}
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v2/models/diffusion/generate", json.dumps(body).encode())
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        connection.close()
        if response.status == 200:
            return None
        message = json.loads(text).get("error", text) if text.startswith("{") else text
        return InferenceServerException(msg=message, status=str(response.status))
    client = httpclient.InferenceServerClient(url, connection_timeout=60, network_timeout=60)
    tensors = []
    for name, array in arrays.items():
        tensor = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    try:
        client.infer(endpoint, tensors)
    except InferenceServerException as error:
        return error
    finally:
        client.close()
    return None


def check_bad_request(
    server, protocol: str, endpoint: str, case: tuple[str, str, dict[str, np.ndarray]]
) -> None:
    kind, name, arrays = case
    url = server.grpc_url if protocol == "grpc" else server.http_url
    error = (send_grpc if protocol == "grpc" else send_http)(url, endpoint, arrays)
    assert error is not None, f"{endpoint}/{protocol}: {kind} of '{name}' was accepted"
    message, status = error.message(), error.status()
    assert (
        any(part in message for part in name.split("|")) or kind == "batch too large" and "batch" in message
    ), (
        kind,
        message,
    )
    if status is not None:  # a gRPC stream error carries no status, only the message
        assert status in ("400", "StatusCode.INVALID_ARGUMENT"), (kind, status, message)
    assert isinstance(translate(error, model=endpoint), InvalidInputError), (kind, status, message)
    assert "Traceback" not in message and "out of bounds index" not in message
    assert server.is_ready()
    SEEN.kinds.add((protocol, endpoint, f"{kind}:{name}"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("endpoint", ["gan", "style_transfer", "diffusion"])
def test_bad_inputs_are_clear_client_errors_and_the_server_stays_ready(
    proxied, protocol: str, endpoint: str
) -> None:
    @SETTINGS
    @given(case=bad_request(endpoint, protocol))
    def property_holds(case) -> None:
        check_bad_request(proxied, protocol, endpoint, case)

    property_holds()


def test_at_least_sixty_distinct_bad_inputs_were_sent() -> None:
    if len({kind[:2] for kind in SEEN.kinds}) < 6:
        pytest.skip("needs the six property tests above in the same run")
    print(f"{len(SEEN.kinds)} distinct bad inputs")
    assert len(SEEN.kinds) >= 60, sorted(SEEN.kinds)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"inputs": 3}', b'{"inputs": [{"name": "seed"}]}', b"\xff\xfe", b'{"inputs":[]}'],
)
def test_malformed_json_is_an_error_and_the_server_stays_ready(proxied, body: bytes) -> None:
    host, port = proxied.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v2/models/gan/infer", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read().decode(errors="replace")
    # Triton answers a body it cannot parse with 500 (its own choice); the client calls it the caller's.
    assert response.status in (400, 500), text
    error = InferenceServerException(msg=json.loads(text)["error"], status=str(response.status))
    assert isinstance(translate(error, model="gan"), InvalidInputError), text
    assert proxied.is_ready()


def test_an_index_outside_a_networks_table_is_the_callers_error(proxied) -> None:
    arrays = {"z": np.zeros((1, 64), np.float32), "label": np.array([[12]], np.int64)}
    error = send_grpc(proxied.grpc_url, "gan_generator", arrays)
    assert error is not None and error.status() == "StatusCode.INVALID_ARGUMENT", error
    assert "'label'" in error.message() and "idx=12" in error.message()
    assert proxied.is_ready()
