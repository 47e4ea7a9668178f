"""The asyncio gRPC transport (tritonclient.grpc.aio)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from genserve.client import _tensors
from genserve.client._grpc import CHANNEL_ARGS
from genserve.client._requests import InferRequest
from genserve.client._retry import Deadline
from genserve.client.errors import DeadlineExceededError, GenserveError, UnavailableError, translate
from genserve.client.shm import Layout, Region


class AsyncGrpcTransport:
    """Calls over one asyncio gRPC channel; create it inside the event loop that uses it.

    Args:
        url: ``host:port`` of the server's gRPC endpoint.
    """

    protocol = "grpc"

    def __init__(self, url: str):
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as grpcaio

        self.url = url
        self._module = grpcclient
        self._client = grpcaio.InferenceServerClient(url, channel_args=CHANNEL_ARGS)

    async def infer(
        self, request: InferRequest, deadline: Deadline, shm: tuple[Region, Layout] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one request; return its outputs."""
        remaining = deadline.check(request.model)
        inputs, outputs = _tensors.build(self._module, request, shm)
        try:
            result = await self._client.infer(
                request.model,
                inputs,
                outputs=outputs,
                client_timeout=remaining,
                timeout=int(remaining * 1e6) if request.queue_timeout else None,
            )
        except Exception as error:
            raise translate(error, model=request.model) from None
        return _tensors.read(result, request, shm)

    async def stream(self, request: InferRequest, deadline: Deadline) -> AsyncIterator[dict[str, np.ndarray]]:
        """Send one request on its own stream and yield its responses; closing the iterator cancels it."""
        remaining = deadline.check(request.model)
        inputs, outputs = _tensors.build(self._module, request)

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": request.model, "inputs": inputs, "outputs": outputs}

        responses = self._client.stream_infer(one_request(), stream_timeout=remaining)
        try:
            async for result, error in responses:
                if error is not None:
                    raise translate(error, model=request.model)
                yield _tensors.read(result, request)
            raise UnavailableError(
                "the server closed the stream before the last response", model=request.model
            )
        except GenserveError:
            raise
        except Exception as error:
            raise translate(error, model=request.model) from None
        finally:
            responses.cancel()

    async def ready(self, deadline: Deadline) -> bool:
        """Whether the server is live and ready; ``False`` when it cannot be reached."""
        try:
            return bool(await self._call(lambda t: self._client.is_server_ready(client_timeout=t), deadline))
        except (UnavailableError, DeadlineExceededError):
            return False

    async def model_metadata(self, model: str, deadline: Deadline) -> dict[str, Any]:
        """Triton's metadata of a model, in its JSON form."""
        return await self._call(
            lambda t: self._client.get_model_metadata(model, as_json=True, client_timeout=t), deadline, model
        )

    async def repository_index(self, deadline: Deadline) -> list[dict[str, Any]]:
        """Triton's repository index: one entry per model version."""
        index = await self._call(
            lambda t: self._client.get_model_repository_index(as_json=True, client_timeout=t), deadline
        )
        return list(index.get("models", []))

    async def register_shm(
        self, region: Region, deadline: Deadline, headers: dict[str, str] | None = None
    ) -> None:
        """Register a system shared-memory region with the server (``headers``: the admin key)."""
        await self._call(
            lambda t: self._client.register_system_shared_memory(
                region.name, region.key, region.size, headers=headers, client_timeout=t
            ),
            deadline,
        )

    async def unregister_shm(
        self, name: str, deadline: Deadline, headers: dict[str, str] | None = None
    ) -> None:
        """Unregister a system shared-memory region."""
        await self._call(
            lambda t: self._client.unregister_system_shared_memory(name, headers=headers, client_timeout=t),
            deadline,
        )

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()

    async def _call(self, call: Any, deadline: Deadline, model: str | None = None) -> Any:
        try:
            return await call(deadline.check(model))
        except Exception as error:
            raise translate(error, model=model) from None
