"""Graceful shutdown of pipelines: stop admitting, let in-flight requests finish, then stop Triton.

Triton refuses a pipeline's inner (BLS) calls as soon as its shutdown starts ("Server not ready"),
so a diffusion stream or style batch in flight at SIGTERM fails however long the exit timeout.
genserve therefore drains before it signals: the launcher creates the file named by
``GENSERVE_DRAIN_FILE`` (set in the server's environment); from then on each pipeline refuses new
requests with a retryable UNAVAILABLE error before any work, and the launcher watches the pipelines'
in-flight gauge (the ``genserve_inflight_requests`` metric on Triton's metrics endpoint, by model)
and Triton's queued-request count until both reach zero, and only then sends SIGTERM.

This module is imported by the launcher and by the models' glue, so it needs nothing of either.
"""

from __future__ import annotations

import os
import re

DRAIN_FILE_ENV = "GENSERVE_DRAIN_FILE"
INFLIGHT_METRIC = "genserve_inflight_requests"
_QUEUED_METRIC = "nv_inference_pending_request_count"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN)\s*$")


def draining() -> bool:
    """Whether the server this process belongs to is draining (inside a backend stub)."""
    path = os.environ.get(DRAIN_FILE_ENV)
    return bool(path) and os.path.exists(path)


def busy_requests(metrics_text: str) -> dict[str, float]:
    """Requests still in the server, from a Prometheus metrics page: in-flight and queued, by metric."""
    totals = {INFLIGHT_METRIC: 0.0, _QUEUED_METRIC: 0.0}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in totals and match.group(3) != "NaN":
            totals[match.group(1)] += float(match.group(3))
    return totals
