"""Train the class-conditional UNet with the DDPM objective: ``genserve train diffusion``.

Each step noises a batch at random timesteps and regresses the noise (Ho et al. 2020). A tenth of
the labels are replaced by "no label" so the same network serves classifier-free guidance (Ho &
Salimans 2022). The exported weights are an exponential moving average.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genserve.export.checkpoint import save_checkpoint, weights_path
from genserve.export.data import batches, load_split
from genserve.export.diffusion import DEFAULT, FAMILY, UNet
from genserve.export.training import (
    EMA,
    RunningMean,
    Stopwatch,
    add_common_arguments,
    check_positive,
    cosine_lr,
    finish_training,
    seed_everything,
)
from genserve.server.ddim import UNCONDITIONAL_LABEL, DDIMSchedule

LABEL_DROPOUT = 0.1


def main(argv: list[str] | None = None) -> int:
    """Train the UNet, write ``diffusion.safetensors`` (EMA weights + schedule) and its card."""
    parser = argparse.ArgumentParser(prog="genserve train diffusion", description=__doc__.splitlines()[0])
    add_common_arguments(parser, steps=3500, batch_size=32)
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    check_positive(parser, args)
    rng = seed_everything(args.seed, args.threads)
    train, _ = load_split()
    config, schedule = DEFAULT, DDIMSchedule()
    alpha_bar = torch.from_numpy(schedule.alphas_cumprod).float()
    model = UNet(config)
    ema = EMA(model, decay=0.999)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    losses, clock = RunningMean(), Stopwatch()
    data = batches(train, args.batch_size, rng)
    model.train()
    for step in tqdm(range(args.steps), desc="diffusion", disable=args.no_progress, file=sys.stdout):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        x0, y = next(data)
        B = x0.shape[0]
        t = torch.randint(0, schedule.num_train_timesteps, (B,), generator=rng)
        noise = torch.randn(x0.shape, generator=rng)
        a = alpha_bar[t].view(B, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        drop = torch.rand(B, generator=rng) < LABEL_DROPOUT
        y = torch.where(drop, torch.full_like(y, UNCONDITIONAL_LABEL), y)
        loss = F.mse_loss(model(x_t, t, y), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)
        losses.add(mse=loss.item())
    path = weights_path(FAMILY, args.out)
    save_checkpoint(path, FAMILY, {"unet": config.to_dict(), "schedule": schedule.to_dict()}, ema.module)
    return finish_training(
        FAMILY,
        args,
        path,
        clock,
        losses,
        model="class-conditional UNet (eps prediction), EMA weights",
        config=config.to_dict(),
        schedule=schedule.to_dict(),
        parameters=sum(p.numel() for p in model.parameters()),
        label_dropout=LABEL_DROPOUT,
        optimizer=f"AdamW peak lr={args.lr}, warm-up + cosine decay, grad clip 1.0, EMA decay 0.999",
    )


if __name__ == "__main__":
    raise SystemExit(main())
