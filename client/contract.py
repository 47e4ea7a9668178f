"""The protocol contract between genserve's client, its server-side pipelines, export and tests.

Endpoint and tensor names, dtypes and bounds are written here once; everything else reads them.
This module needs numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# -- endpoints ----------------------------------------------------------------------------------
GAN_MODEL = "gan"
STYLE_MODEL = "style_transfer"
DIFFUSION_MODEL = "diffusion"
TEXT_TO_IMAGE_MODEL = "text_to_image"
ENDPOINTS = (GAN_MODEL, STYLE_MODEL, DIFFUSION_MODEL, TEXT_TO_IMAGE_MODEL)

NUM_CLASSES = 10
"""Digit labels 0..9; the diffusion UNet also takes label ``NUM_CLASSES`` as "no label" (guidance)."""

GAN_MAX_BATCH = 256
"""Rows in one ``gan`` request, and the generator's export profile maximum."""

DIFFUSION_MAX_IMAGES = 16
"""Images in one ``diffusion`` request (guidance doubles them to the UNet's 32 rows per call)."""

TEXT_TO_IMAGE_MAX_IMAGES = 8
"""Prompts (one image each) in one ``text_to_image`` request; guidance doubles them to 16 UNet rows."""

MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Bound:
    """An inclusive numeric range for a per-request scalar input.

    Attributes:
        name: Input name.
        low: Smallest allowed value.
        high: Largest allowed value.
        default: Value used when the request leaves the input out.
    """

    name: str
    low: float
    high: float
    default: float | None = None

    def check(self, values: np.ndarray) -> None:
        """Raise ``ValueError`` naming the input and its range if a value is outside it or not finite."""
        values = np.asarray(values)
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise ValueError(f"{self.name} must be finite; allowed range {self.describe()}")
        if values.size and (values.min() < self.low or values.max() > self.high):
            bad = values[(values < self.low) | (values > self.high)].flat[0]
            raise ValueError(f"{self.name}={bad} is out of range; allowed range {self.describe()}")

    def describe(self) -> str:
        """The range as text, e.g. ``[1, 100]``."""
        low, high = (int(v) if float(v).is_integer() else v for v in (self.low, self.high))
        return f"[{low}, {high}]"


LABEL = Bound("label", 0, NUM_CLASSES - 1)
SEED = Bound("seed", 0, MAX_SEED)
ALPHA = Bound("alpha", 0.0, 1.0, default=1.0)
STEPS = Bound("steps", 1, 1000, default=20)
"""The protocol's cap on DDIM steps; the served model allows at most its schedule's length (it checks)."""
GUIDANCE = Bound("guidance", 0.0, 20.0, default=2.0)
ETA = Bound("eta", 0.0, 1.0, default=0.0)
PREVIEW_EVERY = Bound("preview_every", 0, 1000, default=0)
STRENGTH = Bound("strength", 0.0, 1.0, default=0.8)
"""Image-to-image: how far the init image is noised (1 = fully, like text-to-image; 0 = unchanged)."""

ITERATIONS = Bound("iterations", 1, 300, default=50)
"""Optimization steps of ``style_transfer``'s ``method="optimize"`` (ignored by the feed-forward mode)."""
STYLE_METHODS = ("feed_forward", "optimize")
"""``style_transfer``'s ``method`` input: the trained network (default) or Gatys et al.'s optimization."""

STYLE_SIZES = (256, 512)
"""Longer-side sizes style-transfer inputs are resized to, so requests of one size batch together."""
MAX_ENCODED_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
MIN_IMAGE_SIDE = 8
"""The shortest side an input image may have (the style network downsamples by 8)."""


def check_encoded_image(size: int, name: str) -> None:
    """Refuse encoded image bytes that are empty or more than :data:`MAX_ENCODED_IMAGE_BYTES`.

    Raises:
        ValueError: naming the input.
    """
    if size == 0:
        raise ValueError(f"{name}: encoded image is empty")
    if size > MAX_ENCODED_IMAGE_BYTES:
        raise ValueError(f"{name}: encoded image has {size} bytes; at most {MAX_ENCODED_IMAGE_BYTES} allowed")


def check_image_size(width: int, height: int, name: str) -> None:
    """Refuse images with more than :data:`MAX_IMAGE_PIXELS` pixels or a side under :data:`MIN_IMAGE_SIDE`.

    Raises:
        ValueError: naming the input.
    """
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}: image is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels allowed")
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(
            f"{name}: image is {width}x{height}; each side must be at least {MIN_IMAGE_SIDE} pixels"
        )


def check_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """Check uint8 ``[H, W, 3]`` pixels (dtype, shape, size); return them.

    Raises:
        ValueError: naming the input and what is wrong.
    """
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: expected uint8 [H, W, 3] pixels; got {array.dtype} {list(array.shape)}")
    check_image_size(array.shape[1], array.shape[0], name)
    return array


# -- endpoints: the typed description that each endpoint's config.pbtxt mirrors ----------------
NUMPY_DTYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "BYTES": np.object_,
}
"""KServe datatype -> numpy type, for the datatypes genserve's endpoints use."""


@dataclass(frozen=True)
class Tensor:
    """One input or output of an endpoint, as its ``config.pbtxt`` declares it.

    Attributes:
        name: Tensor name.
        datatype: KServe datatype (``INT64``, ``FP32``, ``UINT8``, ``BYTES``, ...).
        dims: Shape past the batch dimension (the config's ``dims``); ``-1`` is any size. Where the
            model decides a size (an image's height, say), the contract says ``-1`` and the model
            repository's config says the size.
        optional: Whether a request may leave it out.
        bound: The range its values must lie in, if any.
        choices: The only values it may take, if only a few are allowed.
    """

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = False
    bound: Bound | None = None
    choices: tuple[int, ...] = ()

    @property
    def numpy_dtype(self) -> type:
        """The numpy type of its values."""
        return NUMPY_DTYPES[self.datatype]

    def check_choice(self, value: object) -> int:
        """``value`` as an int if it is one of :attr:`choices`.

        Raises:
            ValueError: naming the input and its allowed values.
        """
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            allowed = False
        else:
            allowed = int(value) in self.choices
        if not allowed:
            raise ValueError(f"{self.name}={value} is not allowed; allowed {self.name}s {list(self.choices)}")
        return int(value)


@dataclass(frozen=True)
class Endpoint:
    """What one endpoint takes and returns; its ``config.pbtxt`` must say the same (a test compares).

    Attributes:
        name: Model name on the server.
        max_batch_size: The config's ``max_batch_size``; ``0`` means tensors carry no batch dimension.
        max_images: Images one request may ask for.
        inputs: Input tensors, in config order.
        outputs: Output tensors, in config order.
        decoupled: Whether responses stream (the config's ``model_transaction_policy``).
    """

    name: str
    max_batch_size: int
    max_images: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    decoupled: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names, in config order."""
        return tuple(tensor.name for tensor in self.inputs)

    def input(self, name: str) -> Tensor:
        """The input called ``name``."""
        return next(tensor for tensor in self.inputs if tensor.name == name)

    def shape(self, tensor: Tensor) -> tuple[int, ...]:
        """A tensor's shape as the server's metadata lists it: ``-1`` for the batch dimension first."""
        return (-1, *tensor.dims) if self.max_batch_size > 0 else tensor.dims

    def check_images(self, count: int, name: str = "label") -> None:
        """Refuse a request for no images or more than :attr:`max_images`.

        Raises:
            ValueError: naming the input that counts the images.
        """
        if not 1 <= count <= self.max_images:
            raise ValueError(f"{name} has {count} values; allowed 1..{self.max_images} images per request")


GAN = Endpoint(
    GAN_MODEL,
    max_batch_size=GAN_MAX_BATCH,
    max_images=GAN_MAX_BATCH,
    inputs=(Tensor("seed", "INT64", (1,), bound=SEED), Tensor("label", "INT64", (1,), bound=LABEL)),
    outputs=(Tensor("image", "UINT8", (-1, -1, -1)),),
)
STYLE = Endpoint(
    STYLE_MODEL,
    max_batch_size=8,
    max_images=8,
    inputs=(
        Tensor("content", "BYTES", (1,), optional=True),
        Tensor("content_pixels", "UINT8", (-1, -1, 3), optional=True),
        Tensor("style", "BYTES", (1,), optional=True),
        Tensor("style_pixels", "UINT8", (-1, -1, 3), optional=True),
        Tensor("alpha", "FP32", (1,), optional=True, bound=ALPHA),
        Tensor("size", "INT32", (1,), optional=True, choices=STYLE_SIZES),
        Tensor("method", "BYTES", (1,), optional=True),
        Tensor("iterations", "INT32", (1,), optional=True, bound=ITERATIONS),
    ),
    outputs=(
        Tensor("image", "UINT8", (-1, -1, 3)),
        Tensor("image_png", "BYTES", (1,)),
        Tensor("size", "INT32", (1,)),
    ),
)
DIFFUSION = Endpoint(
    DIFFUSION_MODEL,
    max_batch_size=0,
    max_images=DIFFUSION_MAX_IMAGES,
    inputs=(
        Tensor("label", "INT64", (-1,), bound=LABEL),
        Tensor("seed", "INT64", (-1,), bound=SEED),
        Tensor("steps", "INT32", (1,), optional=True, bound=STEPS),
        Tensor("guidance", "FP32", (1,), optional=True, bound=GUIDANCE),
        Tensor("eta", "FP32", (1,), optional=True, bound=ETA),
        Tensor("preview_every", "INT32", (1,), optional=True, bound=PREVIEW_EVERY),
    ),
    outputs=(Tensor("image", "UINT8", (-1, -1, -1, -1)), Tensor("step", "INT32", (1,))),
    decoupled=True,
)
TEXT_TO_IMAGE = Endpoint(
    TEXT_TO_IMAGE_MODEL,
    max_batch_size=0,
    max_images=TEXT_TO_IMAGE_MAX_IMAGES,
    inputs=(
        Tensor("prompt", "BYTES", (-1,)),
        Tensor("negative_prompt", "BYTES", (-1,), optional=True),
        Tensor("seed", "INT64", (-1,), bound=SEED),
        Tensor("steps", "INT32", (1,), optional=True, bound=STEPS),
        Tensor("guidance", "FP32", (1,), optional=True, bound=GUIDANCE),
        Tensor("eta", "FP32", (1,), optional=True, bound=ETA),
        Tensor("init_image", "BYTES", (-1,), optional=True),
        Tensor("strength", "FP32", (1,), optional=True, bound=STRENGTH),
        Tensor("preview_every", "INT32", (1,), optional=True, bound=PREVIEW_EVERY),
    ),
    outputs=(Tensor("image", "UINT8", (-1, -1, -1, 3)), Tensor("step", "INT32", (1,))),
    decoupled=True,
)
CONTRACT: dict[str, Endpoint] = {
    endpoint.name: endpoint for endpoint in (GAN, STYLE, DIFFUSION, TEXT_TO_IMAGE)
}
"""Every endpoint by name."""


# -- image value range ------------------------------------------------------------------------
def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map model output in [-1, 1] to uint8 [0, 255], rounding to nearest; NCHW in, NHWC out."""
    scaled = (np.clip(images, -1.0, 1.0) + 1.0) * 127.5
    return np.ascontiguousarray(np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1))


def from_uint8(images: np.ndarray) -> np.ndarray:
    """Map uint8 NHWC images to float32 NCHW in [-1, 1], the models' input range."""
    return np.ascontiguousarray(images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)


# -- seeded noise -------------------------------------------------------------------------------
# The noise uses only operations IEEE 754 rounds exactly (integer ops, +, -, *, /, sqrt, rint and
# exact scalings by powers of two), never libm's log/sin/cos, whose last bits differ between numpy
# builds and ONNX Runtime. So the same steps written as ONNX ops (genserve.export.gan_graph) give
# the same latents bit for bit, and an endpoint that is one ONNX graph keeps today's images.
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
LN2_HI = 6.93147180369123816490e-01
"""ln 2 with its low 32 bits zero, so ``exponent * LN2_HI`` is exact (fdlibm's split)."""
LN2_LO = 1.90821492927058770002e-10
SQRT_HALF = 0.70710678118654752440
TWO_PI = 6.283185307179586
TWO_PI_LO = 2.4492935982947064e-16
"""2*pi - TWO_PI, so the angle keeps the bits a plain float64 2*pi drops."""
LOG_COEFFS = tuple(2.0 / (2 * k + 1) for k in range(12))
"""log(m) = sum_k LOG_COEFFS[k] * s**(2k+1) with s = (m - 1) / (m + 1), |s| <= 0.172."""
SIN_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(10))
COS_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(10))
"""Taylor coefficients of sin and cos on [-pi/4, pi/4]; the last terms are below 1e-19."""
QUADRANT_COS_SIGN = np.array([1.0, -1.0, -1.0, 1.0])
QUADRANT_SIN_SIGN = np.array([1.0, 1.0, -1.0, -1.0])


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of ``x + GOLDEN`` on uint64 arrays (wrapping arithmetic)."""
    z = x + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def _horner(z: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    result = np.full_like(z, coeffs[-1])
    for c in coeffs[-2::-1]:
        result = result * z + c
    return result


def exact_log(u: np.ndarray) -> np.ndarray:
    """Natural log of positive float64 values with exact range reduction and a fixed polynomial."""
    mantissa, exponent = np.frexp(u)  # u = mantissa * 2**exponent, mantissa in [0.5, 1)
    low = mantissa < SQRT_HALF
    mantissa = np.where(low, mantissa * 2.0, mantissa)  # now in [sqrt(1/2), sqrt(2))
    exponent = exponent.astype(np.float64) - low
    s = (mantissa - 1.0) / (mantissa + 1.0)
    log_mantissa = s * _horner(s * s, LOG_COEFFS)
    return exponent * LN2_HI + (exponent * LN2_LO + log_mantissa)


def exact_cos_sin(turns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine and sine of ``2*pi*turns`` (float64 in [0, 1]), reduced to an octant exactly."""
    quadrant = np.rint(turns * 4.0)
    angle = turns - quadrant * 0.25  # exact: in [-1/8, 1/8] turns
    angle = angle * TWO_PI + angle * TWO_PI_LO
    square = angle * angle
    sin = angle * _horner(square, SIN_COEFFS)
    cos = _horner(square, COS_COEFFS)
    index = quadrant.astype(np.int64) % 4
    odd = (index % 2).astype(bool)
    return (
        np.where(odd, sin, cos) * QUADRANT_COS_SIGN[index],
        np.where(odd, cos, sin) * QUADRANT_SIN_SIGN[index],
    )


def uniform_bits(seeds: np.ndarray, count: int, stream: int = 0) -> np.ndarray:
    """``count`` 64-bit hashes per seed: splitmix64 of the seed's key plus a counter."""
    seeds = np.asarray(seeds).astype(np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        key = splitmix64(seeds ^ splitmix64(np.full_like(seeds, stream, dtype=np.uint64)))
        counters = np.arange(count, dtype=np.uint64).reshape(1, -1)
        return splitmix64(key + counters * GOLDEN)


def seeded_normal(seeds: np.ndarray, size: int, stream: int = 0) -> np.ndarray:
    """Standard normal noise, one row per seed, from a counter-based hash.

    Row ``i`` depends only on ``(seeds[i], stream)``, never on the other rows, so an image is the
    same whichever requests share its batch, on every host and numpy version.

    Args:
        seeds: Integer seeds, shape ``[N]``.
        size: Values per row.
        stream: Separates independent draws for one seed (e.g. a sampler step).

    Returns:
        float32 array of shape ``[N, size]``.
    """
    half = (size + 1) // 2
    bits = uniform_bits(seeds, 2 * half, stream)
    # 53 random bits -> uniform in (0, 1]; Box-Muller turns pairs into two normals.
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u1, u2 = uniform[:, :half], uniform[:, half:]
    radius = np.sqrt(-2.0 * exact_log(u1))
    cos, sin = exact_cos_sin(u2)
    normal = np.concatenate([radius * cos, radius * sin], axis=1)
    return normal[:, :size].astype(np.float32)


def gan_latents(seeds: np.ndarray, latent_dim: int) -> np.ndarray:
    """The GAN's ``z`` for each seed, float32 ``[N, latent_dim]``: the one seed-to-latent rule.

    The export's checks, the check of the ``gan`` graph (which computes the same in ONNX) and the
    benchmark peer all draw latents here, so one seed gives one image wherever it is generated.
    """
    return seeded_normal(np.asarray(seeds).reshape(-1), latent_dim, stream=0)
