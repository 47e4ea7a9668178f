"""Render a sweep's ``results.json`` as ``report.md`` with PNG plots beside it.

Every figure in the report is read from ``results.json``; nothing is typed in by hand. A ``notes.md`` in
the same folder (a person's reading of the results) is included verbatim under "Discussion".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from genserve.benchmarks.diffusion_bench import analyse  # noqa: E402
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, STYLE_MODEL  # noqa: E402
from genserve.server.model_names import GAN_GENERATOR  # noqa: E402

TARGET_FRACTION = 0.85
PEER_TARGET = 2.0
COMPARE_USERS = 32
DIFFUSION_N = 16
STYLES = {
    ("genserve", "on", "grpc"): ("tab:blue", "-", "o"),
    ("genserve", "on", "http"): ("tab:blue", "--", "s"),
    ("genserve", "off", "grpc"): ("tab:orange", "-", "o"),
    ("genserve", "off", "http"): ("tab:orange", "--", "s"),
    ("pytriton", "on", "grpc"): ("tab:green", "-", "^"),
    ("pytriton", "on", "http"): ("tab:green", "--", "v"),
}


# -- selection helpers ---------------------------------------------------------------------------------
def select(points: list[dict[str, Any]], **tags: Any) -> list[dict[str, Any]]:
    """Points whose tags match, ordered by users."""
    found = [p for p in points if all(p["tags"].get(k) == v for k, v in tags.items())]
    return sorted(found, key=lambda p: p["spec"]["users"])


def series_keys(points: list[dict[str, Any]], endpoint: str) -> list[tuple[str, str, str]]:
    """``(system, batching, protocol)`` of the closed-loop curves of an endpoint."""
    keys = {
        (p["tags"]["system"], p["tags"]["batching"], p["tags"]["protocol"])
        for p in points
        if p["tags"]["endpoint"] == endpoint and p["tags"]["kind"] == "closed"
    }
    return sorted(keys, key=lambda k: (k[0] != "genserve", k[1] != "on", k[2]))


def best_under_bound(curve: list[dict[str, Any]], bound: float) -> dict[str, Any] | None:
    """The point with the highest throughput whose p99 stays under ``bound`` and has no errors."""
    ok = [p for p in curve if p["p99"] is not None and p["p99"] <= bound and p["errors"] == 0 and p["ok"] > 0]
    return max(ok, key=lambda p: p["throughput"]) if ok else None


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.1f}"


def _num(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# -- plots --------------------------------------------------------------------------------------------------
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


# -- sections -----------------------------------------------------------------------------------------------
def _curve_rows(points: list[dict[str, Any]], endpoint: str, inner: str | None) -> list[list[Any]]:
    rows = []
    for system, batching, protocol in series_keys(points, endpoint):
        for p in select(
            points, system=system, endpoint=endpoint, batching=batching, protocol=protocol, kind="closed"
        ):
            # A peer serving the endpoint as one model has no inner network: its own figures stand in.
            stats = (
                (p["triton"].get(inner or endpoint) or p["triton"].get(endpoint, {})) if p["triton"] else {}
            )
            outer = p["triton"].get(endpoint, {}) if p["triton"] else {}
            rows.append(
                [
                    system,
                    batching,
                    protocol,
                    p["spec"]["users"],
                    _num(p["images_per_s"]),
                    _ms(p["p50"]),
                    _ms(p["p95"]),
                    _ms(p["p99"]),
                    p["errors"],
                    _num(stats.get("avg_batch"), ".2f"),
                    _ms(outer.get("queue_per_request_s")),
                    _ms(stats.get("queue_per_request_s")),
                    _ms(stats.get("compute_per_request_s")),
                    _ms(p["client_cpu_s_per_call"]),
                    _ms(p["server_cpu_s_per_call"]),
                ]
            )
    return rows


CURVE_HEADER = (
    "system",
    "batching",
    "protocol",
    "users",
    "images/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "avg batch",
    "endpoint queue ms",
    "network queue ms",
    "network compute ms",
    "load-gen CPU ms/call",
    "server CPU ms/call",
)


def _bound_table(points: list[dict[str, Any]], endpoint: str, bound: float) -> str:
    rows = []
    for system, batching, protocol in series_keys(points, endpoint):
        curve = select(
            points, system=system, endpoint=endpoint, batching=batching, protocol=protocol, kind="closed"
        )
        best = best_under_bound(curve, bound)
        rows.append(
            [
                system,
                batching,
                protocol,
                _num(best["images_per_s"]) if best else "none",
                best["spec"]["users"] if best else "–",
                _ms(best["p99"]) if best else "–",
            ]
        )
    return table(
        ("system", "batching", "protocol", f"images/s with p99 <= {bound * 1000:g} ms", "users", "p99 ms"),
        rows,
    )


def _targets(results: dict[str, Any], diffusion: dict[str, Any]) -> tuple[str, list[str]]:
    points, base = results["points"], results["baselines"]["networks"]
    gan_key = results["config"]["gan_network"]
    gan = base[gan_key]
    rows, notes = [], []

    def at(batching: str, system: str = "genserve") -> dict[str, Any] | None:
        found = [
            p
            for p in select(
                points, system=system, endpoint=GAN_MODEL, batching=batching, protocol="grpc", kind="closed"
            )
            if p["spec"]["users"] == COMPARE_USERS
        ]
        return found[0] if found else None

    on, off = at("on"), at("off")
    ort_best = gan["ort"][str(gan["best_batch"])]
    if on:
        ratio = on["images_per_s"] / ort_best
        rows.append(
            [
                f"GAN at {COMPARE_USERS} users, batching on / in-process ORT best batch",
                f"{_num(on['images_per_s'])} / {_num(ort_best)} = {_pct(ratio)}",
                ">= 85%",
                "met" if ratio >= TARGET_FRACTION else f"missed by {_pct(TARGET_FRACTION - ratio)} points",
            ]
        )
    if on and off and off["images_per_s"]:
        served = on["images_per_s"] / off["images_per_s"]
        ceiling = gan["batch_gain"]
        rows.append(
            [
                f"GAN on/off ratio at {COMPARE_USERS} users / in-process best-batch gain",
                f"{served:.2f}x / {ceiling:.2f}x = {_pct(served / ceiling)}",
                ">= 85%",
                "met"
                if served / ceiling >= TARGET_FRACTION
                else f"missed by {_pct(TARGET_FRACTION - served / ceiling)} points",
            ]
        )
    for unet, data in diffusion.items():
        row = next((r for r in data["rows"] if r["n"] == DIFFUSION_N), None) or (
            data["rows"][-1] if data["rows"] else None
        )
        if row and "on" in row and row["on"]["efficiency"] is not None:
            eff = row["on"]["efficiency"]
            rows.append(
                [
                    f"diffusion ({unet}) pipeline efficiency at N={row['n']}",
                    f"{_num(row['on']['unet_rows_per_s'])} / "
                    f"{_num(row['on']['in_process_rows_per_s'])} rows/s = {_pct(eff)}",
                    ">= 85%",
                    "met" if eff >= TARGET_FRACTION else f"missed by {_pct(TARGET_FRACTION - eff)} points",
                ]
            )
        if row and "speedup" in row and row.get("in_process_gain"):
            rows.append(
                [
                    f"diffusion ({unet}) speedup over batching off at N={row['n']} vs in-process gain",
                    f"{row['speedup']:.2f}x vs {row['in_process_gain']:.2f}x",
                    ">= in-process gain",
                    "met"
                    if row["speedup"] >= row["in_process_gain"]
                    else f"missed by {row['in_process_gain'] - row['speedup']:.2f}x",
                ]
            )
    bound = results["config"]["bounds"][GAN_MODEL]
    mine = best_under_bound(
        select(points, system="genserve", endpoint=GAN_MODEL, batching="on", protocol="grpc", kind="closed"),
        bound,
    )
    peer = best_under_bound(
        select(points, system="pytriton", endpoint=GAN_MODEL, protocol="grpc", kind="closed"), bound
    )
    if mine and peer:
        ratio = mine["images_per_s"] / peer["images_per_s"]
        rows.append(
            [
                f"genserve / PyTriton images/s with p99 <= {bound * 1000:g} ms (gRPC)",
                f"{_num(mine['images_per_s'])} / {_num(peer['images_per_s'])} = {ratio:.2f}x",
                ">= 2x",
                "met" if ratio >= PEER_TARGET else f"missed: {ratio:.2f}x of 2x",
            ]
        )
    elif mine or peer:
        notes.append(
            "One of genserve and the peer has no point under the p99 bound; the ratio is not defined."
        )
    return table(("figure", "measured", "target", "result"), rows), notes


def _baseline_table(results: dict[str, Any]) -> str:
    base = results["baselines"]
    rows = []
    for key, data in base["networks"].items():
        ort = ", ".join(f"{b}: {v:.0f}" for b, v in data["ort"].items())
        torch = ", ".join(f"{b}: {v:.0f}" for b, v in data["torch"].items()) or "–"
        rows.append(
            [
                key,
                f"{data['flops_per_row'] / 1e9:.3f}",
                ort,
                torch,
                data["best_batch"],
                f"{data['batch_gain']:.2f}x",
                f"{data['gflops_batch1']:.0f} / {data['gflops_best']:.0f}",
                f"{_pct(data['fraction_of_peak_batch1'])} / {_pct(data['fraction_of_peak_best'])}",
            ]
        )
    return table(
        (
            "network",
            "GFLOP/row",
            "ONNX Runtime rows/s by batch",
            "PyTorch eager rows/s by batch",
            "best batch",
            "best/batch 1",
            "GFLOP/s batch 1 / best",
            "of GEMM peak",
        ),
        rows,
    )


def _paced_table(points: list[dict[str, Any]]) -> str:
    rows = []
    for p in sorted(select(points, kind="paced"), key=lambda p: p["target_rate"] or 0):
        rows.append(
            [
                p["spec"]["users"],
                _num(p["target_rate"]),
                _num(p["throughput"]),
                _pct(p["throughput"] / p["target_rate"]) if p["target_rate"] else "–",
                _ms(p["p50"]),
                _ms(p["p99"]),
                p["errors"],
                _num(p["triton"].get(GAN_MODEL, {}).get("avg_batch"), ".2f"),
            ]
        )
    return table(
        (
            "users",
            "target calls/s",
            "achieved calls/s",
            "achieved/target",
            "p50 ms",
            "p99 ms",
            "errors",
            "avg batch",
        ),
        rows,
    )


def _split_table(points: list[dict[str, Any]]) -> str:
    rows = []
    for pinned in select(points, kind="pinned"):
        users = pinned["spec"]["users"]
        free = [
            p
            for p in select(
                points, system="genserve", endpoint=GAN_MODEL, batching="on", protocol="grpc", kind="closed"
            )
            if p["spec"]["users"] == users
        ]
        for label, p in (
            ("shared (unpinned)", free[0] if free else None),
            ("pinned: load gen core 0, server core 1", pinned),
        ):
            if p is None:
                continue
            rows.append(
                [
                    users,
                    label,
                    _num(p["throughput"]),
                    _ms(p["p50"]),
                    _ms(p["p99"]),
                    _ms(p["client_cpu_s_per_call"]),
                    _ms(p["server_cpu_s_per_call"]),
                    _pct(
                        (p["client_cpu_s_per_call"] or 0)
                        / ((p["client_cpu_s_per_call"] or 0) + (p["server_cpu_s_per_call"] or 1e-12))
                    ),
                ]
            )
    return table(
        (
            "users",
            "placement",
            "calls/s",
            "p50 ms",
            "p99 ms",
            "load-gen CPU ms/call",
            "server CPU ms/call",
            "load-gen share of CPU",
        ),
        rows,
    )


def _noise(points: list[dict[str, Any]]) -> tuple[str, float | None]:
    first = {
        p["spec"]["users"]: p
        for p in select(
            points, system="genserve", endpoint=GAN_MODEL, batching="on", protocol="grpc", kind="closed"
        )
    }
    rows, diffs = [], []
    for p in select(points, kind="repeat"):
        a = first.get(p["spec"]["users"])
        if a is None or not a["throughput"]:
            continue
        diff = p["throughput"] / a["throughput"] - 1
        diffs.append(abs(diff))
        p99 = (p["p99"] / a["p99"] - 1) if a["p99"] and p["p99"] else None
        rows.append(
            [
                p["spec"]["users"],
                _num(a["throughput"]),
                _num(p["throughput"]),
                f"{100 * diff:+.1f}%",
                _ms(a["p99"]),
                _ms(p["p99"]),
                "–" if p99 is None else f"{100 * p99:+.0f}%",
            ]
        )
    text = table(
        (
            "users",
            "run 1 calls/s",
            "run 2 calls/s",
            "difference",
            "run 1 p99 ms",
            "run 2 p99 ms",
            "p99 difference",
        ),
        rows,
    )
    return text, (float(np.median(diffs)) if diffs else None)


def _diffusion_table(analysis: dict[str, Any], steps: int) -> str:
    rows = []
    for unet, data in analysis.items():
        for r in data["rows"]:
            on, off = r.get("on", {}), r.get("off", {})
            rows.append(
                [
                    unet,
                    r["n"],
                    _num(on.get("images_per_s"), ".2f"),
                    _num(off.get("images_per_s"), ".2f"),
                    _num(r.get("speedup"), ".2f"),
                    _num(r.get("in_process_gain"), ".2f"),
                    _num(on.get("avg_batch"), ".1f"),
                    _num(off.get("avg_batch"), ".1f"),
                    _num(on.get("unet_rows_per_s"), ".0f"),
                    _num(on.get("in_process_rows_per_s"), ".0f"),
                    _pct(on.get("efficiency")),
                    _pct(off.get("efficiency")),
                    _ms(on.get("p99")),
                    (on.get("errors") or 0) + (off.get("errors") or 0),
                ]
            )
    return (
        table(
            (
                "UNet",
                "N",
                "images/s on",
                "images/s off",
                "speedup",
                "in-process gain",
                "avg batch on",
                "avg batch off",
                "UNet rows/s served (on)",
                "in-process rows/s at those batches",
                "efficiency on",
                "efficiency off",
                "p99 ms on",
                "errors",
            ),
            rows,
        )
        + f"\n{steps} DDIM steps per request, guidance 2.0 (2 UNet rows per image and step), 1 "
        "image per request.\n"
    )


def _diffusion_points_table(points: list[dict[str, Any]]) -> str:
    rows = []
    found = select(points, endpoint=DIFFUSION_MODEL)
    found.sort(
        key=lambda p: (p["tags"]["network"], p["tags"]["batching"], p["tags"]["protocol"], p["spec"]["users"])
    )
    for p in found:
        unet = p["triton"].get("diffusion_unet", {})
        rows.append(
            [
                p["tags"]["network"],
                p["tags"]["batching"],
                p["tags"]["protocol"],
                p["spec"]["users"],
                _num(p["images_per_s"], ".2f"),
                _ms(p["p50"]),
                _ms(p["p99"]),
                p["errors"],
                _num(unet.get("avg_batch"), ".1f"),
                _ms(unet.get("queue_per_request_s")),
                _ms(unet.get("compute_per_request_s")),
                _ms(p["client_cpu_s_per_call"]),
                _ms(p["server_cpu_s_per_call"]),
            ]
        )
    header = (
        "UNet",
        "batching",
        "protocol",
        "N",
        "images/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "UNet avg batch",
        "UNet queue ms/call",
        "UNet compute ms/call",
        "load-gen CPU ms/call",
        "server CPU ms/call",
    )
    return table(header, rows)


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
    targets, target_notes = _targets(results, diffusion)
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
        + _baseline_table(results)
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
            f"bound\n\n{_bound_table(points, endpoint, bounds[endpoint])}\n"
            f"### Every point\n\n"
            "Queue and compute times are Triton's statistics per request (endpoint = the Python "
            "model, network = "
            "the ONNX model behind it); CPU per call is user+system time of the load generator and "
            "of the server's "
            "processes divided by calls.\n\n" + table(CURVE_HEADER, _curve_rows(points, endpoint, inner))
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
        md.append("## Paced load (gan, gRPC, batching on): target vs achieved\n\n" + _paced_table(points))
    if select(points, kind="pinned"):
        md.append(
            "## Two cores shared by load generator and server\n\n"
            "The same points with the load generator pinned to one core and the server's processes "
            "to the other "
            "(`taskset`), against both sharing both cores.\n\n" + _split_table(points)
        )
    if select(points, kind="repeat"):
        text, noise = _noise(points)
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
            + _diffusion_table(diffusion, config["steps"])
            + "\n### Every diffusion point (gRPC and HTTP)\n\n"
            + _diffusion_points_table(points)
        )
    if (out_dir / "replicas.json").exists():
        from genserve.benchmarks.replicas import replicas_section

        md.append(replicas_section(json.loads((out_dir / "replicas.json").read_text())))
    md.append(
        f"\nRaw locust CSV/HTML, server logs and repositories: `{out_dir.name}/raw/` (not committed).\n"
    )
    (out_dir / "report.md").write_text("\n".join(md))
    (out_dir / "diffusion.json").write_text(json.dumps(diffusion, indent=1))
    return out_dir / "report.md"
