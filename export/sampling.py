"""Offline sampling with the PyTorch models, through the same seeds and sampler the server uses.

A GAN latent is ``seeded_normal(seeds, latent_dim, stream=0)``; diffusion samples come from
:func:`genserve.server.ddim.sample`. So a seed gives the same image offline, in the parity report and
when served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from genserve.client.contract import gan_latents, to_uint8
from genserve.client.images import contact_sheet as images_sheet
from genserve.client.images import save_png
from genserve.server import ddim


def torch_fn(module: torch.nn.Module) -> Callable[..., np.ndarray]:
    """Wrap a module as a numpy function, run in eval mode without gradients."""
    module.eval()

    @torch.no_grad()
    def call(*arrays: np.ndarray) -> np.ndarray:
        return module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)).numpy()

    return call


def in_batches(fn: Callable[..., np.ndarray], *arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Apply ``fn`` to row slices of ``arrays`` and join the results."""
    n = len(arrays[0])
    return np.concatenate([fn(*(a[s : s + batch_size] for a in arrays)) for s in range(0, n, batch_size)])


def gan_samples(
    generator_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    latent_dim: int,
    labels: np.ndarray,
    seeds: np.ndarray,
) -> np.ndarray:
    """Images ``[N, C, H, W]`` from a generator function ``(z, label) -> image``."""
    z = gan_latents(seeds, latent_dim)
    return in_batches(generator_fn, z, np.asarray(labels, dtype=np.int64))


def diffusion_samples(
    eps_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    schedule: ddim.DDIMSchedule,
    labels: np.ndarray,
    seeds: np.ndarray,
    *,
    steps: int,
    guidance: float,
    eta: float = 0.0,
    batch_size: int = 128,
) -> np.ndarray:
    """DDIM samples ``[N, 1, 32, 32]``, in batches of ``batch_size`` rows (rows do not interact)."""
    labels = np.asarray(labels, dtype=np.int64)
    seeds = np.asarray(seeds)
    out = []
    for s in range(0, len(labels), batch_size):
        out.append(
            ddim.sample(
                schedule,
                eps_fn,
                labels[s : s + batch_size],
                seeds[s : s + batch_size],
                steps=steps,
                guidance=guidance,
                eta=eta,
            )
        )
    return np.concatenate(out)


def evaluation_rows(per_label: int, seed_base: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``0..9`` repeated ``per_label`` times, label-major, and distinct fixed seeds."""
    labels = np.repeat(np.arange(10, dtype=np.int64), per_label)
    return labels, seed_base + np.arange(len(labels), dtype=np.int64)


def contact_sheet(images: np.ndarray, columns: int, path: Path, scale: int = 2) -> Path:
    """Write float images ``[N, C, H, W]`` in [-1, 1] as one PNG grid, ``columns`` wide, ``scale``-fold."""
    sheet = images_sheet(to_uint8(images), columns=columns, scale=scale, padding=2 * scale, background=64)
    return save_png(sheet, path)
