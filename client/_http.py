"""The synchronous HTTP transport (tritonclient.http), usable from threads and from gevent greenlets.

tritonclient's HTTP client runs on gevent and its connections belong to the thread (the hub) that
opened them, so a transport keeps one tritonclient client, with its connection pool, per thread
that calls it (per greenlet under gevent's monkey-patching). Deadlines are gevent timeouts, which
also work in threads that are not monkey-patched. Streams use the standard library's HTTP client.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from genserve.client import _sse, _tensors
from genserve.client._requests import InferRequest
from genserve.client._retry import Deadline
from genserve.client.errors import (
    DeadlineExceededError,
    GenserveError,
    UnavailableError,
    translate,
)
from genserve.client.shm import Layout, Region

T = TypeVar("T")


class HttpTransport:
    """Calls over HTTP/1.1 keep-alive connections.

    Args:
        url: ``host:port`` of the server's HTTP endpoint.
    """

    protocol = "http"

    def __init__(self, url: str):
        import gevent
        import tritonclient.http as httpclient

        self.url = url.split("://", 1)[-1]
        self.host, self.port = _sse.split_url(self.url)
        self._module = httpclient
        self._gevent = gevent
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise GenserveError("the client is closed; make a new one")
            client = self._module.InferenceServerClient(
                self.url, connection_timeout=60.0, network_timeout=3600.0
            )
            with self._lock:
                self._clients.append(client)
            self._local.client = client
        return client

    def _discard_client(self) -> None:
        """Drop this thread's connections after a failure: the next call opens fresh ones."""
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            _close_quietly(client)

    def _run(self, call: Callable[[Any], T], deadline: Deadline, model: str | None = None) -> T:
        remaining = deadline.check(model)
        client = self._client()
        timer = self._gevent.Timeout(remaining)
        timer.start()
        try:
            return call(client)
        except self._gevent.Timeout as expired:
            if expired is not timer:
                raise
            self._discard_client()
            raise DeadlineExceededError(
                f"no answer within the timeout of {deadline.timeout:g} s", model=model
            ) from None
        except Exception as error:
            translated = translate(error, model=model)
            if isinstance(translated, UnavailableError):
                self._discard_client()
            raise translated from None
        finally:
            timer.close()

    def infer(
        self, request: InferRequest, deadline: Deadline, shm: tuple[Region, Layout] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one request; return its outputs."""
        inputs, outputs = _tensors.build(self._module, request, shm)
        queue_timeout = int(deadline.remaining() * 1e6) if request.queue_timeout else None
        result = self._run(
            lambda client: client.infer(request.model, inputs, outputs=outputs, timeout=queue_timeout),
            deadline,
            request.model,
        )
        return _tensors.read(result, request, shm)

    def stream(
        self, request: InferRequest, deadline: Deadline, shapes: dict[str, tuple[int, ...]]
    ) -> Iterator[dict[str, np.ndarray]]:
        """POST to the model's ``generate_stream`` and yield each event; closing the iterator disconnects.

        The server cancels the request when the connection closes.
        """
        connection = http.client.HTTPConnection(self.host, self.port, timeout=deadline.check(request.model))
        try:
            connection.request(
                "POST",
                _sse.generate_path(quote(request.model)),
                body=_sse.generate_body(request),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
            )
            response = connection.getresponse()
            if response.status != 200:
                raise _sse.error_from_text(
                    response.read().decode(errors="replace"), response.status, request.model
                )
            while True:
                if connection.sock is not None:
                    connection.sock.settimeout(deadline.check(request.model))
                line = response.readline()
                if not line:
                    raise UnavailableError(
                        "the server closed the stream before the last response", model=request.model
                    )
                event = _sse.parse_data_line(line)
                if event is not None:
                    yield _sse.decode_event(event, request, shapes)
        except GenserveError:
            raise
        except TimeoutError:
            raise DeadlineExceededError(
                f"no answer within the timeout of {deadline.timeout:g} s", model=request.model
            ) from None
        except Exception as error:
            raise translate(error, model=request.model) from None
        finally:
            connection.close()

    def ready(self, deadline: Deadline) -> bool:
        """Whether the server is live and ready; ``False`` when it cannot be reached."""
        try:
            return bool(self._run(lambda client: client.is_server_ready(), deadline))
        except (UnavailableError, DeadlineExceededError):
            return False

    def model_metadata(self, model: str, deadline: Deadline) -> dict[str, Any]:
        """Triton's metadata of a model, in its JSON form."""
        return self._run(lambda client: client.get_model_metadata(model), deadline, model)

    def repository_index(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Triton's repository index: one entry per model version."""
        return list(self._run(lambda client: client.get_model_repository_index(), deadline))

    def register_shm(self, region: Region, deadline: Deadline, headers: dict[str, str] | None = None) -> None:
        """Register a system shared-memory region with the server (``headers``: the admin key)."""
        self._run(
            lambda client: client.register_system_shared_memory(
                region.name, region.key, region.size, headers=headers
            ),
            deadline,
        )

    def unregister_shm(self, name: str, deadline: Deadline, headers: dict[str, str] | None = None) -> None:
        """Unregister a system shared-memory region."""
        self._run(lambda client: client.unregister_system_shared_memory(name, headers=headers), deadline)

    def close(self) -> None:
        """Close every connection pool this transport opened."""
        with self._lock:
            clients, self._clients, self._closed = self._clients, [], True
        self._local = threading.local()
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: Any) -> None:
    # A pool opened in another thread may refuse to close from this one; its sockets die with it.
    with contextlib.suppress(Exception):
        client.close()
