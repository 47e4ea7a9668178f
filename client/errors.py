"""One exception hierarchy for every failure a genserve call can meet.

Transport errors (tritonclient, gRPC, sockets, aiohttp) never leave the client: :func:`translate`
turns each into a :class:`GenserveError` subclass that says what happened and what to do about it.
"""

from __future__ import annotations

import http.client
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "CancelledError",
    "DeadlineExceededError",
    "GenserveError",
    "InvalidInputError",
    "ModelNotFoundError",
    "OverloadedError",
    "ServerError",
    "SignatureMismatchError",
    "UnavailableError",
]


class GenserveError(Exception):
    """Base class of every error the genserve client raises.

    Attributes:
        model: The endpoint the call was for, if any.
        status: The transport's status code as text (``"StatusCode.UNAVAILABLE"``, ``"503"``), if any.
        retryable: Whether trying the same call again later can succeed.
    """

    retryable = False
    hint = ""

    def __init__(self, message: str, *, model: str | None = None, status: str | None = None):
        self.message = message
        self.model = model
        self.status = status
        prefix = f"{model}: " if model and not message.startswith(f"{model}:") else ""
        suffix = f" ({self.hint})" if self.hint else ""
        super().__init__(f"{prefix}{message}{suffix}")


class InvalidInputError(GenserveError, ValueError):
    """An argument is outside what the endpoint accepts; the message names it and the allowed values.

    Fix the call; retrying it unchanged fails the same way.
    """


def checked(check: Callable[..., T], *args: Any) -> T:
    """Run one of the contract's checks, the one the server runs too; its ``ValueError`` becomes ours.

    Raises:
        InvalidInputError: with the contract's message.
    """
    try:
        return check(*args)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None


class OverloadedError(GenserveError):
    """The server refused the request because its queue is full. Retryable."""

    retryable = True
    hint = "retry later with backoff, lower the request rate, or add server capacity"


class UnavailableError(GenserveError):
    """The server cannot be reached, is not ready, or went away during the call. Retryable."""

    retryable = True
    hint = "check that the server is running and reachable; retry later"


class DeadlineExceededError(GenserveError, TimeoutError):
    """The call did not finish within its timeout (on the client or in the server's queue).

    Never retried by the client: the call's deadline is spent.
    """

    hint = "raise the timeout or lower the load on the server"


class ModelNotFoundError(GenserveError):
    """The server does not serve the endpoint (or the version) the call asked for."""

    hint = "check the model repository the server was started with; Client.models() lists what it serves"


class SignatureMismatchError(GenserveError):
    """The server's model takes or returns tensors other than the ones this client sends or reads.

    The client and the server come from different genserve versions: upgrade one of them.
    """


class CancelledError(GenserveError):
    """The request was cancelled (by this client or by the server) before it finished."""


class ServerError(GenserveError):
    """The server failed while running the request (an internal error, not the caller's fault)."""

    hint = "see the server log"


# -- translation ------------------------------------------------------------------------------
# Triton reports some conditions only in words; a stream error carries no status code at all.
_OVERLOADED = re.compile(r"exceeds maximum queue size|overloaded", re.IGNORECASE)
_QUEUE_TIMEOUT = re.compile(r"request timeout expired|deadline exceeded", re.IGNORECASE)
_NOT_FOUND = re.compile(r"unknown model|is not found|no version is available", re.IGNORECASE)
_CANCELLED = re.compile(r"\bcancel", re.IGNORECASE)
_INVALID = re.compile(
    r"allowed|expected|expects|is missing|must be|data-type|unexpected shape|unexpected inference input"
    r"|not a decodable image|corrupt image|batch-size must be",
    re.IGNORECASE,
)
# A lost connection or a server (or one of its stubs) on its way down or back up: try again later.
# "Stream removed" / RST_STREAM arrive with status UNKNOWN or INTERNAL; "Server not ready" and an
# unhealthy stub come back from a pipeline's inner call wrapped in the pipeline's own error.
_UNAVAILABLE = re.compile(
    r"stream removed|rst_stream|socket closed|connection reset|broken pipe|server not ready"
    r"|stub process .*is not healthy|stub process .*not ready|failed to connect to all addresses"
    r"|server is shutting down",
    re.IGNORECASE,
)
# The caller's mistakes that Triton or ONNX Runtime report as internal errors (HTTP 500 or
# INTERNAL): a body that is not JSON, JSON of the wrong structure, an index outside a table.
_CLIENT_FAULT = re.compile(
    r"failed to parse|unable to parse|not a valid json|invalid json|non-existing object member"
    r"|out of bounds|out of range|request has 0 inputs|request body too large",
    re.IGNORECASE,
)
# An admin API called without the admin key: fix the call (pass admin_key), retrying cannot help.
_RESTRICTED = re.compile(r"(api|protocol) is restricted", re.IGNORECASE)
_SHM_MISSING = re.compile(r"unable to find (system )?shared memory region", re.IGNORECASE)

_BY_STATUS: dict[str, type[GenserveError]] = {
    "StatusCode.INVALID_ARGUMENT": InvalidInputError,
    "StatusCode.OUT_OF_RANGE": InvalidInputError,
    "StatusCode.NOT_FOUND": ModelNotFoundError,
    "StatusCode.UNAVAILABLE": UnavailableError,
    "StatusCode.RESOURCE_EXHAUSTED": OverloadedError,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceededError,
    "StatusCode.CANCELLED": CancelledError,
    "400": InvalidInputError,
    "404": ModelNotFoundError,
    "408": DeadlineExceededError,
    "413": InvalidInputError,
    "429": OverloadedError,
    "502": UnavailableError,
    "503": UnavailableError,
    "504": DeadlineExceededError,
}


def classify(message: str, status: str | None) -> type[GenserveError]:
    """The error class for a Triton error message and status code (``None`` for stream errors)."""
    if _RESTRICTED.search(message):
        return InvalidInputError
    if _OVERLOADED.search(message):
        return OverloadedError
    if _QUEUE_TIMEOUT.search(message):
        return DeadlineExceededError
    if _NOT_FOUND.search(message):
        return ModelNotFoundError
    if _UNAVAILABLE.search(message) and status not in ("StatusCode.INVALID_ARGUMENT", "400"):
        return UnavailableError
    if _CLIENT_FAULT.search(message) and status in (None, "500", "StatusCode.INTERNAL", "StatusCode.UNKNOWN"):
        return InvalidInputError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status is None or status == "StatusCode.UNKNOWN":
        if _CANCELLED.search(message):
            return CancelledError
        if _INVALID.search(message):
            return InvalidInputError
    return ServerError


def is_restricted(error: GenserveError) -> bool:
    """Whether the server refused an admin API because the call lacked the admin key."""
    return bool(_RESTRICTED.search(error.message))


def is_missing_shared_memory(error: GenserveError) -> bool:
    """Whether the server has lost a shared-memory registration (for example after a restart)."""
    return bool(_SHM_MISSING.search(error.message))


def translate(error: BaseException, *, model: str | None = None) -> GenserveError:
    """Turn a transport exception into the matching :class:`GenserveError`.

    Handles tritonclient's ``InferenceServerException``, gRPC ``RpcError``, socket and connection
    errors and timeouts; anything else becomes a :class:`ServerError` that keeps the original text.
    """
    if isinstance(error, GenserveError):
        return error
    message, status = _message_and_status(error)
    if message is None:
        if isinstance(error, TimeoutError):  # socket.timeout and asyncio.TimeoutError are aliases
            return DeadlineExceededError("no answer within the timeout", model=model)
        if isinstance(error, (ConnectionError, OSError, EOFError)) or _is_http_exception(error):
            return UnavailableError(f"connection failed: {error!r}", model=model)
        return ServerError(f"unexpected client error: {error!r}", model=model)
    return classify(message, status)(message, model=model, status=status)


def _message_and_status(error: BaseException) -> tuple[str | None, str | None]:
    """Message and status of a tritonclient or gRPC error; ``(None, None)`` for other exceptions."""
    message_of = getattr(error, "message", None)
    status_of = getattr(error, "status", None)
    if callable(message_of) and callable(status_of):  # tritonclient's InferenceServerException
        message = message_of()
        return (str(message) if message is not None else str(error)), status_of()
    code_of, details_of = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code_of) and callable(details_of):  # grpc.RpcError (also grpc.aio.AioRpcError)
        return str(details_of() or ""), str(code_of())
    return None, None


def _is_http_exception(error: BaseException) -> bool:
    if isinstance(error, http.client.HTTPException):
        return True
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(error, aiohttp.ClientError)
