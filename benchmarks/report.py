"""Render a sweep's ``results.json`` as ``report.md`` with PNG plots beside it.

Every figure in the report is read from ``results.json``; nothing is typed in by hand. A ``notes.md`` in
the same folder (a person's reading of the results) is included verbatim under "Discussion". The
tables come from :mod:`genserve.benchmarks.tables`, the plots from :mod:`genserve.benchmarks.plots`.
"""

from __future__ import annotations

import json
from pathlib import Path

from genserve.benchmarks.diffusion_bench import analyse
from genserve.benchmarks.plots import plot_batch_histogram, plot_diffusion, plot_latency, plot_queue_compute
from genserve.benchmarks.tables import (
    COMPARE_USERS,
    CURVE_HEADER,
    baseline_table,
    bound_table,
    curve_rows,
    diffusion_points_table,
    diffusion_table,
    noise_table,
    paced_table,
    select,
    split_table,
    table,
    target_table,
)
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, STYLE_MODEL
from genserve.server.model_names import GAN_GENERATOR


def write_report(out_dir: Path) -> Path:
    """Read ``out_dir/results.json`` and write ``report.md`` and the PNG plots next to it."""
    results = json.loads((out_dir / "results.json").read_text())
    points, config = results["points"], results["config"]
    bounds = config["bounds"]
    diffusion = analyse(points, results["baselines"], config["steps"])
    host = results["host"]
    versions = ", ".join(f"{k} {v}" for k, v in host["versions"].items())
    md = [f"# genserve benchmark: {out_dir.name}\n"]
    md.append(
        f"Measured {results['started']} in {results.get('duration_s', 0) / 60:.1f} minutes, "
        f"revision `{host['revision']}`.\n\n"
        f"- Command: `{results['command']}`\n"
        f"- Host: {host['cpu']}, {host['cores']} cores ({host['usable_cores']} usable), "
        f"AVX-512 {'yes' if host['avx512'] else 'no'}, {host['memory_gib']} GiB, {host['os']}\n"
        f"- Versions: {versions}\n"
        f"- Load average before / after: {', '.join(f'{x:.2f}' for x in results['load_before'])} / "
        f"{', '.join(f'{x:.2f}' for x in results.get('load_after', [0, 0, 0]))}\n"
        f"- Load generator: locust (gevent, one process) through genserve's client, on the same host as the "
        f"server; latencies are each call's own timing over the steady window (first "
        f"{config['warmup_s']:g} s of "
        f"{config['duration_s']:g} s left out for GAN points, {2 * config['warmup_s']:g} s of "
        f"{config['slow_duration_s']:g} s for style and diffusion).\n"
        f"- GAN network: `{config['gan_network']}`; the served endpoint draws latents from seeds "
        "and returns uint8.\n"
    )
    targets, target_notes = target_table(results, diffusion)
    md.append("## Targets (issue 6)\n\n" + targets + "".join(f"\n{n}\n" for n in target_notes))
    notes = out_dir / "notes.md"
    if notes.exists():
        md.append("## Discussion\n\n" + notes.read_text().strip() + "\n")
    peak = results["baselines"]
    md.append(
        "## In-process baselines\n\n"
        f"Host GEMM peak (fp32, 2048^3, "
        f"{', '.join(f'{k} {v:.0f}' for k, v in peak['gemm_gflops'].items())} GFLOP/s; "
        f"the better, {peak['peak_gflops']:.0f} GFLOP/s, is the reference). FLOPs are counted from "
        "the ONNX graph "
        "(Conv, ConvTranspose, MatMul, Gemm; 2 per multiply-add). ONNX Runtime and PyTorch use 2 threads.\n\n"
        + baseline_table(results)
    )
    figures = []
    for endpoint, inner, unit in (
        (GAN_MODEL, GAN_GENERATOR, "images"),
        (STYLE_MODEL, "style_network", "images"),
    ):
        if not select(points, endpoint=endpoint):
            continue
        png = plot_latency(points, endpoint, bounds[endpoint], out_dir / f"latency_{endpoint}.png", unit)
        figures.append(png.name)
        md.append(
            f"## {endpoint}: latency vs throughput\n\n![{endpoint} latency]({png.name})\n\n"
            f"### Highest throughput with p99 under the "
            f"bound\n\n{bound_table(points, endpoint, bounds[endpoint])}\n"
            f"### Every point\n\n"
            "Queue and compute times are Triton's statistics per request (endpoint = the Python "
            "model, network = "
            "the ONNX model behind it); CPU per call is user+system time of the load generator and "
            "of the server's "
            "processes divided by calls.\n\n" + table(CURVE_HEADER, curve_rows(points, endpoint, inner))
        )
    if select(points, endpoint=GAN_MODEL, kind="closed", batching="off"):
        png = plot_queue_compute(points, out_dir / "queue_compute_gan.png")
        md.append(f"## gan: server queue vs compute time\n\n![queue vs compute]({png.name})\n")
    panels = []
    for users in (1, 8, COMPARE_USERS, 64):
        found = [
            p
            for p in select(
                points, system="genserve", endpoint=GAN_MODEL, batching="on", protocol="grpc", kind="closed"
            )
            if p["spec"]["users"] == users
        ]
        if found and found[0]["triton"].get(GAN_MODEL, {}).get("batches"):  # one graph: gan batches
            batches = found[0]["triton"][GAN_MODEL]["batches"]
            panels.append((f"gan endpoint, {users} concurrent users", batches))
    for unet in sorted({p["tags"]["network"] for p in select(points, endpoint=DIFFUSION_MODEL)}):
        curve = select(points, endpoint=DIFFUSION_MODEL, batching="on", protocol="grpc", network=unet)
        batches = curve[-1]["triton"].get("diffusion_unet", {}).get("batches") if curve else None
        if batches:
            panels.append((f"UNet ({unet}), N={curve[-1]['spec']['users']} requests", batches))
    if panels:
        png = plot_batch_histogram(panels, out_dir / "batch_sizes.png")
        md.append(f"## Batch sizes the server formed\n\n![batch sizes]({png.name})\n")
    if select(points, kind="paced"):
        md.append("## Paced load (gan, gRPC, batching on): target vs achieved\n\n" + paced_table(points))
    if select(points, kind="pinned"):
        md.append(
            "## Two cores shared by load generator and server\n\n"
            "The same points with the load generator pinned to one core and the server's processes "
            "to the other "
            "(`taskset`), against both sharing both cores.\n\n" + split_table(points)
        )
    if select(points, kind="repeat"):
        text, noise = noise_table(points)
        md.append(
            "## Noise: two runs of the same curve\n\n"
            "The gan gRPC batching-on curve, measured again on a freshly started server at the end "
            "of the GAN runs.\n\n"
            + text
            + (
                f"\nMedian absolute throughput difference between the runs: {100 * noise:.1f}%.\n"
                if noise is not None
                else ""
            )
        )
    if diffusion:
        png = plot_diffusion(diffusion, out_dir / "diffusion.png")
        md.append(
            "## Diffusion: cross-request step batching\n\n"
            f"![diffusion]({png.name})\n\n"
            "Batching off = the UNet config without `dynamic_batching`: each request's UNet call "
            "runs as its own "
            "execution. Efficiency = UNet rows/s delivered through the served pipeline / in-process "
            "ONNX Runtime "
            "rows/s for exactly the batch sizes the server ran (Triton's per-batch-size counts). "
            "In-process gain = "
            "in-process rows/s at the average batch with batching on / at the average batch with it off.\n\n"
            + diffusion_table(diffusion, config["steps"])
            + "\n### Every diffusion point (gRPC and HTTP)\n\n"
            + diffusion_points_table(points)
        )
    if results.get("text_to_image", {}).get("pipelines"):
        from genserve.benchmarks.text_to_image_bench import markdown

        md.append(markdown(results["text_to_image"]))
    if (out_dir / "replicas.json").exists():
        from genserve.benchmarks.replicas import replicas_section

        md.append(replicas_section(json.loads((out_dir / "replicas.json").read_text())))
    md.append(
        f"\nRaw locust CSV/HTML, server logs and repositories: `{out_dir.name}/raw/` (not committed).\n"
    )
    (out_dir / "report.md").write_text("\n".join(md))
    (out_dir / "diffusion.json").write_text(json.dumps(diffusion, indent=1))
    return out_dir / "report.md"
