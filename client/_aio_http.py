"""The asyncio HTTP transport (tritonclient.http.aio, aiohttp for streams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

import numpy as np

from genserve.client import _sse, _tensors
from genserve.client._requests import InferRequest
from genserve.client._retry import Deadline
from genserve.client.errors import DeadlineExceededError, GenserveError, UnavailableError, translate
from genserve.client.shm import Layout, Region

T = TypeVar("T")


class AsyncHttpTransport:
    """Calls over one aiohttp connection pool; create it inside the event loop that uses it.

    Args:
        url: ``host:port`` of the server's HTTP endpoint.
    """

    protocol = "http"

    def __init__(self, url: str):
        import aiohttp
        import tritonclient.http as httpclient
        import tritonclient.http.aio as httpaio

        self.url = url.split("://", 1)[-1]
        _sse.split_url(self.url)
        self._module = httpclient
        self._aiohttp = aiohttp
        self._client = httpaio.InferenceServerClient(self.url, conn_timeout=3600.0)
        self._session: Any = None

    async def _run(self, call: Callable[[], Awaitable[T]], deadline: Deadline, model: str | None = None) -> T:
        remaining = deadline.check(model)
        try:
            return await asyncio.wait_for(call(), remaining)
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"no answer within the timeout of {deadline.timeout:g} s", model=model
            ) from None
        except Exception as error:
            raise translate(error, model=model) from None

    async def infer(
        self, request: InferRequest, deadline: Deadline, shm: tuple[Region, Layout] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one request; return its outputs."""
        inputs, outputs = _tensors.build(self._module, request, shm)
        queue_timeout = int(deadline.remaining() * 1e6) if request.queue_timeout else None
        result = await self._run(
            lambda: self._client.infer(request.model, inputs, outputs=outputs, timeout=queue_timeout),
            deadline,
            request.model,
        )
        return _tensors.read(result, request, shm)

    async def stream(
        self, request: InferRequest, deadline: Deadline, shapes: dict[str, tuple[int, ...]]
    ) -> AsyncIterator[dict[str, np.ndarray]]:
        """POST to the model's ``generate_stream`` and yield each event; closing the iterator disconnects."""
        if self._session is None:
            self._session = self._aiohttp.ClientSession()
        url = f"http://{self.url}{_sse.generate_path(quote(request.model))}"
        timeout = self._aiohttp.ClientTimeout(total=deadline.check(request.model))
        response = None
        try:
            response = await self._session.post(
                url,
                data=_sse.generate_body(request),
                headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                timeout=timeout,
            )
            if response.status != 200:
                raise _sse.error_from_text(await response.text(), response.status, request.model)
            async for line in response.content:
                event = _sse.parse_data_line(line)
                if event is not None:
                    yield _sse.decode_event(event, request, shapes)
            raise UnavailableError(
                "the server closed the stream before the last response", model=request.model
            )
        except GenserveError:
            raise
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"no answer within the timeout of {deadline.timeout:g} s", model=request.model
            ) from None
        except Exception as error:
            raise translate(error, model=request.model) from None
        finally:
            if response is not None:
                response.close()  # drops the connection, which cancels the request on the server

    async def ready(self, deadline: Deadline) -> bool:
        """Whether the server is live and ready; ``False`` when it cannot be reached."""
        try:
            return bool(await self._run(self._client.is_server_ready, deadline))
        except (UnavailableError, DeadlineExceededError):
            return False

    async def model_metadata(self, model: str, deadline: Deadline) -> dict[str, Any]:
        """Triton's metadata of a model, in its JSON form."""
        return await self._run(lambda: self._client.get_model_metadata(model), deadline, model)

    async def repository_index(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Triton's repository index: one entry per model version."""
        return list(await self._run(self._client.get_model_repository_index, deadline))

    async def register_shm(
        self, region: Region, deadline: Deadline, headers: dict[str, str] | None = None
    ) -> None:
        """Register a system shared-memory region with the server (``headers``: the admin key)."""
        await self._run(
            lambda: self._client.register_system_shared_memory(
                region.name, region.key, region.size, headers=headers
            ),
            deadline,
        )

    async def unregister_shm(
        self, name: str, deadline: Deadline, headers: dict[str, str] | None = None
    ) -> None:
        """Unregister a system shared-memory region."""
        await self._run(lambda: self._client.unregister_system_shared_memory(name, headers=headers), deadline)

    async def close(self) -> None:
        """Close both connection pools."""
        if self._session is not None:
            await self._session.close()
        await self._client.close()
