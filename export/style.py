"""Arbitrary style transfer that keeps the content: AdaIN at four depths and a skip decoder.

A VGG19 encoder up to ``relu4_1`` (torchvision's ``features`` layout, so torchvision VGG19 weights
load into it); adaptive instance normalization (Huang & Belongie, 2017) of the content features to
the style features' channel means and standard deviations at ``relu1_1``, ``relu2_1``, ``relu3_1``
and ``relu4_1``, each blended with the content features by ``alpha``; and a decoder that upsamples
from ``relu4_1`` and takes the transformed features of every shallower depth through skip
connections (as U-Net and WCT2 do), so the image's edges reach the output from ``relu1_1`` instead
of being rebuilt from a 1/8-resolution code. With the seeded encoder, whose deep features carry
little that a decoder can invert, this is what keeps the temple, the trees and the lake in the
demo photo. (The colour histograms are matched afterwards, in the serving pipeline:
``genserve.server.colour``.)

Images are FP32 ``[B, 3, H, W]`` in ``[-1, 1]`` (see ``genserve.client.contract.from_uint8``);
``H`` and ``W`` must be multiples of 8 so that the three poolings and three upsamplings give back
the input size. The encoder is either loaded from a torchvision-format VGG19 state dict or built
from a fixed seed (``StyleConfig.encoder_seed``) and is never trained.

A checkpoint stores the decoder weights with the JSON-serialized ``StyleConfig`` in its metadata;
``load_style_network`` rebuilds the whole network from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from genserve.client.contract import ALPHA

# torchvision's VGG19 ``features`` up to and including relu4_1: conv channels, "M" = max pooling.
_VGG19_TO_RELU4_1 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512)
LAYER_INDEX = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20}
"""Index of each named ReLU in torchvision's ``vgg19().features``."""
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"
SIZE_MULTIPLE = 8
"""Spatial sizes must be multiples of this (three 2x poolings, three 2x upsamplings)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class StyleConfig:
    """Everything needed to rebuild a ``StyleNetwork``; stored in the checkpoint.

    Attributes:
        encoder: ``"seeded"`` (fixed random initialization from ``encoder_seed``) or ``"torchvision"``
            (weights from a torchvision-format VGG19 state dict, which the checkpoint then needs
            beside it: see ``encoder_weights_sha256``).
        encoder_seed: Seed of the encoder's initialization when ``encoder == "seeded"``.
        encoder_weights_sha256: SHA-256 of the VGG19 weights file when ``encoder == "torchvision"``.
        eps: Added to variances in adaptive instance normalization.
    """

    encoder: str = "seeded"
    encoder_seed: int = 0
    encoder_weights_sha256: str = ""
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.encoder not in ("seeded", "torchvision"):
            raise ValueError(f"encoder={self.encoder!r} is not allowed; allowed: 'seeded', 'torchvision'")

    def to_json(self) -> str:
        """The config as a JSON string (for checkpoint metadata)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StyleConfig:
        """Rebuild a config from ``to_json`` output."""
        return cls(**json.loads(text))


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` -> VGG's ImageNet normalization ``((x + 1) / 2 - mean) / std``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype).reshape(1, 3, 1, 1)
    return ((images + 1.0) * 0.5 - mean) / std


def check_image_size(height: int, width: int, name: str = "image") -> None:
    """Raise ``ValueError`` unless ``height`` and ``width`` are positive multiples of 8.

    AdaIN's encoder pools three times and its decoder upsamples three times, so only such sizes
    come back unchanged.
    """
    for axis, value in (("height", height), ("width", width)):
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            raise ValueError(
                f"{name} {axis}={value} is not allowed; allowed: positive multiples of {SIZE_MULTIPLE}"
            )


def check_inputs(content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor) -> None:
    """Validate ``StyleNetwork`` inputs; raise ``ValueError`` naming the bad argument.

    Args:
        content: ``[B, 3, H, W]`` float tensor.
        style: ``[B, 3, Hs, Ws]`` float tensor, same ``B``.
        alpha: ``[B]`` float tensor in ``[0, 1]``.
    """
    for name, image in (("content", content), ("style", style)):
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"{name} must have shape [B, 3, H, W]; got {list(image.shape)}")
        check_image_size(image.shape[2], image.shape[3], name)
    if style.shape[0] != content.shape[0]:
        raise ValueError(f"style batch {style.shape[0]} must equal content batch {content.shape[0]}")
    if alpha.shape != (content.shape[0],):
        raise ValueError(f"alpha must have shape [B]=[{content.shape[0]}]; got {list(alpha.shape)}")
    ALPHA.check(alpha.detach().cpu().numpy())


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class VGGEncoder(nn.Module):
    """VGG19 ``features[0:21]`` (conv1_1 .. relu4_1) with torchvision's layer indices.

    ``self.features[i]`` is torchvision's ``vgg19().features[i]``, so the keys
    ``features.{i}.weight`` / ``features.{i}.bias`` of a torchvision VGG19 state dict match.
    Input is ImageNet-normalized RGB (``(x01 - mean) / std``), as torchvision's weights expect.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for spec in _VGG19_TO_RELU4_1:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(spec), kernel_size=3, padding=1), nn.ReLU()]
                channels = int(spec)
        self.features = nn.Sequential(*layers)
        self.seeded_init(seed)
        self.requires_grad_(False)

    def seeded_init(self, seed: int) -> None:
        """Fixed random weights: He (Kaiming) normal, fan-in, zero biases, from ``seed``.

        He scaling keeps the mean square of the activations roughly constant through the ReLUs
        (the max poolings raise it a little), so relu4_1 features neither vanish nor explode.
        Random VGG features still carry useful texture statistics (e.g. Ustyuzhaninov et al.,
        2017, texture synthesis with random shallow networks), but they are far weaker than
        ImageNet-trained features: expect colour and coarse texture transfer, not painterly strokes.
        """
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in self.features:
                if isinstance(layer, nn.Conv2d):
                    fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                    std = (2.0 / fan_in) ** 0.5
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * std)
                    layer.bias.zero_()

    def load_torchvision_vgg19(self, source: Path | str | Mapping[str, torch.Tensor]) -> VGGEncoder:
        """Load torchvision-format VGG19 weights (``features.{i}.weight`` ...) in place.

        Keys beyond relu4_1 (``features.21`` on, ``classifier.*``) are ignored.

        Args:
            source: A state dict, or a path to one saved with ``torch.save`` (``.pth``) or as safetensors.

        Returns:
            The encoder itself.

        Raises:
            KeyError: A conv weight or bias up to relu4_1 is missing.
            ValueError: A tensor's shape differs from VGG19's.
        """
        if isinstance(source, Mapping):
            state = source
        else:
            path = Path(source)
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        missing = [key for key in own if key not in state]
        if missing:
            raise KeyError(f"VGG19 state dict lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        for key, tensor in own.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{key} has shape {list(state[key].shape)}; VGG19 needs {list(tensor.shape)}"
                )
        self.load_state_dict({key: state[key].float() for key in own})
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalized ``[B, 3, H, W]`` -> relu4_1 features ``[B, 512, H/8, W/8]``."""
        return self.features(x)

    def features_at(self, x: torch.Tensor, names: tuple[str, ...] = STYLE_LAYERS) -> list[torch.Tensor]:
        """Activations at the named ReLUs (``relu1_1`` .. ``relu4_1``), in the order given."""
        wanted = {LAYER_INDEX[name]: name for name in names}
        found: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                found[wanted[index]] = x
            if len(found) == len(wanted):
                break
        return [found[name] for name in names]


def mean_std(features: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation over space: ``[B, C, 1, 1]`` each."""
    var, mean = torch.var_mean(features, dim=(2, 3), keepdim=True, correction=0)
    return mean, torch.sqrt(var + eps)


def adain(content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalization blended with the content features.

    ``t = alpha * (std_s * (c - mean_c) / std_c + mean_s) + (1 - alpha) * c``: at ``alpha = 1`` the
    content features take the style's channel statistics, at ``alpha = 0`` they pass unchanged.

    Args:
        content: Content features ``[B, C, H, W]``.
        style: Style features ``[B, C, Hs, Ws]`` (any spatial size).
        alpha: Style weight per sample, ``[B]``.
        eps: Added to the variances.

    Returns:
        ``[B, C, H, W]``.
    """
    content_mean, content_std = mean_std(content, eps)  # (B, C, 1, 1)
    style_mean, style_std = mean_std(style, eps)  # (B, C, 1, 1)
    stylized = (content - content_mean) / content_std * style_std + style_mean
    weight = alpha.reshape(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)
    return weight * stylized + (1.0 - weight) * content


def _conv(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, kernel_size=3), nn.ReLU()]


class SkipDecoder(nn.Module):
    """AdaIN features at four depths -> image: upsample from relu4_1, join each shallower depth.

    Reflection-padded 3x3 convolutions and nearest-neighbour 2x upsampling, as in the AdaIN paper;
    at each resolution the upsampled code is concatenated with that depth's transformed features.
    The last convolution has no activation; its output is in the ``[-1, 1]`` image range.
    """

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.block4 = nn.Sequential(*_conv(512, 128))  # relu4_1 -> (B, 128, H/8, W/8)
        self.block3 = nn.Sequential(*_conv(128 + 256, 128))  # + relu3_1 -> (B, 128, H/4, W/4)
        self.block2 = nn.Sequential(*_conv(128 + 128, 64))  # + relu2_1 -> (B, 64, H/2, W/2)
        self.block1 = nn.Sequential(*_conv(64 + 64, 32), nn.ReflectionPad2d(1), nn.Conv2d(32, 3, 3))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """``[relu1_1, relu2_1, relu3_1, relu4_1]``-shaped features -> ``[B, 3, H, W]``."""
        f1, f2, f3, f4 = features  # (B, 64, H, W), (B, 128, H/2, W/2), (B, 256, H/4, W/4), (B, 512, H/8, W/8)
        x = self.block4(f4)  # (B, 128, H/8, W/8)
        x = self.block3(torch.cat([self.up(x), f3], dim=1))  # (B, 128, H/4, W/4)
        x = self.block2(torch.cat([self.up(x), f2], dim=1))  # (B, 64, H/2, W/2)
        return self.block1(torch.cat([self.up(x), f1], dim=1))  # (B, 3, H, W)


class StyleNetwork(nn.Module):
    """Encoder, AdaIN at four depths and the skip decoder: ``(content, style, alpha) -> image``."""

    def __init__(self, config: StyleConfig | None = None):
        super().__init__()
        self.config = config or StyleConfig()
        self.encoder = VGGEncoder(self.config.encoder_seed)
        self.decoder = SkipDecoder()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[-1, 1]`` -> VGG's ImageNet normalization ``((x + 1) / 2 - mean) / std``."""
        return ((images + 1.0) * 0.5 - self.mean) / self.std

    def targets(self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor) -> list[torch.Tensor]:
        """The AdaIN-transformed content features at relu1_1 .. relu4_1 (what the decoder inverts)."""
        content_features = self.encoder.features_at(self.normalize(content), STYLE_LAYERS)
        style_features = self.encoder.features_at(self.normalize(style), STYLE_LAYERS)
        return [
            adain(c, s, alpha, self.config.eps) for c, s in zip(content_features, style_features, strict=True)
        ]

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Stylize ``content`` with ``style``.

        Args:
            content: ``[B, 3, H, W]`` in ``[-1, 1]``, ``H`` and ``W`` multiples of 8.
            style: ``[B, 3, Hs, Ws]`` in ``[-1, 1]``, ``Hs`` and ``Ws`` multiples of 8.
            alpha: ``[B]`` style weight in ``[0, 1]``.

        Returns:
            ``[B, 3, H, W]``, about ``[-1, 1]``.
        """
        return self.decoder(self.targets(content, style, alpha))  # (B, 3, H, W)


def save_style_network(network: StyleNetwork, path: Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write the decoder weights as safetensors with the config (and ``metadata``) in its header.

    The encoder is not stored: it is rebuilt from ``config.encoder_seed`` or loaded from the VGG19
    file whose hash the config records.
    """
    from safetensors.torch import save_file

    header = {"config": network.config.to_json(), **(metadata or {})}
    tensors = {f"decoder.{key}": value.contiguous() for key, value in network.decoder.state_dict().items()}
    save_file(tensors, str(path), metadata=header)


def checkpoint_config(path: Path) -> StyleConfig:
    """The ``StyleConfig`` stored in a checkpoint written by ``save_style_network``.

    Raises:
        ValueError: The file is not a style checkpoint.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if "config" not in header:
        raise ValueError(f"{path} is not a style-network checkpoint (no 'config' in its metadata)")
    return StyleConfig.from_json(header["config"])


def load_style_network(path: Path, vgg_weights: Path | None = None) -> StyleNetwork:
    """Rebuild a ``StyleNetwork`` from a checkpoint written by ``save_style_network``.

    Args:
        path: The ``.safetensors`` checkpoint.
        vgg_weights: The torchvision VGG19 weights file, needed when the checkpoint was trained with
            one (``config.encoder == "torchvision"``); its SHA-256 must match the recorded one.

    Raises:
        ValueError: The file is not a style checkpoint, or the VGG19 weights are missing or differ.
    """
    from safetensors.torch import load_file

    config = checkpoint_config(path)
    network = StyleNetwork(config)
    if config.encoder == "torchvision":
        if vgg_weights is None:
            raise ValueError(f"{path} was trained on torchvision VGG19 weights: pass vgg_weights")
        digest = file_sha256(Path(vgg_weights))
        if digest != config.encoder_weights_sha256:
            raise ValueError(f"vgg_weights sha256 {digest} differs from the checkpoint's")
        network.encoder.load_torchvision_vgg19(vgg_weights)
    tensors = load_file(str(path))
    decoder = {key.removeprefix("decoder."): value for key, value in tensors.items()}
    expected = set(network.decoder.state_dict())
    if set(decoder) != expected:
        raise ValueError(f"{path} does not hold a style decoder (keys differ from the Decoder's)")
    network.decoder.load_state_dict(decoder)
    return network.eval()
