"""The genserve thin Triton client and the protocol contract it shares with the server.

``Client`` (blocking) and ``AsyncClient`` (asyncio) call the ``gan``, ``style_transfer`` and
``diffusion`` endpoints over gRPC or HTTP: numpy in, numpy out, one exception hierarchy rooted at
``GenserveError``. Importing this package needs only numpy; tritonclient is imported when a client
is made, and never torch or ONNX.
"""

from genserve.client._grpc import enable_gevent
from genserve.client._requests import DiffusionStep
from genserve.client._retry import RetryPolicy
from genserve.client.aio import AsyncClient
from genserve.client.errors import (
    CancelledError,
    DeadlineExceededError,
    GenserveError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
    SignatureMismatchError,
    UnavailableError,
)
from genserve.client.images import contact_sheet, encode_png, save_png
from genserve.client.signatures import ModelInfo
from genserve.client.sync import Client

__all__ = [
    "AsyncClient",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "DiffusionStep",
    "GenserveError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "OverloadedError",
    "RetryPolicy",
    "ServerError",
    "SignatureMismatchError",
    "UnavailableError",
    "contact_sheet",
    "enable_gevent",
    "encode_png",
    "save_png",
]
