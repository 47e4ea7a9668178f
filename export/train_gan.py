"""Train the class-conditional DCGAN on the digits: ``genserve train gan``.

Loss: the hinge loss with a spectral-normalised projection discriminator. The generator's weights
are averaged (EMA) and its batch-norm statistics re-estimated at the end, so the exported generator
is deterministic per row.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

from genserve.export.checkpoint import save_checkpoint, weights_path
from genserve.export.data import batches, load_split
from genserve.export.gan import DIGITS, FAMILY, Discriminator, Generator, init_weights
from genserve.export.training import (
    EMA,
    RunningMean,
    Stopwatch,
    add_common_arguments,
    check_positive,
    finish_training,
    seed_everything,
)


@torch.no_grad()
def recalibrate_batch_norm(generator: Generator, batches_: int, batch_size: int, seed: int) -> None:
    """Re-estimate batch-norm statistics as exact averages over random latents and labels."""
    gen = torch.Generator().manual_seed(seed)
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    generator.train()
    for _ in range(batches_):
        z = torch.randn(batch_size, generator.config.latent_dim, generator=gen)
        generator(z, torch.randint(0, generator.config.num_classes, (batch_size,), generator=gen))
    for module in generator.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    generator.eval()


def main(argv: list[str] | None = None) -> int:
    """Train the GAN, write ``gan.safetensors`` (the generator) and its card."""
    parser = argparse.ArgumentParser(prog="genserve train gan", description=__doc__.splitlines()[0])
    add_common_arguments(parser, steps=2000, batch_size=64)
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (default: %(default)s)")
    args = parser.parse_args(argv)
    check_positive(parser, args)
    rng = seed_everything(args.seed, args.threads)
    train, _ = load_split()
    config = DIGITS
    G, D = Generator(config), Discriminator(config)
    G.apply(init_weights)
    ema = EMA(G, decay=0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.999))
    losses, clock = RunningMean(), Stopwatch()
    data = batches(train, args.batch_size, rng)
    B = args.batch_size
    for _step in tqdm(range(args.steps), desc="gan", disable=args.no_progress, file=sys.stdout):
        real, labels = next(data)
        z = torch.randn(B, config.latent_dim, generator=rng)
        fake_labels = torch.randint(0, config.num_classes, (B,), generator=rng)
        fake = G(z, fake_labels)
        # Discriminator, hinge loss: real scores above +1, generated below -1.
        loss_d = F.relu(1.0 - D(real, labels)).mean() + F.relu(1.0 + D(fake.detach(), fake_labels)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # Generator: raise the score of its images for the labels asked for.
        loss_g = -D(fake, fake_labels).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        ema.update(G)
        losses.add(discriminator=loss_d.item(), generator=loss_g.item())
    generator = ema.module
    recalibrate_batch_norm(generator, batches_=min(50, args.steps), batch_size=256, seed=args.seed)
    path = weights_path(FAMILY, args.out)
    save_checkpoint(path, FAMILY, config.to_dict(), generator)
    return finish_training(
        FAMILY,
        args,
        path,
        clock,
        losses,
        model="conditional DCGAN generator (projection discriminator); EMA weights, recalibrated BN",
        config=config.to_dict(),
        parameters=sum(p.numel() for p in generator.parameters()),
        latent="z = seeded_normal(seeds, latent_dim, stream=0) (genserve.client.contract)",
        optimizer=f"Adam lr={args.lr} betas=(0.5, 0.999), EMA decay 0.999",
    )


if __name__ == "__main__":
    raise SystemExit(main())
