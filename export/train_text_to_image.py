"""Train the text-to-image model, VAE first, then UNet and text encoder: ``genserve train text_to_image``.

1. The VAE learns to reconstruct the RGB digits through a 4x8x8 latent (MSE plus a small KL term,
   random shifts as augmentation). Its scaling factor is then set so the training latents have unit
   standard deviation, as Stable Diffusion's is.
2. The UNet learns, from scratch, to predict the noise of training latents at random timesteps, given
   a caption drawn from the training phrasings; a tenth of the captions are empty so the same model
   serves classifier-free guidance. The text encoder stays frozen at its random init (token
   embeddings of std 1, see ``text_to_image.build_text_encoder``): trained jointly from scratch, its
   states for different digits collapsed and the images ignored the prompt. The saved UNet weights
   are exponential moving averages.

``--vae-from DIR`` skips step 1 and takes the VAE (and its scaling factor) of an existing pipeline.

The result is a diffusers pipeline directory (default ``export/weights/text_to_image/``) and its card.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel

from genserve.export import text_to_image as t2i
from genserve.export.captions import HELD_OUT_PHRASINGS, TRAIN_PHRASINGS, all_captions, training_captions
from genserve.export.checkpoint import WEIGHTS_DIR
from genserve.export.data import load_split, random_shift
from genserve.export.text_to_image_quality import read_card
from genserve.export.training import (
    DATA_NOTE,
    EMA,
    RunningMean,
    Stopwatch,
    check_positive,
    cosine_lr,
    seed_everything,
)

CAPTION_DROPOUT = 0.1
KL_WEIGHT = 1e-6
"""Weight of the VAE's KL term: small, as in Stable Diffusion's autoencoder, so latents stay informative."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; every default is the committed run's."""
    parser = argparse.ArgumentParser(prog="genserve train text_to_image", description=__doc__.splitlines()[0])
    parser.add_argument("--vae-steps", type=int, default=600, help="VAE steps (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000, help="UNet steps (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="rows per UNet step (default: %(default)s)"
    )
    parser.add_argument(
        "--vae-batch-size", type=int, default=16, help="rows per VAE step (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="pipeline directory whose UNet and text encoder to continue from (default: fresh init)",
    )
    parser.add_argument(
        "--vae-from",
        type=Path,
        default=None,
        help="pipeline directory whose trained VAE to keep instead of training one (default: train it)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=t2i.PIPELINE_DIR,
        help="pipeline directory to write (default: %(default)s)",
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=WEIGHTS_DIR,
        help="folder of the judge classifier for the quality figures (default: %(default)s)",
    )
    # One thread: on a shared, oversubscribed 2-core host two threads ran these small kernels 10-20x
    # slower (the threads wait on each other) than one.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--no-eval", action="store_true", help="skip the quality figures in the card")
    parser.add_argument(
        "--eval-per-phrasing",
        type=int,
        default=10,
        help="samples per digit and held-out phrasing in the quality figures (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    check_positive(parser, args)
    for name in ("vae_steps", "vae_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")
    return args


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL divergence of the diagonal Gaussian posterior from the standard normal, per element."""
    return 0.5 * torch.mean(mean**2 + logvar.exp() - 1.0 - logvar)


def train_vae(
    vae: torch.nn.Module, images: torch.Tensor, args: argparse.Namespace, rng: torch.Generator
) -> dict[str, float]:
    """Fit the VAE to RGB ``images`` in [-1, 1]; returns the final windowed losses."""
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2 * args.lr, weight_decay=0.0)
    losses = RunningMean()
    vae.train()
    for step in tqdm(range(args.vae_steps), desc="vae", disable=args.no_progress, file=sys.stdout):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.vae_steps, 2 * args.lr)
        index = torch.randint(0, len(images), (args.vae_batch_size,), generator=rng)
        x = random_shift(images[index], 2, rng)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=rng)
        recon = vae.decode(z).sample
        mse = F.mse_loss(recon, x)
        kl = kl_divergence(posterior.mean, posterior.logvar)
        loss = mse + KL_WEIGHT * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        losses.add(mse=mse.item(), kl=kl.item())
    vae.eval()
    return losses.means()


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std ``[N, 4, 8, 8]`` of every image, unscaled."""
    means, stds = [], []
    for s in range(0, len(images), 256):
        posterior = vae.encode(images[s : s + 256]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


class CaptionIds:
    """Token ids of captions, padded to the model's length, computed once per distinct caption."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        """int64 ``[B, max_length]``."""
        missing = sorted({c for c in captions if c not in self.cache})
        if missing:
            ids = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            self.cache.update(zip(missing, ids, strict=True))
        return torch.stack([self.cache[c] for c in captions])


def train_denoiser(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer,
    scheduler,
    latents: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    args: argparse.Namespace,
    rng: torch.Generator,
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, float]]:
    """Fit the UNet on scaled latents under the frozen text encoder; returns its EMA copy and the losses."""
    mean, std = latents
    alpha_bar = scheduler.alphas_cumprod.float()
    params = list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema_unet = EMA(unet, decay=0.999)
    text_encoder.eval().requires_grad_(False)
    ids_of = CaptionIds(tokenizer)
    losses = RunningMean()
    unet.train()
    T = scheduler.config.num_train_timesteps
    for step in tqdm(range(args.steps), desc="unet", disable=args.no_progress, file=sys.stdout):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        index = torch.randint(0, len(labels), (args.batch_size,), generator=rng)
        B = len(index)
        z0 = mean[index] + std[index] * torch.randn(mean[index].shape, generator=rng)  # (B, 4, 8, 8)
        t = torch.randint(0, T, (B,), generator=rng)
        noise = torch.randn(z0.shape, generator=rng)
        a = alpha_bar[t].view(B, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
        ids = ids_of(training_captions(labels[index], rng, CAPTION_DROPOUT))
        with torch.no_grad():
            context = text_encoder(ids).last_hidden_state  # (B, max_length, text_width)
        loss = F.mse_loss(unet(z_t, t, encoder_hidden_states=context).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema_unet.update(unet)
        losses.add(mse=loss.item())
        if args.no_progress and (step + 1) % 100 == 0:
            print(f"unet step {step + 1}/{args.steps} mse {losses.means()['mse']:.4f}", flush=True)
    return ema_unet.module, losses.means()


def train(args: argparse.Namespace) -> dict:
    """Both phases; writes the pipeline directory and returns the card (without quality figures)."""
    clock = Stopwatch()
    rng = seed_everything(args.seed, args.threads)
    config = t2i.DEFAULT
    train_set, _ = load_split()
    images = t2i.to_rgb(train_set.images)  # (N, 3, 32, 32)
    labels = torch.from_numpy(train_set.labels)
    tokenizer = t2i.build_tokenizer(all_captions(), config.max_length)
    vae, unet = t2i.build_vae(config), t2i.build_unet(config)
    text_encoder, scheduler = t2i.build_text_encoder(config, tokenizer), t2i.build_scheduler(config)

    if args.vae_from is None:
        vae_losses = train_vae(vae, images, args, rng)
        mean, std = encode_latents(vae, images)
        # Stable Diffusion's convention: latents times scaling_factor have unit variance.
        scaling = float(1.0 / mean.std())
        vae.register_to_config(scaling_factor=scaling)
    else:
        vae = AutoencoderKL.from_pretrained(str(args.vae_from / "vae")).eval()
        source = read_card(args.vae_from)
        vae_losses = source.get("final_losses", {}).get("vae", {})
        # The card describes the VAE's own training, which happened in the source run.
        args.vae_steps = source.get("vae_steps", args.vae_steps)
        args.vae_batch_size = source.get("vae_batch_size", args.vae_batch_size)
        mean, std = encode_latents(vae, images)
        scaling = float(vae.config.scaling_factor)
    vae_seconds = clock.seconds()
    if args.init_from is not None:
        # Continue an earlier run: its UNet, and its frozen text encoder (the one that UNet learned to read).
        unet = UNet2DConditionModel.from_pretrained(str(args.init_from / "unet"))
        text_encoder = CLIPTextModel.from_pretrained(str(args.init_from / "text_encoder"))
    text_ema = text_encoder
    unet_ema, unet_losses = train_denoiser(
        unet, text_encoder, tokenizer, scheduler, (mean * scaling, std * scaling), labels, args, rng
    )
    pipe = t2i.assemble(tokenizer, text_ema, vae, unet_ema, scheduler)
    t2i.save_pipeline(pipe, args.out)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "family": t2i.FAMILY,
        "model": "latent text-to-image diffusion in the Stable Diffusion layout (diffusers pipeline)",
        "config": config.to_dict(),
        "parameters": {
            "text_encoder": count(text_ema),
            "unet": count(unet_ema),
            "vae": count(vae),
            "tokenizer_vocabulary": len(tokenizer),
        },
        "vae_scaling_factor": round(scaling, 5),
        "data": DATA_NOTE + "; grey digits as RGB",
        "captions": {
            "train_phrasings": list(TRAIN_PHRASINGS),
            "held_out_phrasings": list(HELD_OUT_PHRASINGS),
            "caption_dropout": CAPTION_DROPOUT,
        },
        "seed": args.seed,
        "vae_steps": args.vae_steps,
        "vae_from": None if args.vae_from is None else str(args.vae_from),
        # A continued run's UNet also went through the earlier run's steps (its own card's command).
        "continued_from": None
        if args.init_from is None
        else {k: read_card(args.init_from).get(k) for k in ("steps", "command", "wall_time_s")},
        "steps": args.steps,
        "batch_size": args.batch_size,
        "vae_batch_size": args.vae_batch_size,
        "threads": args.threads,
        "optimizer": (
            f"AdamW, peak lr {2 * args.lr} (VAE) and {args.lr} (UNet; text encoder frozen at its random "
            f"init, token embedding std {t2i.TOKEN_EMBEDDING_STD}), warm-up + cosine decay, grad clip 1.0, "
            f"EMA decay 0.999 (UNet); VAE KL weight {KL_WEIGHT}"
        ),
        "wall_time_s": {"vae": vae_seconds, "total": clock.seconds()},
        "final_losses": {"vae": vae_losses, "unet": unet_losses},
        "command": (
            f"genserve train text_to_image --vae-steps {args.vae_steps} --steps {args.steps} "
            f"--batch-size {args.batch_size} --vae-batch-size {args.vae_batch_size} --lr {args.lr} "
            f"--seed {args.seed} --threads {args.threads}"
            + (f" --vae-from {args.vae_from}" if args.vae_from is not None else "")
            + (f" --init-from {args.init_from}" if args.init_from is not None else "")
        ),
    }


def main(argv: list[str] | None = None) -> int:
    """Train, write the pipeline directory and its card, then (unless ``--no-eval``) the quality figures."""
    args = parse_args(argv)
    from genserve.export import text_to_image_quality as quality

    card = train(args)
    quality.write_card(args.out, card)
    print(f"wrote {args.out} ({card['wall_time_s']['total']} s)")
    if args.no_eval:
        return 0
    return quality.main(
        [str(args.out), "--weights-dir", str(args.weights_dir), "--per-phrasing", str(args.eval_per_phrasing)]
    )


if __name__ == "__main__":
    raise SystemExit(main())
