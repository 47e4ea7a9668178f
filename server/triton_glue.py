"""Small helpers for genserve's Python models, shared so every model reads and fails the same way.

Importable only inside Triton's Python backend stub (``triton_python_backend_utils`` is there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import Bound
from genserve.server.drain import INFLIGHT_METRIC, draining
from genserve.server.stepping import Cancelled, ConcurrencyLimit

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def read_inputs(request: Any, names: Iterable[str]) -> dict[str, np.ndarray | None]:
    """The request's input arrays by name (``None`` where the request left one out)."""
    arrays: dict[str, np.ndarray | None] = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        arrays[name] = tensor.as_numpy() if tensor is not None else None
    return arrays


def scalar_rows(array: np.ndarray | None, bound: Bound, rows: int) -> np.ndarray:
    """One value per row from a ``[rows, 1]`` (or ``[rows]``) input, checked against its bound.

    A missing input takes the bound's default for every row; a given one needs exactly ``rows`` values
    (nothing is repeated or cut silently).

    Raises:
        ValueError: naming the input and its allowed range.
    """
    if array is None:
        if bound.default is None:
            raise ValueError(f"input '{bound.name}' is missing")
        array = np.full(rows, bound.default)
    values = np.asarray(array).reshape(-1)
    if values.size != rows:
        raise ValueError(f"input '{bound.name}' has {values.size} values; expected {rows}, one per row")
    bound.check(values)
    return values


def error_response(message: str, code: int | None = None) -> Any:
    """An inference response carrying only an error (``INVALID_ARG`` unless told otherwise)."""
    if code is None:
        code = pb_utils.TritonError.INVALID_ARG
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def check_bls_response(response: Any, model: str) -> None:
    """Raise if a BLS call to ``model`` failed, keeping Triton's message."""
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")


def output_array(response: Any, name: str) -> np.ndarray:
    """An output of a BLS response as a numpy array."""
    return pb_utils.get_output_tensor_by_name(response, name).as_numpy()


class Admission:
    """A pipeline's admission during shutdown and its in-flight gauge (see :mod:`genserve.server.drain`).

    Args:
        model: The pipeline's name (the gauge's ``model`` label and the refusal's prefix).
    """

    def __init__(self, model: str):
        self.model = model
        # The family must outlive its metric: Triton refuses updates of a metric whose family is gone.
        self._family = pb_utils.MetricFamily(
            name=INFLIGHT_METRIC,
            description="requests a genserve pipeline has admitted and not yet answered",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._gauge = self._family.Metric(labels={"model": model})

    def refusing(self) -> bool:
        """Whether new requests are refused: the server is draining for shutdown."""
        return draining()

    def refusal(self) -> Any:
        """The answer to a request that arrives while draining: retryable, nothing was run."""
        return error_response(
            f"{self.model}: server is shutting down; retry (another replica will serve it)",
            pb_utils.TritonError.UNAVAILABLE,
        )

    def started(self, count: int = 1) -> None:
        """``count`` requests were admitted."""
        self._gauge.increment(count)

    def finished(self, count: int = 1) -> None:
        """``count`` admitted requests were answered."""
        self._gauge.increment(-count)


async def serve_decoupled(
    request: Any,
    endpoint: str,
    admission: Admission,
    limit: ConcurrencyLimit,
    parse: Callable[[Any], dict[str, Any]],
    run: Callable[[Any, dict[str, Any]], Awaitable[Any]],
) -> None:
    """Answer one request of a decoupled sampling endpoint; every outcome ends with a final response.

    While the server drains for shutdown, or over the concurrency limit, the request is refused at once
    (``UNAVAILABLE``, the client retries);
    ``parse(request)`` raising ``ValueError`` is the client's mistake (``INVALID_ARG``, naming the input);
    ``run(sender, settings)`` returns the final response and may send previews on ``sender`` before;
    :class:`Cancelled` from it answers ``CANCELLED``, any other error ``INTERNAL``.
    """
    sender = request.get_response_sender()
    if admission.refusing():
        sender.send(admission.refusal(), flags=FINAL)
        return
    if not limit.try_enter():
        message = f"{endpoint}: overloaded, {limit.active} requests already sampling; retry later"
        sender.send(error_response(message, pb_utils.TritonError.UNAVAILABLE), flags=FINAL)
        return
    admission.started()
    try:
        try:
            settings = parse(request)
        except ValueError as error:
            sender.send(error_response(f"{endpoint}: {error}"), flags=FINAL)
            return
        try:
            response = await run(sender, settings)
        except Cancelled:
            message = f"{endpoint}: request cancelled"
            sender.send(error_response(message, pb_utils.TritonError.CANCELLED), flags=FINAL)
            return
        except Exception as error:
            sender.send(error_response(f"{endpoint}: {error}", pb_utils.TritonError.INTERNAL), flags=FINAL)
            return
        sender.send(response, flags=FINAL)
    finally:
        limit.leave()
        admission.finished()
