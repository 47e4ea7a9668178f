"""Protocol-neutral requests: argument checks against the contract, request tensors, result decoding.

Everything here is plain numpy; the transports turn an :class:`InferRequest` into gRPC or HTTP calls.
Checks use the contract's bounds so that the messages read like the server's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genserve.client import contract
from genserve.client.errors import InvalidInputError, checked
from genserve.client.images import ImageInput, encoded_image, image_tensor

Labels = int | Sequence[int] | np.ndarray
Seeds = int | Sequence[int] | np.ndarray | None
Prompts = str | bytes | Sequence[str | bytes]


@dataclass(frozen=True)
class InferRequest:
    """One inference request, ready for any transport.

    Attributes:
        model: Endpoint name.
        inputs: Input tensors by name, with the exact shapes and dtypes the endpoint takes.
        outputs: Output names to request.
        output_bounds: Largest byte size of an output, where known (lets it land in shared memory).
        queue_timeout: Whether to pass the remaining deadline as the server's queue timeout.
    """

    model: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    output_bounds: dict[str, int] = field(default_factory=dict)
    queue_timeout: bool = True


@dataclass(frozen=True)
class DiffusionStep:
    """One response of a diffusion call: a preview, or the final images.

    Attributes:
        step: Sampling steps done so far.
        steps: Sampling steps in all.
        images: uint8 images ``[N, H, W, C]`` at this step.
    """

    step: int
    steps: int
    images: np.ndarray

    @property
    def final(self) -> bool:
        """Whether these are the finished images."""
        return self.step >= self.steps


def _checked(bound: contract.Bound, values: np.ndarray) -> np.ndarray:
    checked(bound.check, values)
    return values


def int_rows(values: Labels, bound: contract.Bound, endpoint: contract.Endpoint) -> np.ndarray:
    """Integers for a per-image input as int64 ``[N]``, checked against ``bound`` and the endpoint.

    Raises:
        InvalidInputError: naming the input and its allowed values.
    """
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidInputError(
            f"{bound.name} must be one integer or a 1-D sequence; got shape {array.shape}"
        )
    if array.size and array.dtype.kind not in "iu":
        raise InvalidInputError(f"{bound.name} must be integers; got {array.dtype}")
    checked(endpoint.check_images, array.size, bound.name)
    return _checked(bound, array).astype(np.int64)


def seed_rows(seeds: Seeds, count: int, rng: np.random.Generator, endpoint: contract.Endpoint) -> np.ndarray:
    """One int64 seed per image: the given ones, checked, or ``count`` fresh random ones.

    Seeds are drawn here, once per call, so that every retry of the call asks for the same images.
    """
    if seeds is None:
        return rng.integers(0, contract.MAX_SEED, size=count, endpoint=True, dtype=np.int64)
    array = int_rows(seeds, contract.SEED, endpoint)
    if array.size != count:
        raise InvalidInputError(f"seed has {array.size} values; expected {count}, one per label")
    return array


def scalar(value: float, bound: contract.Bound, kind: str) -> np.ndarray:
    """A per-request scalar as a ``[1]`` array of ``kind`` (``"int"`` or ``"float"``), range-checked."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{bound.name} must be a number; got {type(value).__name__}")
    if kind == "int":
        if isinstance(value, (float, np.floating)):
            if not np.isfinite(value):
                raise InvalidInputError(f"{bound.name} must be finite; allowed range {bound.describe()}")
            if not float(value).is_integer():
                raise InvalidInputError(f"{bound.name} must be an integer; got {value}")
        return _checked(bound, np.array([int(value)], dtype=np.int64)).astype(np.int32)
    return _checked(bound, np.array([value], dtype=np.float64)).astype(np.float32)


# -- endpoints --------------------------------------------------------------------------------
def gan_request(labels: Labels, seeds: Seeds, rng: np.random.Generator) -> InferRequest:
    """The ``gan`` request for one image per label."""
    label = int_rows(labels, contract.LABEL, contract.GAN)
    seed = seed_rows(seeds, label.size, rng, contract.GAN)
    return InferRequest(
        contract.GAN.name,
        {"seed": seed.reshape(-1, 1), "label": label.reshape(-1, 1)},
        ("image",),
    )


def style_request(
    content: ImageInput,
    style: ImageInput,
    alpha: float,
    size: int | None,
    method: str = contract.STYLE_METHODS[0],
    iterations: int | None = None,
) -> InferRequest:
    """The ``style_transfer`` request for one content and one style image.

    ``method`` and ``iterations`` go on the wire only when they differ from the feed-forward default.
    """
    if method not in contract.STYLE_METHODS:
        raise InvalidInputError(
            f"method={method!r} is not allowed; allowed: {', '.join(contract.STYLE_METHODS)}"
        )
    if iterations is not None and method != "optimize":
        raise InvalidInputError("iterations applies to method='optimize' only")
    inputs = dict([image_tensor(content, "content"), image_tensor(style, "style")])
    if method != contract.STYLE_METHODS[0]:
        inputs["method"] = np.array([[method.encode()]], dtype=np.object_)
    if iterations is not None:
        inputs["iterations"] = scalar(iterations, contract.ITERATIONS, "int").reshape(1, 1)
    inputs["alpha"] = scalar(alpha, contract.ALPHA, "float").reshape(1, 1)
    if size is not None:
        size = checked(contract.STYLE.input("size").check_choice, size)
        inputs["size"] = np.array([[size]], dtype=np.int32)
    side = size if size is not None else max(contract.STYLE_SIZES)
    return InferRequest(contract.STYLE.name, inputs, ("image",), output_bounds={"image": side * side * 3})


def diffusion_request(
    labels: Labels,
    seeds: Seeds,
    *,
    steps: int,
    guidance: float,
    eta: float,
    preview_every: int,
    rng: np.random.Generator,
) -> InferRequest:
    """The ``diffusion`` request (decoupled: no batch dimension, scalars as ``[1]``)."""
    label = int_rows(labels, contract.LABEL, contract.DIFFUSION)
    return InferRequest(
        contract.DIFFUSION.name,
        {
            "label": label,
            "seed": seed_rows(seeds, label.size, rng, contract.DIFFUSION),
            "steps": scalar(steps, contract.STEPS, "int"),
            "guidance": scalar(guidance, contract.GUIDANCE, "float"),
            "eta": scalar(eta, contract.ETA, "float"),
            "preview_every": scalar(preview_every, contract.PREVIEW_EVERY, "int"),
        },
        ("image", "step"),
        queue_timeout=False,
    )


def prompt_rows(prompts: Prompts, name: str, endpoint: contract.Endpoint) -> np.ndarray:
    """Prompts as a BYTES array ``[N]`` of UTF-8 text, one image each.

    Raises:
        InvalidInputError: naming the argument, for a wrong type, bytes that are not UTF-8, or too many.
    """
    items = [prompts] if isinstance(prompts, (str, bytes)) else list(prompts)
    checked(endpoint.check_images, len(items), name)
    rows = []
    for row, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, bytes):
            raise InvalidInputError(f"{name}[{row}] must be a string; got {type(item).__name__}")
        try:
            item.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{name}[{row}] is not valid UTF-8") from None
        rows.append(item)
    return np.array(rows, dtype=np.object_)


def text_to_image_request(
    prompts: Prompts,
    seeds: Seeds,
    negative_prompts: Prompts | None,
    steps: int,
    guidance: float,
    eta: float,
    init_images: Sequence[ImageInput] | None,
    strength: float,
    preview_every: int,
    rng: np.random.Generator,
) -> InferRequest:
    """The ``text_to_image`` request (decoupled: no batch dimension, scalars as ``[1]``).

    One image per prompt; ``negative_prompts`` as one string for every prompt or one per prompt;
    ``init_images`` one per prompt, sent encoded (arrays and PIL images as PNG).
    """
    prompt = prompt_rows(prompts, "prompt", contract.TEXT_TO_IMAGE)
    rows = len(prompt)
    inputs = {
        "prompt": prompt,
        "seed": seed_rows(seeds, rows, rng, contract.TEXT_TO_IMAGE),
        "steps": scalar(steps, contract.STEPS, "int"),
        "guidance": scalar(guidance, contract.GUIDANCE, "float"),
        "eta": scalar(eta, contract.ETA, "float"),
        "preview_every": scalar(preview_every, contract.PREVIEW_EVERY, "int"),
    }
    if negative_prompts is not None:
        if isinstance(negative_prompts, (str, bytes)):
            negative_prompts = [negative_prompts] * rows
        negative = prompt_rows(negative_prompts, "negative_prompt", contract.TEXT_TO_IMAGE)
        if len(negative) != rows:
            raise InvalidInputError(
                f"negative_prompt has {len(negative)} values; expected {rows}, one per prompt"
            )
        inputs["negative_prompt"] = negative
    if init_images is not None:
        images = [encoded_image(image, f"init_image[{i}]") for i, image in enumerate(init_images)]
        if len(images) != rows:
            raise InvalidInputError(f"init_image has {len(images)} values; expected {rows}, one per prompt")
        inputs["init_image"] = np.array(images, dtype=np.object_)
        inputs["strength"] = scalar(strength, contract.STRENGTH, "float")
    return InferRequest(contract.TEXT_TO_IMAGE_MODEL, inputs, ("image", "step"), queue_timeout=False)


def diffusion_step(outputs: dict[str, np.ndarray], steps: int) -> DiffusionStep:
    """A decoded diffusion response."""
    return DiffusionStep(int(np.asarray(outputs["step"]).reshape(-1)[0]), steps, outputs["image"])


def default_preview_every(steps: int) -> int:
    """About ten previews per call when the caller watches them."""
    return max(1, steps // 10)


def with_image_bound(request: InferRequest, shapes: dict[str, tuple[int, ...]]) -> InferRequest:
    """The request with a byte bound on its ``image`` output, from the model's output dims if fixed."""
    if "image" in request.output_bounds or "image" not in shapes:
        return request
    dims = shapes["image"][1:]
    if any(d < 0 for d in dims):
        return request
    rows = len(next(iter(request.inputs.values())))
    bounds = {**request.output_bounds, "image": rows * int(np.prod(dims))}
    return InferRequest(request.model, request.inputs, request.outputs, bounds, request.queue_timeout)


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is ``grpc`` or ``http``."""
    if protocol not in ("grpc", "http"):
        raise InvalidInputError(f"protocol={protocol!r} is not allowed; allowed 'grpc' or 'http'")
    return protocol


def check_timeout(timeout: float, name: str = "timeout") -> float:
    """``timeout`` if it is a positive number of seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds; got {timeout!r}")
    return float(timeout)


def with_heartbeat(request: InferRequest, steps: int) -> tuple[InferRequest, bool]:
    """For HTTP streams: ask for previews even when the caller wants none; say whether to hide them.

    Triton's HTTP server notices that a client went away only when it writes a response, so a
    stream without previews could not be cancelled until it finished. Small regular previews keep
    cancellation (and deadlines) prompt; the client drops the ones nobody asked for.
    """
    if int(request.inputs["preview_every"][0]) != 0:
        return request, False
    inputs = {**request.inputs, "preview_every": np.array([max(1, steps // 50)], dtype=np.int32)}
    return InferRequest(
        request.model, inputs, request.outputs, request.output_bounds, request.queue_timeout
    ), True
