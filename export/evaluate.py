"""Quality figures of the trained generators, written into their cards, and their contact sheets.

``python -m genserve.export.evaluate gan|diffusion``: samples every label from fixed seeds, has the
digit classifier judge them (per-label accuracy), computes the domain FID beside a noise and an
untrained-model baseline and the nearest-training-image distance, and writes a 10x10 PNG sheet (row k
conditioned on label k).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from genserve.client.contract import seeded_normal
from genserve.export import diffusion, gan
from genserve.export.checkpoint import (
    WEIGHTS_DIR,
    CheckpointError,
    card_path,
    read_card,
    weights_path,
    write_card,
)
from genserve.export.classifier import load_classifier, quality_report
from genserve.export.data import load_split
from genserve.export.sampling import contact_sheet, diffusion_samples, evaluation_rows, gan_samples, torch_fn

REPORTS_DIR = Path(__file__).resolve().parent / "reports"
FAMILIES = ("gan", "diffusion")
DDIM_STEPS = 25
"""DDIM steps of the diffusion quality figures (the acceptance bound is 50 or fewer)."""
GUIDANCE = 2.0


def noise_images(n: int, shape: tuple[int, ...] = (1, 32, 32)) -> np.ndarray:
    """Baseline: clipped Gaussian noise images."""
    seeds = np.arange(n) + 7_000_000
    return np.clip(seeded_normal(seeds, int(np.prod(shape))), -1, 1).reshape((n, *shape))


def gan_figures(weights_dir: Path, per_label: int) -> tuple[np.ndarray, dict, dict]:
    """Samples, generator-specific settings and baselines of the GAN."""
    generator = gan.load_generator(weights_path(gan.FAMILY, weights_dir))
    labels, seeds = evaluation_rows(per_label)
    latent = generator.config.latent_dim
    samples = gan_samples(torch_fn(generator), latent, labels, seeds)
    torch.manual_seed(0)
    untrained = gan.Generator(generator.config)
    untrained.apply(gan.init_weights)
    baseline = gan_samples(torch_fn(untrained), latent, labels, seeds)
    return samples, {"sampler": "z from seeded_normal(seed, latent_dim)"}, {"untrained_model": baseline}


def diffusion_figures(
    weights_dir: Path, per_label: int, steps: int, guidance: float
) -> tuple[np.ndarray, dict, dict]:
    """Samples, sampler settings and baselines of the diffusion model."""
    unet, schedule = diffusion.load_unet(weights_path(diffusion.FAMILY, weights_dir))
    labels, seeds = evaluation_rows(per_label)
    samples = diffusion_samples(torch_fn(unet), schedule, labels, seeds, steps=steps, guidance=guidance)
    torch.manual_seed(0)
    untrained = diffusion.UNet(unet.config)
    baseline = diffusion_samples(torch_fn(untrained), schedule, labels, seeds, steps=steps, guidance=guidance)
    settings = {"sampler": "DDIM", "steps": steps, "guidance": guidance, "eta": 0.0}
    return samples, settings, {"untrained_model": baseline}


def evaluate(
    family: str,
    weights_dir: Path = WEIGHTS_DIR,
    reports_dir: Path = REPORTS_DIR,
    per_label: int = 50,
    steps: int = DDIM_STEPS,
    guidance: float = GUIDANCE,
) -> dict:
    """Compute a family's quality figures, store them in its card, write its contact sheet.

    Args:
        family: ``"gan"`` or ``"diffusion"``.
        weights_dir: Folder of the checkpoints (the classifier's too) and cards.
        reports_dir: Folder of the contact sheet ``<family>_samples.png``.
        per_label: Samples per label.
        steps: DDIM steps (diffusion only).
        guidance: Classifier-free guidance scale (diffusion only).

    Returns:
        The quality dict written into the card.
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r} is unknown; allowed: {', '.join(FAMILIES)}")
    start = time.perf_counter()
    classifier = load_classifier(weights_path("classifier", weights_dir))
    train, held_out = load_split()
    if family == "gan":
        samples, settings, baselines = gan_figures(weights_dir, per_label)
    else:
        samples, settings, baselines = diffusion_figures(weights_dir, per_label, steps, guidance)
    labels, _ = evaluation_rows(per_label)
    baselines["noise"] = noise_images(len(samples))
    quality = {
        **settings,
        **quality_report(classifier, samples, labels, train.images, held_out.images, baselines),
        "seconds": round(time.perf_counter() - start, 1),
    }
    sheet_rows = np.concatenate([samples[labels == k][:10] for k in range(10)])
    contact_sheet(sheet_rows, 10, reports_dir / f"{family}_samples.png", scale=3)
    card = read_card(card_path(family, weights_dir))
    card["quality"] = quality
    write_card(card_path(family, weights_dir), card)
    return quality


def main(argv: list[str] | None = None) -> int:
    """Evaluate one family and print its figures."""
    parser = argparse.ArgumentParser(
        prog="python -m genserve.export.evaluate", description=__doc__.splitlines()[0]
    )
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help="checkpoints and cards folder")
    parser.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help="contact sheet folder")
    parser.add_argument("--per-label", type=int, default=50, help="samples per label (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=DDIM_STEPS, help="DDIM steps (default: %(default)s)")
    parser.add_argument(
        "--guidance", type=float, default=GUIDANCE, help="guidance scale (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    try:
        quality = evaluate(
            args.family, args.weights_dir, args.reports_dir, args.per_label, args.steps, args.guidance
        )
    except CheckpointError as error:
        print(f"evaluate: {error}", file=sys.stderr)
        return 1
    accuracy = quality["accuracy"]
    print(
        f"{args.family}: accuracy {accuracy['all']:.3f} (min per label {accuracy['min']:.3f}); "
        + "FID "
        + ", ".join(f"{k} {v:.2f}" for k, v in quality["fid"].items())
        + f"; NN median {quality['nearest_neighbour']['samples_median']:.3f} "
        f"(held-out real {quality['nearest_neighbour']['held_out_real_median']:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
