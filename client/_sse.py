"""Triton's HTTP generate extension: JSON request bodies and server-sent events, for the HTTP transports."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from genserve.client._requests import InferRequest
from genserve.client.errors import GenserveError, classify


def split_url(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` URL (a scheme, if any, is dropped)."""
    address = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"url must be 'host:port'; got {url!r}")
    return host.strip("[]"), int(port)


def generate_path(model: str) -> str:
    """The path of a model's streaming generate endpoint."""
    return f"/v2/models/{model}/generate_stream"


def generate_body(request: InferRequest) -> bytes:
    """The JSON body: one key per input, ``[1]``-shaped inputs as scalars, others as flat lists.

    JSON carries text only: BYTES values go as UTF-8 strings, or, when they are not text (encoded
    images), as ``data:`` URIs with base64, which the endpoints that take images accept too.
    """
    body = {
        name: (
            [_json_text(value) for value in array.reshape(-1)]
            if array.dtype == np.object_
            else array.reshape(-1).tolist()
            if array.shape != (1,)
            else array.item()
        )
        for name, array in request.inputs.items()
    }
    return json.dumps(body).encode()


def _json_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "data:application/octet-stream;base64," + base64.b64encode(value).decode("ascii")


def decode_event(
    event: Mapping[str, Any], request: InferRequest, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The requested outputs of one generate response, shaped per the model's metadata.

    Args:
        event: The response's JSON object.
        request: The request it answers.
        shapes: The model's output dims (``-1`` where variable); the first one is the row count.

    Raises:
        GenserveError: if the event carries an error.
    """
    if "error" in event:
        raise error_from_text(str(event["error"]), None, request.model)
    arrays = {}
    rows = len(next(iter(request.inputs.values())).reshape(-1))
    for name in request.outputs:
        values = np.asarray(event[name])
        shape = shapes.get(name, (-1,))
        if len(shape) > 1:
            values = values.reshape((rows, *shape[1:]) if -1 not in shape[1:] else (rows, -1))
        arrays[name] = values.astype(np.uint8) if name == "image" else values.reshape(-1)
    return arrays


def error_from_text(text: str, status: int | None, model: str) -> GenserveError:
    """The error for an HTTP error body (JSON ``{"error": ...}``, possibly as an SSE ``data:`` line)."""
    message = text.strip()
    if message.startswith("data:"):
        message = message[len("data:") :].strip()
    with contextlib.suppress(ValueError, KeyError, TypeError):
        message = str(json.loads(message)["error"])
    status_text = str(status) if status is not None else None
    return classify(message, status_text)(message or "empty error response", model=model, status=status_text)


def parse_data_line(line: bytes) -> dict[str, Any] | None:
    """The JSON object of an SSE ``data:`` line; ``None`` for blank lines, comments and other fields."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    return json.loads(line[len(b"data:") :])
