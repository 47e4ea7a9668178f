"""Triton's own statistics for a benchmark point: batch sizes formed, queue and compute time per request.

Triton's statistics API counts cumulatively since the server started; a point takes a snapshot before
and after its load and reports the difference. Times here are seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import tritonclient.http as triton_http

_NS = 1e-9


@dataclass
class ModelStats:
    """One model's counters over a benchmark point.

    Attributes:
        model: Model name.
        requests: Successful requests the model answered.
        failed: Failed requests.
        rows: Inferences (rows) run; ``inference_count``.
        executions: Model executions (batches); ``execution_count``.
        queue_s: Total time requests waited in the model's queue.
        compute_s: Total time requests spent in input, inference and output of the model.
        batches: Executions per batch size (rows in one execution).
    """

    model: str
    requests: int = 0
    failed: int = 0
    rows: int = 0
    executions: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    batches: dict[int, int] = field(default_factory=dict)

    @property
    def avg_batch(self) -> float | None:
        """Rows per execution, or ``None`` if nothing ran."""
        return self.rows / self.executions if self.executions else None

    @property
    def queue_per_request_s(self) -> float | None:
        """Mean time a request waited in the queue."""
        return self.queue_s / self.requests if self.requests else None

    @property
    def compute_per_request_s(self) -> float | None:
        """Mean time a request spent in compute (input + inference + output)."""
        return self.compute_s / self.requests if self.requests else None

    def to_dict(self) -> dict[str, Any]:
        """Counters and derived figures, JSON-ready."""
        out = asdict(self)
        out["batches"] = {str(k): v for k, v in sorted(self.batches.items())}
        out.update(
            avg_batch=self.avg_batch,
            queue_per_request_s=self.queue_per_request_s,
            compute_per_request_s=self.compute_per_request_s,
        )
        return out


def snapshot(http_url: str, models: list[str]) -> dict[str, ModelStats]:
    """Cumulative counters of ``models`` from the server at ``http_url`` (``host:port``)."""
    client = triton_http.InferenceServerClient(http_url, connection_timeout=10, network_timeout=30)
    try:
        return {model: _parse(model, client.get_inference_statistics(model)) for model in models}
    finally:
        client.close()


def _parse(model: str, payload: dict[str, Any]) -> ModelStats:
    stats = ModelStats(model)
    for entry in payload.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        stats.requests += int(inference.get("success", {}).get("count", 0))
        stats.failed += int(inference.get("fail", {}).get("count", 0))
        stats.rows += int(entry.get("inference_count", 0))
        stats.executions += int(entry.get("execution_count", 0))
        stats.queue_s += int(inference.get("queue", {}).get("ns", 0)) * _NS
        stats.compute_s += (
            sum(
                int(inference.get(k, {}).get("ns", 0))
                for k in ("compute_input", "compute_infer", "compute_output")
            )
            * _NS
        )
        for batch in entry.get("batch_stats", []):
            size = int(batch["batch_size"])
            stats.batches[size] = stats.batches.get(size, 0) + int(
                batch.get("compute_infer", {}).get("count", 0)
            )
    return stats


def delta(before: dict[str, ModelStats], after: dict[str, ModelStats]) -> dict[str, ModelStats]:
    """``after - before`` per model."""
    out = {}
    for model, end in after.items():
        start = before.get(model, ModelStats(model))
        batches = {b: n - start.batches.get(b, 0) for b, n in end.batches.items()}
        out[model] = ModelStats(
            model,
            requests=end.requests - start.requests,
            failed=end.failed - start.failed,
            rows=end.rows - start.rows,
            executions=end.executions - start.executions,
            queue_s=end.queue_s - start.queue_s,
            compute_s=end.compute_s - start.compute_s,
            batches={b: n for b, n in batches.items() if n > 0},
        )
    return out
