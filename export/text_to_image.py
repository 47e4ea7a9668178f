"""The text-to-image family: a small latent diffusion model in the diffusers Stable Diffusion layout.

Five parts, each the architecture a Stable Diffusion pipeline uses, at digit size:
- a CLIP-style byte-level BPE tokenizer whose merges spell out every caption word (:func:`build_tokenizer`);
- transformers' ``CLIPTextModel`` (the text encoder: random and frozen, see :func:`build_text_encoder`);
- diffusers' ``AutoencoderKL`` mapping 32x32 RGB digits to 4x8x8 latents;
- diffusers' ``UNet2DConditionModel`` predicting the noise of a latent, cross-attending to the text;
- a ``DDIMScheduler`` (scaled-linear betas, epsilon prediction, trailing timesteps, final alpha 1,
  no sample clipping: the same update as the server's numpy DDIM).

The committed model is a diffusers pipeline directory (``export/weights/text_to_image/``), so
``StableDiffusionPipeline.from_pretrained`` loads it and ``genserve export --from-diffusers`` treats it
like any pipeline a user brings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from genserve.export.checkpoint import WEIGHTS_DIR

FAMILY = "text_to_image"
PIPELINE_DIR = WEIGHTS_DIR / FAMILY
"""The committed diffusers pipeline directory."""

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"

TOKEN_EMBEDDING_STD = 1.0
"""Init std of the text encoder's token embeddings (transformers' default is 0.02).

The encoder is kept frozen at its random init. With the default std the residual stream is dominated by
the (shared) layer outputs and every prompt gives nearly the same states; at std 1 each position's state
is mostly its own token, so the UNet can read the digit's word wherever a sentence puts it.
"""


@dataclass(frozen=True)
class TextToImageConfig:
    """Sizes of the parts (the diffusers/transformers configs are built from these).

    Attributes:
        max_length: Tokens per prompt, start and end tokens included (longer prompts are truncated).
        text_width: Hidden size of the text encoder; also the UNet's cross-attention width.
        text_layers: Transformer layers of the text encoder.
        text_heads: Attention heads of the text encoder.
        image_size: Side of the RGB images.
        vae_channels: Channels of the VAE's resolution levels (each level after the first halves the side).
        latent_channels: Channels of the latent.
        unet_channels: Channels of the UNet's levels (the first level cross-attends to the text).
        unet_head_dim: Channels per attention head in the UNet.
        groups: GroupNorm groups of the UNet.
    """

    max_length: int = 16
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128)
    unet_head_dim: int = 8
    groups: int = 16
    schedule: dict = field(
        default_factory=lambda: {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
        }
    )

    @property
    def latent_size(self) -> int:
        """Side of the latent: the image side over the VAE's downsampling."""
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DEFAULT = TextToImageConfig()


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges that spell every word of ``words`` as one token (Sennrich et al. 2016).

    Plain BPE on the word list (each distinct word counted once), run until every word is a single
    symbol; ties go to the alphabetically first pair, so the result depends on the words only.
    Words must be lowercase ASCII letters (their byte-level form is the word itself).
    """
    spelled = {w: [*w[:-1], w[-1] + WORD_END] for w in sorted(set(words))}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in spelled.values():
            for pair in zip(symbols, symbols[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, symbols in spelled.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            spelled[word] = out


def caption_words(captions: list[str]) -> list[str]:
    """The distinct letter-only words of ``captions``, lowercased (digits and commas stay bytes)."""
    words = set()
    for text in captions:
        for raw in text.lower().replace(",", " ").split():
            if raw.isalpha() and raw.isascii():
                words.add(raw)
    return sorted(words)


def build_tokenizer(captions: list[str], max_length: int = DEFAULT.max_length) -> CLIPTokenizer:
    """A CLIP tokenizer for the captions, padding with its end token to ``max_length``.

    The vocabulary is the 256 byte symbols (plain and word-final), the merges that spell the
    caption words, and the start and end tokens. Any text still tokenizes (unknown words fall apart
    into byte symbols); caption words are one token each.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_list = alphabet + [a + WORD_END for a in alphabet]
    merges = learn_merges(caption_words(captions))
    for left, right in merges:
        if left + right not in vocab_list:
            vocab_list.append(left + right)
    vocab_list += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tokenizer_files(tokenizer: CLIPTokenizer, folder: Path) -> None:
    """Save ``tokenizer`` with ``vocab.json`` and ``merges.txt`` beside ``tokenizer.json``.

    The two classic files let tools that read a CLIP tokenizer without the ``tokenizers`` backend
    (and ``CLIPTokenizer(vocab_file, merges_file)``) load it too.
    """
    import json

    tokenizer.save_pretrained(str(folder))
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda item: item[1]))
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_text_encoder(config: TextToImageConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A freshly initialised CLIP text encoder sized for ``tokenizer`` (seed torch first).

    Token embeddings are drawn with std :data:`TOKEN_EMBEDDING_STD`; everything else is transformers' init.
    """
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_width,
        intermediate_size=2 * config.text_width,
        projection_dim=config.text_width,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModel(text_config)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, TOKEN_EMBEDDING_STD)
    return model


def build_vae(config: TextToImageConfig) -> AutoencoderKL:
    """A freshly initialised VAE, RGB ``image_size`` images to ``latent_channels`` latents."""
    levels = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=8,
        sample_size=config.image_size,
    )


def build_unet(config: TextToImageConfig) -> UNet2DConditionModel:
    """A freshly initialised UNet over latents; its first level and middle cross-attend to the text.

    The prompt also enters every residual block through the timestep embedding (diffusers'
    ``addition_embed_type="text"``: attention pooling of the text states). Trained from scratch with
    cross-attention alone, the text encoder collapsed to nearly prompt-independent states in 700
    steps and the images ignored the prompt; the global path gives the prompt a direct route.
    """
    levels = len(config.unet_channels)
    down = ("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (levels - 1)
    up = ("UpBlock2D",) * (levels - 1) + ("CrossAttnUpBlock2D",)
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        block_out_channels=config.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.text_width,
        attention_head_dim=config.unet_head_dim,
        norm_num_groups=config.groups,
        addition_embed_type="text",
        addition_embed_type_num_heads=config.text_heads,
    )


def build_scheduler(config: TextToImageConfig) -> DDIMScheduler:
    """DDIM over the training schedule, with the update the server's numpy sampler makes."""
    return DDIMScheduler(
        **config.schedule,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,  # unused by trailing spacing; 1 keeps StableDiffusionPipeline from rewriting it
        clip_sample=False,
        set_alpha_to_one=True,
    )


def assemble(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    vae: AutoencoderKL,
    unet: UNet2DConditionModel,
    scheduler: DDIMScheduler,
) -> StableDiffusionPipeline:
    """The parts as one Stable Diffusion pipeline without safety checker, in eval mode."""
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe: StableDiffusionPipeline, folder: Path) -> None:
    """Write ``pipe`` as a diffusers directory with safetensors weights."""
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer_files(pipe.tokenizer, folder / "tokenizer")


def load_pipeline(folder: Path = PIPELINE_DIR) -> StableDiffusionPipeline:
    """Load a pipeline directory on the CPU, without safety checker and progress bars.

    Raises:
        FileNotFoundError: If ``folder`` holds no ``model_index.json``.
    """
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no diffusers pipeline in {folder} (train it with `genserve train {FAMILY}`)"
        )
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_rgb(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Grey digits ``[N, 1, H, W]`` in [-1, 1] as RGB ``[N, 3, H, W]`` (the VAE's input)."""
    x = torch.as_tensor(images)
    return x.expand(-1, 3, -1, -1).contiguous()


def to_grey(rgb_01: np.ndarray) -> np.ndarray:
    """Pipeline output ``[N, H, W, 3]`` in [0, 1] as grey ``[N, 1, H, W]`` in [-1, 1] (the judge's input)."""
    return (np.asarray(rgb_01, dtype=np.float32).mean(-1)[:, None] * 2.0 - 1.0).astype(np.float32)


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline,
    prompts: list[str],
    seeds: np.ndarray,
    *,
    steps: int,
    guidance: float,
    batch_size: int = 100,
) -> np.ndarray:
    """Images ``[N, H, W, 3]`` in [0, 1], row ``i`` from ``prompts[i]`` and its own generator ``seeds[i]``."""
    out = []
    for s in range(0, len(prompts), batch_size):
        generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds[s : s + batch_size]]
        result = pipe(
            prompt=list(prompts[s : s + batch_size]),
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generators,
            output_type="np",
        )
        out.append(result.images)
    return np.concatenate(out)
