"""Held-out quality of ``method="optimize"``: the same pairs, measures and bars as the network's.

Runs the exported ``style_targets`` and ``style_gradient`` models in ONNX Runtime, driven by the
serving loop (``genserve.server.gatys.optimize_loop``), all pairs as one batch, finishes the images
as the pipeline does (uint8, colour transfer) and measures them with ``style_quality``. A small size
keeps it minutes on a CPU::

    python -m genserve.export.style_optimize_quality --size 128 --iterations 50

writes the figures (JSON) and a contact sheet (content | style | optimized) beside the network's.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from genserve.client.contract import from_uint8
from genserve.export import style_quality
from genserve.export.onnx_export import ort_session
from genserve.export.style import VGGEncoder, load_style_network
from genserve.export.style_optimize import TARGET_NAMES
from genserve.server.gatys import optimize_loop
from genserve.server.iterative import drive
from genserve.server.model_names import MODEL_FILENAME, STYLE_GRADIENT, STYLE_TARGETS
from genserve.server.paths import MODEL_REPOSITORY

DEFAULT_OUT = style_quality.EXPORT_DIR / "reports" / "style_optimize_quality.json"
DEFAULT_SHEET = style_quality.EXPORT_DIR / "reports" / "style_optimize_samples.png"


def optimize_pairs(
    content: np.ndarray, style: np.ndarray, *, iterations: int, repository: Path = MODEL_REPOSITORY
) -> np.ndarray:
    """Optimized, finished images (uint8 ``[P, H, W, 3]``) for uint8 pairs, via the exported models."""
    import asyncio

    targets_session = ort_session(repository / STYLE_TARGETS / "1" / MODEL_FILENAME, 2)
    gradient_session = ort_session(repository / STYLE_GRADIENT / "1" / MODEL_FILENAME, 2)
    c, s = from_uint8(content), from_uint8(style)
    values = targets_session.run(list(TARGET_NAMES), {"content": c, "style": s})
    targets = dict(zip(TARGET_NAMES, values, strict=True))
    alpha = np.ones(len(c), dtype=np.float32)

    async def gradient(call):  # noqa: ANN001, ANN202 - a GradientCall
        feeds = {"image": call.image, **targets, "alpha": alpha}
        return gradient_session.run(["gradient"], feeds)[0]

    loop = optimize_loop(c, iterations=iterations)
    raw = asyncio.run(drive(loop, gradient, cancelled=lambda: False))
    return style_quality.finish(raw, style)


def main(argv: list[str] | None = None) -> int:
    """Measure the optimization on the held-out pairs; write the figures and the contact sheet."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--size", type=int, default=128, help="square size of the pairs (default 128)")
    parser.add_argument("--iterations", type=int, default=50, help="Adam steps (default 50)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--sheet", type=Path, default=DEFAULT_SHEET)
    args = parser.parse_args(argv)
    content, style, _ = style_quality.held_out_images(args.size)
    started = time.perf_counter()
    output = optimize_pairs(content, style, iterations=args.iterations)
    wall = time.perf_counter() - started
    seed = load_style_network(style_quality.DEFAULT_WEIGHTS).config.encoder_seed
    figures = style_quality.evaluate_outputs(VGGEncoder(seed), content, style, output)
    figures = {"size": args.size, "iterations": args.iterations, "wall_time_s": round(wall, 1), **figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    style_quality.contact_sheet([content, style, output], args.sheet)
    print(json.dumps({k: v for k, v in figures.items() if k != "pairs"}, indent=2))
    print(f"wrote {args.out} and {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
