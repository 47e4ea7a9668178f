"""Quality of the committed weights: conditional samples are classified as their label, not copied.

The figures are recomputed here from fixed seeds with the digit classifier; the cards hold the
larger evaluation (``python -m genserve.export.evaluate gan|diffusion``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genserve.export import diffusion, gan
from genserve.export.checkpoint import WEIGHTS_DIR
from genserve.export.classifier import load_classifier, nearest_neighbour_rms, per_label_accuracy, predict
from genserve.export.data import load_split
from genserve.export.evaluate import REPORTS_DIR
from genserve.export.sampling import diffusion_samples, evaluation_rows, gan_samples, torch_fn
from genserve.server import ddim

MIN_ACCURACY = 0.8


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(2)
    return load_classifier()


@pytest.fixture(scope="module")
def digits():
    return load_split()


def _check(classifier, digits, images, labels, family):
    predicted, _ = predict(classifier, images)
    accuracy = per_label_accuracy(predicted, labels)
    print(f"{family} per-label accuracy: {json.dumps(accuracy)}")
    low = {k: v for k, v in accuracy.items() if v < MIN_ACCURACY}
    assert not low, f"{family}: labels below {MIN_ACCURACY:.0%}: {low}"
    train, held_out = digits
    samples_nn = np.median(nearest_neighbour_rms(images, train.images))
    real_nn = np.median(nearest_neighbour_rms(held_out.images, train.images))
    print(
        f"{family} median nearest-training-image RMS: samples {samples_nn:.3f}, held-out real {real_nn:.3f}"
    )
    assert samples_nn > 0.5 * real_nn, "samples sit closer to training images than unseen real digits do"


def test_classifier_is_accurate_on_held_out_digits(classifier, digits):
    _, held_out = digits
    predicted, _ = predict(classifier, held_out.images)
    assert per_label_accuracy(predicted, held_out.labels)["min"] >= 0.95


def test_gan_samples_show_their_label(classifier, digits):
    generator = gan.load_generator()
    labels, seeds = evaluation_rows(30)
    images = gan_samples(torch_fn(generator), generator.config.latent_dim, labels, seeds)
    assert images.shape == (300, 1, 32, 32) and np.abs(images).max() <= 1.0
    _check(classifier, digits, images, labels, "gan")


@pytest.mark.slow
def test_diffusion_samples_show_their_label(classifier, digits):
    unet, schedule = diffusion.load_unet()
    labels, seeds = evaluation_rows(12)
    images = diffusion_samples(torch_fn(unet), schedule, labels, seeds, steps=20, guidance=2.0)
    _check(classifier, digits, images, labels, "diffusion")


def test_batched_diffusion_equals_single_runs_row_by_row():
    unet, schedule = diffusion.load_unet()
    eps = torch_fn(unet)
    labels, seeds = np.array([3, 8, 10]), np.array([5, 6, 7])
    kwargs = dict(shape=(1, 32, 32), steps=4, guidance=2.0, eta=0.5)
    batched = ddim.sample(schedule, eps, labels, seeds, **kwargs)
    for i in range(3):
        single = ddim.sample(schedule, eps, labels[i : i + 1], seeds[i : i + 1], **kwargs)
        np.testing.assert_allclose(batched[i : i + 1], single, atol=1e-4)


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_cards_and_contact_sheets_are_committed(family):
    card = json.loads((WEIGHTS_DIR / f"{family}.json").read_text())
    for key in ("data", "steps", "wall_time_s", "final_losses", "quality"):
        assert key in card
    quality = card["quality"]
    assert quality["accuracy"]["min"] >= MIN_ACCURACY
    assert (
        quality["fid"]["samples"] < quality["fid"]["noise"]
        and quality["fid"]["samples"] < quality["fid"]["untrained_model"]
    )
    assert (REPORTS_DIR / f"{family}_samples.png").stat().st_size > 1000


def test_committed_weights_stay_small():
    sizes = {
        p.name: p.stat().st_size
        for p in WEIGHTS_DIR.glob("*.safetensors")
        if p.stem in ("gan", "diffusion", "classifier")
    }
    assert sum(sizes.values()) <= 15 * 2**20, sizes
