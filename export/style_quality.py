"""Held-out quality of style transfer: does the output keep the content and take the style?

The images ship inside scikit-learn and scikit-image; this module names them, holds some out of
training and measures, on six held-out content/style pairs (the demo pair among them) at 256x256,
what the served image is (the network's output, clipped to uint8 and colour-matched by
``genserve.server.colour`` exactly as the serving pipeline does):

- **structure**: the Pearson correlation of Sobel edge magnitudes (grayscale) of the output and of
  the content image; bars: mean >= 0.5, every pair >= 0.35. For scale: content vs its unrelated
  style image;
- **texture**: the relative Gram-matrix distance to the style image on the seeded encoder's relu1_1
  .. relu4_1 features; bar: at least 50% smaller than the content image's;
- **colour**: the total-variation distance between joint RGB histograms (8 levels a channel, 512
  bins) of the output and of the style image; bar: at least 50% smaller than the content image's.

Baselines under the same measures: the content image with only its colour histograms matched
(no network), and the content itself. ``python -m genserve.export.style_quality`` prints the
figures for the committed weights and writes the contact sheet.
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
    STYLE_LAYERS,
    StyleNetwork,
    VGGEncoder,
    imagenet_normalize,
    load_style_network,
    mean_std,
)
from genserve.server.colour import match_histograms

EXPORT_DIR = Path(__file__).resolve().parent
DEFAULT_WEIGHTS = EXPORT_DIR / "weights" / "style.safetensors"
DEFAULT_SHEET = EXPORT_DIR / "reports" / "style_samples.png"

HELD_OUT_PAIRS = (
    ("sklearn:china.jpg", "sklearn:flower.jpg"),  # the demo pair
    ("sklearn:china.jpg", "skimage:brick"),
    ("skimage:coffee", "skimage:immunohistochemistry"),
    ("skimage:coffee", "sklearn:flower.jpg"),
    ("skimage:chelsea", "skimage:immunohistochemistry"),
    ("skimage:chelsea", "skimage:brick"),
)
"""(content, style) pairs of images never seen in training; the first is ``make demo``'s."""
HELD_OUT_CONTENT = tuple(dict.fromkeys(c for c, _ in HELD_OUT_PAIRS))
HELD_OUT_STYLE = tuple(dict.fromkeys(s for _, s in HELD_OUT_PAIRS))
TRAIN_IMAGES = (
    "skimage:astronaut",
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

EDGE_CORRELATION_MEAN_MIN = 0.5
EDGE_CORRELATION_PAIR_MIN = 0.35
GRAM_REDUCTION_MIN = 0.5
"""Required relative reduction of the Gram distance to the style (output vs content image)."""
HISTOGRAM_REDUCTION_MIN = 0.5
"""Required relative reduction of the colour-histogram distance to the style (output vs content)."""
HISTOGRAM_LEVELS = 8
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


def held_out_images(size: int = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every held-out pair as uint8 ``[P, size, size, 3]`` content and style, and a label per pair."""
    names = set(HELD_OUT_CONTENT) | set(HELD_OUT_STYLE)
    images = {name: square_image(load_image(name), size) for name in names}
    content = np.stack([images[c] for c, _ in HELD_OUT_PAIRS])
    style = np.stack([images[s] for _, s in HELD_OUT_PAIRS])
    labels = [f"{c.split(':')[1]} + {s.split(':')[1]}" for c, s in HELD_OUT_PAIRS]
    return content, style, labels


def held_out_pairs(size: int = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every held-out pair as model inputs: float32 ``[P, 3, size, size]`` in ``[-1, 1]`` (and labels)."""
    content, style, labels = held_out_images(size)
    return from_uint8(content), from_uint8(style), labels


# -- structure ------------------------------------------------------------------------------------
def grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> float64 luma ``[..., H, W]`` in ``[0, 1]`` (ITU-R 601 weights)."""
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0


def sobel_magnitude(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of ``[..., H, W]``, over the interior ``[..., H - 2, W - 2]``."""
    g = gray
    gx = (g[..., :-2, 2:] + 2 * g[..., 1:-1, 2:] + g[..., 2:, 2:]) - (
        g[..., :-2, :-2] + 2 * g[..., 1:-1, :-2] + g[..., 2:, :-2]
    )
    gy = (g[..., 2:, :-2] + 2 * g[..., 2:, 1:-1] + g[..., 2:, 2:]) - (
        g[..., :-2, :-2] + 2 * g[..., :-2, 1:-1] + g[..., :-2, 2:]
    )
    return np.hypot(gx, gy)


def edge_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the Sobel edge maps of uint8 images ``[P, H, W, 3]``: ``[P]``."""
    ea = sobel_magnitude(grayscale(a)).reshape(len(a), -1)
    eb = sobel_magnitude(grayscale(b)).reshape(len(b), -1)
    ea, eb = ea - ea.mean(axis=1, keepdims=True), eb - eb.mean(axis=1, keepdims=True)
    return (ea * eb).sum(axis=1) / np.sqrt((ea**2).sum(axis=1) * (eb**2).sum(axis=1) + 1e-12)


# -- colour ---------------------------------------------------------------------------------------
def colour_histogram(images: np.ndarray, levels: int = HISTOGRAM_LEVELS) -> np.ndarray:
    """Joint RGB histograms of uint8 ``[P, H, W, 3]``: ``[P, levels**3]``, each summing to 1."""
    q = (images.astype(np.int64) * levels) // 256  # (P, H, W, 3) in 0..levels-1
    bins = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]  # (P, H, W)
    counts = np.stack([np.bincount(b.reshape(-1), minlength=levels**3) for b in bins]).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Total-variation distance (0 = same colours, 1 = disjoint) of joint RGB histograms: ``[P]``."""
    return 0.5 * np.abs(colour_histogram(a) - colour_histogram(b)).sum(axis=1)


# -- texture --------------------------------------------------------------------------------------
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


@torch.no_grad()
def _features(encoder: VGGEncoder, images: np.ndarray) -> Features:
    return encoder.features_at(imagenet_normalize(torch.from_numpy(from_uint8(images))), STYLE_LAYERS)


# -- the measures together ------------------------------------------------------------------------
def finish(raw: np.ndarray, style: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """What the serving pipeline makes of raw outputs: uint8, then colour histograms matched.

    Args:
        raw: float ``[P, 3, H, W]`` network (or optimization) outputs, about ``[-1, 1]``.
        style: uint8 ``[P, Hs, Ws, 3]`` style images.
        alpha: The style weight the outputs were made with.

    Returns:
        uint8 ``[P, H, W, 3]``.
    """
    images = to_uint8(raw)
    return np.stack([match_histograms(o, s, alpha) for o, s in zip(images, style, strict=True)])


@torch.no_grad()
def measure(
    encoder: VGGEncoder,
    content: np.ndarray,
    style: np.ndarray,
    output: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
) -> dict:
    """Quality figures of finished outputs for (content, style) pairs, all uint8 ``[P, H, W, 3]``.

    Returns:
        Means over pairs (``edge_correlation``, ``edge_correlation_min``, ``gram_content_to_style``,
        ``gram_output_to_style``, ``gram_reduction``, ``histogram_content_to_style``,
        ``histogram_output_to_style``, ``histogram_reduction``, ``style_loss``) and ``pairs``, the
        per-pair figures.
    """
    fc, fs, fo = (_features(encoder, images) for images in (content, style, output))
    gram_content, gram_output = gram_distance(fc, fs).numpy(), gram_distance(fo, fs).numpy()
    hist_content, hist_output = histogram_distance(content, style), histogram_distance(output, style)
    figures = {
        "edge_correlation": edge_correlation(output, content),
        "gram_content_to_style": gram_content,
        "gram_output_to_style": gram_output,
        "gram_reduction": 1.0 - gram_output / gram_content,
        "histogram_content_to_style": hist_content,
        "histogram_output_to_style": hist_output,
        "histogram_reduction": 1.0 - hist_output / hist_content,
        "style_loss": style_loss(fo, fs).numpy(),
    }
    labels = list(labels) if labels is not None else [str(i) for i in range(len(content))]
    result: dict = {key: round(float(np.mean(value)), 5) for key, value in figures.items()}
    result["edge_correlation_min"] = round(float(np.min(figures["edge_correlation"])), 5)
    result["pairs"] = {
        label: {key: round(float(value[i]), 5) for key, value in figures.items()}
        for i, label in enumerate(labels)
    }
    return result


def passes(figures: dict) -> dict[str, bool]:
    """The acceptance bars: edges kept, Gram and histogram distances halved (means and every pair)."""
    pairs = figures["pairs"].values()
    return {
        "edge_correlation_mean_at_least_0.5": figures["edge_correlation"] >= EDGE_CORRELATION_MEAN_MIN,
        "edge_correlation_every_pair_at_least_0.35": all(
            p["edge_correlation"] >= EDGE_CORRELATION_PAIR_MIN for p in pairs
        ),
        "gram_reduction_mean_at_least_50pct": figures["gram_reduction"] >= GRAM_REDUCTION_MIN,
        "gram_reduction_every_pair_at_least_50pct": all(
            p["gram_reduction"] >= GRAM_REDUCTION_MIN for p in pairs
        ),
        "histogram_reduction_mean_at_least_50pct": figures["histogram_reduction"] >= HISTOGRAM_REDUCTION_MIN,
        "histogram_reduction_every_pair_at_least_50pct": all(
            p["histogram_reduction"] >= HISTOGRAM_REDUCTION_MIN for p in pairs
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


def stylize_pairs(run: Runner, content: np.ndarray, style: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Finished outputs (uint8 ``[P, H, W, 3]``) of ``run`` for uint8 pairs, one pair at a time."""
    weight = np.full(1, alpha, dtype=np.float32)
    raw = np.concatenate(
        [
            run(from_uint8(content[i : i + 1]), from_uint8(style[i : i + 1]), weight)
            for i in range(len(content))
        ]
    )
    return finish(raw, style, alpha)


def evaluate_outputs(encoder: VGGEncoder, content: np.ndarray, style: np.ndarray, output: np.ndarray) -> dict:
    """``measure`` on the held-out pairs plus the baselines and the bars (``passes``)."""
    _, _, labels = held_out_images(content.shape[1])
    figures = measure(encoder, content, style, output, labels=labels)
    figures["passes"] = passes(figures)
    matched = np.stack([match_histograms(c, s) for c, s in zip(content, style, strict=True)])
    colour_only = measure(encoder, content, style, matched)
    figures["baseline_colour_matching_only"] = {
        key: colour_only[key]
        for key in ("edge_correlation", "edge_correlation_min", "gram_reduction", "histogram_reduction")
    }
    figures["baseline_edge_correlation_content_to_style"] = round(
        float(edge_correlation(style, content).mean()), 5
    )
    return figures


def evaluate(network: StyleNetwork, run: Runner | None = None, size: int = EVAL_SIZE) -> dict:
    """Quality figures of the feed-forward network on every held-out pair at ``size``.

    Outputs come from ``run`` (default: ``network`` in PyTorch) and are finished as served.
    """
    content, style, _ = held_out_images(size)
    output = stylize_pairs(run or torch_runner(network), content, style)
    return evaluate_outputs(network.encoder, content, style, output)


def contact_sheet(columns: Sequence[np.ndarray], path: Path) -> Path:
    """Write a PNG with one row per pair; ``columns`` are uint8 ``[P, H, W, 3]`` arrays side by side."""
    from PIL import Image

    rows = [np.concatenate([column[i] for column in columns], axis=1) for i in range(len(columns[0]))]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def network_sheet(network: StyleNetwork, path: Path, size: int = EVAL_SIZE) -> Path:
    """Contact sheet of the feed-forward network: content | style | alpha 1 | alpha 0.5 per pair."""
    content, style, _ = held_out_images(size)
    run = torch_runner(network)
    full, half = (stylize_pairs(run, content, style, alpha) for alpha in (1.0, 0.5))
    return contact_sheet([content, style, full, half], path)


def main(argv: list[str] | None = None) -> int:
    """Print the held-out quality figures of a style checkpoint and write its contact sheet."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--vgg-weights", type=Path, default=None)
    parser.add_argument("--sheet", type=Path, default=DEFAULT_SHEET)
    parser.add_argument("--size", type=int, default=EVAL_SIZE)
    parser.add_argument(
        "--update-card", action="store_true", help="write the figures into the card beside the weights"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    network = load_style_network(args.weights, args.vgg_weights)
    figures = evaluate(network, size=args.size)
    print(json.dumps(figures, indent=2))
    if args.update_card:
        card_path = args.weights.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["quality"] = {"size": args.size, **figures}
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote {card_path}")
    print(f"wrote {network_sheet(network, args.sheet, args.size)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
