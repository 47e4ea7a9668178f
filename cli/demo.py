"""The main job: serve the models and produce images through Triton's own client.

It exports the models (or reuses the ONNX files already there), starts the embedded Triton server,
calls every endpoint, writes the images and prints the latency per endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

from genserve.client.contract import NUM_CLASSES
from genserve.server.launcher import EmbeddedServer
from genserve.server.paths import MODEL_REPOSITORY


def grid(images: np.ndarray, columns: int, scale: int = 1) -> Image.Image:
    """Tile uint8 NHWC images into one picture, ``columns`` per row."""
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    sheet = np.zeros((rows * height, columns * width, channels), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = image
    picture = Image.fromarray(sheet[..., 0] if channels == 1 else sheet)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def tensor(name: str, array: np.ndarray, dtype: str) -> grpcclient.InferInput:
    """A gRPC input tensor holding ``array``."""
    item = grpcclient.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the seconds the ``with`` block takes under ``label``."""
    start = time.perf_counter()
    yield
    timings[label] = time.perf_counter() - start


def run_gan(client: grpcclient.InferenceServerClient, output: Path, timings: dict[str, float]) -> None:
    """A 10 x 10 grid: ten seeds for each label."""
    seeds = np.arange(100, dtype=np.int64).reshape(-1, 1)
    labels = (np.arange(100) % NUM_CLASSES).astype(np.int64).reshape(-1, 1)
    client.infer("gan", [tensor("seed", seeds[:1], "INT64"), tensor("label", labels[:1], "INT64")])  # connect
    with timed("gan: 1 image", timings):
        client.infer("gan", [tensor("seed", seeds[:1], "INT64"), tensor("label", labels[:1], "INT64")])
    with timed("gan: 100 images", timings):
        images = client.infer("gan", [tensor("seed", seeds, "INT64"), tensor("label", labels, "INT64")])
    grid(images.as_numpy("image"), columns=NUM_CLASSES, scale=2).save(output / "gan_grid.png")


def demo_photos() -> tuple[np.ndarray, np.ndarray]:
    """A content photo and a style photo that ship inside scikit-learn."""
    from sklearn.datasets import load_sample_image

    return load_sample_image("china.jpg"), load_sample_image("flower.jpg")


def run_style(client: grpcclient.InferenceServerClient, output: Path, timings: dict[str, float]) -> None:
    """Content | style | stylized, side by side."""
    content, style = demo_photos()
    inputs = [
        tensor("content_pixels", content[None], "UINT8"),
        tensor("style_pixels", style[None], "UINT8"),
        tensor("alpha", np.array([[1.0]], np.float32), "FP32"),
    ]
    outputs = [grpcclient.InferRequestedOutput("image"), grpcclient.InferRequestedOutput("size")]
    with timed("style_transfer: 427x640 photo", timings):
        result = client.infer("style_transfer", inputs, outputs=outputs)
    stylized = result.as_numpy("image")[0]
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
    print(f"  style_transfer canvas size used: {int(result.as_numpy('size')[0, 0])}")


def run_diffusion(client: grpcclient.InferenceServerClient, output: Path, timings: dict[str, float]) -> None:
    """Two concurrent streamed requests of ten labels each (their UNet steps share batches)."""
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    labels = np.arange(NUM_CLASSES, dtype=np.int64)
    requests = {f"row{r}": (labels, np.arange(NUM_CLASSES, dtype=np.int64) + 1000 * r) for r in range(2)}
    start = time.perf_counter()
    for request_id, (row_labels, seeds) in requests.items():
        inputs = [
            tensor("label", row_labels, "INT64"),
            tensor("seed", seeds, "INT64"),
            tensor("steps", np.array([20], np.int32), "INT32"),
            tensor("guidance", np.array([2.0], np.float32), "FP32"),
        ]
        client.async_stream_infer("diffusion", inputs, request_id=request_id)
    images: dict[str, np.ndarray] = {}
    while len(images) < len(requests):
        result, error = responses.get(timeout=300)
        if error is not None:
            raise error
        images[result.get_response().id] = result.as_numpy("image")
    timings["diffusion: 2 x 10 images, 20 steps"] = time.perf_counter() - start
    client.stop_stream()
    grid(np.concatenate([images[k] for k in sorted(images)]), columns=NUM_CLASSES, scale=2).save(
        output / "diffusion_grid.png"
    )


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
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            run_gan(client, args.output, timings)
            run_style(client, args.output, timings)
            run_diffusion(client, args.output, timings)
        finally:
            client.close()
    print("latency per endpoint (one call each, gRPC):")
    for label, seconds in timings.items():
        print(f"  {label:<40} {seconds * 1000:8.1f} ms")
    print(f"images written to {args.output}/: gan_grid.png, stylized.png, diffusion_grid.png")
    return 0
