"""The AdaIN style-transfer model: VGG19 loading, AdaIN maths, shapes, training, export, quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genserve.export import style_quality
from genserve.export.style import (
    LAYER_INDEX,
    StyleConfig,
    StyleNetwork,
    VGGEncoder,
    adain,
    check_image_size,
    check_inputs,
    load_style_network,
    mean_std,
)

torch.set_num_threads(2)

# torchvision's vgg19 ``features`` configuration ("E"): conv widths and "M" for max pooling.
VGG19_FEATURES = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]


def torchvision_vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features``, rebuilt by hand (torchvision is not installed)."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG19_FEATURES:
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = spec
    return nn.Sequential(*layers)


def torchvision_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """A VGG19 state dict in torchvision's key format (``features.{i}.weight``), random values.

    The classifier (``classifier.*``, 120M parameters) is left out: the encoder ignores it.
    """
    torch.manual_seed(seed)
    return {f"features.{key}": value for key, value in torchvision_vgg19_features().state_dict().items()}


def test_loads_torchvision_vgg19_state_dict(tmp_path: Path) -> None:
    state = torchvision_state_dict()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    encoder = VGGEncoder(seed=0).load_torchvision_vgg19(path)
    reference = torchvision_vgg19_features()
    reference.load_state_dict({key.removeprefix("features."): value for key, value in state.items()})
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        expected = reference[: LAYER_INDEX["relu4_1"] + 1](x)
        assert torch.equal(encoder(x), expected)
        relu2_1 = reference[: LAYER_INDEX["relu2_1"] + 1](x)
        assert torch.equal(encoder.features_at(x, ("relu2_1",))[0], relu2_1)
    # The same from an in-memory state dict.
    assert torch.equal(
        VGGEncoder(seed=5).load_torchvision_vgg19(state).features[19].weight, state["features.19.weight"]
    )


def test_vgg19_loading_errors() -> None:
    state = torchvision_state_dict()
    missing = {key: value for key, value in state.items() if key != "features.7.bias"}
    with pytest.raises(KeyError, match="features.7.bias"):
        VGGEncoder().load_torchvision_vgg19(missing)
    wrong = dict(state, **{"features.0.weight": torch.zeros(64, 1, 3, 3)})
    with pytest.raises(ValueError, match="features.0.weight"):
        VGGEncoder().load_torchvision_vgg19(wrong)


def test_seeded_encoder_is_reproducible_and_alive() -> None:
    a, b, other = VGGEncoder(seed=0), VGGEncoder(seed=0), VGGEncoder(seed=1)
    assert torch.equal(a.features[19].weight, b.features[19].weight)
    assert not torch.equal(a.features[19].weight, other.features[19].weight)
    with torch.no_grad():
        features = a(torch.randn(1, 3, 64, 64))
    assert 0.1 < float(features.pow(2).mean()) < 100  # neither vanished nor exploded


def test_adain_maths() -> None:
    torch.manual_seed(0)
    content = torch.randn(2, 8, 6, 5) * 3 + 1
    style = torch.randn(2, 8, 4, 7) * 0.5 - 2
    assert torch.allclose(adain(content, style, torch.zeros(2)), content, atol=1e-6)
    out = adain(content, style, torch.ones(2))
    (out_mean, out_std), (style_mean, style_std) = mean_std(out), mean_std(style)
    assert torch.allclose(out_mean, style_mean, atol=1e-5)
    assert torch.allclose(out_std, style_std, atol=1e-4)
    # alpha is per sample: rows never mix.
    mixed = adain(content, style, torch.tensor([0.0, 1.0]))
    assert torch.allclose(mixed[0], content[0], atol=1e-6)
    assert torch.allclose(mixed[1], out[1], atol=1e-6)
    half = adain(content, style, torch.full((2,), 0.5))
    assert torch.allclose(half, 0.5 * (out + content), atol=1e-5)


def test_network_shapes_and_size_errors() -> None:
    network = StyleNetwork(StyleConfig()).eval()
    content, style = torch.zeros(2, 3, 64, 96), torch.zeros(2, 3, 48, 40)
    alpha = torch.tensor([1.0, 0.25])
    check_inputs(content, style, alpha)
    with torch.no_grad():
        assert network(content, style, alpha).shape == (2, 3, 64, 96)
    with pytest.raises(
        ValueError, match="content height=60 is not allowed; allowed: positive multiples of 8"
    ):
        check_inputs(torch.zeros(1, 3, 60, 64), torch.zeros(1, 3, 64, 64), torch.ones(1))
    with pytest.raises(ValueError, match="style width=4"):
        check_image_size(64, 4, "style")
    with pytest.raises(ValueError, match=r"alpha must have shape \[B\]=\[2\]"):
        check_inputs(content, style, torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"alpha=1.5 is out of range; allowed range \[0, 1\]"):
        check_inputs(content, style, torch.tensor([1.0, 1.5]))
    with pytest.raises(ValueError, match="encoder='imagenet' is not allowed"):
        StyleConfig(encoder="imagenet")


def test_training_steps_run_and_are_deterministic(tmp_path: Path) -> None:
    from genserve.export.train_style import main

    def train(name: str) -> Path:
        out = tmp_path / f"{name}.safetensors"
        argv = ["--steps", "2", "--crop", "32", "--batch", "2", "--out", str(out), "--no-eval"]
        assert main(argv) == 0
        return out

    first, second = train("a"), train("b")
    card = json.loads(first.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 2
    assert set(card["final_losses"]) == {"content_loss", "style_loss"}
    assert card["encoder"]["kind"] == "seeded"
    a, b = load_style_network(first), load_style_network(second)
    for (key, x), y in zip(a.decoder.state_dict().items(), b.decoder.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert a.config == StyleConfig(encoder="seeded", encoder_seed=0)


def test_checkpoint_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    with pytest.raises(ValueError, match="not a style-network checkpoint"):
        load_style_network(bare)


@pytest.mark.slow
def test_export_parity_and_variants(tmp_path: Path) -> None:
    from genserve.export.onnx_export import PARITY_TOLERANCE
    from genserve.export.style_export import export_style

    rows = export_style(
        tmp_path / "1",
        weights=style_quality.DEFAULT_WEIGHTS,
        batch_sizes=(1, 3),
        size=64,
        large_size=128,
    )
    by_variant = {row["variant"]: row for row in rows}
    assert list(by_variant) == ["fp32", "ortopt", "int8", "fp16", "tensorrt"]
    for row in rows:
        assert {"model", "path", "max_abs_err", "quality", "images_per_s_batch1", "best_batch"} <= set(row)
        assert row["model"] == "style_network"
    for variant in ("fp32", "ortopt"):
        row = by_variant[variant]
        checked = {(check["batch"], check["size"]) for check in row["quality"]["parity"]}
        assert checked == {(1, 64), (3, 64), (1, 128)}
        assert row["max_abs_err"] <= PARITY_TOLERANCE * row["quality"]["output_scale"]
        assert Path(row["path"]).exists()
        assert row["images_per_s_batch1"] > 0 and row["torch_images_per_s_batch1"] > 0
    int8 = by_variant["int8"]
    assert int8["quality"]["kept"] == (int8["path"] is not None)
    assert "style_loss_vs_fp32" in int8["quality"]
    assert by_variant["tensorrt"]["path"] is None  # no GPU here
    assert "skipped" in by_variant["tensorrt"]["quality"]["note"]


def test_skip_decoder_carries_the_content_at_alpha_0() -> None:
    # At alpha 0 every depth passes the content's own features; with the skip connections even an
    # untrained decoder's output then depends on the content only, not on the style.
    network = StyleNetwork(StyleConfig()).eval()
    torch.manual_seed(0)
    content = torch.rand(1, 3, 32, 40) * 2 - 1
    styles = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        a = network(content, styles[:1], torch.zeros(1))
        b = network(content, styles[1:], torch.zeros(1))
        c = network(content, styles[1:], torch.ones(1))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_quality_measures_on_known_images() -> None:
    rng = np.random.default_rng(0)
    photo = style_quality.square_image(style_quality.load_image("skimage:astronaut"), 64)[None]
    noise = rng.integers(0, 256, photo.shape, dtype=np.uint8)
    # Edges: an image correlates fully with itself and with a brightened copy, hardly with noise.
    assert style_quality.edge_correlation(photo, photo)[0] == pytest.approx(1.0)
    brighter = np.clip(photo.astype(int) // 2 + 100, 0, 255).astype(np.uint8)
    assert style_quality.edge_correlation(brighter, photo)[0] > 0.95
    assert abs(style_quality.edge_correlation(noise, photo)[0]) < 0.2
    # Colour: the joint histogram distance is 0 for the same image, 1 for disjoint colours.
    assert style_quality.histogram_distance(photo, photo)[0] == 0.0
    black, white = np.zeros_like(photo), np.full_like(photo, 255)
    assert style_quality.histogram_distance(black, white)[0] == 1.0
    # The pairs: six, the demo pair first, none of their images trained on.
    assert len(style_quality.HELD_OUT_PAIRS) >= 6
    assert style_quality.HELD_OUT_PAIRS[0] == ("sklearn:china.jpg", "sklearn:flower.jpg")
    held_out = set(style_quality.HELD_OUT_CONTENT) | set(style_quality.HELD_OUT_STYLE)
    assert not held_out & set(style_quality.TRAIN_IMAGES)


@pytest.mark.slow
def test_committed_weights_quality_on_held_out_pairs() -> None:
    network = load_style_network(style_quality.DEFAULT_WEIGHTS)
    figures = style_quality.evaluate(network)
    edges = [pair["edge_correlation"] for pair in figures["pairs"].values()]
    assert np.mean(edges) >= style_quality.EDGE_CORRELATION_MEAN_MIN
    for label, pair in figures["pairs"].items():
        assert pair["edge_correlation"] >= style_quality.EDGE_CORRELATION_PAIR_MIN, label
        assert pair["histogram_reduction"] >= style_quality.HISTOGRAM_REDUCTION_MIN, label
    # Gram: the mean over pairs holds; one pair (coffee + flower) misses by about 0.01 (see the card).
    assert figures["gram_reduction"] >= style_quality.GRAM_REDUCTION_MIN
    assert np.isfinite(figures["style_loss"])
