"""The training data: scikit-learn's 8x8 digits, upsampled to 32x32, in [-1, 1].

The digits ship inside scikit-learn, so nothing is downloaded. Ink is bright (+1) on a dark (-1)
background. The train/held-out split is fixed by a seed so every family, the classifier and the
quality checks agree on which images a model has seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
"""Side of the upsampled digits."""

SPLIT_SEED = 0
"""Seed of the fixed train/held-out split."""

HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Digits:
    """Digit images and their labels.

    Attributes:
        images: float32 ``[N, 1, 32, 32]`` in [-1, 1].
        labels: int64 ``[N]`` in 0..9.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def upsample(images_8x8: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinearly upsample ``[N, 8, 8]`` digit intensities (0..16) to ``[N, 1, size, size]`` in [-1, 1]."""
    x = torch.from_numpy(np.asarray(images_8x8, dtype=np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)  # (N, 1, size, size)
    return (x.clamp(0.0, 1.0) * 2.0 - 1.0).numpy()


def load_split(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[Digits, Digits]:
    """Load all 1797 digits and split them into ``(train, held_out)``, stratified by label.

    Args:
        seed: Seed of the split; the default is the one every committed model was trained with.
        held_out_fraction: Share of each label kept out of training.

    Returns:
        The training and the held-out digits.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = upsample(digits.images)
    labels = digits.target.astype(np.int64)
    train_idx, held_idx = train_test_split(
        np.arange(len(labels)), test_size=held_out_fraction, random_state=seed, stratify=labels
    )
    train_idx, held_idx = np.sort(train_idx), np.sort(held_idx)
    return Digits(images[train_idx], labels[train_idx]), Digits(images[held_idx], labels[held_idx])


def batches(data: Digits, batch_size: int, generator: torch.Generator):
    """Yield shuffled ``(images, labels)`` torch batches forever, reshuffling every epoch.

    Args:
        data: The digits to draw from.
        batch_size: Rows per batch; the last partial batch of an epoch is dropped.
        generator: Torch generator that makes the order deterministic.

    Yields:
        ``(images [B, 1, 32, 32] float32, labels [B] int64)``.
    """
    images = torch.from_numpy(data.images)
    labels = torch.from_numpy(data.labels)
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield images[index], labels[index]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (background-filled), for augmentation."""
    if max_shift <= 0:
        return images
    B, C, H, W = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)  # (B, C, H + 2s, W + 2s)
    shifts = torch.randint(0, 2 * max_shift + 1, (B, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + H, dx : dx + W] for i, (dy, dx) in enumerate(shifts.tolist())])
