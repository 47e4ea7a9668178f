"""The asyncio client: :class:`AsyncClient`, the twin of :class:`~genserve.client.Client`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, Literal

import numpy as np

from genserve.client import contract
from genserve.client._requests import (
    DiffusionStep,
    InferRequest,
    Labels,
    Prompts,
    Seeds,
    check_protocol,
    check_timeout,
    default_preview_every,
    diffusion_request,
    diffusion_step,
    gan_request,
    style_request,
    text_to_image_request,
    with_heartbeat,
    with_image_bound,
)
from genserve.client._retry import Deadline, RetryPolicy, call_with_retries_async, retry_wait
from genserve.client.errors import (
    GenserveError,
    ModelNotFoundError,
    UnavailableError,
    is_missing_shared_memory,
    is_restricted,
)
from genserve.client.images import ImageInput
from genserve.client.shm import Layout, SharedMemoryPool
from genserve.client.signatures import (
    ModelInfo,
    check_signature,
    endpoint_infos,
    model_infos,
    output_shapes,
)
from genserve.client.sync import DEFAULT_URLS


class AsyncClient:
    """An asyncio client for genserve's endpoints over gRPC or HTTP, with :class:`Client`'s methods.

    Use it from one event loop; connections open on the first call. Close it with
    ``await client.close()`` or use ``async with``. Arguments as for :class:`Client`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        protocol: Literal["grpc", "http"] = "grpc",
        timeout: float = 60.0,
        retries: int = 2,
        backoff: float = 0.05,
        shared_memory: bool = False,
        check_models: bool = True,
        admin_key: str | None = None,
    ):
        self.protocol = check_protocol(protocol)
        self.url = url or DEFAULT_URLS[protocol]
        self.timeout = check_timeout(timeout)
        self.retry_policy = RetryPolicy(retries=max(0, int(retries)), backoff=backoff)
        self._check = check_models
        # Shared-memory registration is an admin API on a genserve server: it needs the key.
        # (Triton expects it under another name over gRPC.)
        header = "admin-key" if protocol == "http" else "triton-grpc-protocol-admin-key"
        self._admin_headers = {header: admin_key} if admin_key else None
        self._rng = np.random.default_rng()
        self._shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        self._shm = SharedMemoryPool() if shared_memory else None
        self._transport_: Any = None
        self._closed = False

    @property
    def _transport(self) -> Any:
        if self._closed:
            raise GenserveError("the client is closed; make a new one")
        if self._transport_ is None:
            if self.protocol == "grpc":
                from genserve.client._aio_grpc import AsyncGrpcTransport

                self._transport_ = AsyncGrpcTransport(self.url)
            else:
                from genserve.client._aio_http import AsyncHttpTransport

                self._transport_ = AsyncHttpTransport(self.url)
        return self._transport_

    # -- endpoints --------------------------------------------------------------------------
    async def generate(
        self, labels: Labels, *, seeds: Seeds = None, timeout: float | None = None
    ) -> np.ndarray:
        """Generate one image per label with the GAN; see :meth:`Client.generate`."""
        return (await self._infer(gan_request(labels, seeds, self._rng), timeout))["image"]

    async def stylize(
        self,
        content: ImageInput,
        *,
        style: ImageInput,
        alpha: float = 1.0,
        size: int | None = None,
        method: str = "feed_forward",
        iterations: int | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Paint ``content`` in the style of ``style``; see :meth:`Client.stylize`."""
        return (await self._infer(style_request(content, style, alpha, size, method, iterations), timeout))[
            "image"
        ][0]

    async def diffuse(
        self,
        labels: Labels,
        *,
        seeds: Seeds = None,
        steps: int = int(contract.STEPS.default),
        guidance: float = float(contract.GUIDANCE.default),
        eta: float = float(contract.ETA.default),
        preview_every: int | None = None,
        on_preview: Callable[[DiffusionStep], Any] | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """Sample one image per label; see :meth:`Client.diffuse`.

        ``on_preview`` may be a plain function or a coroutine function. Cancelling the task that
        awaits this call cancels the sampling on the server.
        """
        if preview_every is None:
            preview_every = default_preview_every(steps) if on_preview is not None else 0
        stream = self.diffuse_stream(
            labels,
            seeds=seeds,
            steps=steps,
            guidance=guidance,
            eta=eta,
            preview_every=preview_every,
            timeout=timeout,
        )
        return await _final_images(stream, on_preview, contract.DIFFUSION_MODEL)

    def diffuse_stream(
        self,
        labels: Labels,
        *,
        seeds: Seeds = None,
        steps: int = int(contract.STEPS.default),
        guidance: float = float(contract.GUIDANCE.default),
        eta: float = float(contract.ETA.default),
        preview_every: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[DiffusionStep]:
        """An async iterator of previews and then the final images (``final`` set on the last).

        Leaving the ``async for`` early cancels the sampling on the server. Arguments as for
        :meth:`Client.diffuse`.
        """
        if preview_every is None:
            preview_every = default_preview_every(steps)
        request = diffusion_request(
            labels, seeds, steps=steps, guidance=guidance, eta=eta, preview_every=preview_every, rng=self._rng
        )
        return self._stream(request, steps, self._deadline(timeout))

    async def text_to_image(
        self,
        prompts: Prompts,
        *,
        seeds: Seeds = None,
        negative_prompts: Prompts | None = None,
        steps: int = int(contract.STEPS.default),
        init_images: Sequence[ImageInput] | None = None,
        guidance: float = float(contract.GUIDANCE.default),
        strength: float = float(contract.STRENGTH.default),
        eta: float = float(contract.ETA.default),
        preview_every: int | None = None,
        on_preview: Callable[[DiffusionStep], Any] | None = None,
        timeout: float | None = None,
    ) -> np.ndarray:
        """One image per prompt; see :meth:`Client.text_to_image`.

        ``on_preview`` may be a coroutine function; cancelling the awaiting task cancels the sampling.
        """
        if preview_every is None:
            preview_every = default_preview_every(steps) if on_preview is not None else 0
        request = text_to_image_request(
            prompts,
            seeds,
            negative_prompts,
            steps,
            guidance,
            eta,
            init_images,
            strength,
            preview_every,
            self._rng,
        )
        stream = self._stream(request, steps, self._deadline(timeout))
        return await _final_images(stream, on_preview, contract.TEXT_TO_IMAGE_MODEL)

    def text_to_image_stream(
        self,
        prompts: Prompts,
        *,
        seeds: Seeds = None,
        negative_prompts: Prompts | None = None,
        steps: int = int(contract.STEPS.default),
        init_images: Sequence[ImageInput] | None = None,
        guidance: float = float(contract.GUIDANCE.default),
        strength: float = float(contract.STRENGTH.default),
        eta: float = float(contract.ETA.default),
        preview_every: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[DiffusionStep]:
        """An async iterator of previews, then the final images; see :meth:`Client.text_to_image_stream`."""
        if preview_every is None:
            preview_every = default_preview_every(steps)
        request = text_to_image_request(
            prompts,
            seeds,
            negative_prompts,
            steps,
            guidance,
            eta,
            init_images,
            strength,
            preview_every,
            self._rng,
        )
        return self._stream(request, steps, self._deadline(timeout))

    # -- server -----------------------------------------------------------------------------
    async def ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server is up and every model it serves is ready; ``False`` if unreachable."""
        return await self._transport.ready(self._deadline(timeout))

    async def wait_ready(self, timeout: float = 60.0, *, interval: float = 0.1) -> None:
        """Wait until :meth:`ready` is true; see :meth:`Client.wait_ready`."""
        deadline = Deadline(check_timeout(timeout))
        while not await self.ready(timeout=max(0.05, min(1.0, deadline.remaining()))):
            if deadline.remaining() <= interval:
                raise UnavailableError(f"server at {self.url} not ready after {timeout:g} s")
            await asyncio.sleep(interval)

    async def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model version in the server's repository, with its state."""
        deadline = self._deadline(timeout)
        try:
            index = await call_with_retries_async(
                self._transport.repository_index, deadline=deadline, policy=self.retry_policy
            )
        except GenserveError as error:
            if not is_restricted(error):
                raise
            # The repository index is an admin API on a genserve server: list the endpoints it serves.
            metadata = {}
            for model in contract.ENDPOINTS:
                with contextlib.suppress(ModelNotFoundError):
                    metadata[model] = await self._transport.model_metadata(model, deadline)
            return endpoint_infos(metadata)
        return model_infos(index)

    async def check_models(
        self, models: Sequence[str] = contract.ENDPOINTS, *, timeout: float | None = None
    ) -> None:
        """Compare the endpoints' signatures with the server's; see :meth:`Client.check_models`."""
        deadline = self._deadline(timeout)
        for model in models:
            self._shapes.pop(model, None)
            await self._output_shapes(model, deadline, check=True)

    # -- lifecycle --------------------------------------------------------------------------
    async def close(self) -> None:
        """Close connections and release shared memory. Safe to call twice."""
        if self._closed:
            return
        transport, self._transport_ = self._transport_, None
        self._closed = True
        if transport is None:
            if self._shm is not None:
                self._shm.destroy()
            return
        try:
            if self._shm is not None:
                for region in self._shm.regions():
                    if region.registered:
                        with contextlib.suppress(GenserveError):
                            await transport.unregister_shm(region.name, Deadline(5.0), self._admin_headers)
                self._shm.destroy()
        finally:
            await transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r}, protocol={self.protocol!r}, timeout={self.timeout:g})"

    # -- internals --------------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else check_timeout(timeout))

    async def _output_shapes(
        self, model: str, deadline: Deadline, *, check: bool
    ) -> dict[str, tuple[int, ...]]:
        shapes = self._shapes.get(model)
        if shapes is None:
            transport = self._transport
            metadata = await call_with_retries_async(
                lambda d: transport.model_metadata(model, d), deadline=deadline, policy=self.retry_policy
            )
            shapes = check_signature(model, metadata) if check else output_shapes(metadata)
            self._shapes[model] = shapes
        return shapes

    async def _infer(self, request: InferRequest, timeout: float | None) -> dict[str, np.ndarray]:
        transport = self._transport
        deadline = self._deadline(timeout)
        if self._check or self._shm is not None:
            shapes = await self._output_shapes(request.model, deadline, check=self._check)
            if self._shm is not None:
                request = with_image_bound(request, shapes)
                return await call_with_retries_async(
                    lambda d: self._infer_shared(request, d), deadline=deadline, policy=self.retry_policy
                )
        return await call_with_retries_async(
            lambda d: transport.infer(request, d), deadline=deadline, policy=self.retry_policy
        )

    async def _infer_shared(self, request: InferRequest, deadline: Deadline) -> dict[str, np.ndarray]:
        assert self._shm is not None
        transport = self._transport
        layout = Layout.plan(request)
        region = self._shm.acquire(layout.size)
        try:
            if not region.registered:
                await transport.register_shm(region, deadline, self._admin_headers)
                region.registered = True
            try:
                return await transport.infer(request, deadline, (region, layout))
            except GenserveError as error:
                if not is_missing_shared_memory(error):
                    raise
            self._shm.forget_registrations()
            await transport.register_shm(region, deadline, self._admin_headers)
            region.registered = True
            return await transport.infer(request, deadline, (region, layout))
        finally:
            self._shm.release(region)

    async def _stream(
        self, request: InferRequest, steps: int, deadline: Deadline
    ) -> AsyncIterator[DiffusionStep]:
        transport = self._transport
        sent, hidden = with_heartbeat(request, steps) if self.protocol == "http" else (request, False)
        attempt = 0
        while True:
            delivered = False
            shapes: dict[str, tuple[int, ...]] = {}
            try:
                if self.protocol == "http" or self._check:
                    shapes = await self._output_shapes(request.model, deadline, check=self._check)
                if self.protocol == "http":
                    responses = transport.stream(sent, deadline, shapes)
                else:
                    responses = transport.stream(sent, deadline)
                async with contextlib.aclosing(responses):
                    async for outputs in responses:
                        step = diffusion_step(outputs, steps)
                        if hidden and not step.final:
                            continue
                        delivered = True
                        yield step
                        if step.final:
                            return
            except GenserveError as error:
                wait = None if delivered else retry_wait(error, attempt, deadline, self.retry_policy)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1


async def _final_images(
    stream: AsyncIterator[DiffusionStep], on_preview: Callable[[DiffusionStep], Any] | None, model: str
) -> np.ndarray:
    """The final images of a sampling stream, awaiting ``on_preview`` on each preview; closes the stream."""
    async with contextlib.aclosing(stream):
        async for step in stream:
            if step.final:
                return step.images
            if on_preview is not None:
                result = on_preview(step)
                if inspect.isawaitable(result):
                    await result
    raise UnavailableError("the stream ended without images", model=model)
