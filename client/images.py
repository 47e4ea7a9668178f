"""Images in and out of the client: request inputs, PNG files and contact sheets.

PNG encoding is done here with the standard library (zlib), so saving images needs no Pillow.
Pillow is optional: a ``PIL.Image.Image`` is accepted as an input when it is installed.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from genserve.client import contract
from genserve.client.errors import InvalidInputError, checked

__all__ = ["ImageInput", "contact_sheet", "encode_png", "save_png"]

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, Any]
"""A file path, encoded image bytes (PNG, JPEG, ...), a ``PIL.Image.Image`` or uint8 ``[H, W, 3]`` pixels."""


def image_tensor(value: ImageInput, name: str) -> tuple[str, np.ndarray]:
    """The request tensor for one image: ``(name, bytes [1, 1])`` or ``(name_pixels, uint8 [1, H, W, 3])``.

    Files and bytes travel encoded (the server decodes them); PIL images and arrays travel as pixels.

    Raises:
        InvalidInputError: naming the argument and what is wrong with it.
    """
    if isinstance(value, (str, os.PathLike)):
        try:
            value = Path(value).read_bytes()
        except OSError as error:
            raise InvalidInputError(f"{name}: cannot read image file '{value}': {error.strerror}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        checked(contract.check_encoded_image, len(data), name)
        return name, np.array([[data]], dtype=np.object_)
    if _is_pil_image(value):
        value = np.asarray(value.convert("RGB"))
    if isinstance(value, np.ndarray):
        pixels = checked(contract.check_pixels, value, f"{name}_pixels")
        return f"{name}_pixels", np.ascontiguousarray(pixels)[np.newaxis]
    raise InvalidInputError(
        f"{name} must be a file path, encoded image bytes, a PIL image or uint8 [H, W, 3] pixels; "
        f"got {type(value).__name__}"
    )


def encoded_image(value: ImageInput, name: str) -> bytes:
    """One image as encoded bytes: files and bytes as they are, PIL images and pixel arrays as PNG.

    Raises:
        InvalidInputError: naming the argument and what is wrong with it.
    """
    kind, array = image_tensor(value, name)
    return array[0, 0] if kind == name else encode_png(array[0])


def _is_pil_image(value: object) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "convert")


# -- PNG --------------------------------------------------------------------------------------
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def encode_png(image: np.ndarray) -> bytes:
    """Encode uint8 pixels ``[H, W]`` or ``[H, W, C]`` (C = 1, 2, 3 or 4) as PNG bytes."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in _COLOR_TYPES:
        raise InvalidInputError(
            f"image: expected uint8 [H, W, C] with C in 1..4; got {image.dtype} {image.shape}"
        )
    height, width, channels = image.shape
    rows = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # filter byte 0 ("None") per row
    rows[:, 1:] = image.reshape(height, width * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
            chunk(b"IEND", b""),
        ]
    )


def save_png(image: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write uint8 pixels ``[H, W]`` or ``[H, W, C]`` to a PNG file; return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(image))
    return path


def contact_sheet(
    images: np.ndarray | Sequence[np.ndarray],
    *,
    columns: int | None = None,
    scale: int = 1,
    padding: int = 2,
    background: int = 0,
) -> np.ndarray:
    """Tile images of one size into one image, row by row.

    Args:
        images: uint8 ``[N, H, W, C]`` (or a sequence of ``[H, W, C]``).
        columns: Images per row; defaults to about the square root of N.
        scale: Integer upscaling (nearest neighbour), handy for 32x32 digits.
        padding: Pixels of ``background`` between and around tiles.
        background: Grey level of the padding, 0 (black) to 255.

    Returns:
        uint8 ``[rows * (H * scale + padding) + padding, ..., C]``.
    """
    stack = np.asarray(images if isinstance(images, np.ndarray) else np.stack(list(images)))
    if stack.ndim == 3:
        stack = stack[..., np.newaxis]
    if stack.ndim != 4 or stack.dtype != np.uint8 or len(stack) == 0:
        raise InvalidInputError(
            f"images: expected uint8 [N, H, W, C] with N >= 1; got {stack.dtype} {stack.shape}"
        )
    if scale > 1:
        stack = stack.repeat(scale, axis=1).repeat(scale, axis=2)
    count, height, width, channels = stack.shape
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    sheet = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        background,
        dtype=np.uint8,
    )
    for index, image in enumerate(stack):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        sheet[top : top + height, left : left + width] = image
    return sheet
