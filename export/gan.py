"""A class-conditional DCGAN (Radford et al. 2016) with a projection discriminator.

The generator maps a latent ``z`` and a digit label to an image in [-1, 1]; its architecture is set by
:class:`GANConfig` (image size 32 or 64, channels, width), which the checkpoint stores so a loader
rebuilds exactly the trained network. The discriminator is a spectral-normalised projection
discriminator, which keeps samples faithful to their label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from genserve.export.checkpoint import load_model

FAMILY = "gan"

IMAGE_SIZES = (32, 64)


@dataclass(frozen=True)
class GANConfig:
    """Architecture of the generator and discriminator.

    Attributes:
        image_size: Output side, 32 or 64.
        channels: Output channels (1 for digits, 3 for colour).
        latent_dim: Size of ``z``.
        width: Channels of the last generator layer before the output (DCGAN's ``ngf``/``ndf``);
            each lower resolution doubles it.
        num_classes: Number of labels.
        embed_dim: Size of the label embedding concatenated to ``z``.
    """

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 64
    width: int = 32
    num_classes: int = 10
    embed_dim: int = 32

    def __post_init__(self) -> None:
        if self.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size={self.image_size} is unsupported; allowed: 32, 64")
        for name in ("channels", "latent_dim", "width", "num_classes", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")

    @property
    def levels(self) -> int:
        """Number of 2x resolution changes between 4x4 and the image size."""
        return self.image_size.bit_length() - 3  # 32 -> 3, 64 -> 4

    def to_dict(self) -> dict[str, int]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


DIGITS = GANConfig()
"""The trained digits generator: 32x32x1."""

DCGAN64 = GANConfig(image_size=64, channels=3, latent_dim=100, width=64)
"""Standard DCGAN width at 64x64x3, for benchmarks (exported with untrained weights)."""

CONFIGS = {"digits": DIGITS, "dcgan64": DCGAN64}


class Generator(nn.Module):
    """``(z [B, latent_dim], label [B] int64) -> image [B, C, S, S]`` in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        top = config.width * 2 ** (config.levels - 1)
        self.embed = nn.Embedding(config.num_classes, config.embed_dim)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.latent_dim + config.embed_dim, top, 4, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.ReLU(inplace=True),
        ]
        ch = top
        for _ in range(config.levels - 1):
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, config.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Generate images; ``z`` float32 ``[B, latent_dim]``, ``label`` int64 ``[B]``."""
        B, _ = z.shape
        h = torch.cat([z, self.embed(label)], dim=1)  # (B, latent + embed)
        return self.net(h.reshape(B, -1, 1, 1))  # (B, width*2^(L-1), 4, 4) ... -> (B, C, S, S)


class Discriminator(nn.Module):
    """``(image [B, C, S, S], label [B]) -> real/fake score [B]``, a projection discriminator.

    Spectral-normalised convolutions (Miyato et al. 2018), a minibatch standard-deviation feature
    against mode collapse (Karras et al. 2018) and the label entering as an inner product with the
    features (Miyato & Koyama 2018). Used only in training; it is never exported.
    """

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        sn = nn.utils.parametrizations.spectral_norm
        ch = config.width
        layers: list[nn.Module] = [sn(nn.Conv2d(config.channels, ch, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for _ in range(config.levels - 1):
            layers += [sn(nn.Conv2d(ch, ch * 2, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            ch *= 2
        self.features = nn.Sequential(*layers)  # (B, ch, 4, 4)
        self.final = nn.Sequential(sn(nn.Conv2d(ch + 1, ch, 3, 1, 1)), nn.LeakyReLU(0.2, True), nn.Flatten())
        self.score = sn(nn.Linear(ch * 16, 1))
        self.project = sn(nn.Embedding(config.num_classes, ch * 16))

    def forward(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Score images as real (high) or generated (low) for their labels."""
        h = self.features(image)  # (B, ch, 4, 4)
        B, _, H, W = h.shape
        spread = h.std(dim=0).mean().expand(B, 1, H, W)  # (B, 1, 4, 4): the batch's diversity
        h = self.final(torch.cat([h, spread], dim=1))  # (B, ch * 16)
        return self.score(h).squeeze(1) + (self.project(label) * h).sum(dim=1)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), batch-norm scales N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def load_generator(path: Path | None = None) -> Generator:
    """Rebuild the generator a ``gan`` checkpoint describes and load its weights (eval mode).

    Raises:
        CheckpointError: If the file is missing, of another family, or does not fit its config.
    """
    return load_model(path, FAMILY, lambda config: Generator(GANConfig(**config)))[0]
