"""One benchmark call per endpoint, made through the project's client.

A load test calls :func:`make_client` once per simulated user and then the endpoint functions below.
The client is made without retries: a benchmark reports every failure instead of hiding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from genserve.client import Client
from genserve.client.contract import NUM_CLASSES

PROTOCOLS = ("grpc", "http")
CALL_TIMEOUT_S = 120.0
STYLE_SIDE = 256


@dataclass(frozen=True)
class Target:
    """Where a load test sends its calls.

    Attributes:
        protocol: ``grpc`` or ``http``.
        url: ``host:port`` as tritonclient takes it.
    """

    protocol: str
    url: str

    @classmethod
    def parse(cls, host: str) -> Target:
        """Parse ``grpc://127.0.0.1:8001`` or ``http://127.0.0.1:8000``."""
        parts = urlsplit(host)
        if parts.scheme not in PROTOCOLS or not parts.netloc:
            raise ValueError(f"host={host!r} must look like grpc://HOST:PORT or http://HOST:PORT")
        return cls(parts.scheme, parts.netloc)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.url}"


def make_client(target: Target) -> Client:
    """The project's client for ``target``, without retries."""
    return Client(target.url, protocol=target.protocol, timeout=CALL_TIMEOUT_S, retries=0)


# -- the calls a benchmark makes ---------------------------------------------------------------------
def style_images(side: int = STYLE_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """A content and a style image (uint8 HWC, ``side`` x ``side``), synthetic and fixed."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    content = np.stack([x, y, 0.5 * (x + y)], axis=-1)
    style = np.stack([np.sin(12 * x) ** 2, np.cos(9 * y) ** 2, (x * y) % 0.25 * 4], axis=-1)
    return (content * 255).astype(np.uint8), (style * 255).astype(np.uint8)


def gan_call(client: Client, rng: np.random.Generator, rows: int = 1) -> np.ndarray:
    """``rows`` GAN images with random labels and seeds."""
    labels = rng.integers(0, NUM_CLASSES, rows)
    return client.generate(labels, seeds=rng.integers(0, 2**62, rows))


def style_call(client: Client, images: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """One stylized image at the small canvas size."""
    return client.stylize(images[0], style=images[1], alpha=1.0, size=STYLE_SIDE)


def diffusion_call(
    client: Client, rng: np.random.Generator, *, rows: int = 1, steps: int = 10, guidance: float = 2.0
) -> np.ndarray:
    """``rows`` diffusion samples with random labels and seeds."""
    labels = rng.integers(0, NUM_CLASSES, rows)
    return client.diffuse(labels, seeds=rng.integers(0, 2**62, rows), steps=steps, guidance=guidance)
