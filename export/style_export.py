"""The style network's export spec: what :func:`genserve.export.onnx_export.export_model` needs to know.

The network takes ``content``, ``style`` FP32 ``[B, 3, H, W]`` in ``[-1, 1]`` and ``alpha`` FP32 ``[B]``
and returns ``image`` FP32 ``[B, 3, H, W]``. Batch, heights and widths stay dynamic (multiples of 8); the
parity cases cover several batches at one size and batch 1 at a larger one. INT8 is calibrated on
training images and kept only if its AdaIN style loss on the held-out pairs stays within 10% of FP32's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genserve.client.contract import from_uint8
from genserve.export import style_quality
from genserve.export.onnx_export import ExportSpec, Inputs, Quality, export_model
from genserve.export.style import StyleNetwork, check_image_size, load_style_network
from genserve.server.model_names import STYLE_NETWORK

MAX_BATCH = 64
MAX_SIDE = 2048
INT8_STYLE_LOSS_TOLERANCE = 0.10
"""The INT8 variant is kept only if its style loss is within this fraction of FP32's."""
THREADS = 2
OPSET = 20


def _random_inputs(batch: int, size: int, seed: int) -> Inputs:
    """Smooth random images (upsampled noise, so the network sees structure) and alphas in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(-1, 1, (2 * batch, 3, size // 8, size // 8)).astype(np.float32))
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").numpy()
    alpha = rng.uniform(0, 1, batch).astype(np.float32)
    alpha[0] = 1.0
    return images[:batch], images[batch:], alpha


def _example_inputs() -> Inputs:
    """Batch 2, and heights and widths that all differ, so that the exporter specializes nothing."""
    rng = np.random.default_rng(0)
    content = rng.uniform(-1, 1, (2, 3, 64, 96)).astype(np.float32)
    style = rng.uniform(-1, 1, (2, 3, 80, 56)).astype(np.float32)
    return content, style, np.array([1.0, 0.5], dtype=np.float32)


def _calibration(size: int, count: int = 8, seed: int = 0) -> list[Inputs]:
    """(content, style, alpha) batches of training images."""
    rng = np.random.default_rng(seed)
    images = [
        style_quality.square_image(style_quality.load_image(n), size) for n in style_quality.TRAIN_IMAGES
    ]
    batches = []
    for _ in range(count):
        content, style = rng.choice(len(images), size=2, replace=False)
        alpha = rng.uniform(0.5, 1.0, 1).astype(np.float32)
        batches.append((from_uint8(images[content][None]), from_uint8(images[style][None]), alpha))
    return batches


def keep_style_loss(fp32: dict[str, Any], figures: dict[str, Any]) -> str | None:
    """Drop a variant whose style loss is more than 10% off FP32's."""
    ratio = figures["style_loss"] / fp32["style_loss"]
    figures["style_loss_vs_fp32"] = round(ratio, 4)
    if abs(ratio - 1.0) > INT8_STYLE_LOSS_TOLERANCE:
        return f"style loss {ratio:.3f}x FP32's (allowed within 10%)"
    return None


def style_spec(
    network: StyleNetwork, *, batch_sizes: Sequence[int] = (1, 3, 4), size: int = 256, large_size: int = 512
) -> ExportSpec:
    """The spec of a style network; parity at each of ``batch_sizes`` x ``size`` and 1 x ``large_size``.

    Raises:
        ValueError: ``size`` or ``large_size`` is not a multiple of 8.
    """
    check_image_size(size, size, "size")
    check_image_size(large_size, large_size, "large_size")
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Sizes are 8 x a free integer: the graph then round-trips them exactly (3 pools, 3 upsamplings).
    side = {name: torch.export.Dim(name, min=1, max=MAX_SIDE // 8) for name in ("h8", "w8", "hs8", "ws8")}
    checks = [(b, size) for b in batch_sizes] + [(1, large_size)]
    opt = max(batch_sizes)

    def quality(fn: Callable[..., np.ndarray]) -> Quality:
        figures = style_quality.evaluate(network, fn, size)
        figures.pop("pairs")
        return Quality(figures)

    def profile(name: str, dims: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
        if name == "alpha":
            return (1,), (opt,), (MAX_BATCH,)
        return (1, 3, 8, 8), (opt, 3, size, size), (MAX_BATCH, 3, 2 * size, 2 * size)

    return ExportSpec(
        STYLE_NETWORK,
        network,
        ("content", "style", "alpha"),
        "image",
        MAX_BATCH,
        lambda batch_size, seed: _random_inputs(batch_size, size, seed),
        example_inputs=_example_inputs,
        parity_cases=lambda: [
            ({"batch": b, "size": s}, _random_inputs(b, s, 1000 * b + s)) for b, s in checks
        ],
        dynamic_shapes={
            "content": {0: batch, 2: 8 * side["h8"], 3: 8 * side["w8"]},
            "style": {0: batch, 2: 8 * side["hs8"], 3: 8 * side["ws8"]},
            "alpha": {0: batch},
        },
        dynamic_output_axes=(0, 2, 3),
        opset=OPSET,
        threads=THREADS,
        speed_batches=tuple(batch_sizes),
        calibration_inputs=lambda: _calibration(size),
        quality=quality,
        keep=keep_style_loss,
        tensorrt_profile=profile,
        facts={"image_channels": 3, "size_multiple": 8},
    )


def export_style(
    version_dir: Path,
    *,
    weights: Path,
    vgg_weights: Path | None = None,
    variants: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    quick: bool = False,
    **spec_options: Any,
) -> list[dict]:
    """Load a style checkpoint and run the export loop on it (see :func:`export_model`).

    Args:
        version_dir: Model-repository version folder (e.g. ``model_repository/style_network/1``).
        weights: Style checkpoint (``export/weights/style.safetensors``).
        vgg_weights: The torchvision VGG19 file, for a checkpoint trained on one.
        variants: Variants besides FP32 (default: all).
        progress: Called with a line of text before each stage (e.g. ``print``).
        quick: Only the FP32 export and its parity check.
        spec_options: ``batch_sizes``, ``size``, ``large_size`` for :func:`style_spec`.
    """
    spec = style_spec(load_style_network(Path(weights), vgg_weights), **spec_options)
    options = {} if variants is None else {"variants": variants}
    return export_model(spec, version_dir, measure=not quick, progress=progress, **options)
