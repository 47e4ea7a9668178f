"""Text-to-image: UNet step batching across requests on vs off, beside the UNet run in process.

For each pipeline (the in-house one if the repository has it, and random-weight pipelines converted
by ``genserve export --from-diffusers``, one with a larger UNet), N users each send text-to-image
requests in a closed loop (one prompt, guidance on: 2 UNet rows per image and step) to two servers:

- **on**: the repository as exported (the UNet's dynamic batcher joins the steps of all requests);
- **off**: the same models with the UNet config regenerated without ``dynamic_batching``, so every
  step of every request runs as its own execution.

Beside them, the in-process ceiling on this host: ONNX Runtime running the same UNet steps for N
images one request at a time (batch 2) or all together (batch 2N), text encoder and VAE left out.
Results: ``text_to_image.json`` and ``text_to_image.png`` in the output folder.

    python -m genserve.benchmarks.text_to_image_bench --out benchmarks/results/cpu-2core
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genserve.benchmarks import tritonstats
from genserve.client import Client
from genserve.client.contract import TEXT_TO_IMAGE_MODEL
from genserve.server.latent_diffusion import PARTS, LatentFacts, part_model
from genserve.server.launcher import EmbeddedServer
from genserve.server.paths import MODEL_REPOSITORY

ROWS_PER_IMAGE_STEP = 2
"""Guidance other than 0 and 1 runs a conditional and an unconditional row per image and step."""


@dataclass
class BenchConfig:
    """What one run measures.

    Attributes:
        concurrency: Closed-loop users per point.
        seconds: Length of a point (after one warm-up request per user).
        steps: DDIM steps per request.
        guidance: Guidance scale (2 UNet rows per image and step).
        random_unets: Random pipelines to convert and measure: ``tiny`` and/or ``large``.
        in_house: Also measure the repository's own ``text_to_image`` pipeline when it is there.
    """

    concurrency: tuple[int, ...] = (1, 4, 8)
    seconds: float = 20.0
    steps: int = 10
    guidance: float = 2.0
    random_unets: tuple[str, ...] = ("large",)
    in_house: bool = True

    @classmethod
    def smoke(cls) -> BenchConfig:
        """Every path once, in seconds (CI)."""
        return cls(concurrency=(1, 2), seconds=1.0, steps=2, random_unets=(), in_house=False)


# -- repositories ------------------------------------------------------------------------------------
def pipeline_facts(repository: Path, name: str) -> tuple[LatentFacts, int]:
    """The facts a pipeline's generated config carries, and its UNet's ``max_batch_size``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    def load(model: str) -> Any:
        return text_format.Parse(
            (repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )

    params = {k: v.string_value for k, v in load(name).parameters.items()}
    return LatentFacts.from_parameters(params), int(load(part_model(name, "unet")).max_batch_size)


def batching_off_repository(repository: Path, name: str, folder: Path) -> Path:
    """A repository of the same pipeline whose UNet runs every request alone (no dynamic batching).

    Model folders are symbolic links to the originals; only the UNet's config is regenerated.
    """
    from genserve.export.triton_configs import part_config

    facts, max_batch = pipeline_facts(repository, name)
    unet = part_model(name, "unet")
    only_pipeline(repository, name, folder, but=unet)
    (folder / unet).mkdir(exist_ok=True)
    if not (folder / unet / "1").exists():
        (folder / unet / "1").symlink_to((repository / unet / "1").resolve(), target_is_directory=True)
    (folder / unet / "config.pbtxt").write_text(part_config(unet, "unet", facts, max_batch, batching=False))
    return folder


def only_pipeline(repository: Path, name: str, folder: Path, but: str = "") -> Path:
    """A repository of one pipeline's models (links to them, all but ``but``); a server loads nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    for model in [name, *(part_model(name, part) for part in PARTS)]:
        link = folder / model
        if model != but and not link.exists():
            link.symlink_to((repository / model).resolve(), target_is_directory=True)
    return folder


def convert_random(kind: str, work: Path) -> Path:
    """Export a random-weight pipeline (``tiny`` or ``large`` UNet) into ``work/kind/repository``."""
    from genserve.export.diffusers_export import export_pipeline
    from genserve.export.diffusers_random import LARGE_UNET, TINY, save_random_pipeline

    repository = work / kind / "repository"
    if not (repository / TEXT_TO_IMAGE_MODEL / "config.pbtxt").is_file():
        source = save_random_pipeline(work / kind / "pipeline", LARGE_UNET if kind == "large" else TINY)
        export_pipeline(source, repository, progress=print)
    return repository


# -- load ---------------------------------------------------------------------------------------------
def closed_loop(url: str, users: int, config: BenchConfig) -> dict[str, Any]:
    """``users`` threads sending one-prompt requests back to back; images/s and latency in the window."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(users + 1)

    def user(index: int) -> None:
        with Client(url, timeout=600) as client:
            options = {"steps": config.steps, "guidance": config.guidance}
            client.text_to_image("the digit seven", seeds=index, **options)  # warm-up, connection
            barrier.wait()
            seed, deadline = 1000 * index, time.perf_counter() + config.seconds
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                try:
                    client.text_to_image("the digit seven", seeds=seed, **options)
                except Exception as error:  # counted, never hidden
                    with lock:
                        errors.append(f"{type(error).__name__}: {error}")
                    continue
                seed += 1
                with lock:
                    latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "users": users,
        "images": len(latencies),
        "seconds": elapsed,
        "images_per_s": len(latencies) / elapsed,
        "p50_s": statistics.median(latencies) if latencies else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def serve_and_load(repository: Path, name: str, config: BenchConfig, log: Path) -> list[dict[str, Any]]:
    """Start a server on ``repository`` and run every concurrency level against it."""
    rows = []
    unet = part_model(name, "unet")
    with EmbeddedServer(repository, log_file=log, exit_timeout=10) as server:
        for users in config.concurrency:
            before = tritonstats.snapshot(server.http_url, [unet])
            point = closed_loop(server.grpc_url, users, config)
            stats = tritonstats.delta(before, tritonstats.snapshot(server.http_url, [unet]))[unet]
            point["unet_avg_batch"] = stats.avg_batch
            point["unet_rows"] = stats.rows
            point["unet_executions"] = stats.executions
            rows.append(point)
            print(f"  {repository.name}: {users} users, {point['images_per_s']:.2f} images/s", flush=True)
    return rows


def in_process(repository: Path, name: str, config: BenchConfig) -> dict[str, Any]:
    """ONNX Runtime on the UNet alone: images/s for N images sampled one by one vs in one batch."""
    import onnxruntime as ort

    facts, _ = pipeline_facts(repository, name)
    session = ort.InferenceSession(
        str(repository / part_model(name, "unet") / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)

    def rate(rows: int) -> float:
        feeds = {
            "sample": rng.standard_normal((rows, *facts.latent_shape)).astype(np.float32),
            "timestep": np.full(rows, 500, np.int64),
            "encoder_hidden_states": rng.standard_normal((rows, facts.text_length, facts.text_width)).astype(
                np.float32
            ),
        }
        session.run(None, feeds)
        runs, began = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - began < 1.0:
            session.run(None, feeds)
            runs += 1
        return runs * rows / (time.perf_counter() - began)

    per_image = config.steps * ROWS_PER_IMAGE_STEP
    out = {}
    for users in config.concurrency:
        rows = ROWS_PER_IMAGE_STEP * users
        out[str(users)] = {
            "serial_images_per_s": rate(ROWS_PER_IMAGE_STEP) / per_image,
            "batched_images_per_s": rate(rows) / per_image,
        }
    return out


def measure(label: str, repository: Path, config: BenchConfig, work: Path) -> dict[str, Any]:
    """On, off and in process for one pipeline."""
    name = TEXT_TO_IMAGE_MODEL
    print(f"text_to_image bench: {label}", flush=True)
    on = only_pipeline(repository, name, work / label / "on")
    off = batching_off_repository(repository, name, work / label / "off")
    facts, _ = pipeline_facts(repository, name)
    return {
        "label": label,
        "latent_shape": list(facts.latent_shape),
        "unet_parameters_mb": round(
            (repository / part_model(name, "unet") / "1" / "model.onnx").stat().st_size / 2**20, 1
        ),
        "on": serve_and_load(on, name, config, work / label / "on.log"),
        "off": serve_and_load(off, name, config, work / label / "off.log"),
        "in_process": in_process(repository, name, config),
    }


def run(
    config: BenchConfig,
    out_dir: Path,
    repository: Path = MODEL_REPOSITORY,
    extra: dict[str, Path] | None = None,
) -> dict:
    """Measure every pipeline the config names; write ``text_to_image.json`` and the figure."""
    work = out_dir / "raw" / "text_to_image"
    pipelines: dict[str, Path] = dict(extra or {})
    if config.in_house and (repository / TEXT_TO_IMAGE_MODEL / "config.pbtxt").is_file():
        pipelines["in-house"] = repository
    for kind in config.random_unets:
        pipelines[f"random {kind}"] = convert_random(kind, work)
    results = {
        "config": asdict(config),
        "pipelines": [
            measure(label.replace(" ", "_"), path, config, work) for label, path in pipelines.items()
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "text_to_image.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["pipelines"]:
        plot(results, out_dir / "text_to_image.png")
        (out_dir / "text_to_image.md").write_text(markdown(results))
    return results


def plot(results: dict, path: Path) -> Path:
    """Images/s against concurrent requests: step batching on, off, and the in-process UNet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipelines = results["pipelines"]
    figure, axes = plt.subplots(
        1, max(1, len(pipelines)), figsize=(5 * max(1, len(pipelines)), 3.8), squeeze=False
    )
    for axis, entry in zip(axes[0], pipelines, strict=False):
        users = [row["users"] for row in entry["on"]]
        axis.plot(users, [r["images_per_s"] for r in entry["on"]], "o-", label="served, step batching on")
        axis.plot(users, [r["images_per_s"] for r in entry["off"]], "s-", label="served, step batching off")
        inproc = entry["in_process"]
        axis.plot(
            users, [inproc[str(u)]["batched_images_per_s"] for u in users], "--", label="in process, batch 2N"
        )
        axis.plot(
            users, [inproc[str(u)]["serial_images_per_s"] for u in users], ":", label="in process, batch 2"
        )
        for row in entry["on"]:
            if row["unet_avg_batch"]:
                axis.annotate(f"{row['unet_avg_batch']:.1f}", (row["users"], row["images_per_s"]), fontsize=7)
        axis.set_title(f"{entry['label']} (UNet {entry['unet_parameters_mb']} MB)", fontsize=9)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel("images/s")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(
        f"text_to_image, {results['config']['steps']} steps, guidance {results['config']['guidance']} "
        "(labels: UNet rows per execution)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown(results: dict) -> str:
    """The report section: one table row per pipeline and concurrency."""
    c = results["config"]
    lines = [
        "## Text-to-image: cross-request UNet step batching",
        "",
        "![text_to_image](text_to_image.png)",
        "",
        f"Closed loop, one prompt per request, {c['steps']} steps, guidance {c['guidance']:g} (2 UNet rows "
        f"per image and step), {c['seconds']:g} s per point over gRPC. Off = the UNet config regenerated "
        "without `dynamic_batching`. In process = ONNX Runtime on the UNet alone for the same rows (no text "
        "encoder, no VAE, no serving), batch 2 (one request at a time) and batch 2N.",
        "",
        "| pipeline | N | on images/s | off images/s | speedup | UNet rows/execution on / off "
        "| in process batch 2N / batch 2 images/s | p50 on / off s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results["pipelines"]:
        for on, off in zip(entry["on"], entry["off"], strict=True):
            inproc = entry["in_process"][str(on["users"])]
            speedup = on["images_per_s"] / off["images_per_s"] if off["images_per_s"] else None
            cells = [
                entry["label"],
                on["users"],
                f"{on['images_per_s']:.2f}",
                f"{off['images_per_s']:.2f}",
                f"{_fmt(speedup, '.2f')}x",
                f"{_fmt(on['unet_avg_batch'], '.1f')} / {_fmt(off['unet_avg_batch'], '.1f')}",
                f"{inproc['batched_images_per_s']:.2f} / {inproc['serial_images_per_s']:.2f}",
                f"{_fmt(on['p50_s'], '.2f')} / {_fmt(off['p50_s'], '.2f')}",
            ]
            lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the text-to-image benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument("--smoke", action="store_true", help="every path once, seconds per point")
    parser.add_argument("--seconds", type=float, help="seconds per point")
    parser.add_argument("--concurrency", type=int, nargs="+", help="users per point")
    parser.add_argument(
        "--random-unets", nargs="*", choices=("tiny", "large"), help="random pipelines to convert"
    )
    args = parser.parse_args(argv)
    config = BenchConfig.smoke() if args.smoke else BenchConfig()
    if args.seconds:
        config.seconds = args.seconds
    if args.concurrency:
        config.concurrency = tuple(args.concurrency)
    if args.random_unets is not None:
        config.random_unets = tuple(args.random_unets)
    run(config, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
