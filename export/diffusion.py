"""A class-conditional UNet for DDPM training on 32x32 digits, with classifier-free guidance.

The network predicts the noise ``eps`` in ``x_t = sqrt(a) x_0 + sqrt(1 - a) eps`` from the noisy image,
a per-row timestep ``t [B]`` and a per-row label ``y [B]``, where ``y == num_classes`` means "no label"
(trained by label dropout). Its layout follows Ho et al. (2020): residual blocks with GroupNorm and a
timestep embedding, a few resolutions, optional self-attention at the lowest one. The noise schedule
and the sampler live in :mod:`genserve.server.ddim`, which serves it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genserve.export.checkpoint import load_model
from genserve.server.ddim import DDIMSchedule

FAMILY = "diffusion"


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the UNet.

    Attributes:
        image_size: Input side (a multiple of ``2 ** (len(channel_mults) - 1)``).
        channels: Image channels.
        base_channels: Channels at full resolution.
        channel_mults: Channel multiplier per resolution, highest resolution first.
        num_res_blocks: Residual blocks per resolution on the way down.
        attention: Self-attention at the lowest resolution.
        groups: GroupNorm groups (must divide every channel count).
        num_classes: Labels; the embedding has one more entry, the "no label" one.
    """

    image_size: int = 32
    channels: int = 1
    base_channels: int = 16
    channel_mults: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 1
    attention: bool = True
    groups: int = 8
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**(levels - 1)")
        for mult in self.channel_mults:
            if (self.base_channels * mult) % self.groups:
                raise ValueError(f"groups={self.groups} must divide every channel count")

    @property
    def embed_dim(self) -> int:
        """Size of the timestep + label embedding."""
        return 4 * self.base_channels

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return {**asdict(self), "channel_mults": list(self.channel_mults)}


DEFAULT = UNetConfig()
"""The trained digits UNet."""

SMALL = UNetConfig(base_channels=8, groups=4, attention=False)
"""A lighter UNet of the same interface, for benchmarks (exported with untrained weights)."""

CONFIGS = {"default": DEFAULT, "small": SMALL}


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017), then a small MLP."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 4
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` int64 ``[B]`` -> ``[B, dim]``."""
        angles = t.to(torch.float32)[:, None] * self.freqs[None, :]  # (B, dim/4)
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))  # (B, dim)


class ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU; the embedding is added in between."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.embed = nn.Linear(embed_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x [B, in, H, W]``, ``emb [B, E]`` -> ``[B, out, H, W]``."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out, H, W)
        h = h + self.embed(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, with a residual connection."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` -> same shape."""
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)  # 3 x (B, C, HW)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(C), dim=-1)  # (B, HW, HW)
        h = (v @ weights.transpose(1, 2)).reshape(B, C, H, W)
        return x + self.out(h)


class UNet(nn.Module):
    """``(x [B, C, S, S], t [B] int64, y [B] int64) -> eps [B, C, S, S]``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        E, G = config.embed_dim, config.groups
        self.time_embed = TimestepEmbedding(E)
        self.label_embed = nn.Embedding(config.num_classes + 1, E)
        self.conv_in = nn.Conv2d(config.channels, config.base_channels, 3, padding=1)
        levels = len(config.channel_mults)
        ch = config.base_channels
        skips = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(config.channel_mults):
            out = config.base_channels * mult
            for _ in range(config.num_res_blocks):
                self.down.append(ResBlock(ch, out, E, G))
                ch = out
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, E, G)
        self.mid_attn = Attention(ch, G) if config.attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, E, G)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            out = config.base_channels * mult
            for _ in range(config.num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), out, E, G))
                ch = out
            if level > 0:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)
                    )
                )
        self.norm_out = nn.GroupNorm(G, ch)
        self.conv_out = nn.Conv2d(ch, config.channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x`` at timesteps ``t`` for labels ``y``."""
        emb = self.time_embed(t) + self.label_embed(y)  # (B, E)
        h = self.conv_in(x)  # (B, base, S, S)
        skips = [h]
        for block in self.down:
            h = block(h, emb) if isinstance(block, ResBlock) else block(h)  # down-sampling halves S
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)  # (B, top, S / 2^(L-1), same)
        for block in self.up:
            # Residual blocks take the matching skip; up-sampling doubles S.
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, ResBlock) else block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C, S, S)


def load_unet(path: Path | None = None) -> tuple[UNet, DDIMSchedule]:
    """Rebuild the UNet a ``diffusion`` checkpoint describes, load its weights, and its noise schedule.

    Raises:
        CheckpointError: If the file is missing, of another family, or does not fit its config.
    """

    def build(config: dict[str, Any]) -> UNet:
        DDIMSchedule.from_dict(config["schedule"])  # a schedule it cannot use makes the checkpoint invalid
        return UNet(UNetConfig(**config["unet"]))

    unet, config = load_model(path, FAMILY, build)
    return unet, DDIMSchedule.from_dict(config["schedule"])
