"""Quality of the style-transfer network on held-out content/style pairs, and its contact sheet.

The images ship inside scikit-learn and scikit-image; this module names them, holds some out of
training and measures, on pairs of those held-out images at 256x256:

- the Gram-matrix distance to the style image, on encoder features relu1_1 .. relu4_1, of the
  output against that of the content image (the output must be at least 30% closer);
- the distance of the output's relu4_1 features to the content image's and to the style image's,
  each channel normalized over space first (the output must stay closer to the content). The
  normalization removes the channel means and deviations that AdaIN deliberately takes from the
  style: without it a low-contrast style (the brick wall) is "closer" even to the ideal AdaIN target
  than the content is, so the raw distances are reported but not used as the criterion;
- the AdaIN style loss (channel mean/std distances), used to compare variants;
- the same Gram reduction for two baselines, a flat grey image and plain colour transfer.

``python -m genserve.export.style_quality`` prints the figures for the committed weights and
writes ``export/reports/style_samples.png`` (content | style | output at alpha 1 | alpha 0.5).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genserve.client.contract import from_uint8, to_uint8
from genserve.export.style import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    StyleNetwork,
    VGGEncoder,
    load_style_network,
    mean_std,
)

EXPORT_DIR = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = EXPORT_DIR / "weights" / "style.safetensors"
DEFAULT_SHEET = EXPORT_DIR / "reports" / "style_samples.png"

TRAIN_IMAGES = (
    "sklearn:china.jpg",
    "skimage:astronaut",
    "skimage:chelsea",
    "skimage:rocket",
    "skimage:stereo_motorcycle",
    "skimage:hubble_deep_field",
    "skimage:retina",
    "skimage:colorwheel",
    "skimage:logo",
    "skimage:camera",
    "skimage:moon",
    "skimage:coins",
    "skimage:clock",
    "skimage:cell",
    "skimage:page",
    "skimage:text",
    "skimage:grass",
    "skimage:gravel",
)
"""Images the decoder trains on (random crops; each serves as content and as style)."""
HELD_OUT_CONTENT = ("sklearn:flower.jpg", "skimage:coffee")
"""Photos never seen in training, used as content in the quality check."""
HELD_OUT_STYLE = ("skimage:immunohistochemistry", "skimage:brick")
"""Textures never seen in training, used as style in the quality check."""

GRAM_REDUCTION_MIN = 0.30
"""Required relative reduction of the Gram distance to the style (output vs content image)."""
EVAL_SIZE = 256


def load_image(name: str) -> np.ndarray:
    """Load a bundled image as uint8 ``[H, W, 3]`` RGB.

    Args:
        name: ``"sklearn:<file>"`` (``load_sample_image``) or ``"skimage:<function>"`` (``skimage.data``).
    """
    source, _, item = name.partition(":")
    if source == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(item)
    elif source == "skimage":
        import skimage.data

        image = getattr(skimage.data, item)()
        if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
            image = image[0]
    else:
        raise ValueError(f"image source {source!r} in {name!r} is not allowed; allowed: 'sklearn', 'skimage'")
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def square_image(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size x size`` (uint8 ``[H, W, 3]`` in and out)."""
    from PIL import Image

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def held_out_pairs(size: int = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every held-out (content, style) pair as model inputs.

    Returns:
        ``(content, style, labels)``: two float32 ``[P, 3, size, size]`` arrays in ``[-1, 1]`` and a
        ``"content + style"`` label per pair.
    """
    contents = {name: square_image(load_image(name), size) for name in HELD_OUT_CONTENT}
    styles = {name: square_image(load_image(name), size) for name in HELD_OUT_STYLE}
    pairs = [(c, s) for c in HELD_OUT_CONTENT for s in HELD_OUT_STYLE]
    content = from_uint8(np.stack([contents[c] for c, _ in pairs]))
    style = from_uint8(np.stack([styles[s] for _, s in pairs]))
    labels = [f"{c.split(':')[1]} + {s.split(':')[1]}" for c, s in pairs]
    return content, style, labels


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices normalized by the number of positions: ``[B, C, H, W] -> [B, C, C]``."""
    B, C, H, W = features.shape
    flat = features.reshape(B, C, H * W)  # (B, C, HW)
    return flat @ flat.transpose(1, 2) / (H * W)  # (B, C, C)


Features = list[torch.Tensor]
"""Encoder activations at relu1_1 .. relu4_1 (``VGGEncoder.features_at``)."""


def gram_distance(fx: Features, fs: Features) -> torch.Tensor:
    """Relative Gram distance ``||G(x) - G(s)||_F / ||G(s)||_F``, mean over the layers: ``[B]``."""
    per_layer = []
    for x, s in zip(fx, fs, strict=True):
        gx, gs = gram(x), gram(s)  # (B, C, C)
        per_layer.append(torch.linalg.norm(gx - gs, dim=(1, 2)) / torch.linalg.norm(gs, dim=(1, 2)))
    return torch.stack(per_layer).mean(dim=0)


def style_loss(fx: Features, fs: Features) -> torch.Tensor:
    """AdaIN style loss per sample: sum over layers of the channel mean and std MSEs: ``[B]``."""
    total = torch.zeros(fx[0].shape[0])
    for x, s in zip(fx, fs, strict=True):
        (mx, sx), (ms, ss) = mean_std(x), mean_std(s)
        total = total + (mx - ms).pow(2).mean(dim=(1, 2, 3)) + (sx - ss).pow(2).mean(dim=(1, 2, 3))
    return total


def feature_distance(fx: torch.Tensor, fy: torch.Tensor, *, instance_norm: bool = True) -> torch.Tensor:
    """Root-mean-square distance of two feature maps ``[B, C, H, W]``: ``[B]``.

    With ``instance_norm`` each channel is first normalized to zero mean and unit standard deviation
    over space, so the distance compares spatial layout (AdaIN's content) and not the channel
    statistics (AdaIN's style, which the output is meant to take from the style image).
    """
    if instance_norm:
        (mx, sx), (my, sy) = mean_std(fx), mean_std(fy)
        fx, fy = (fx - mx) / sx, (fy - my) / sy
    return (fx - fy).pow(2).mean(dim=(1, 2, 3)).sqrt()


@torch.no_grad()
def measure(
    network: StyleNetwork,
    content: np.ndarray,
    style: np.ndarray,
    output: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    encoder: VGGEncoder | None = None,
) -> dict:
    """Quality figures of given outputs (from PyTorch, ONNX Runtime, ...) for (content, style) pairs.

    Args:
        network: Supplies the input normalization and, unless ``encoder`` is given, the encoder.
        content: ``[P, 3, H, W]`` in ``[-1, 1]``.
        style: ``[P, 3, H, W]`` in ``[-1, 1]``.
        output: ``[P, 3, H, W]`` stylized at alpha 1.
        labels: One name per pair, to report per-pair figures.
        encoder: Measure with this encoder instead (e.g. an independent random one).

    Returns:
        Means over pairs (``gram_content_to_style``, ``gram_output_to_style``, ``gram_reduction``,
        ``style_loss``, ``relu4_1_output_to_content``, ``relu4_1_output_to_style`` and, for scale,
        ``relu4_1_content_to_style`` on instance-normalized features; ``relu4_1_raw_*`` without the
        normalization) and ``pairs``, the same per pair.
    """
    encoder = encoder or network.encoder
    c, s = network.normalize(torch.from_numpy(content)), network.normalize(torch.from_numpy(style))
    # The output is clipped to the image range as the serving contract (to_uint8) does.
    o = network.normalize(torch.from_numpy(np.clip(output, -1.0, 1.0)))
    fc, fs, fo = (encoder.features_at(images, STYLE_LAYERS) for images in (c, s, o))
    gram_content = gram_distance(fc, fs)
    gram_output = gram_distance(fo, fs)
    index = STYLE_LAYERS.index(CONTENT_LAYER)
    to_content = feature_distance(fo[index], fc[index])
    to_style = feature_distance(fo[index], fs[index])
    content_to_style = feature_distance(fc[index], fs[index])
    raw_to_content = feature_distance(fo[index], fc[index], instance_norm=False)
    raw_to_style = feature_distance(fo[index], fs[index], instance_norm=False)
    losses = style_loss(fo, fs)
    figures = {
        "gram_content_to_style": gram_content,
        "gram_output_to_style": gram_output,
        "gram_reduction": 1.0 - gram_output / gram_content,
        "style_loss": losses,
        "relu4_1_output_to_content": to_content,
        "relu4_1_output_to_style": to_style,
        "relu4_1_content_to_style": content_to_style,
        "relu4_1_raw_output_to_content": raw_to_content,
        "relu4_1_raw_output_to_style": raw_to_style,
    }
    labels = list(labels) if labels is not None else [str(i) for i in range(len(content))]
    result: dict = {key: round(float(value.mean()), 5) for key, value in figures.items()}
    result["gram_reduction_of_means"] = round(1.0 - float(gram_output.mean() / gram_content.mean()), 5)
    result["pairs"] = {
        label: {key: round(float(value[i]), 5) for key, value in figures.items()}
        for i, label in enumerate(labels)
    }
    return result


def passes(figures: dict) -> dict[str, bool]:
    """The two acceptance criteria, for every pair: Gram reduction >= 30%, output closer to content."""
    pairs = figures["pairs"].values()
    return {
        "gram_reduction_at_least_30pct": all(p["gram_reduction"] >= GRAM_REDUCTION_MIN for p in pairs),
        "closer_to_content_than_style": all(
            p["relu4_1_output_to_content"] < p["relu4_1_output_to_style"] for p in pairs
        ),
    }


Runner = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``(content, style, alpha) -> image``: a PyTorch network or an ONNX Runtime session, as numpy."""


def torch_runner(network: StyleNetwork) -> Runner:
    """Wrap a ``StyleNetwork`` as a numpy ``Runner``."""

    @torch.no_grad()
    def run(content: np.ndarray, style: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        images = [torch.from_numpy(array) for array in (content, style, alpha)]
        return network(*images).numpy()

    return run


def evaluate(network: StyleNetwork, run: Runner | None = None, size: int = EVAL_SIZE) -> dict:
    """Quality figures on every held-out pair at ``size``, outputs from ``run`` (default: ``network``).

    Runs one pair at a time to bound memory. Adds ``gram_reduction_independent_encoder``: the Gram
    reduction measured with a second, independently seeded encoder the decoder never saw.
    """
    run = run or torch_runner(network)
    content, style, labels = held_out_pairs(size)
    ones = np.ones(1, dtype=np.float32)
    output = np.concatenate([run(content[i : i + 1], style[i : i + 1], ones) for i in range(len(content))])
    figures = measure(network, content, style, output, labels=labels)
    independent = VGGEncoder(seed=network.config.encoder_seed + 1)
    cross = measure(network, content, style, output, labels=labels, encoder=independent)
    figures["gram_reduction_independent_encoder"] = cross["gram_reduction"]
    # Baselines under the same measure: a flat grey image, and the content with the style's
    # per-channel pixel mean and standard deviation (plain colour transfer, no network).
    grey = measure(network, content, style, np.zeros_like(content))
    figures["baseline_gram_reduction_grey"] = grey["gram_reduction"]
    figures["baseline_gram_reduction_colour_transfer"] = measure(
        network, content, style, colour_transfer(content, style)
    )["gram_reduction"]
    figures["passes"] = passes(figures)
    return figures


def colour_transfer(content: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Give each content image its style image's per-channel pixel mean and standard deviation."""
    c_mean, c_std = content.mean(axis=(2, 3), keepdims=True), content.std(axis=(2, 3), keepdims=True)
    s_mean, s_std = style.mean(axis=(2, 3), keepdims=True), style.std(axis=(2, 3), keepdims=True)
    return ((content - c_mean) / (c_std + 1e-6) * s_std + s_mean).astype(np.float32)


def contact_sheet(network: StyleNetwork, path: Path, size: int = EVAL_SIZE) -> Path:
    """Write a PNG: one row per held-out pair, content | style | output at alpha 1 | alpha 0.5."""
    from PIL import Image

    content, style, _ = held_out_pairs(size)
    run = torch_runner(network)
    rows = []
    for i in range(len(content)):
        c, s = content[i : i + 1], style[i : i + 1]
        full = run(c, s, np.ones(1, dtype=np.float32))
        half = run(c, s, np.full(1, 0.5, dtype=np.float32))
        tiles = to_uint8(np.concatenate([c, s, full, half]))  # (4, size, size, 3)
        rows.append(np.concatenate(list(tiles), axis=1))  # (size, 4 * size, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the held-out quality figures of a style checkpoint and write its contact sheet."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--vgg-weights", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=DEFAULT_SHEET)
    parser.add_argument("--size", type=int, default=EVAL_SIZE)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    network = load_style_network(args.weights, args.vgg_weights)
    print(json.dumps(evaluate(network, size=args.size), indent=2))
    print(f"wrote {contact_sheet(network, args.sheet, args.size)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
