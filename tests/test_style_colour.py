"""Colour histogram matching of the style-transfer pipeline (numpy only, as served)."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.server.colour import luma, match_channel, match_histograms


def smooth_image(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A random image with structure: a colour ramp plus noise, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, shape[1])[None, :, None] * rng.uniform(60, 200, 3)
    noise = rng.normal(0, 20, (*shape, 3))
    return np.clip(ramp + noise + rng.uniform(0, 50, 3), 0, 255).astype(np.uint8)


def test_channel_matching_takes_the_target_histogram() -> None:
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    target = np.clip(rng.normal(80, 10, (50, 70)), 0, 255).astype(np.uint8)
    mapped = match_channel(source, target)
    assert abs(mapped.mean() - target.mean()) < 1.0 and abs(mapped.std() - target.std()) < 1.0
    order = np.argsort(source.reshape(-1), kind="stable")
    assert np.all(np.diff(mapped.reshape(-1)[order]) >= 0)  # monotonic in the source level


def test_match_histograms_alpha_and_luma() -> None:
    image, style = smooth_image(2), smooth_image(3, (40, 40))
    assert np.array_equal(match_histograms(image, style, 0.0), image)
    matched = match_histograms(image, style, 1.0)
    assert matched.shape == image.shape and matched.dtype == np.uint8
    # Channel means move to the style's.
    for c in range(3):
        assert abs(float(matched[..., c].mean()) - float(style[..., c].mean())) < 6
    # Luma stays a monotonic map of the input's (up to rounding): the brightness order survives.
    source, result = luma(image).reshape(-1), luma(matched).reshape(-1)
    order = np.argsort(source)
    assert np.corrcoef(source[order], result[order])[0, 1] > 0.97
    half = match_histograms(image, style, 0.5).astype(float)
    # A blend (pixels that the full match clipped to 0 or 255 differ by a little more).
    assert np.abs(half - 0.5 * (image.astype(float) + matched)).mean() <= 1.0


def test_match_histograms_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError, match="uint8"):
        match_histograms(np.zeros((4, 4, 3)), np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        match_histograms(np.zeros((4, 4, 4), dtype=np.uint8), np.zeros((4, 4, 3), dtype=np.uint8))
