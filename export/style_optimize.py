"""Gatys et al. (2016) style transfer by optimizing the image, as two ONNX-exportable networks.

The serving path has no autograd, so the loss gradient is written out with forward operations
only and exported as an ONNX model; the optimizer (``genserve.server.gatys``, numpy) runs in the
pipeline. Two networks, sharing the VGG19 convolutions of ``VGGEncoder`` (seeded or torchvision):

- ``StyleTargets``: ``(content, style) ->`` the content's ``relu4_1`` features and the style's Gram
  matrices at ``relu1_1`` .. ``relu4_1``, computed once per request;
- ``StyleGradient``: ``(image, targets, alpha) -> (gradient, loss)`` for one optimization step.

The loss per row is ``content + alpha * style_weight * style + tv_weight * tv``:
``content = ||F4(x) - F4(c)||^2 / ||F4(c)||^2`` at ``relu4_1``; ``style`` the mean over the four
depths of ``||G(x) - G(s)||^2 / ||G(s)||^2`` with ``G = F F^T / positions``; ``tv`` the mean
squared difference of neighbouring pixels. As Gatys et al. suggest, max pooling is replaced by
average pooling, whose gradient is a nearest-neighbour upsampling divided by 4. The gradient of a
3x3 convolution with respect to its input is the transposed convolution with the same weights,
and a ReLU's is its mask; the Gram and total-variation gradients are analytic.
``reference_loss`` computes the same loss for ``torch.autograd``, which the parity checks compare
with ``StyleGradient``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.style import (
    IMAGENET_STD,
    LAYER_INDEX,
    VGGEncoder,
    imagenet_normalize,
)

TARGET_NAMES = ("content_features", "gram1", "gram2", "gram3", "gram4")
"""Outputs of ``StyleTargets`` and the matching inputs of ``StyleGradient``."""


@dataclass(frozen=True)
class GatysWeights:
    """The loss weights; exported into the gradient network (and its ONNX metadata)."""

    style_weight: float = 10.0
    tv_weight: float = 1.0

    def to_dict(self) -> dict[str, float]:
        """The weights as a plain dict (for metadata and cards)."""
        return asdict(self)


class AveragePoolingVGG(nn.Module):
    """The encoder's convolutions to relu4_1 with 2x2 average pooling; keeps what backward needs."""

    def __init__(self, encoder: VGGEncoder):
        super().__init__()
        self.plan: list[str] = []  # "conv" or "pool", in torchvision's order (ReLUs follow each conv)
        self.convs = nn.ModuleList()
        tap_index = {index: name for name, index in LAYER_INDEX.items()}
        self.taps: list[int] = []  # conv numbers whose ReLU outputs are relu1_1 .. relu4_1
        for index, layer in enumerate(encoder.features):
            if isinstance(layer, nn.Conv2d):
                conv = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1)
                conv.load_state_dict(layer.state_dict())
                self.convs.append(conv)
                self.plan.append("conv")
            elif isinstance(layer, nn.MaxPool2d):
                self.plan.append("pool")
            elif index in tap_index:
                self.taps.append(len(self.convs) - 1)
        self.requires_grad_(False)

    def forward(self, normalized: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """ImageNet-normalized images -> (features at the four depths, every conv's ReLU mask)."""
        x = normalized
        taps: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for step in self.plan:
            if step == "pool":
                x = F.avg_pool2d(x, 2)
                continue
            z = self.convs[len(masks)](x)
            masks.append((z > 0).to(z.dtype))
            x = torch.relu(z)
            if len(masks) - 1 in self.taps:
                taps.append(x)
        return taps, masks

    def backward(self, tap_grads: list[torch.Tensor], masks: list[torch.Tensor]) -> torch.Tensor:
        """Gradient with respect to the normalized input, given gradients at the four depths.

        Walks the plan backwards: a ReLU multiplies by its mask, a convolution becomes the
        transposed convolution with the same weights, an average pooling a nearest-neighbour
        upsampling divided by 4; a depth's own gradient is added where its features were taken.
        """
        grad: torch.Tensor | None = None
        conv_number = len(self.convs)
        for step in reversed(self.plan):
            if step == "pool":
                assert grad is not None
                grad = F.interpolate(grad, scale_factor=2.0, mode="nearest") * 0.25
                continue
            conv_number -= 1
            if conv_number in self.taps:
                own = tap_grads[self.taps.index(conv_number)]
                grad = own if grad is None else grad + own
            assert grad is not None
            grad = grad * masks[conv_number]
            grad = F.conv_transpose2d(grad, self.convs[conv_number].weight, padding=1)
        assert grad is not None
        return grad


def gram(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, C]``, normalized by the number of positions."""
    B, C, H, W = features.shape
    flat = features.reshape(B, C, H * W)  # (B, C, HW)
    return flat @ flat.transpose(1, 2) / (H * W)  # (B, C, C)


def _row_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the batch: ``[B, ...] -> [B]``."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


class StyleTargets(nn.Module):
    """``(content, style)`` in ``[-1, 1]`` -> relu4_1 of the content and the style's four Grams."""

    def __init__(self, encoder: VGGEncoder):
        super().__init__()
        self.vgg = AveragePoolingVGG(encoder)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, 3, H, W]``, ``[B, 3, Hs, Ws]`` -> ``(content_features, gram1, gram2, gram3, gram4)``."""
        content_taps, _ = self.vgg(imagenet_normalize(content))
        style_taps, _ = self.vgg(imagenet_normalize(style))
        return (content_taps[-1], *(gram(f) for f in style_taps))  # (B, 512, H/8, W/8), (B, C, C) x 4


class StyleGradient(nn.Module):
    """One step's loss and its gradient with respect to the image, forward operations only."""

    def __init__(self, encoder: VGGEncoder, weights: GatysWeights | None = None):
        super().__init__()
        self.vgg = AveragePoolingVGG(encoder)
        self.weights = weights or GatysWeights()
        # d(normalized)/d(image) per channel: normalized = ((x + 1) / 2 - mean) / std.
        scale = 0.5 / torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
        self.register_buffer("input_scale", scale, persistent=False)

    def forward(
        self,
        image: torch.Tensor,
        content_features: torch.Tensor,
        gram1: torch.Tensor,
        gram2: torch.Tensor,
        gram3: torch.Tensor,
        gram4: torch.Tensor,
        alpha: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and gradient of a batch of images.

        Args:
            image: ``[B, 3, H, W]`` current images in ``[-1, 1]``, ``H`` and ``W`` multiples of 8.
            content_features: ``[B, 512, H/8, W/8]`` from ``StyleTargets``.
            gram1: ``[B, 64, 64]`` style Gram matrix at relu1_1, from ``StyleTargets``.
            gram2: ``[B, 128, 128]`` at relu2_1.
            gram3: ``[B, 256, 256]`` at relu3_1.
            gram4: ``[B, 512, 512]`` at relu4_1.
            alpha: ``[B]`` style weight per row, ``0..1``.

        Returns:
            ``(gradient [B, 3, H, W], loss [B])``.
        """
        B = image.shape[0]
        taps, masks = self.vgg(imagenet_normalize(image))
        style_weight = alpha.reshape(B, 1, 1) * (self.weights.style_weight / len(taps))  # (B, 1, 1)
        loss = image.new_zeros(B)
        tap_grads = []
        for features, target in zip(taps, (gram1, gram2, gram3, gram4), strict=True):
            _, C, H, W = features.shape
            flat = features.reshape(B, C, H * W)  # (B, C, HW)
            diff = flat @ flat.transpose(1, 2) / (H * W) - target  # (B, C, C)
            norm = _row_sum(target * target).reshape(B, 1, 1) + 1e-8  # ||G(s)||^2
            loss = loss + (style_weight * _row_sum(diff * diff).reshape(B, 1, 1) / norm).reshape(B)
            # d||G - S||^2 / dF = 4 (G - S) F / HW for a symmetric G - S.
            grad = style_weight * 4.0 / (H * W) / norm * (diff @ flat)  # (B, C, HW)
            tap_grads.append(grad.reshape(B, C, H, W))
        content_diff = taps[-1] - content_features  # (B, 512, H/8, W/8)
        content_norm = _row_sum(content_features * content_features).reshape(B, 1, 1, 1) + 1e-8
        loss = loss + _row_sum(content_diff * content_diff) / content_norm.reshape(B)
        tap_grads[-1] = tap_grads[-1] + 2.0 * content_diff / content_norm
        grad = self.vgg.backward(tap_grads, masks) * self.input_scale  # (B, 3, H, W)
        tv_loss, tv_grad = total_variation(image)
        loss = loss + self.weights.tv_weight * tv_loss
        return grad + self.weights.tv_weight * tv_grad, loss


def total_variation(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared neighbour difference per row, and its gradient: ``([B], [B, 3, H, W])``."""
    B, C, H, W = image.shape
    dh = image[:, :, 1:, :] - image[:, :, :-1, :]  # (B, C, H-1, W)
    dw = image[:, :, :, 1:] - image[:, :, :, :-1]  # (B, C, H, W-1)
    count = C * H * W
    loss = (_row_sum(dh * dh) + _row_sum(dw * dw)) / count
    # Each difference pulls its two pixels apart: +2d on the later pixel, -2d on the earlier.
    grad_h = F.pad(dh, (0, 0, 1, 0)) - F.pad(dh, (0, 0, 0, 1))  # (B, C, H, W)
    grad_w = F.pad(dw, (1, 0, 0, 0)) - F.pad(dw, (0, 1, 0, 0))  # (B, C, H, W)
    return loss, 2.0 * (grad_h + grad_w) / count


def reference_loss(
    encoder: VGGEncoder,
    image: torch.Tensor,
    content: torch.Tensor,
    style: torch.Tensor,
    alpha: torch.Tensor,
    weights: GatysWeights | None = None,
) -> torch.Tensor:
    """The same loss as ``StyleGradient`` from plain torch operations, for ``torch.autograd``: ``[B]``."""
    weights = weights or GatysWeights()
    vgg = AveragePoolingVGG(encoder)

    def taps(x: torch.Tensor) -> list[torch.Tensor]:
        return vgg(imagenet_normalize(x))[0]

    with torch.no_grad():
        content_features = taps(content)[-1]
        style_grams = [gram(f) for f in taps(style)]
    produced = taps(image)
    loss = _row_sum((produced[-1] - content_features) ** 2) / _row_sum(content_features**2)
    for features, target in zip(produced, style_grams, strict=True):
        relative = _row_sum((gram(features) - target) ** 2) / _row_sum(target**2)
        loss = loss + alpha * weights.style_weight * relative / len(produced)
    dh = image[:, :, 1:, :] - image[:, :, :-1, :]
    dw = image[:, :, :, 1:] - image[:, :, :, :-1]
    tv = (_row_sum(dh**2) + _row_sum(dw**2)) / image[0].numel()
    return loss + weights.tv_weight * tv
