"""What the training scripts share: determinism, the step schedule, EMA weights and the card."""

from __future__ import annotations

import argparse
import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genserve.export.checkpoint import WEIGHTS_DIR, card_path, write_card


def seed_everything(seed: int, threads: int = 2) -> torch.Generator:
    """Seed Python, numpy and torch, use deterministic kernels and ``threads`` CPU threads."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def add_common_arguments(parser: argparse.ArgumentParser, steps: int, batch_size: int) -> None:
    """The options every training script takes: ``--steps``, ``--batch-size``, ``--seed``, ``--out``..."""
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps (default: %(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=batch_size, help="rows per step (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=WEIGHTS_DIR,
        help="folder for <family>.safetensors/.json (default: %(default)s)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--no-eval", action="store_true", help="skip the quality figures in the card")


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject a non-positive ``--steps`` or ``--batch-size`` with the parser's one-line error."""
    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100, floor: float = 0.05) -> float:
    """Linear warm-up to ``peak``, then cosine decay to ``floor * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class EMA:
    """An exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Blend ``module`` into the average; the decay ramps up over the first updates."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, new in zip(self.module.parameters(), module.parameters(), strict=True):
            avg.lerp_(new, 1.0 - decay)
        for avg, new in zip(self.module.buffers(), module.buffers(), strict=True):
            avg.copy_(new)


class RunningMean:
    """Mean of the last ``window`` values of named losses."""

    def __init__(self, window: int = 100) -> None:
        self.window = window
        self.values: dict[str, list[float]] = {}

    def add(self, **losses: float) -> None:
        """Record one value per loss."""
        for name, value in losses.items():
            history = self.values.setdefault(name, [])
            history.append(float(value))
            del history[: -self.window]

    def means(self) -> dict[str, float]:
        """The windowed means, rounded for a card."""
        return {name: round(float(np.mean(v)), 5) for name, v in self.values.items()}


class Stopwatch:
    """Wall time since construction, in seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        """Seconds elapsed, rounded to 0.1."""
        return round(time.perf_counter() - self.start, 1)


def finish_training(
    family: str,
    args: argparse.Namespace,
    weights: Path,
    clock: Stopwatch,
    losses: RunningMean,
    **card: object,
) -> int:
    """Write the family's card (``card`` plus the run's settings and figures), then evaluate the weights.

    Returns:
        The evaluation's exit code, or 0 with ``--no-eval``.
    """
    card = {
        "family": family,
        **card,
        "data": card.pop("data", DATA_NOTE),
        "seed": args.seed,
        "steps": args.steps,
    }
    card |= {"batch_size": args.batch_size, "optimizer": card.pop("optimizer")}
    card |= {"wall_time_s": clock.seconds(), "final_losses": losses.means()}
    write_card(card_path(family, args.out), card)
    print(f"wrote {weights} and {card_path(family, args.out)} ({card['wall_time_s']} s)")
    if args.no_eval:
        return 0
    from genserve.export.evaluate import main as evaluate

    return evaluate([family, "--weights-dir", str(args.out)])


DATA_NOTE = (
    "scikit-learn load_digits (1797 8x8 digits), bilinear upsampling to 32x32, range [-1, 1]; "
    "stratified 80/20 train/held-out split with seed 0"
)
