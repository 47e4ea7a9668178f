"""Diffusion: cross-request step batching against the same pipeline with UNet batching off.

The sweep runs N concurrent sampling requests (closed loop, N users) against the diffusion endpoint
served with the UNet's dynamic batcher on and off, for each UNet configuration. This module turns those
points into the figures the report shows:

- speedup(N) = images/s with batching / images/s without;
- pipeline efficiency = UNet rows/s delivered through the served pipeline (images/s x steps x rows per
  step) / in-process ONNX Runtime rows/s at the batch sizes the server formed (Triton's per-batch-size
  counts, weighted by the time each batch size takes in-process);
- the in-process batch gain of the UNet at those batch sizes (the ceiling of the speedup on this host).
"""

from __future__ import annotations

from typing import Any

from genserve.benchmarks.baselines import NetworkBaseline
from genserve.client.contract import DIFFUSION_MODEL
from genserve.server.model_names import DIFFUSION_UNET

ROWS_PER_IMAGE_STEP = 2
"""Guidance > 0 runs a conditional and an unconditional row per image and step."""


def baseline_from_dict(data: dict[str, Any]) -> NetworkBaseline:
    """Rebuild a :class:`NetworkBaseline` from its ``results.json`` form."""
    return NetworkBaseline(
        data["key"],
        data["flops_per_row"],
        {int(k): v for k, v in data["ort"].items()},
        {int(k): v for k, v in data.get("torch", {}).items()},
    )


def in_process_rate(baseline: NetworkBaseline, batches: dict[str, int] | dict[int, int]) -> float | None:
    """In-process rows/s for the executions the server ran (``batch size -> executions``)."""
    rows = sum(int(b) * n for b, n in batches.items())
    seconds = sum(int(b) * n / baseline.ort_rate(int(b)) for b, n in batches.items())
    return rows / seconds if seconds else None


def analyse(points: list[dict[str, Any]], baselines: dict[str, Any], steps: int) -> dict[str, Any]:
    """Per UNet and N: images/s on and off, speedup, avg batch, pipeline efficiency, in-process gain."""
    out: dict[str, Any] = {}
    mine = [
        p
        for p in points
        if p["tags"]["endpoint"] == DIFFUSION_MODEL
        and p["tags"]["kind"] == "closed"
        and p["tags"]["protocol"] == "grpc"
    ]
    for unet in sorted({p["tags"]["network"] for p in mine}):
        baseline = baseline_from_dict(baselines["networks"][unet])
        rows: list[dict[str, Any]] = []
        for users in sorted({p["spec"]["users"] for p in mine if p["tags"]["network"] == unet}):
            by = {
                p["tags"]["batching"]: p
                for p in mine
                if p["tags"]["network"] == unet and p["spec"]["users"] == users
            }
            row: dict[str, Any] = {"n": users}
            for state in ("on", "off"):
                point = by.get(state)
                if point is None:
                    continue
                unet_stats = point["triton"].get(DIFFUSION_UNET, {})
                delivered = point["images_per_s"] * steps * ROWS_PER_IMAGE_STEP
                ceiling = in_process_rate(baseline, unet_stats.get("batches", {}))
                row[state] = {
                    "images_per_s": point["images_per_s"],
                    "p50": point["p50"],
                    "p99": point["p99"],
                    "errors": point["errors"],
                    "avg_batch": unet_stats.get("avg_batch"),
                    "unet_rows_per_s": delivered,
                    "in_process_rows_per_s": ceiling,
                    "efficiency": delivered / ceiling if ceiling else None,
                }
            if "on" in row and "off" in row and row["off"]["images_per_s"]:
                row["speedup"] = row["on"]["images_per_s"] / row["off"]["images_per_s"]
                on_batch, off_batch = row["on"].get("avg_batch"), row["off"].get("avg_batch")
                if on_batch and off_batch:
                    row["in_process_gain"] = baseline.ort_rate(round(on_batch)) / baseline.ort_rate(
                        round(off_batch)
                    )
            rows.append(row)
        out[unet] = {
            "rows": rows,
            "ort_batch1": baseline.ort[min(baseline.ort)],
            "ort_best": baseline.ort[baseline.best_batch],
            "ort_best_batch": baseline.best_batch,
        }
    return out
