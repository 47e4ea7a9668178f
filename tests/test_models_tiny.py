"""The model families' logic on tiny configurations: shapes, batch safety, checkpoints, training loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genserve.export import diffusion, gan
from genserve.export.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from genserve.export.classifier import (
    ClassifierConfig,
    DigitClassifier,
    frechet_distance,
    nearest_neighbour_rms,
    per_label_accuracy,
)
from genserve.export.data import load_split

TINY_GAN = gan.GANConfig(width=8, latent_dim=16, embed_dim=8)
TINY_UNET = diffusion.UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4)


def test_digits_are_split_once_and_in_range():
    train, held_out = load_split()
    assert len(train) + len(held_out) == 1797 and len(held_out) == 360
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == np.float32
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert set(np.unique(held_out.labels)) == set(range(10))
    again, _ = load_split()
    np.testing.assert_array_equal(train.labels, again.labels)


@pytest.mark.parametrize("config", [TINY_GAN, gan.GANConfig(image_size=64, channels=3, width=8)])
def test_generator_shapes_and_range(config):
    generator = gan.Generator(config).eval()
    z = torch.randn(3, config.latent_dim)
    image = generator(z, torch.tensor([0, 4, 9]))
    assert image.shape == (3, config.channels, config.image_size, config.image_size)
    assert image.abs().max() <= 1.0
    score = gan.Discriminator(config)(image, torch.tensor([0, 4, 9]))
    assert score.shape == (3,)


def test_gan_configs_validate():
    with pytest.raises(ValueError, match="image_size=48.*32, 64"):
        gan.GANConfig(image_size=48)
    assert gan.DCGAN64.image_size == 64 and gan.DCGAN64.channels == 3 and gan.DCGAN64.width == 64


def test_unet_rows_are_independent():
    unet = diffusion.UNet(TINY_UNET).eval()
    torch.manual_seed(0)
    for p in unet.parameters():  # zero-initialised output layers would hide everything
        p.data.normal_(0, 0.1)
    x = torch.randn(3, 1, 32, 32)
    t = torch.tensor([0, 500, 999])
    y = torch.tensor([1, 10, 9])
    with torch.no_grad():
        batched = unet(x, t, y)
        singles = torch.cat([unet(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(3)])
    assert batched.shape == x.shape
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_unet_configs():
    assert diffusion.DEFAULT.attention and not diffusion.SMALL.attention
    with pytest.raises(ValueError, match="groups"):
        diffusion.UNetConfig(base_channels=12, groups=8)


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    generator = gan.Generator(TINY_GAN)
    path = tmp_path / "gan.safetensors"
    save_checkpoint(path, "gan", TINY_GAN.to_dict(), generator)
    loaded = gan.load_generator(path)
    assert loaded.config == TINY_GAN and not loaded.training
    with pytest.raises(CheckpointError, match="holds a gan checkpoint, expected diffusion"):
        diffusion.load_unet(path)
    with pytest.raises(CheckpointError, match="weights not found"):
        gan.load_generator(tmp_path / "missing.safetensors")
    # Same family, config that does not match the tensors: the wrong architecture.
    wrong = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, "gan", {**TINY_GAN.to_dict(), "width": 16}, generator)
    with pytest.raises(CheckpointError, match="does not fit Generator"):
        gan.load_generator(wrong)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(bad, "gan")


def test_quality_measures():
    a = np.random.default_rng(0).standard_normal((200, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(36.0, rel=1e-6)
    accuracy = per_label_accuracy(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    assert (
        accuracy["0"] == 1.0 and accuracy["1"] == 0.5 and accuracy["min"] == 0.5 and accuracy["all"] == 0.75
    )
    images = np.random.default_rng(1).uniform(-1, 1, (5, 1, 4, 4))
    np.testing.assert_allclose(nearest_neighbour_rms(images, images), 0.0, atol=1e-6)
    logits = DigitClassifier(ClassifierConfig(width=4, features=8))(torch.zeros(2, 1, 32, 32))
    assert logits.shape == (2, 10)


def _run(module, tmp_path, *extra):
    return module.main(
        ["--steps", "2", "--batch-size", "8", "--out", str(tmp_path), "--no-progress", "--no-eval", *extra]
    )


@pytest.mark.parametrize("family", ["gan", "diffusion", "classifier"])
def test_training_loop_writes_weights_and_card(family, tmp_path):
    import importlib

    module = importlib.import_module(f"genserve.export.train_{family}")
    assert _run(module, tmp_path) == 0
    card = json.loads((tmp_path / f"{family}.json").read_text())
    assert card["steps"] == 2 and card["wall_time_s"] >= 0 and card["final_losses"]
    assert "load_digits" in card["data"]
    assert load_file(str(tmp_path / f"{family}.safetensors"))


def test_training_is_deterministic(tmp_path):
    from genserve.export import train_gan

    _run(train_gan, tmp_path / "a")
    _run(train_gan, tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "gan.safetensors"))
    b = load_file(str(tmp_path / "b" / "gan.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_train_cli_rejects_unknown_family(capsys):
    from genserve.export.cli_train import main

    assert main(["vae"]) == 2
    assert "unknown family 'vae'; allowed: gan, diffusion, classifier, style" in capsys.readouterr().err
