"""A Stable-Diffusion-layout pipeline directory with random weights, built locally (no model hub).

Tests use a tiny one to check ``genserve export --from-diffusers`` end to end; the benchmarks use a
larger UNet to show where step batching pays once the UNet dominates. The layout is what
``StableDiffusionPipeline.save_pretrained`` writes: ``model_index.json``, ``text_encoder/``
(``CLIPTextModel``), ``tokenizer/`` (a CLIP byte-level BPE tokenizer), ``unet/``
(``UNet2DConditionModel``), ``vae/`` (``AutoencoderKL``) and ``scheduler/`` (``DDIMScheduler``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORDS = ("a", "the", "digit", "handwritten", "drawn", "thick", "thin", "zero", "one", "two", "three", "seven")
"""Whole words the tiny vocabulary keeps as single tokens (the rest splits into byte-level pieces)."""


@dataclass(frozen=True)
class RandomPipelineConfig:
    """Sizes of a random pipeline.

    Attributes:
        image_size: Side of the square images the VAE decodes.
        latent_channels: Channels of the VAE latent.
        vae_widths: VAE block widths; the latent side is ``image_size / 2 ** (len(vae_widths) - 1)``.
        unet_widths: UNet block widths (Stable Diffusion: 320, 640, 1280, 1280).
        unet_layers: ResNet layers per UNet block.
        text_width: Text-encoder hidden size, also the UNet's cross-attention width.
        text_layers: Text-encoder layers.
        text_length: Tokens per prompt, start and end tokens included.
        attention_head_dim: Channels per attention head in the UNet.
    """

    image_size: int = 32
    latent_channels: int = 4
    vae_widths: tuple[int, ...] = (8, 16, 16)
    unet_widths: tuple[int, ...] = (16, 32)
    unet_layers: int = 1
    text_width: int = 16
    text_layers: int = 1
    text_length: int = 16
    attention_head_dim: int = 8


TINY = RandomPipelineConfig()
LARGE_UNET = RandomPipelineConfig(
    unet_widths=(160, 320, 640), unet_layers=1, text_width=256, attention_head_dim=32
)
"""Half Stable Diffusion's widths (320, 640, 1280) at the in-house 8x8 latent: what a CPU run affords."""


def tiny_vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary and merges: every byte, :data:`WORDS` whole, the specials."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:  # merge left to right: "d i g i t</w>" -> "di g i t</w>" -> ...
            merges.append((pieces[0], pieces[1]))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, list(dict.fromkeys(merges))


def save_random_pipeline(out: Path, config: RandomPipelineConfig = TINY, *, seed: int = 0) -> Path:
    """Write a random-weight pipeline directory at ``out``; return ``out``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out)
    torch.manual_seed(seed)
    vocab, merges = tiny_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=config.text_length)
    tokenizer.save_pretrained(out / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=config.text_width,
            intermediate_size=2 * config.text_width,
            num_hidden_layers=config.text_layers,
            num_attention_heads=max(1, config.text_width // 8),
            max_position_embeddings=config.text_length,
            bos_token_id=vocab[BOS],
            eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS],
        )
    )
    text_encoder.save_pretrained(out / "text_encoder")
    levels = len(config.vae_widths)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=config.latent_channels,
        block_out_channels=config.vae_widths,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1,
        norm_num_groups=min(8, min(config.vae_widths)),
        sample_size=config.image_size,
    )
    vae.save_pretrained(out / "vae")
    blocks = len(config.unet_widths)
    unet = UNet2DConditionModel(
        sample_size=config.image_size // 2 ** (levels - 1),
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_widths,
        layers_per_block=config.unet_layers,
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        cross_attention_dim=config.text_width,
        attention_head_dim=config.attention_head_dim,
        norm_num_groups=min(8, min(config.unet_widths)),
    )
    with torch.no_grad():  # diffusers zero-initialises nothing here, but keep outputs of a usable scale
        for parameter in unet.parameters():
            if parameter.dim() > 1 and not parameter.any():
                parameter.normal_(0.0, 0.02)
    unet.save_pretrained(out / "unet")
    DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        timestep_spacing="trailing",
    ).save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out
