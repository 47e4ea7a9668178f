"""The synchronous gRPC transport (tritonclient.grpc), usable from threads and from gevent greenlets."""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from genserve.client import _tensors
from genserve.client._requests import InferRequest
from genserve.client._retry import Deadline
from genserve.client.errors import DeadlineExceededError, UnavailableError, translate
from genserve.client.shm import Layout, Region

_MAX_MESSAGE = 2**31 - 1
CHANNEL_ARGS = [
    ("grpc.max_send_message_length", _MAX_MESSAGE),
    ("grpc.max_receive_message_length", _MAX_MESSAGE),
    # Reconnect soon after a server restart (gRPC's default backoff grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
"""Channel options of every genserve gRPC channel, synchronous and asyncio alike."""

_gevent_lock = threading.Lock()
_gevent_ready = False


def enable_gevent() -> bool:
    """Make gRPC cooperate with gevent if the process has monkey-patched its sockets.

    gRPC blocks the whole process (so every greenlet waits for every call) unless its gevent
    integration runs before the first channel exists. :class:`~genserve.client.Client` calls this
    itself before creating a gRPC channel; call it earlier if other code creates channels first.

    Returns:
        Whether gRPC now runs cooperatively under gevent.
    """
    global _gevent_ready
    if _gevent_ready:
        return True
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return False
    with _gevent_lock:
        if not _gevent_ready:
            from grpc._cython import cygrpc
            from grpc.experimental import gevent as grpc_gevent

            if not getattr(cygrpc, "g_gevent_activated", False):
                grpc_gevent.init_gevent()
            _gevent_ready = True
    return True


class GrpcTransport:
    """Calls over one gRPC channel; thread-safe.

    Args:
        url: ``host:port`` of the server's gRPC endpoint.
    """

    protocol = "grpc"

    def __init__(self, url: str):
        enable_gevent()
        import tritonclient.grpc as grpcclient

        self.url = url
        self._module = grpcclient
        self._client = grpcclient.InferenceServerClient(url, channel_args=CHANNEL_ARGS)

    def infer(
        self, request: InferRequest, deadline: Deadline, shm: tuple[Region, Layout] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one request; return its outputs."""
        remaining = deadline.check(request.model)
        inputs, outputs = _tensors.build(self._module, request, shm)
        try:
            result = self._client.infer(
                request.model,
                inputs,
                outputs=outputs,
                client_timeout=remaining,
                timeout=int(remaining * 1e6) if request.queue_timeout else None,
            )
        except Exception as error:
            raise translate(error, model=request.model) from None
        return _tensors.read(result, request, shm)

    def stream(self, request: InferRequest, deadline: Deadline) -> Iterator[dict[str, np.ndarray]]:
        """Send one request on its own stream and yield its responses; closing the iterator cancels it.

        The iterator never ends by itself: the caller stops after the response it knows is the last.
        """
        remaining = deadline.check(request.model)
        inputs, outputs = _tensors.build(self._module, request)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        # One client per stream: tritonclient allows one stream per client; gRPC shares the connection.
        client = self._module.InferenceServerClient(self.url, channel_args=CHANNEL_ARGS)
        try:
            client.start_stream(
                callback=lambda result, error: responses.put((result, error)), stream_timeout=remaining
            )
            client.async_stream_infer(request.model, inputs, outputs=outputs)
            while True:
                try:
                    result, error = responses.get(timeout=deadline.check(request.model))
                except queue.Empty:
                    raise DeadlineExceededError(
                        f"no answer within the timeout of {deadline.timeout:g} s", model=request.model
                    ) from None
                if error is not None:
                    raise translate(error, model=request.model)
                yield _tensors.read(result, request)
        except Exception as error:
            raise translate(error, model=request.model) from None
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()

    def ready(self, deadline: Deadline) -> bool:
        """Whether the server is live and ready; ``False`` when it cannot be reached."""
        try:
            return bool(self._client.is_server_ready(client_timeout=deadline.check()))
        except Exception as error:
            if isinstance(translate(error), (UnavailableError, DeadlineExceededError)):
                return False
            raise translate(error) from None

    def model_metadata(self, model: str, deadline: Deadline) -> dict[str, Any]:
        """Triton's metadata of a model, in its JSON form."""
        return self._call(
            lambda t: self._client.get_model_metadata(model, as_json=True, client_timeout=t), deadline, model
        )

    def repository_index(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Triton's repository index: one entry per model version."""
        index = self._call(
            lambda t: self._client.get_model_repository_index(as_json=True, client_timeout=t), deadline
        )
        return list(index.get("models", []))

    def register_shm(self, region: Region, deadline: Deadline, headers: dict[str, str] | None = None) -> None:
        """Register a system shared-memory region with the server (``headers``: the admin key)."""
        self._call(
            lambda t: self._client.register_system_shared_memory(
                region.name, region.key, region.size, headers=headers, client_timeout=t
            ),
            deadline,
        )

    def unregister_shm(self, name: str, deadline: Deadline, headers: dict[str, str] | None = None) -> None:
        """Unregister a system shared-memory region."""
        self._call(
            lambda t: self._client.unregister_system_shared_memory(name, headers=headers, client_timeout=t),
            deadline,
        )

    def close(self) -> None:
        """Close the channel."""
        self._client.close()

    def _call(self, call: Any, deadline: Deadline, model: str | None = None) -> Any:
        try:
            return call(deadline.check(model))
        except Exception as error:
            raise translate(error, model=model) from None
