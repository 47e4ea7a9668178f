"""The report's PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genserve.benchmarks.tables import TARGET_FRACTION, select, series_keys  # noqa: E402
from genserve.client.contract import GAN_MODEL  # noqa: E402
from genserve.server.model_names import GAN_GENERATOR  # noqa: E402

STYLES = {
    ("genserve", "on", "grpc"): ("tab:blue", "-", "o"),
    ("genserve", "on", "http"): ("tab:blue", "--", "s"),
    ("genserve", "off", "grpc"): ("tab:orange", "-", "o"),
    ("genserve", "off", "http"): ("tab:orange", "--", "s"),
    ("pytriton", "on", "grpc"): ("tab:green", "-", "^"),
    ("pytriton", "on", "http"): ("tab:green", "--", "v"),
}


def plot_latency(points: list[dict[str, Any]], endpoint: str, bound: float, path: Path, unit: str) -> Path:
    """p50 and p99 latency against achieved throughput, one line per system/batching/protocol."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), sharey=True)
    for key in series_keys(points, endpoint):
        system, batching, protocol = key
        curve = select(
            points, system=system, endpoint=endpoint, batching=batching, protocol=protocol, kind="closed"
        )
        color, style, marker = STYLES.get(key, ("gray", ":", "x"))
        label = f"{system} batching {batching} {protocol}" if system == "genserve" else f"{system} {protocol}"
        for axis, pct in zip(axes, ("p50", "p99"), strict=True):
            xs = [p["images_per_s"] for p in curve if p[pct] is not None]
            ys = [p[pct] * 1000 for p in curve if p[pct] is not None]
            axis.plot(xs, ys, color=color, linestyle=style, marker=marker, label=label)
            for p, x, y in zip([p for p in curve if p[pct] is not None], xs, ys, strict=True):
                axis.annotate(
                    str(p["spec"]["users"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    for axis, pct in zip(axes, ("p50", "p99"), strict=True):
        axis.axhline(
            bound * 1000, color="red", linewidth=1, linestyle=":", label=f"p99 bound {bound * 1000:g} ms"
        )
        axis.set_yscale("log")
        axis.set_xlabel(f"achieved throughput ({unit}/s)")
        axis.set_title(f"{endpoint}: {pct} latency (labels: concurrent users)")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms, log scale)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_queue_compute(points: list[dict[str, Any]], path: Path) -> Path:
    """Per GAN request: time in the endpoint's queue, the generator's queue, and compute, by users."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, batching in zip(axes, ("on", "off"), strict=True):
        curve = select(
            points, system="genserve", endpoint=GAN_MODEL, batching=batching, protocol="grpc", kind="closed"
        )
        users = [str(p["spec"]["users"]) for p in curve]
        parts = {
            "gan queue": [p["triton"][GAN_MODEL]["queue_per_request_s"] or 0 for p in curve],
            "generator queue": [p["triton"][GAN_GENERATOR]["queue_per_request_s"] or 0 for p in curve],
            "generator compute": [p["triton"][GAN_GENERATOR]["compute_per_request_s"] or 0 for p in curve],
        }
        gan_compute = [p["triton"][GAN_MODEL]["compute_per_request_s"] or 0 for p in curve]
        parts["gan compute outside generator"] = [
            max(0.0, g - q - c)
            for g, q, c in zip(gan_compute, parts["generator queue"], parts["generator compute"], strict=True)
        ]
        bottom = np.zeros(len(curve))
        for (name, values), color in zip(
            parts.items(), ("tab:red", "tab:orange", "tab:blue", "tab:gray"), strict=True
        ):
            axis.bar(users, np.array(values) * 1000, bottom=bottom, label=name, color=color)
            bottom += np.array(values) * 1000
        axis.set_title(f"gan, batching {batching} (gRPC): server time per request")
        axis.set_xlabel("concurrent users")
        axis.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("ms per request (Triton statistics)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_batch_histogram(panels: list[tuple[str, dict[str, int]]], path: Path) -> Path:
    """Executions per batch size (Triton's per-batch-size statistics), one panel per point."""
    columns = min(3, len(panels))
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.6 * lines), squeeze=False)
    for axis, (title, batches) in zip(axes.flat, panels, strict=False):
        sizes = sorted(int(b) for b in batches)
        counts = [batches[str(s)] if str(s) in batches else batches.get(s, 0) for s in sizes]  # type: ignore[call-overload]
        rows = [s * c for s, c in zip(sizes, counts, strict=True)]
        axis.bar(sizes, rows, width=0.8, color="tab:blue")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("batch size (rows per execution)")
        axis.grid(True, axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    for line in axes:
        line[0].set_ylabel("rows run at that batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_diffusion(analysis: dict[str, Any], path: Path) -> Path:
    """Speedup of step batching vs N, and pipeline efficiency, per UNet."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for unet, data in analysis.items():
        rows = [r for r in data["rows"] if "speedup" in r]
        ns = [r["n"] for r in rows]
        line = axes[0].plot(ns, [r["speedup"] for r in rows], marker="o", label=f"{unet}: served on/off")[0]
        gains = [r.get("in_process_gain") for r in rows]
        axes[0].plot(
            ns,
            [g or np.nan for g in gains],
            linestyle=":",
            color=line.get_color(),
            label=f"{unet}: in-process gain",
        )
        for state, style in (("on", "-"), ("off", "--")):
            eff = [
                r[state]["efficiency"]
                for r in data["rows"]
                if state in r and r[state]["efficiency"] is not None
            ]
            ns_eff = [r["n"] for r in data["rows"] if state in r and r[state]["efficiency"] is not None]
            axes[1].plot(
                ns_eff,
                eff,
                marker="o",
                linestyle=style,
                color=line.get_color(),
                label=f"{unet} batching {state}",
            )
    axes[0].axhline(1.0, color="gray", linewidth=1)
    axes[0].set_title("step batching speedup: images/s on / off")
    axes[0].set_ylabel("speedup")
    axes[1].axhline(TARGET_FRACTION, color="red", linestyle=":", linewidth=1, label="target 85%")
    axes[1].set_title("efficiency: served UNet rows/s / in-process")
    axes[1].set_ylabel("efficiency")
    for axis in axes:
        axis.set_xlabel("concurrent sampling requests N")
        axis.set_xscale("log", base=2)
        ns = sorted({r["n"] for data in analysis.values() for r in data["rows"]})
        axis.set_xticks(ns, [str(n) for n in ns])
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
