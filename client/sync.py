"""The blocking client: :class:`Client`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
from genserve.client._retry import Deadline, RetryPolicy, call_with_retries, retry_wait
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

DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}


class Client:
    """A blocking client for genserve's endpoints over gRPC or HTTP.

    Every call is checked against the protocol contract before it is sent, raises only
    :class:`~genserve.client.GenserveError` subclasses, and is retried on overload or unavailability
    within its deadline. Seeds make calls idempotent; calls without seeds draw them once, so a retry
    asks for the same images.

    Over gRPC one client may be shared by threads and greenlets. Over HTTP it keeps one connection
    pool per thread (per greenlet under gevent) that calls it. Close it when done, or use it as a
    context manager: that closes its connections and releases its shared memory.

    Args:
        url: ``host:port`` of the server; defaults to the local server's port for ``protocol``.
        protocol: ``"grpc"`` or ``"http"``.
        timeout: Default deadline of a call in seconds, retries included.
        retries: Further attempts after a retryable error (overloaded, unavailable).
        backoff: First retry's maximum wait in seconds; doubles per attempt, with full jitter.
        shared_memory: Move pixels and images through Triton system shared memory (the server must
            run on this host).
        check_models: Compare each endpoint's signature with the server's metadata before its first call.
        admin_key: The server's admin key; needed with ``shared_memory`` (registration is restricted).
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
        self._lock = threading.Lock()
        self._closed = False
        if protocol == "grpc":
            from genserve.client._grpc import GrpcTransport

            self._transport: Any = GrpcTransport(self.url)
        else:
            from genserve.client._http import HttpTransport

            self._transport = HttpTransport(self.url)

    # -- endpoints --------------------------------------------------------------------------
    def generate(self, labels: Labels, *, seeds: Seeds = None, timeout: float | None = None) -> np.ndarray:
        """Generate one image per label with the GAN.

        Args:
            labels: Digit labels 0..9, one per image (up to 256).
            seeds: One seed per image (0..2**63-1); the same seed and label give the same image.
                ``None`` draws random seeds.
            timeout: Deadline in seconds (default: the client's).

        Returns:
            uint8 images ``[N, H, W, C]``.

        Raises:
            InvalidInputError: An argument is out of range.
            GenserveError: See the exception hierarchy.
        """
        return self._infer(gan_request(labels, seeds, self._rng), timeout)["image"]

    def stylize(
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
        """Paint ``content`` in the style of ``style``.

        Args:
            content: The photo: a file path, encoded bytes (PNG, JPEG), a PIL image or uint8 ``[H, W, 3]``.
            style: The style image, in any of the same forms.
            alpha: Style strength, 0 (content only) to 1.
            size: Longer side of the result, one of 256 or 512; ``None`` lets the server choose.
            method: ``"feed_forward"`` (the trained network, about a second) or ``"optimize"``
                (Gatys et al.'s optimization of the image: slower, ``iterations`` steps).
            iterations: Optimization steps for ``"optimize"`` (1..300, default 50).
            timeout: Deadline in seconds (default: the client's).

        Returns:
            uint8 ``[h, w, 3]``: the content's aspect ratio with its longer side at the size used.
        """
        return self._infer(style_request(content, style, alpha, size, method, iterations), timeout)["image"][
            0
        ]

    def diffuse(
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
        """Sample one image per label with the diffusion model.

        Args:
            labels: Digit labels 0..9, one per image (up to 16).
            seeds: One seed per image; ``None`` draws random seeds.
            steps: DDIM steps (1..1000).
            guidance: Classifier-free guidance scale (0 = none).
            eta: DDIM noise, 0 (deterministic) to 1.
            preview_every: Steps between previews; default about ten previews when ``on_preview`` is set.
            on_preview: Called with each preview (:class:`DiffusionStep`). If it raises, the sampling
                is cancelled on the server and the exception propagates.
            timeout: Deadline in seconds (default: the client's). When it passes, the sampling is
                cancelled on the server and :class:`DeadlineExceededError` is raised.

        Returns:
            uint8 images ``[N, H, W, C]``.
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
        return _final_images(stream, on_preview, contract.DIFFUSION_MODEL)

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
    ) -> Iterator[DiffusionStep]:
        """Sample like :meth:`diffuse`, yielding each preview and then the final images.

        The last item has ``final`` set. Closing the iterator early (``break``, ``close()``) cancels
        the sampling on the server. Arguments as for :meth:`diffuse`.
        """
        if preview_every is None:
            preview_every = default_preview_every(steps)
        request = diffusion_request(
            labels, seeds, steps=steps, guidance=guidance, eta=eta, preview_every=preview_every, rng=self._rng
        )
        return self._stream(request, steps, self._deadline(timeout))

    def text_to_image(
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
        """One image per prompt with the latent text-to-image model (``text_to_image`` endpoint).

        Args:
            prompts: One prompt or a list (up to 8), one image each. A prompt longer than the text
                encoder takes is rejected by the server, not cut.
            negative_prompts: What guidance steers away from: one string for every prompt or one per
                prompt; default the empty prompt.
            seeds: One seed per prompt; ``None`` draws random seeds. The same prompt, seed and settings
                give the same bytes, whatever else the server is doing.
            steps: DDIM steps (1..1000).
            guidance: Classifier-free guidance scale (1 = the prompt alone, 0 = unconditional).
            eta: DDIM noise, 0 (deterministic) to 1.
            init_images: Image-to-image: one start image per prompt (a path, encoded bytes, a PIL image
                or uint8 ``[H, W, 3]``), of the model's image size.
            strength: With ``init_images``: 1 noises them fully, 0 returns them through the VAE unchanged.
            preview_every: Steps between previews; default about ten previews when ``on_preview`` is set.
            on_preview: Called with each preview (:class:`DiffusionStep`); if it raises, the sampling is
                cancelled on the server and the exception propagates.
            timeout: Deadline in seconds (default: the client's); when it passes the sampling is cancelled.

        Returns:
            uint8 RGB images ``[N, H, W, 3]``.
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
        return _final_images(stream, on_preview, contract.TEXT_TO_IMAGE_MODEL)

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
    ) -> Iterator[DiffusionStep]:
        """Sample like :meth:`text_to_image`, yielding each preview (decoded) and then the final images.

        The last item has ``final`` set; closing the iterator early cancels the sampling on the server.
        """
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
    def ready(self, *, timeout: float | None = None) -> bool:
        """Whether the server is up and every model it serves is ready; ``False`` if unreachable."""
        self._ensure_open()
        return self._transport.ready(self._deadline(timeout))

    def wait_ready(self, timeout: float = 60.0, *, interval: float = 0.1) -> None:
        """Block until :meth:`ready` is true.

        Raises:
            UnavailableError: The server is not ready after ``timeout`` seconds.
        """
        deadline = Deadline(check_timeout(timeout))
        while not self.ready(timeout=max(0.05, min(1.0, deadline.remaining()))):
            if deadline.remaining() <= interval:
                raise UnavailableError(f"server at {self.url} not ready after {timeout:g} s")
            time.sleep(interval)

    def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """Every model version in the server's repository, with its state."""
        self._ensure_open()
        deadline = self._deadline(timeout)
        try:
            index = call_with_retries(
                self._transport.repository_index, deadline=deadline, policy=self.retry_policy
            )
        except GenserveError as error:
            if not is_restricted(error):
                raise
            # The repository index is an admin API on a genserve server: list the endpoints it serves.
            metadata = {}
            for model in contract.ENDPOINTS:
                with contextlib.suppress(ModelNotFoundError):
                    metadata[model] = self._transport.model_metadata(model, deadline)
            return endpoint_infos(metadata)
        return model_infos(index)

    def check_models(
        self, models: Sequence[str] = contract.ENDPOINTS, *, timeout: float | None = None
    ) -> None:
        """Compare the endpoints' signatures on the server with what this client sends and reads.

        Raises:
            ModelNotFoundError: The server does not serve one of ``models``.
            SignatureMismatchError: Naming every difference.
        """
        deadline = self._deadline(timeout)
        for model in models:
            self._shapes.pop(model, None)
            self._output_shapes(model, deadline, check=True)

    # -- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        """Close connections and release shared memory. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._shm is not None:
                for region in self._shm.regions():
                    if region.registered:
                        with contextlib.suppress(GenserveError):
                            self._transport.unregister_shm(region.name, Deadline(5.0), self._admin_headers)
                self._shm.destroy()
        finally:
            self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, protocol={self.protocol!r}, timeout={self.timeout:g})"

    # -- internals --------------------------------------------------------------------------
    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(self.timeout if timeout is None else check_timeout(timeout))

    def _ensure_open(self) -> None:
        if self._closed:
            raise GenserveError("the client is closed; make a new one")

    def _output_shapes(self, model: str, deadline: Deadline, *, check: bool) -> dict[str, tuple[int, ...]]:
        shapes = self._shapes.get(model)
        if shapes is None:
            metadata = call_with_retries(
                lambda d: self._transport.model_metadata(model, d),
                deadline=deadline,
                policy=self.retry_policy,
            )
            shapes = check_signature(model, metadata) if check else output_shapes(metadata)
            self._shapes[model] = shapes
        return shapes

    def _infer(self, request: InferRequest, timeout: float | None) -> dict[str, np.ndarray]:
        self._ensure_open()
        deadline = self._deadline(timeout)
        if self._check or self._shm is not None:
            shapes = self._output_shapes(request.model, deadline, check=self._check)
            if self._shm is not None:
                request = with_image_bound(request, shapes)
                return call_with_retries(
                    lambda d: self._infer_shared(request, d), deadline=deadline, policy=self.retry_policy
                )
        return call_with_retries(
            lambda d: self._transport.infer(request, d), deadline=deadline, policy=self.retry_policy
        )

    def _infer_shared(self, request: InferRequest, deadline: Deadline) -> dict[str, np.ndarray]:
        assert self._shm is not None
        layout = Layout.plan(request)
        region = self._shm.acquire(layout.size)
        try:
            if not region.registered:
                self._transport.register_shm(region, deadline, self._admin_headers)
                region.registered = True
            try:
                return self._transport.infer(request, deadline, (region, layout))
            except GenserveError as error:
                if not is_missing_shared_memory(error):
                    raise
            # The server lost the registrations (it restarted): register again, once.
            self._shm.forget_registrations()
            self._transport.register_shm(region, deadline, self._admin_headers)
            region.registered = True
            return self._transport.infer(request, deadline, (region, layout))
        finally:
            self._shm.release(region)

    def _stream(self, request: InferRequest, steps: int, deadline: Deadline) -> Iterator[DiffusionStep]:
        self._ensure_open()
        sent, hidden = with_heartbeat(request, steps) if self.protocol == "http" else (request, False)
        attempt = 0
        while True:
            delivered = False
            shapes: dict[str, tuple[int, ...]] = {}
            try:
                if self.protocol == "http" or self._check:
                    shapes = self._output_shapes(request.model, deadline, check=self._check)
                if self.protocol == "http":
                    responses = self._transport.stream(sent, deadline, shapes)
                else:
                    responses = self._transport.stream(sent, deadline)
                with contextlib.closing(responses):
                    for outputs in responses:
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
            time.sleep(wait)
            attempt += 1


def _final_images(
    stream: Iterator[DiffusionStep], on_preview: Callable[[DiffusionStep], Any] | None, model: str
) -> np.ndarray:
    """The final images of a sampling stream, handing each preview to ``on_preview``; closes the stream."""
    with contextlib.closing(stream):
        for step in stream:
            if step.final:
                return step.images
            if on_preview is not None:
                on_preview(step)
    raise UnavailableError("the stream ended without images", model=model)
