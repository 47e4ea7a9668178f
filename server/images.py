"""Image decoding, checking, letterboxing and encoding for the style-transfer endpoint.

Decoding refuses oversized and corrupt inputs before any model runs; resizing puts every image on a
square canvas of one of a few sizes so that requests of one size batch together.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from genserve.client.contract import STYLE, check_encoded_image, check_image_size


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode PNG/JPEG/... bytes to uint8 RGB ``[H, W, 3]``.

    Raises:
        ValueError: naming the input if the bytes are too many, the image too large, or not an image.
    """
    check_encoded_image(len(data), name)
    try:
        with Image.open(io.BytesIO(data)) as image:
            check_image_size(image.width, image.height, name)  # from the header, before decoding pixels
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{name}: not a decodable image (PNG, JPEG, WebP, BMP, ...)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{name}: corrupt image ({error})") from None


def choose_size(height: int, width: int, requested: int | None = None) -> int:
    """The canvas size for an image: the requested one, else the smallest allowed size >= its longer side.

    Raises:
        ValueError: if ``requested`` is not one of the contract's sizes.
    """
    size = STYLE.input("size")
    if requested is not None:
        return size.check_choice(requested)
    longer = max(height, width)
    return next((choice for choice in sorted(size.choices) if choice >= longer), max(size.choices))


@dataclass(frozen=True)
class Letterbox:
    """Where a resized image sits on its square canvas.

    Attributes:
        size: Canvas side.
        height: Resized image height.
        width: Resized image width.
    """

    size: int
    height: int
    width: int

    def crop(self, canvas: np.ndarray) -> np.ndarray:
        """Cut the image back out of a ``[size, size, C]`` canvas."""
        return canvas[: self.height, : self.width]


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize so the longer side is ``size`` and reflect-pad to ``size x size``.

    Reflection keeps the padding's statistics close to the image's own, so it disturbs the style
    statistics less than a flat border would.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    resized = resize(image, new_h, new_w)
    pad_h, pad_w = size - new_h, size - new_w
    canvas = (
        np.pad(resized, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric") if pad_h or pad_w else resized
    )
    return canvas, Letterbox(size, new_h, new_w)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 ``[H, W, 3]`` pixels with a bicubic filter (Pillow)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def encode_png(image: np.ndarray) -> bytes:
    """Encode uint8 ``[H, W, 3]`` pixels as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
