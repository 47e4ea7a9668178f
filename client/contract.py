"""The protocol contract between genserve's client, its server-side pipelines, export and tests.

Endpoint and tensor names, dtypes and bounds are written here once; everything else reads them.
This module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# -- endpoints ----------------------------------------------------------------------------------
GAN_MODEL = "gan"
STYLE_MODEL = "style_transfer"
DIFFUSION_MODEL = "diffusion"
ENDPOINTS = (GAN_MODEL, STYLE_MODEL, DIFFUSION_MODEL)

NUM_CLASSES = 10
"""Digit labels 0..9; the diffusion UNet also takes label ``NUM_CLASSES`` as "no label" (guidance)."""

GAN_MAX_BATCH = 256
"""Rows in one ``gan`` request, and the generator's export profile maximum."""

DIFFUSION_MAX_IMAGES = 16
"""Images in one ``diffusion`` request (guidance doubles them to the UNet's 32 rows per call)."""

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
GUIDANCE = Bound("guidance", 0.0, 20.0, default=2.0)
ETA = Bound("eta", 0.0, 1.0, default=0.0)
PREVIEW_EVERY = Bound("preview_every", 0, 1000, default=0)

STYLE_SIZES = (256, 512)
"""Longer-side sizes style-transfer inputs are resized to, so requests of one size batch together."""
MAX_ENCODED_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096


# -- image value range ------------------------------------------------------------------------
def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map model output in [-1, 1] to uint8 [0, 255], rounding to nearest; NCHW in, NHWC out."""
    scaled = (np.clip(images, -1.0, 1.0) + 1.0) * 127.5
    return np.ascontiguousarray(np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1))


def from_uint8(images: np.ndarray) -> np.ndarray:
    """Map uint8 NHWC images to float32 NCHW in [-1, 1], the models' input range."""
    return np.ascontiguousarray(images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)


# -- seeded noise -------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


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
    seeds = np.asarray(seeds).astype(np.uint64).reshape(-1, 1)
    half = (size + 1) // 2
    with np.errstate(over="ignore"):
        key = _splitmix64(seeds ^ _splitmix64(np.full_like(seeds, stream, dtype=np.uint64)))
        counters = np.arange(2 * half, dtype=np.uint64).reshape(1, -1)
        bits = _splitmix64(key + counters * _GOLDEN)
    # 53 random bits -> uniform in (0, 1]; Box-Muller turns pairs into two normals.
    uniform = ((bits >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u1, u2 = uniform[:, :half], uniform[:, half:]
    radius = np.sqrt(-2.0 * np.log(u1))
    normal = np.concatenate([radius * np.cos(2 * np.pi * u2), radius * np.sin(2 * np.pi * u2)], axis=1)
    return normal[:, :size].astype(np.float32)
