"""Before -> after of the serving fast path, in one run: the ``gan`` endpoint against in-process ONNX Runtime.

Each variant is a model repository served by code of one git revision: ``before`` is a revision
unpacked with ``git archive`` (its own ``genserve`` on ``PYTHONPATH``, so its Python models and
backend run as they were), ``after`` the working tree. Rounds alternate the variants, so host noise
hits both alike; every figure is the median over rounds. Load comes from Triton's ``perf_analyzer``
(closed loop, one row per request, gRPC), whose own CPU per call is a fraction of locust's; the
server's CPU per call is its process group's user+system time over the run. In-process figures are
ONNX Runtime on the bare generator (the better of 1 and 2 threads) at batch 1 and 32, measured in
every round too.

    python -m genserve.benchmarks.fastpath --before faf399c --rounds 3 --out benchmarks/results/fastpath
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from genserve.benchmarks import perf_analyzer, tritonstats
from genserve.benchmarks.baselines import ort_session, rows_per_second
from genserve.benchmarks.diffusion_bench import ROWS_PER_IMAGE_STEP
from genserve.benchmarks.loadrun import process_group_cpu_s
from genserve.benchmarks.models import REPOSITORY, Network, export_benchmark_networks, repository_networks
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL
from genserve.server.launcher import EmbeddedServer
from genserve.server.model_names import DIFFUSION_UNET

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("client", "server", "export", "benchmarks")


@dataclass(frozen=True)
class Variant:
    """Code of one revision serving one repository.

    Attributes:
        label: ``before`` or ``after`` (or a config name).
        repository: The model repository to serve.
        pythonpath: Where that revision's ``genserve`` package lies (``None``: the installed one).
    """

    label: str
    repository: Path
    pythonpath: str | None = None


def unpack_revision(ref: str, folder: Path) -> str:
    """Unpack ``ref`` into ``folder/src`` and lay out its ``genserve`` package; return its PYTHONPATH."""
    source = folder / "src"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    package = folder / "pkg" / "genserve"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name in PACKAGES:
        (package / name).symlink_to(source / name)
    # Generated files are not in git: the revision serves the same exported networks as the tree.
    for onnx in REPOSITORY.glob("*/1/*.onnx"):
        target = source / "model_repository" / onnx.relative_to(REPOSITORY)
        python_model = (target.parent / "model.py").exists()
        if (target.parent.parent / "config.pbtxt").exists() and not python_model and not target.exists():
            target.parent.mkdir(exist_ok=True)
            shutil.copy(onnx, target)
    return str(folder / "pkg")


def endpoint_repository(
    pythonpath: str | None, target: Path, network: Network | None, source: Path, endpoint: str = GAN_MODEL
) -> Path:
    """An endpoint's benchmark repository as that revision's own code builds it."""
    swap = "None" if network is None else f"Network(**{json.dumps(_network_fields(network))})"
    code = (
        "from pathlib import Path; from genserve.benchmarks.models import Network; "
        "from genserve.benchmarks.repository import build_repository; "
        f"build_repository(Path({str(target)!r}), {endpoint!r}, network={swap}, source=Path({str(source)!r}))"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(pythonpath), check=True)
    return target


def with_instances_and_threads(config: Path, instances: int, threads: int) -> None:
    """Set a config's CPU instance count and ONNX Runtime intra-op threads (native parameters)."""
    group = f"instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]"
    text = re.sub(r"instance_group \[[^\]]*\]", group, config.read_text())
    text = re.sub(r'parameters \[ \{ key: "intra_op_thread_count"[^\n]*\n', "", text)
    text += f'parameters [ {{ key: "intra_op_thread_count", value: {{ string_value: "{threads}" }} }} ]\n'
    config.write_text(text)


def _network_fields(network: Network) -> dict:
    fields = asdict(network)
    fields["path"] = str(network.path)
    return fields


def _env(pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


@contextlib.contextmanager
def _pythonpath(pythonpath: str | None) -> Iterator[None]:
    """Set PYTHONPATH for the server started inside (its stubs import that revision's genserve)."""
    old = os.environ.get("PYTHONPATH")
    if pythonpath:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def measure_variant(
    variant: Variant, concurrencies: list[int], window_ms: int, log: Path, request_count: int | None = None
) -> list[dict]:
    """Serve the variant and run perf_analyzer at each concurrency on ``gan``."""
    points = []
    with _pythonpath(variant.pythonpath), EmbeddedServer(variant.repository, log_file=log) as server:
        for concurrency in concurrencies:
            point = perf_analyzer.measure(
                server.grpc_url,
                GAN_MODEL,
                concurrency,
                perf_analyzer.gan_input_data(),
                window_ms=window_ms,
                request_count=request_count,
                server_cpu=lambda: process_group_cpu_s(server.pid or 0),
            )
            points.append({"variant": variant.label, **asdict(point)})
    return points


def measure_diffusion(variant: Variant, users: int, steps: int, seconds: float, log: Path) -> dict:
    """``users`` closed-loop diffusion requests (one image, guidance 2) for ``seconds``; UNet batches."""
    with _pythonpath(variant.pythonpath), EmbeddedServer(variant.repository, log_file=log) as server:
        asyncio.run(_diffusion_load(server.grpc_url, 1, steps, 0.0))  # warm-up: one request
        stats_before = tritonstats.snapshot(server.http_url, [DIFFUSION_UNET])
        cpu_before = process_group_cpu_s(server.pid or 0)
        latencies, elapsed = asyncio.run(_diffusion_load(server.grpc_url, users, steps, seconds))
        cpu = process_group_cpu_s(server.pid or 0) - cpu_before
        unet = tritonstats.delta(stats_before, tritonstats.snapshot(server.http_url, [DIFFUSION_UNET]))
    batches = unet[DIFFUSION_UNET].batches
    return {
        "variant": variant.label,
        "users": users,
        "steps": steps,
        "images_per_s": len(latencies) / elapsed,
        "p50_s": statistics.median(latencies),
        "server_cpu_s_per_image": cpu / len(latencies),
        "batches": {str(k): v for k, v in sorted(batches.items()) if v},
    }


async def _diffusion_load(url: str, users: int, steps: int, seconds: float) -> tuple[list[float], float]:
    from genserve.client import AsyncClient

    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + seconds

    async def user(index: int) -> None:
        call = 0
        while True:
            began = time.perf_counter()
            await client.diffuse([index % 10], seeds=[index * 1000 + call], steps=steps, guidance=2.0)
            latencies.append(time.perf_counter() - began)
            call += 1
            if time.perf_counter() >= deadline:
                return

    async with AsyncClient(url, timeout=600) as client:
        await asyncio.gather(*(user(i) for i in range(users)))
    return latencies, time.perf_counter() - start


def diffusion_efficiency(point: dict, rates: dict[int, float]) -> float:
    """UNet rows/s delivered through the pipeline over in-process rows/s at the batches it formed."""
    batches = {int(b): n for b, n in point["batches"].items()}
    rows = sum(b * n for b, n in batches.items())
    in_process_s = sum(b * n / rates[b] for b, n in batches.items())
    delivered = point["images_per_s"] * point["steps"] * ROWS_PER_IMAGE_STEP
    return delivered / (rows / in_process_s) if in_process_s else float("nan")


def in_process(network: Network, batches: tuple[int, ...] = (1, 32)) -> dict[int, float]:
    """Rows/s of the bare network in ONNX Runtime at each batch, the better of 1 and 2 threads.

    On a shared 2-core host a 2-thread session can fall far below a 1-thread one (its threads spin
    while others hold the cores), so the ceiling is the better of the two.
    """
    rates: dict[int, float] = {}
    for threads in (1, 2):
        session = ort_session(network, threads=threads)
        for batch in batches:
            feeds = network.inputs(batch)
            rate = rows_per_second(lambda feeds=feeds, s=session: s.run(None, feeds), batch, 0.5)
            rates[batch] = max(rates.get(batch, 0.0), rate)
    return rates


def summarize(points: list[dict], baselines: list[dict]) -> list[dict]:
    """Medians over rounds per (network, variant, concurrency), with served / in-process at batch 32."""
    rows = []
    keys = sorted({(p["network"], p["variant"], p["concurrency"]) for p in points})
    for network, variant, concurrency in keys:
        mine = [
            p
            for p in points
            if (p["network"], p["variant"], p["concurrency"]) == (network, variant, concurrency)
        ]
        best = statistics.median(b["rates"][32] for b in baselines if b["network"] == network)

        def med(field: str, mine: list[dict] = mine) -> float:
            return statistics.median(p[field] for p in mine if p[field] is not None)

        rows.append(
            {
                "network": network,
                "variant": variant,
                "concurrency": concurrency,
                "rounds": len(mine),
                "images_per_s": med("throughput"),
                "p50_ms": 1e3 * med("p50_s"),
                "p99_ms": 1e3 * med("p99_s"),
                "server_us_per_call": 1e6 * med("server_cpu_s_per_call"),
                "perf_analyzer_us_per_call": 1e6 * med("client_cpu_s_per_call"),
                "in_process_batch32": best,
                "served_over_in_process": med("throughput") / best,
            }
        )
    return rows


def unet_rates(sizes: list[int]) -> dict[int, float]:
    """In-process rows/s of the trained UNet at each batch size, the better of 1 and 2 threads."""
    network = repository_networks()["unet"]
    rates: dict[int, float] = {}
    for threads in (1, 2):
        session = ort_session(network, threads=threads)
        for batch in sizes:
            feeds = network.inputs(batch)
            rate = rows_per_second(lambda feeds=feeds, s=session: s.run(None, feeds), batch, 0.3)
            rates[batch] = max(rates.get(batch, 0.0), rate)
    return rates


def summarize_diffusion(points: list[dict]) -> list[dict]:
    """Medians over rounds per (variant, users)."""
    rows = []
    for variant, users in sorted({(p["variant"], p["users"]) for p in points}):
        mine = [p for p in points if (p["variant"], p["users"]) == (variant, users)]
        rows.append(
            {
                "variant": variant,
                "users": users,
                "rounds": len(mine),
                "images_per_s": statistics.median(p["images_per_s"] for p in mine),
                "p50_ms": 1e3 * statistics.median(p["p50_s"] for p in mine),
                "server_ms_per_image": 1e3 * statistics.median(p["server_cpu_s_per_image"] for p in mine),
                "avg_unet_batch": statistics.median(_avg_batch(p["batches"]) for p in mine),
                "efficiency": statistics.median(p["efficiency"] for p in mine),
            }
        )
    return rows


def _avg_batch(batches: dict[str, int]) -> float:
    executions = sum(batches.values())
    return sum(int(b) * n for b, n in batches.items()) / executions if executions else float("nan")


def diffusion_markdown(rows: list[dict]) -> str:
    """The diffusion summary as a Markdown table."""
    lines = [
        "",
        "Diffusion (trained UNet, one image per request, guidance 2): efficiency = UNet rows/s delivered",
        "through the pipeline / in-process ONNX Runtime rows/s at the batch sizes the server formed.",
        "",
        "| variant | concurrent requests | images/s | p50 ms | server CPU ms/image | avg UNet batch | "
        "efficiency |\n|" + "---|" * 7,
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['users']} | {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | "
            f"{r['server_ms_per_image']:.0f} | {r['avg_unet_batch']:.2f} | {100 * r['efficiency']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], meta: dict) -> str:
    """The summary as a Markdown table."""
    header = (
        "| network | variant | concurrency | images/s | p50 ms | p99 ms | server CPU µs/call | "
        "perf_analyzer CPU µs/call | in-process b32 img/s | served / in-process |\n|" + "---|" * 10
    )
    lines = [
        f"Medians over {meta['rounds']} alternating rounds; {meta['window_ms']} ms windows; "
        f"before = `{meta['before']}`, after = the working tree; host: {meta['host']}.",
        "",
        header,
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['variant']} | {r['concurrency']} | {r['images_per_s']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.1f} | {r['server_us_per_call']:.0f} | "
            f"{r['perf_analyzer_us_per_call']:.0f} | {r['in_process_batch32']:.0f} | "
            f"{100 * r['served_over_in_process']:.0f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and write ``fastpath.json`` and ``fastpath.md`` into ``--out``."""
    parser = argparse.ArgumentParser(prog="fastpath", description=main.__doc__)
    parser.add_argument("--before", required=True, help="git revision of the 'before' code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument(
        "--request-count", type=int, help="windows of this many requests instead of --window-ms (smoke runs)"
    )
    parser.add_argument("--networks", default="gan_digits,dcgan64", help="gan_digits and/or dcgan64")
    parser.add_argument(
        "--after-configs",
        default="as-committed",
        help="comma-separated gan configs for 'after': as-committed and/or INSTANCESxTHREADS (e.g. 2x1)",
    )
    parser.add_argument("--diffusion-users", default="1,16", help="concurrent diffusion requests ('' = none)")
    parser.add_argument("--diffusion-seconds", type=float, default=20.0)
    parser.add_argument("--diffusion-steps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--host", default="2-core CPU host, shared with other work")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    perf_analyzer.install()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="genserve-fastpath-") as tmp:
        work = Path(tmp)
        before_path = unpack_revision(args.before, work / "before")
        before_source = work / "before" / "src" / "model_repository"
        networks = {"gan_digits": repository_networks()["gan_digits"]}
        if "dcgan64" in args.networks:
            networks["dcgan64"] = export_benchmark_networks(work / "bench")["dcgan64"]
        variants = []
        for key, network in networks.items():
            if key not in args.networks:
                continue
            swap = None if key == "gan_digits" else network
            repo = endpoint_repository(before_path, work / f"before_{key}", swap, before_source)
            variants.append((key, Variant("before", repo, before_path)))
            for shape in args.after_configs.split(","):
                label = "after" if shape == "as-committed" else f"after {shape}"
                repo = endpoint_repository(None, work / f"after_{key}_{shape}", swap, REPOSITORY)
                if shape != "as-committed":
                    instances, threads = (int(n) for n in shape.split("x"))
                    with_instances_and_threads(repo / GAN_MODEL / "config.pbtxt", instances, threads)
                variants.append((key, Variant(label, repo, None)))
        diffusion_users = [int(u) for u in args.diffusion_users.split(",") if u.strip()]
        diffusion_variants = []
        if diffusion_users:
            for label, path, source in (("before", before_path, before_source), ("after", None, REPOSITORY)):
                repo = endpoint_repository(path, work / f"diffusion_{label}", None, source, DIFFUSION_MODEL)
                diffusion_variants.append((label, Variant(label, repo, path)))
        points, baselines, diffusion_points = [], [], []
        for round_index in range(args.rounds):
            for key, network in networks.items():
                if key in args.networks:
                    baselines.append({"network": key, "round": round_index, "rates": in_process(network)})
            for key, variant in variants:
                log = work / f"{variant.label}_{key}_{round_index}.log"
                for point in measure_variant(variant, concurrencies, args.window_ms, log, args.request_count):
                    points.append({"network": key, "round": round_index, **point})
                    print(json.dumps(points[-1]), flush=True)
            for label, variant in diffusion_variants:
                for users in diffusion_users:
                    log = work / f"diffusion_{label}_{users}_{round_index}.log"
                    point = measure_diffusion(
                        variant, users, args.diffusion_steps, args.diffusion_seconds, log
                    )
                    point["round"] = round_index
                    diffusion_points.append(point)
            sizes = {int(b) for p in diffusion_points if p["round"] == round_index for b in p["batches"]}
            rates = unet_rates(sorted(sizes))
            for point in diffusion_points:
                if point["round"] == round_index:
                    point["in_process_rows_per_s"] = {str(b): rates[b] for b in sorted(sizes)}
                    point["efficiency"] = diffusion_efficiency(point, rates)
                    print(json.dumps(point), flush=True)
    rows = summarize(points, baselines)
    diffusion_rows = summarize_diffusion(diffusion_points)
    meta = {"before": args.before, "rounds": args.rounds, "window_ms": args.window_ms, "host": args.host}
    everything = {"meta": meta, "summary": rows, "diffusion": diffusion_rows, "points": points}
    everything.update(in_process=baselines, diffusion_points=diffusion_points)
    (args.out / "fastpath.json").write_text(json.dumps(everything, indent=2) + "\n")
    text = markdown(rows, meta) + (diffusion_markdown(diffusion_rows) if diffusion_rows else "")
    (args.out / "fastpath.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
