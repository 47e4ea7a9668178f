"""Export the optimization networks of ``style_transfer``'s ``method="optimize"`` to ONNX.

Writes ``style_targets/1/model.onnx`` and ``style_gradient/1/model.onnx`` (dynamic batch, dynamic
height and width in multiples of 8) and checks the exported gradient in ONNX Runtime against
``torch.autograd`` on the reference loss (and the targets against PyTorch), at batch 1 and 3 and two
sizes. The encoder is the style checkpoint's (seeded), or torchvision VGG19 weights from a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from genserve.export.onnx_export import ort_session
from genserve.export.style import VGGEncoder
from genserve.export.style_optimize import (
    TARGET_NAMES,
    GatysWeights,
    StyleGradient,
    StyleTargets,
    reference_loss,
)
from genserve.server.model_names import MODEL_FILENAME, STYLE_GRADIENT, STYLE_TARGETS

MAX_BATCH = 16
MAX_SIDE = 2048
GRADIENT_TOLERANCE = 1e-3
"""ONNX Runtime's gradient must match autograd's within this relative L2 error. (Not the largest
element: a ReLU whose input is within rounding of 0 may switch its mask between the two runtimes,
which moves a few elements of the gradient by about 0.2% of its largest value after nine layers.)"""
THREADS = 2


def _dims(batch: torch.export.Dim, h8: torch.export.Dim, w8: torch.export.Dim) -> dict:
    return {0: batch, 2: 8 * h8, 3: 8 * w8}


def export_targets(encoder: VGGEncoder, path: Path) -> Path:
    """Export ``StyleTargets``: inputs ``content``, ``style``; outputs ``TARGET_NAMES``."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    side = {name: torch.export.Dim(name, min=1, max=MAX_SIDE // 8) for name in ("h8", "w8", "hs8", "ws8")}
    content, style = torch.rand(2, 3, 64, 96) * 2 - 1, torch.rand(2, 3, 80, 56) * 2 - 1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        StyleTargets(encoder).eval(),
        (content, style),
        str(path),
        dynamo=True,
        input_names=["content", "style"],
        output_names=list(TARGET_NAMES),
        dynamic_shapes={
            "content": _dims(batch, side["h8"], side["w8"]),
            "style": _dims(batch, side["hs8"], side["ws8"]),
        },
        opset_version=20,
        external_data=False,
        verbose=False,
    )
    return path


def export_gradient(encoder: VGGEncoder, path: Path, weights: GatysWeights) -> Path:
    """Export ``StyleGradient``: inputs ``image``, the targets, ``alpha``; outputs ``gradient``, ``loss``.

    The loss weights go into the ONNX metadata (``gatys_weights``).
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    h8, w8 = (torch.export.Dim(name, min=1, max=MAX_SIDE // 8) for name in ("h8", "w8"))
    image = torch.rand(2, 3, 64, 96) * 2 - 1
    targets = StyleTargets(encoder)(image, torch.rand(2, 3, 48, 40) * 2 - 1)
    alpha = torch.tensor([1.0, 0.5])
    dynamic = {
        "image": _dims(batch, h8, w8),
        "content_features": {0: batch, 2: h8, 3: w8},
        **{name: {0: batch} for name in TARGET_NAMES[1:]},
        "alpha": {0: batch},
    }
    module = StyleGradient(encoder, weights).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (image, *targets, alpha),
        str(path),
        dynamo=True,
        input_names=["image", *TARGET_NAMES, "alpha"],
        output_names=["gradient", "loss"],
        dynamic_shapes=dynamic,
        opset_version=20,
        external_data=False,
        verbose=False,
    )
    _add_metadata(path, {"gatys_weights": json.dumps(weights.to_dict())})
    return path


def _add_metadata(path: Path, values: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def check_gradient_parity(
    encoder: VGGEncoder, targets_path: Path, gradient_path: Path, weights: GatysWeights, seed: int = 0
) -> dict:
    """ONNX Runtime's targets and gradient against PyTorch and ``torch.autograd``, several shapes.

    Returns:
        ``{"max_rel_err": ..., "checks": [...]}``.

    Raises:
        RuntimeError: a gradient differs by more than ``GRADIENT_TOLERANCE`` of its scale.
    """
    targets_session = ort_session(targets_path, THREADS)
    gradient_session = ort_session(gradient_path, THREADS)
    generator = torch.Generator().manual_seed(seed)
    checks, worst = [], 0.0
    for batch, height, width in ((1, 32, 32), (3, 48, 64)):
        content = torch.rand(batch, 3, height, width, generator=generator) * 2 - 1
        style = torch.rand(batch, 3, 40, 24, generator=generator) * 2 - 1
        image = (content + 0.3 * torch.randn(content.shape, generator=generator)).clamp(-1, 1)
        alpha = torch.rand(batch, generator=generator)
        image.requires_grad_(True)
        loss = reference_loss(encoder, image, content, style, alpha, weights)
        loss.sum().backward()
        expected = image.grad.numpy()
        feeds = {"content": content.numpy(), "style": style.numpy()}
        targets = dict(zip(TARGET_NAMES, targets_session.run(list(TARGET_NAMES), feeds), strict=True))
        feeds = {"image": image.detach().numpy(), **targets, "alpha": alpha.numpy()}
        gradient, onnx_loss = gradient_session.run(["gradient", "loss"], feeds)
        error = float(np.linalg.norm(gradient - expected) / (np.linalg.norm(expected) + 1e-12))
        expected_loss = loss.detach().numpy()
        loss_error = float(np.abs(onnx_loss - expected_loss).max() / np.abs(expected_loss).max())
        worst = max(worst, error, loss_error)
        checks.append(
            {"batch": batch, "size": [height, width], "grad_rel_err": error, "loss_rel_err": loss_error}
        )
    if worst > GRADIENT_TOLERANCE:
        raise RuntimeError(f"style_gradient: ONNX Runtime differs from autograd by {worst:.3g} (relative)")
    return {"max_rel_err": worst, "checks": checks}


def export_optimizer(
    repository: Path,
    encoder: VGGEncoder,
    *,
    weights: GatysWeights | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Export both optimization networks into ``repository`` and check them; return the parity figures."""
    say = progress or (lambda _line: None)
    weights = weights or GatysWeights()
    torch.set_num_threads(THREADS)
    targets_path = Path(repository) / STYLE_TARGETS / "1" / MODEL_FILENAME
    gradient_path = Path(repository) / STYLE_GRADIENT / "1" / MODEL_FILENAME
    say(f"{STYLE_TARGETS}: exporting {targets_path}")
    export_targets(encoder, targets_path)
    say(f"{STYLE_GRADIENT}: exporting {gradient_path}")
    export_gradient(encoder, gradient_path, weights)
    figures = check_gradient_parity(encoder, targets_path, gradient_path, weights)
    say(f"{STYLE_GRADIENT}: gradient vs autograd, max relative error {figures['max_rel_err']:.2e}")
    return figures


def optimizer_encoder(style_weights: Path, vgg_weights: Path | None) -> tuple[VGGEncoder, dict]:
    """The optimization's encoder: torchvision VGG19 weights from a file, else the style checkpoint's seed.

    Returns:
        ``(encoder, description)`` for the card and the report.
    """
    from genserve.export.style import checkpoint_config, file_sha256

    if vgg_weights is not None:
        encoder = VGGEncoder().load_torchvision_vgg19(vgg_weights)
        return encoder, {"kind": "torchvision", "weights_sha256": file_sha256(vgg_weights)}
    seed = checkpoint_config(style_weights).encoder_seed if style_weights.is_file() else 0
    return VGGEncoder(seed), {"kind": "seeded", "seed": seed}


def export_style_optimizer(
    repository: Path, weights_dir: Path, vgg_weights: Path | None, say: Callable[[str], None]
) -> list[dict]:
    """``genserve export``'s ``style_optimize`` family: both networks, checked; one report row."""
    encoder, described = optimizer_encoder(Path(weights_dir) / "style.safetensors", vgg_weights)
    say(f"{STYLE_GRADIENT}: encoder {described}")
    figures = export_optimizer(repository, encoder, progress=say)
    return [
        {
            "model": STYLE_GRADIENT,
            "variant": "fp32",
            "path": str(Path(repository) / STYLE_GRADIENT / "1" / MODEL_FILENAME),
            "max_abs_err": figures["max_rel_err"],
            "quality": {
                "kept": True,
                "encoder": described,
                "parity": figures["checks"],
                "note": "gradient vs torch.autograd (relative error); targets in style_targets",
            },
        }
    ]
