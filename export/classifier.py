"""A small digit classifier and the quality measures built on it.

The classifier judges generated digits: per-label accuracy of conditional samples, a domain FID on
its penultimate features (with noise and untrained-model baselines to read it against) and the
distance of each sample to its nearest training image (to show samples are not copies).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genserve.client.contract import NUM_CLASSES
from genserve.export.checkpoint import load_model

FAMILY = "classifier"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the classifier.

    Attributes:
        width: Channels of the first convolution; each of the three stages doubles it.
        features: Size of the penultimate layer (the FID features).
        num_classes: Labels.
    """

    width: int = 16
    features: int = 64
    num_classes: int = NUM_CLASSES

    def to_dict(self) -> dict[str, int]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class DigitClassifier(nn.Module):
    """``image [B, 1, 32, 32]`` in [-1, 1] -> logits ``[B, num_classes]``."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
            )

        self.body = nn.Sequential(
            stage(1, w), stage(w, 2 * w), stage(2 * w, 4 * w), nn.Flatten()
        )  # (B, 4w*4*4)
        self.penultimate = nn.Sequential(nn.Linear(4 * w * 16, config.features), nn.ReLU())
        self.head = nn.Linear(config.features, config.num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, features]``, the space of the domain FID."""
        return self.penultimate(self.body(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Label logits ``[B, num_classes]``."""
        return self.head(self.features(image))


@torch.no_grad()
def predict(
    classifier: DigitClassifier, images: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted labels ``[N]`` and penultimate features ``[N, F]`` of float images in [-1, 1]."""
    classifier.eval()
    labels, feats = [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32))
        f = classifier.features(x)
        labels.append(classifier.head(f).argmax(1).numpy())
        feats.append(f.numpy())
    return np.concatenate(labels), np.concatenate(feats).astype(np.float64)


def per_label_accuracy(
    predicted: np.ndarray, wanted: np.ndarray, num_classes: int = NUM_CLASSES
) -> dict[str, float]:
    """Share of rows classified as the label they were generated for: per label, their minimum and overall."""
    result = {
        str(k): float(np.mean(predicted[wanted == k] == k)) for k in range(num_classes) if np.any(wanted == k)
    }
    result["min"] = min(result.values())
    result["all"] = float(np.mean(predicted == wanted))
    return result


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N, F]`` (Heusel et al. 2017)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
        eps = np.eye(len(mu_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def nearest_neighbour_rms(samples: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample, the RMS pixel distance (in [-1, 1] units) to its nearest image in ``reference``."""
    s = samples.reshape(len(samples), -1).astype(np.float64)
    r = reference.reshape(len(reference), -1).astype(np.float64)
    d2 = (s**2).sum(1)[:, None] + (r**2).sum(1)[None, :] - 2.0 * s @ r.T
    return np.sqrt(np.clip(d2.min(1), 0.0, None) / s.shape[1])


def quality_report(
    classifier: DigitClassifier,
    samples: np.ndarray,
    wanted: np.ndarray,
    train_images: np.ndarray,
    held_out_images: np.ndarray,
    baselines: dict[str, np.ndarray] | None = None,
) -> dict:
    """Quality figures of conditional samples, read against real held-out digits and baselines.

    Args:
        classifier: The trained digit classifier.
        samples: float32 ``[N, 1, 32, 32]`` generated images in [-1, 1].
        wanted: int64 ``[N]`` labels the samples were conditioned on.
        train_images: The generator's training images (for FID and nearest neighbours).
        held_out_images: Real digits the generator never saw (the reference for "not a copy").
        baselines: Named other image sets (e.g. noise, an untrained model) to get an FID beside.

    Returns:
        A JSON-ready dict: ``accuracy`` (per label, ``min``, ``all``), ``fid`` (samples and
        baselines vs the training set; held-out real digits as the floor) and ``nearest_neighbour``
        (median/min RMS distance of samples and of held-out digits to the training set).
    """
    predicted, feats = predict(classifier, samples)
    _, train_feats = predict(classifier, train_images)
    _, held_feats = predict(classifier, held_out_images)
    fid = {
        "samples": frechet_distance(feats, train_feats),
        "held_out_real": frechet_distance(held_feats, train_feats),
    }
    for name, images in (baselines or {}).items():
        fid[name] = frechet_distance(predict(classifier, images)[1], train_feats)
    nn_samples = nearest_neighbour_rms(samples, train_images)
    nn_held = nearest_neighbour_rms(held_out_images, train_images)
    return {
        "accuracy": per_label_accuracy(predicted, wanted),
        "fid": fid,
        "nearest_neighbour": {
            "samples_median": float(np.median(nn_samples)),
            "samples_min": float(nn_samples.min()),
            "held_out_real_median": float(np.median(nn_held)),
            "held_out_real_min": float(nn_held.min()),
        },
        "num_samples": len(samples),
    }


def load_classifier(path: Path | None = None) -> DigitClassifier:
    """Rebuild the classifier a ``classifier`` checkpoint describes and load its weights (eval mode).

    Raises:
        CheckpointError: If the file is missing, of another family, or does not fit its config.
    """
    return load_model(path, FAMILY, lambda config: DigitClassifier(ClassifierConfig(**config)))[0]
