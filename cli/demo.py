"""The main job: serve the models and produce images through genserve's own client.

It exports the models (or reuses the ONNX files already there), starts the embedded Triton server,
calls every endpoint, writes the images and prints the latency per endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from genserve.client import Client, contact_sheet, save_png
from genserve.client.contract import NUM_CLASSES
from genserve.server.launcher import EmbeddedServer
from genserve.server.paths import MODEL_REPOSITORY


def save_grid(images: np.ndarray, path: Path) -> None:
    """Ten images a row, twice their size, no gaps."""
    save_png(contact_sheet(images, columns=NUM_CLASSES, scale=2, padding=0), path)


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the seconds the ``with`` block takes under ``label``."""
    start = time.perf_counter()
    yield
    timings[label] = time.perf_counter() - start


def run_gan(client: Client, output: Path, timings: dict[str, float]) -> None:
    """A 10 x 10 grid: ten seeds for each label."""
    seeds = np.arange(100, dtype=np.int64)
    labels = np.arange(100, dtype=np.int64) % NUM_CLASSES
    client.generate(labels[:1], seeds=seeds[:1])  # connect
    with timed("gan: 1 image", timings):
        client.generate(labels[:1], seeds=seeds[:1])
    with timed("gan: 100 images", timings):
        images = client.generate(labels, seeds=seeds)
    save_grid(images, output / "gan_grid.png")


def demo_photos() -> tuple[np.ndarray, np.ndarray]:
    """A content photo and a style photo that ship inside scikit-learn."""
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg"), load_sample_image("flower.jpg")


def run_style(client: Client, output: Path, timings: dict[str, float]) -> None:
    """Content | style | stylized, side by side."""
    content, style = demo_photos()
    with timed("style_transfer: 427x640 photo", timings):
        stylized = client.stylize(content, style=style, alpha=1.0)
    height = stylized.shape[0]
    panels = [
        Image.fromarray(image).resize((round(image.shape[1] * height / image.shape[0]), height))
        for image in (content, style)
    ]
    sheet = Image.new("RGB", (sum(p.width for p in panels) + stylized.shape[1], height))
    x = 0
    for panel in [*panels, Image.fromarray(stylized)]:
        sheet.paste(panel, (x, 0))
        x += panel.width
    sheet.save(output / "stylized.png")
    print(f"  style_transfer canvas size used: {max(stylized.shape[:2])}")  # the longer side


def run_diffusion(client: Client, output: Path, timings: dict[str, float]) -> None:
    """Two concurrent requests of ten labels each (their UNet steps share batches on the server)."""
    labels = np.arange(NUM_CLASSES, dtype=np.int64)
    rows = [np.arange(NUM_CLASSES, dtype=np.int64) + 1000 * r for r in range(2)]
    start = time.perf_counter()
    with ThreadPoolExecutor(len(rows)) as pool:
        calls = [pool.submit(client.diffuse, labels, seeds=seeds, steps=20, guidance=2.0) for seeds in rows]
        images = [call.result() for call in calls]
    timings["diffusion: 2 x 10 images, 20 steps"] = time.perf_counter() - start
    save_grid(np.concatenate(images), output / "diffusion_grid.png")


def main(argv: list[str] | None = None) -> int:
    """Run the demo end to end."""
    parser = argparse.ArgumentParser(prog="genserve demo", description=__doc__)
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/demo"), help="folder for images and the log"
    )
    parser.add_argument("--model-repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument(
        "--skip-export", action="store_true", help="use the ONNX files already in the repository"
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if not args.skip_export:
        # Its own process: the serving side never imports the export tools (or torch).
        command = [sys.executable, "-m", "genserve.export.cli", "--if-missing", "--no-report"]
        command += ["--repository", str(args.model_repository)]
        subprocess.run(command, check=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with EmbeddedServer(args.model_repository, log_file=args.output / "server.log") as server:
        ready = time.perf_counter() - started
        print(f"server ready in {ready:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}")
        with Client(server.grpc_url, timeout=300) as client:
            run_gan(client, args.output, timings)
            run_style(client, args.output, timings)
            run_diffusion(client, args.output, timings)
    print("latency per endpoint (one call each, gRPC):")
    for label, seconds in timings.items():
        print(f"  {label:<40} {seconds * 1000:8.1f} ms")
    print(f"images written to {args.output}/: gan_grid.png, stylized.png, diffusion_grid.png")
    return 0
