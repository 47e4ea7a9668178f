"""Colour histogram matching, the last step of both style-transfer modes.

The style network (and the optimization) move textures and channel statistics toward the style in
VGG feature space; matching the output's colour histograms to the style image's then gives it the
style's palette. Two steps:

1. iterative distribution transfer (Pitie, Kokaram & Dahyot, 2005): ``ROTATIONS`` times, rotate the
   RGB values by a fixed random rotation, map each rotated axis monotonically to the style's
   distribution along that axis, rotate back. This moves the joint RGB distribution to the
   style's (matching R, G and B separately, or Y, Cb and Cr, left the joint histograms far apart
   on the held-out pairs: a grey style came out tinted, a colourful one in the wrong combinations);
2. the luma of that result is replaced by a monotonic map of the *input's* luma: a blend of full
   histogram matching and a mean/std match (``luma_weight``). Matching R, G and B separately to a
   grey style mixes them into a new luminance unrelated to the photo's (a blue sky and a green tree
   of one brightness come out different greys), and full luma matching to a narrow histogram
   amplifies flat-area noise; the blend keeps the content's edges and shading. Adding the same
   offset to R, G and B changes luma only, so step 1's chroma stays.

``alpha`` blends matched and unmatched pixels, as it blends features.
"""

from __future__ import annotations

import numpy as np

LEVELS = 256
LUMA = np.array([0.299, 0.587, 0.114])
"""ITU-R BT.601 luma weights (what the quality measure's grayscale uses too)."""
LUMA_WEIGHT = 0.75
"""Share of full histogram matching in the output's luma (the rest: mean/std matching)."""
ROTATIONS = 10
"""Rotations of the distribution transfer; the joint histograms stop improving at about 10."""
ROTATION_SEED = 0


def _quantiles(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The levels that occur in a uint8 channel and their cumulative shares, both increasing."""
    levels, counts = np.unique(channel.reshape(-1), return_counts=True)
    return levels.astype(np.float64), np.cumsum(counts) / channel.size


def match_channel(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map each level of uint8 ``source`` to the ``target`` level at the same quantile (float64)."""
    source_levels, source_quantiles = _quantiles(source)
    target_levels, target_quantiles = _quantiles(target)
    mapped = np.interp(source_quantiles, target_quantiles, target_levels)  # one value per source level
    lookup = np.zeros(LEVELS)
    lookup[source_levels.astype(np.int64)] = mapped
    return lookup[source]


def match_values(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map float ``source`` values monotonically onto the distribution of ``target`` (any sizes)."""
    order = np.argsort(source, kind="stable")
    quantiles = (np.arange(source.size) + 0.5) / source.size
    target_quantiles = (np.arange(target.size) + 0.5) / target.size
    matched = np.empty(source.shape, dtype=np.float64)
    matched[order] = np.interp(quantiles, target_quantiles, np.sort(target))
    return matched


def rotations(count: int = ROTATIONS, seed: int = ROTATION_SEED) -> list[np.ndarray]:
    """``count`` fixed random 3x3 rotations (orthogonal matrices from QR of Gaussian matrices)."""
    rng = np.random.default_rng(seed)
    return [np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(count)]


def transfer_distribution(image: np.ndarray, style: np.ndarray, count: int = ROTATIONS) -> np.ndarray:
    """Move the joint RGB distribution of ``image`` to ``style``'s: float64 ``[H, W, 3]``."""
    pixels = image.reshape(-1, 3).astype(np.float64)
    targets = style.reshape(-1, 3).astype(np.float64)
    for rotation in rotations(count):
        rotated, rotated_targets = pixels @ rotation, targets @ rotation
        for axis in range(3):
            rotated[:, axis] = match_values(rotated[:, axis], rotated_targets[:, axis])
        pixels = rotated @ rotation.T
    return pixels.reshape(image.shape)


def luma(image: np.ndarray) -> np.ndarray:
    """RGB ``[..., 3]`` -> float64 luma ``[...]`` in the same range."""
    return np.asarray(image, dtype=np.float64) @ LUMA


def match_histograms(
    image: np.ndarray, style: np.ndarray, alpha: float = 1.0, *, luma_weight: float = LUMA_WEIGHT
) -> np.ndarray:
    """Give ``image`` the colour distribution of ``style``, keeping a monotonic map of its luma.

    Args:
        image: uint8 ``[H, W, 3]``.
        style: uint8 ``[Hs, Ws, 3]`` (any size).
        alpha: 0 returns ``image`` unchanged, 1 the fully matched image; in between a blend.
        luma_weight: Share of full histogram matching in the luma, 0..1 (see the module notes).

    Returns:
        uint8 ``[H, W, 3]``.
    """
    if image.dtype != np.uint8 or style.dtype != np.uint8:
        raise ValueError(f"match_histograms needs uint8 images; got {image.dtype} and {style.dtype}")
    if image.ndim != 3 or style.ndim != 3 or image.shape[2] != 3 or style.shape[2] != 3:
        raise ValueError(f"images must be RGB [H, W, 3]; got {list(image.shape)} and {list(style.shape)}")
    matched = transfer_distribution(image, style)
    source_luma, style_luma = luma(image), luma(style)
    full = match_channel(_to_uint8(source_luma), _to_uint8(style_luma))
    scaled = (source_luma - source_luma.mean()) / (source_luma.std() + 1e-6) * style_luma.std()
    wanted = luma_weight * full + (1.0 - luma_weight) * (scaled + style_luma.mean())
    matched += (wanted - luma(matched))[..., None]  # the same offset on R, G, B moves luma only
    blended = alpha * matched + (1.0 - alpha) * image.astype(np.float64)
    return _to_uint8(blended)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
