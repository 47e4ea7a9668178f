"""Convert a diffusers-format Stable Diffusion pipeline directory into the model repository.

A directory as ``StableDiffusionPipeline.save_pretrained`` writes it (``model_index.json``,
``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/``, ``scheduler/``) becomes, for pipeline ``NAME``:

- ``NAME_text_encoder``, ``NAME_unet``, ``NAME_vae_decoder``, ``NAME_vae_encoder``: ONNX with a dynamic
  batch, each checked against the diffusers/transformers module in PyTorch (and its variants, as every
  family gets them), with a generated ``config.pbtxt`` (dynamic batching);
- ``NAME``: the decoupled sampling endpoint (``genserve.server.text_to_image_model``), its ``config.pbtxt``
  carrying every fact of the model as parameters (:class:`~genserve.server.latent_diffusion.LatentFacts`),
  and ``tokenizer.json`` for server-side tokenization.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genserve.client.contract import TEXT_TO_IMAGE_MODEL
from genserve.export import onnx_export
from genserve.server.ddim import DDIMSchedule
from genserve.server.latent_diffusion import PARTS, TENSORS, TOKENIZER_FILE, LatentFacts, part_model

MAX_BATCH = 64
"""Rows of one execution of each part (a request's guidance doubles its rows)."""
REQUIRED = ("model_index.json", "text_encoder", "tokenizer", "unet", "vae", "scheduler")


class _TextEncoder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids).last_hidden_state  # (B, L, D)


class _UNet(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            sample, timestep, encoder_hidden_states=encoder_hidden_states
        ).sample  # (B, C, h, w)


class _VAEDecoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent).sample  # (B, 3, H, W), about [-1, 1]


class _VAEEncoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(image).latent_dist.mean  # (B, C, h, w)


def check_layout(source: Path) -> None:
    """Raise ``ValueError`` naming what a pipeline directory lacks."""
    if not source.is_dir():
        raise ValueError(f"--from-diffusers {source}: not a directory")
    missing = [name for name in REQUIRED if not (source / name).exists()]
    if missing:
        raise ValueError(
            f"--from-diffusers {source}: missing {', '.join(missing)} (expected a diffusers Stable Diffusion "
            "pipeline directory, as StableDiffusionPipeline.save_pretrained writes it)"
        )


def load_parts(source: Path) -> tuple[dict[str, torch.nn.Module], object, LatentFacts]:
    """Load a pipeline directory: the four exportable modules, the tokenizer and the facts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    check_layout(source)
    text_encoder = CLIPTextModel.from_pretrained(source / "text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(source / "unet").eval()
    vae = AutoencoderKL.from_pretrained(source / "vae").eval()
    tokenizer = AutoTokenizer.from_pretrained(source / "tokenizer")
    scheduler_config = json.loads((source / "scheduler" / "scheduler_config.json").read_text())
    schedule = DDIMSchedule.from_diffusers_config(scheduler_config)
    positions = int(text_encoder.config.max_position_embeddings)
    length = min(int(tokenizer.model_max_length), positions)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{source / 'tokenizer'}: the tokenizer has no pad token")
    if unet.config.in_channels != vae.config.latent_channels:
        raise ValueError(
            f"unet in_channels={unet.config.in_channels} but vae latent_channels={vae.config.latent_channels}"
        )
    downscale = 2 ** (len(vae.config.block_out_channels) - 1)
    facts = LatentFacts(
        text_length=length,
        text_width=int(text_encoder.config.hidden_size),
        pad_token_id=int(tokenizer.pad_token_id),
        latent_channels=int(vae.config.latent_channels),
        latent_size=int(unet.config.sample_size),
        image_size=int(unet.config.sample_size) * downscale,
        scaling_factor=float(vae.config.scaling_factor),
        shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0),
        schedule=schedule.to_dict(),
    )
    modules = {
        "text_encoder": _TextEncoder(text_encoder),
        "unet": _UNet(unet),
        "vae_decoder": _VAEDecoder(vae),
        "vae_encoder": _VAEEncoder(vae),
    }
    return modules, tokenizer, facts


def part_specs(
    modules: dict[str, torch.nn.Module], facts: LatentFacts, name: str, vocab_size: int
) -> dict[str, onnx_export.ModelSpec]:
    """One export spec per part, with random inputs of the right shapes for the parity checks."""
    C, h, S, L, D = (
        facts.latent_channels,
        facts.latent_size,
        facts.image_size,
        facts.text_length,
        facts.text_width,
    )
    T = int(facts.schedule["num_train_timesteps"])

    def text(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        return (np.random.default_rng(seed).integers(0, vocab_size, (batch, L)),)

    def unet(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        sample = rng.standard_normal((batch, C, h, h)).astype(np.float32)
        states = rng.standard_normal((batch, L, D)).astype(np.float32)
        return sample, rng.integers(0, T, batch), states

    def decoder(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((batch, C, h, h)).astype(np.float32) / facts.scaling_factor,)

    def encoder(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        return (np.random.default_rng(seed).uniform(-1, 1, (batch, 3, S, S)).astype(np.float32),)

    inputs = {"text_encoder": text, "unet": unet, "vae_decoder": decoder, "vae_encoder": encoder}
    specs = {}
    for part in PARTS:
        names, output = TENSORS[part]
        specs[part] = onnx_export.ModelSpec(
            part_model(name, part), modules[part], names, output, MAX_BATCH, inputs[part]
        )
    return specs


def write_tokenizer(tokenizer: object, path: Path) -> Path:
    """Save the fast tokenizer as one ``tokenizer.json`` (its post-processor adds start and end tokens)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("the pipeline's tokenizer has no fast (tokenizers) form to serve with")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend.save(str(path))
    return path


def export_pipeline(
    source: Path,
    repository: Path,
    *,
    name: str = TEXT_TO_IMAGE_MODEL,
    variants: Sequence[str] = (),
    measure: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Convert ``source`` into ``repository`` as pipeline ``name``; return the parity report rows.

    Raises:
        ValueError: The directory is not a usable pipeline (the message names what is wrong).
        RuntimeError: An exported part differs from PyTorch beyond the parity tolerance.
    """
    from genserve.export.triton_configs import PIPELINE_SHIM, part_config, pipeline_config

    say = progress or (lambda _line: None)
    source, repository = Path(source), Path(repository)
    say(f"{name}: reading {source}")
    modules, tokenizer, facts = load_parts(source)
    specs = part_specs(modules, facts, name, int(modules["text_encoder"].model.config.vocab_size))
    rows: list[dict] = []
    for part, spec in specs.items():
        folder = repository / spec.name
        rows += onnx_export.export_model(spec, folder / "1", variants=variants, measure=measure, progress=say)
        (folder / "config.pbtxt").write_text(part_config(spec.name, part, facts, MAX_BATCH))
    folder = repository / name
    write_tokenizer(tokenizer, folder / "1" / TOKENIZER_FILE)
    (folder / "1" / "model.py").write_text(PIPELINE_SHIM)
    (folder / "config.pbtxt").write_text(pipeline_config(name, facts))
    say(f"{name}: wrote {folder} ({', '.join(spec.name for spec in specs.values())})")
    return rows
