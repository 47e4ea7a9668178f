"""The report's Markdown tables and figures, each computed from a sweep's ``results.json`` points."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL

TARGET_FRACTION = 0.85


PEER_TARGET = 2.0


COMPARE_USERS = 32


DIFFUSION_N = 16


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


def curve_rows(points: list[dict[str, Any]], endpoint: str, inner: str | None) -> list[list[Any]]:
    """The rows of the every-point table of one endpoint (``inner``: the network behind it)."""
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


def bound_table(points: list[dict[str, Any]], endpoint: str, bound: float) -> str:
    """Per series, the highest throughput whose p99 stays under ``bound`` seconds."""
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


def target_table(results: dict[str, Any], diffusion: dict[str, Any]) -> tuple[str, list[str]]:
    """The targets section: a table of each target's measured figure, and notes under it."""
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


def baseline_table(results: dict[str, Any]) -> str:
    """In-process ONNX Runtime and PyTorch rows/s per network, with FLOPs and batch gains."""
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


def paced_table(points: list[dict[str, Any]]) -> str:
    """Paced GAN points: the target rate against the achieved one, with latency."""
    columns: dict[str, Callable[[dict[str, Any]], Any]] = {
        "users": lambda p: p["spec"]["users"],
        "target calls/s": lambda p: _num(p["target_rate"]),
        "achieved calls/s": lambda p: _num(p["throughput"]),
        "achieved/target": lambda p: _pct(p["throughput"] / p["target_rate"]) if p["target_rate"] else "–",
        "p50 ms": lambda p: _ms(p["p50"]),
        "p99 ms": lambda p: _ms(p["p99"]),
        "errors": lambda p: p["errors"],
        "avg batch": lambda p: _num(p["triton"].get(GAN_MODEL, {}).get("avg_batch"), ".2f"),
    }
    paced = sorted(select(points, kind="paced"), key=lambda p: p["target_rate"] or 0)
    return table(columns, [[cell(p) for cell in columns.values()] for p in paced])


def split_table(points: list[dict[str, Any]]) -> str:
    """Pinned points (load generator and server on separate cores) beside the shared ones."""
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


def noise_table(points: list[dict[str, Any]]) -> tuple[str, float | None]:
    """The repeated GAN curve beside the first run, and the median throughput difference."""
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


def diffusion_table(analysis: dict[str, Any], steps: int) -> str:
    """Diffusion with batching on and off: rows/s, efficiency against in-process, gain."""
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


def diffusion_points_table(points: list[dict[str, Any]]) -> str:
    """Every diffusion point, gRPC and HTTP."""
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
