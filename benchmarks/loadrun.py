"""One load point: locust headless in a subprocess against a running server, measured from both sides.

The load generator runs as its own process (as it would in production), so the sweep process stays
free of gevent and can read the server's statistics and CPU time before and after. Latency
percentiles come from every call's own timing (written by the locust users), over the steady-state
window that follows a short warm-up; locust's CSV and HTML are kept beside them.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genserve.benchmarks import tritonstats
from genserve.server.launcher import process_group_stats

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {"gan": "GanUser", "style_transfer": "StyleUser", "diffusion": "DiffusionUser"}
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadSpec:
    """What load to send.

    Attributes:
        endpoint: ``gan``, ``style_transfer`` or ``diffusion``.
        users: Concurrent simulated users.
        duration_s: Length of the run, warm-up included.
        warmup_s: Leading seconds left out of the latency and throughput figures.
        pace: Calls per second per user; ``0`` is closed loop.
        rows: Images per call.
        steps: Diffusion steps per call.
        workers: ``0`` runs locust as one process; ``N`` runs one master and ``N`` workers.
        cpus: CPU list for the load generator (``taskset -c``), or ``None`` for no pinning.
    """

    endpoint: str
    users: int
    duration_s: float = 10.0
    warmup_s: float = 2.0
    pace: float = 0.0
    rows: int = 1
    steps: int = 10
    workers: int = 0
    cpus: str | None = None


@dataclass
class PointResult:
    """What one load point measured. Times are seconds, rates per second.

    Attributes:
        label: Which system and setting (e.g. ``genserve grpc batching``).
        spec: The load sent.
        ok: Successful calls in the window.
        errors: Failed calls in the window.
        window_s: Length of the measured window.
        throughput: Successful calls per second in the window.
        images_per_s: ``throughput * rows``.
        p50, p95, p99, mean: Latency of successful calls that ended in the window.
        target_rate: Paced load's target (``users * pace``), ``None`` when closed loop.
        client_cpu_s_per_call: CPU seconds the load generator used per call, over the window.
        client_cpu_s_total: CPU seconds of the load generator's processes, start-up included.
        server_cpu_s_per_call: CPU seconds the server's processes used per successful call.
        error_kinds: Failure messages (first 80 characters) and their counts, from locust.
        triton: Triton's statistics per model over the run (see :mod:`genserve.benchmarks.tritonstats`).
        files: locust's CSV/HTML prefix.
    """

    label: str
    spec: LoadSpec
    ok: int = 0
    errors: int = 0
    window_s: float = 0.0
    throughput: float = 0.0
    images_per_s: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    target_rate: float | None = None
    client_cpu_s_per_call: float | None = None
    client_cpu_s_total: float | None = None
    server_cpu_s_per_call: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    triton: dict[str, Any] = field(default_factory=dict)
    files: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def locust_command(
    spec: LoadSpec, host: str, prefix: Path, *, role: str = "local", port: int = 0
) -> list[str]:
    """The locust command line of one process of the point (``local``, ``master`` or ``worker``)."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "-H", host]
    if spec.cpus:
        command = ["taskset", "-c", spec.cpus, *command]
    options = [
        f"--genserve-pace={spec.pace}",
        f"--genserve-rows={spec.rows}",
        f"--genserve-steps={spec.steps}",
        f"--genserve-samples={prefix}",
        "--loglevel=WARNING",
    ]
    if role == "worker":
        return [*command, "--worker", "--master-host=127.0.0.1", f"--master-port={port}", *options]
    run = [
        "--headless",
        f"--users={spec.users}",
        f"--spawn-rate={spec.users}",
        f"--run-time={int(round(spec.duration_s))}s",
        "--stop-timeout=30",
        f"--csv={prefix}",
        f"--html={prefix}.html",
        "--only-summary",
        *options,
    ]
    if role == "master":
        run += [
            "--master",
            "--master-bind-host=127.0.0.1",
            f"--master-bind-port={port}",
            f"--expect-workers={spec.workers}",
            "--expect-workers-max-wait=60",
        ]
    return [*command, *run, USER_CLASSES[spec.endpoint]]


def run_locust(spec: LoadSpec, host: str, prefix: Path) -> float:
    """Run the locust process(es) of one point to completion; return their CPU seconds.

    Raises:
        RuntimeError: If locust failed (its output's last lines are in the message).
    """
    prefix.parent.mkdir(parents=True, exist_ok=True)
    # Samples are one file per locust process: a previous run's files would be read as this one's.
    for stale in prefix.parent.glob(prefix.name + ".*.csv"):
        stale.unlink()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    timeout = spec.duration_s + 120
    log = prefix.with_suffix(".log")
    with log.open("w", encoding="utf-8") as sink:
        if spec.workers:
            from genserve.server.launcher import free_port

            port = free_port()
            master = subprocess.Popen(
                locust_command(spec, host, prefix, role="master", port=port), stdout=sink, stderr=sink
            )
            workers = [
                subprocess.Popen(
                    locust_command(spec, host, prefix, role="worker", port=port), stdout=sink, stderr=sink
                )
                for _ in range(spec.workers)
            ]
            processes = [master, *workers]
        else:
            processes = [subprocess.Popen(locust_command(spec, host, prefix), stdout=sink, stderr=sink)]
        deadline = time.monotonic() + timeout
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # locust exits 1 when some requests failed; that is data, not a harness failure.
    if any(code not in (0, 1) for code in codes) or not prefix.with_name(prefix.name + "_stats.csv").exists():
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-20:])
        raise RuntimeError(f"locust failed (exit codes {codes}); last lines of {log}:\n{tail}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


SAMPLE_DTYPE = [("start", "f8"), ("latency", "f8"), ("ok", "?"), ("cpu", "f8"), ("process", "i8")]


def read_samples(prefix: Path) -> np.ndarray:
    """Every call of a point as a structured array.

    Fields: ``start``, ``latency``, ``ok``, the making process's ``cpu`` seconds at its end, and which
    load-generating ``process`` (file) made it.
    """
    rows = []
    for index, path in enumerate(sorted(prefix.parent.glob(prefix.name + ".*.csv"))):
        with path.open(encoding="utf-8") as source:
            for record in csv.DictReader(source):
                rows.append(
                    (
                        float(record["start"]),
                        float(record["latency_s"]),
                        record["ok"] == "1",
                        float(record["cpu_s"]),
                        index,
                    )
                )
    return np.array(rows, dtype=SAMPLE_DTYPE)


def window_cpu_per_call(samples: np.ndarray, mask: np.ndarray) -> float | None:
    """Load-generator CPU seconds per call over the calls in ``mask`` (summed over processes)."""
    cpu, calls = 0.0, 0
    for process in np.unique(samples["process"]):
        mine = samples[mask & (samples["process"] == process)]
        if mine.size >= 2:
            cpu += float(mine["cpu"].max() - mine["cpu"].min())
            calls += mine.size - 1
    return cpu / calls if calls else None


def error_kinds(prefix: Path) -> dict[str, int]:
    """Failure messages and counts from locust's failures CSV."""
    path = prefix.with_name(prefix.name + "_failures.csv")
    kinds: dict[str, int] = {}
    if path.exists():
        with path.open(encoding="utf-8") as source:
            for record in csv.DictReader(source):
                key = record.get("Error", "")[:80]
                kinds[key] = kinds.get(key, 0) + int(record.get("Occurrences", 0))
    return kinds


def process_group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group."""
    return sum(int(f[11]) + int(f[12]) for f in process_group_stats(pgid).values()) / _TICK


def pin_process_group(pgid: int, cpus: str) -> None:
    """Set the CPU affinity of every thread of every process of a group (``taskset -a``)."""
    for pid in process_group_stats(pgid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], capture_output=True, check=False)


def measure_point(
    label: str,
    spec: LoadSpec,
    *,
    host: str,
    http_url: str,
    models: list[str],
    server_pgid: int,
    prefix: Path,
) -> PointResult:
    """Send one load point and measure it.

    Args:
        label: Which system and setting.
        spec: The load.
        host: locust's host, ``grpc://...`` or ``http://...``.
        http_url: The server's HTTP ``host:port`` for its statistics.
        models: Models whose statistics to record.
        server_pgid: The server's process group (for its CPU time).
        prefix: Where locust's files go (``<prefix>_stats.csv``, ``<prefix>.html``, samples).
    """
    before = tritonstats.snapshot(http_url, models) if models else {}
    server_before = process_group_cpu_s(server_pgid)
    client_cpu = run_locust(spec, host, prefix)
    server_cpu = process_group_cpu_s(server_pgid) - server_before
    after = tritonstats.snapshot(http_url, models) if models else {}
    result = PointResult(label, spec, files=str(prefix))
    result.triton = {name: stats.to_dict() for name, stats in tritonstats.delta(before, after).items()}
    result.error_kinds = error_kinds(prefix)
    if spec.pace > 0:
        result.target_rate = spec.pace * spec.users
    samples = read_samples(prefix)
    if samples.size == 0:
        return result
    first = samples["start"].min()
    ends = samples["start"] + samples["latency"]
    window_start = first + spec.warmup_s
    window_end = max(window_start + 1e-3, first + spec.duration_s)
    done_in_window = (ends >= window_start) & (ends <= window_end)
    ok = samples["ok"]
    result.window_s = window_end - window_start
    result.ok = int(np.sum(done_in_window & ok))
    result.errors = int(np.sum(done_in_window & ~ok))
    result.throughput = result.ok / result.window_s
    result.images_per_s = result.throughput * spec.rows
    # Calls that ended in the window: a slow endpoint's calls may be longer than the window itself.
    latencies = samples["latency"][done_in_window & ok]
    if latencies.size:
        result.p50, result.p95, result.p99 = (float(v) for v in np.percentile(latencies, [50, 95, 99]))
        result.mean = float(latencies.mean())
    result.client_cpu_s_per_call = window_cpu_per_call(samples, done_in_window)
    calls = int(np.sum(ok))
    if calls:
        result.server_cpu_s_per_call = server_cpu / calls
    result.client_cpu_s_total = client_cpu
    return result
