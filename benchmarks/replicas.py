"""Replicas behind the balancer: throughput at 1, 2, 3 replicas and a failover run with a replica killed.

The throughput points run locust in distributed mode (one master, several workers) against the
balancer of a :class:`~genserve.server.replicas.ReplicaSet`. The failover run is plain threads, so that
every call is counted: each of ``clients`` threads calls the seeded (idempotent) GAN endpoint through
the balancer back to back with the project's client (retries on, within the call's deadline) while one
replica is SIGKILLed mid-run and restarted; diffusion streams in flight on that replica must end with a
typed error. ``genserve-replicas`` (``python -m genserve.benchmarks.replicas``) writes
``replicas.json`` beside a results folder's ``results.json``; the report renders it.

On one 2-core host every replica competes for the same two cores (and with the load generator):
more replicas add failover, not throughput. On a cluster each replica has its own cores or GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genserve.benchmarks.loadrun import LoadSpec, read_samples, run_locust
from genserve.benchmarks.models import REPOSITORY
from genserve.benchmarks.repository import ENDPOINT_MODELS
from genserve.client import Client, GenserveError
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, NUM_CLASSES
from genserve.server.replicas import ReplicaSet

REJOIN_CALLS = 12
"""Calls sent through the balancer after the restart, to see the restarted replica take its share."""
SECTION_TITLE = "## Replicas behind the balancer"


def replica_repository(target: Path, endpoints: tuple[str, ...] = (GAN_MODEL, DIFFUSION_MODEL)) -> Path:
    """A copy of the models ``endpoints`` need (replicas start faster without the others)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for endpoint in endpoints:
        for model in ENDPOINT_MODELS[endpoint]:
            shutil.copytree(REPOSITORY / model, target / model, ignore=shutil.ignore_patterns("__pycache__"))
    return target


# -- failover -------------------------------------------------------------------------------------------
@dataclass
class FailoverResult:
    """What a failover run counted. Times in seconds from the run's start.

    Attributes:
        clients: Concurrent client threads.
        duration_s: How long they kept calling.
        deadline_s: Each call's deadline (retries included).
        sent: Calls started.
        answered: Calls that returned images.
        raised: Calls that raised a :class:`GenserveError` subclass, by class name.
        untyped: Calls that raised anything else, by exception type (should be none).
        slowest_s: The longest call, answered or raised.
        overruns: Calls that took longer than ``deadline_s`` plus a grace of ``GRACE_S``.
        killed_at_s: When the victim replica was SIGKILLed.
        restarted_at_s: When it was ready again (``None``: not restarted).
        victim_calls_after_restart: Of a round of GAN calls through the balancer once the victim was
            ready again, how many it answered (it rejoined the balancer).
        streams: Outcome of each diffusion stream in flight at the kill: ``images`` or an error class.
        stream_errors: The error message of each stream that raised.
    """

    clients: int
    duration_s: float
    deadline_s: float
    sent: int = 0
    answered: int = 0
    raised: dict[str, int] = field(default_factory=dict)
    untyped: dict[str, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    overruns: int = 0
    killed_at_s: float | None = None
    restarted_at_s: float | None = None
    victim_calls_after_restart: int = 0
    streams: dict[str, str] = field(default_factory=dict)
    stream_errors: dict[str, str] = field(default_factory=dict)

    GRACE_S = 1.0

    @property
    def errors(self) -> int:
        """Calls that raised, typed or not."""
        return sum(self.raised.values()) + sum(self.untyped.values())

    @property
    def success_rate(self) -> float:
        """Answered over sent."""
        return self.answered / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        return {**asdict(self), "errors": self.errors, "success_rate": self.success_rate}


class _Tally:
    """Counts shared by the client threads."""

    def __init__(self, result: FailoverResult):
        self.result = result
        self.lock = threading.Lock()

    def record(self, seconds: float, error: BaseException | None) -> None:
        with self.lock:
            result = self.result
            result.slowest_s = max(result.slowest_s, seconds)
            if seconds > result.deadline_s + result.GRACE_S:
                result.overruns += 1
            if error is None:
                result.answered += 1
            elif isinstance(error, GenserveError):
                name = type(error).__name__
                result.raised[name] = result.raised.get(name, 0) + 1
            else:
                name = type(error).__name__
                result.untyped[name] = result.untyped.get(name, 0) + 1


def _call_loop(url: str, tally: _Tally, stop_at: float, seed_base: int) -> None:
    """One client: seeded GAN calls through the balancer until ``stop_at`` (monotonic)."""
    deadline = tally.result.deadline_s
    with Client(url, protocol="grpc", timeout=deadline, retries=6, backoff=0.05) as client:
        number = 0
        while time.monotonic() < stop_at:
            with tally.lock:
                tally.result.sent += 1
            started = time.monotonic()
            error: BaseException | None = None
            try:
                client.generate([number % NUM_CLASSES], seeds=[seed_base + number])
            except Exception as failure:  # counted by type: typed or not, nothing is lost
                error = failure
            tally.record(time.monotonic() - started, error)
            number += 1


def _stream(url: str, name: str, steps: int, started: threading.Event, outcomes: dict[str, str]) -> None:
    """One diffusion stream; ``started`` is set at its first preview (it is then in flight)."""
    with Client(url, protocol="grpc", timeout=120.0, retries=0) as client:
        try:
            for step in client.diffuse_stream([3], seeds=[7], steps=steps, preview_every=1):
                started.set()
                if step.final:
                    outcomes[name] = "images"
        except Exception as failure:  # the acceptance: a typed error, recorded by class name
            outcomes[name] = type(failure).__name__
            outcomes[f"{name} message"] = str(failure)[:200]
        finally:
            started.set()


def failover_run(
    replicas: ReplicaSet,
    *,
    clients: int = 16,
    duration_s: float = 20.0,
    kill_at_s: float = 6.0,
    victim: int = 1,
    deadline_s: float = 10.0,
    direct_streams: int = 2,
    balanced_streams: int = 2,
    stream_steps: int = 300,
    restart: bool = True,
) -> FailoverResult:
    """Call through the balancer from ``clients`` threads; SIGKILL replica ``victim`` at ``kill_at_s``.

    Just before the kill, ``direct_streams`` diffusion streams are opened on the victim itself and
    ``balanced_streams`` through the balancer, each waited for until its first preview arrives. With
    ``restart``, the victim is started again on its ports right after the kill, in the background; once
    the run is over and it is ready, a round of calls through the balancer shows whether it rejoined.
    """
    result = FailoverResult(clients=clients, duration_s=duration_s, deadline_s=deadline_s)
    tally = _Tally(result)
    start = time.monotonic()
    stop_at = start + duration_s
    threads = [
        threading.Thread(target=_call_loop, args=(replicas.grpc_url, tally, stop_at, 1000 * i), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, kill_at_s - (time.monotonic() - start)))

    outcome_of: dict[str, str] = {}
    stream_threads = []
    urls = [(f"direct{i}", replicas.servers[victim].grpc_url) for i in range(direct_streams)]
    urls += [(f"balanced{i}", replicas.grpc_url) for i in range(balanced_streams)]
    for name, url in urls:
        started = threading.Event()
        thread = threading.Thread(
            target=_stream, args=(url, name, stream_steps, started, outcome_of), daemon=True
        )
        thread.start()
        started.wait(timeout=30.0)
        stream_threads.append(thread)

    result.killed_at_s = time.monotonic() - start
    replicas.kill(victim)
    restarter = None
    if restart:  # in the background: loading the models takes seconds while the clients go on

        def bring_back() -> None:
            replicas.restart(victim)
            result.restarted_at_s = time.monotonic() - start

        restarter = threading.Thread(target=bring_back, name="restart", daemon=True)
        restarter.start()
    for thread in threads:
        thread.join(timeout=deadline_s + 30.0)
    for thread in stream_threads:
        thread.join(timeout=150.0)
    result.streams = {name: outcome_of.get(name, "no outcome") for name, _ in urls}
    result.stream_errors = {
        name: outcome_of[f"{name} message"] for name, _ in urls if f"{name} message" in outcome_of
    }
    if restarter is not None:
        restarter.join(timeout=300.0)
        result.victim_calls_after_restart = _rejoined(replicas, victim)
    return result


def _rejoined(replicas: ReplicaSet, victim: int) -> int:
    """GAN calls the restarted replica answers out of a round of calls through the balancer."""
    # Counted as a difference: a server's statistics start with its models' warm-up requests.
    before = _answered(replicas.servers[victim].http_url, GAN_MODEL)
    with Client(replicas.grpc_url, protocol="grpc", timeout=30.0) as client:
        for number in range(REJOIN_CALLS):
            client.generate([number % NUM_CLASSES], seeds=[number])
    return _answered(replicas.servers[victim].http_url, GAN_MODEL) - before


def _answered(http_url: str, model: str) -> int:
    """Requests ``model`` answered successfully on one server (its statistics since start)."""
    from genserve.benchmarks import tritonstats

    return tritonstats.snapshot(http_url, [model])[model].requests


# -- throughput ---------------------------------------------------------------------------------------
def throughput_point(replicas: ReplicaSet, spec: LoadSpec, prefix: Path) -> dict[str, Any]:
    """One locust point (distributed when ``spec.workers``) against the balancer; calls/s in the window."""
    run_locust(spec, f"grpc://{replicas.grpc_url}", prefix)
    samples = read_samples(prefix)
    if samples.size == 0:
        return {"calls_per_s": 0.0, "ok": 0, "errors": 0}
    first = samples["start"].min()
    ends = samples["start"] + samples["latency"]
    window = (ends >= first + spec.warmup_s) & (ends <= first + spec.duration_s)
    ok = samples["ok"] & window
    latencies = samples["latency"][ok]
    return {
        "calls_per_s": float(ok.sum() / (spec.duration_s - spec.warmup_s)),
        "ok": int(ok.sum()),
        "errors": int((window & ~samples["ok"]).sum()),
        "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies.size else None,
        "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies.size else None,
    }


def replicas_section(summary: dict[str, Any]) -> str:
    """The report's markdown section for ``replicas.json``."""
    rows = []
    for count in sorted({p["replicas"] for p in summary["throughput"]}):
        runs = [p for p in summary["throughput"] if p["replicas"] == count and p.get("p50_ms") is not None]
        if not runs:
            continue
        rates = ", ".join(f"{p['calls_per_s']:.0f}" for p in runs)
        loads = ", ".join(f"{p['load']:.1f}" for p in runs)
        rows.append(
            f"| {count} | {np.median([p['calls_per_s'] for p in runs]):.0f} | {rates} "
            f"| {np.median([p['p50_ms'] for p in runs]):.1f} | {np.median([p['p99_ms'] for p in runs]):.1f} "
            f"| {sum(p['errors'] for p in runs)} | {loads} |"
        )
    first = summary["throughput"][0]
    f = summary["failover"]
    streams = ", ".join(f"{name}: {outcome}" for name, outcome in f["streams"].items())
    raised = ", ".join(f"{count} {name}" for name, count in sorted(f["raised"].items())) or "none"
    return (
        f"{SECTION_TITLE}\n\n"
        f"`{summary['command']}`: N embedded servers behind nginx (gRPC `grpc_pass`), the seeded GAN "
        f"endpoint, locust distributed ({first['users']} users on {first['workers']} workers and a master), "
        "closed loop. Every replica, nginx and the load generator share the same 2 cores: more replicas add "
        "failover, not throughput, on this host; on a cluster each replica brings its own cores or GPU. "
        f"The host was shared with other work: load average {summary['load_before'][0]:.1f} before, "
        f"{summary['load_after'][0]:.1f} after.\n\n"
        "Each replica count ran in every round (up, then back down), each run on freshly started replicas; "
        "calls/s is the median of the runs, every run's figure beside it, with the host's 1-minute load "
        "average when the run began.\n\n"
        "| replicas | calls/s (median) | runs, calls/s | p50 ms | p99 ms | errors | load average |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n\n"
        f"**Failover:** 3 replicas, {f['clients']} client threads for {f['duration_s']:g} s (retries on, "
        f"{f['deadline_s']:g} s deadline per call), replica 1 SIGKILLed at {f['killed_at_s']:.1f} s and "
        f"ready again at {f['restarted_at_s'] or 0:.1f} s: {f['sent']} calls sent, {f['answered']} answered, "
        f"{f['errors']} raised ({raised}; {sum(f['untyped'].values())} untyped), "
        f"{100 * f['success_rate']:.2f}% succeeded, slowest call {f['slowest_s']:.2f} s, "
        f"{f['overruns']} past the deadline. Once ready again, the restarted replica answered "
        f"{f['victim_calls_after_restart']} of {REJOIN_CALLS} calls sent through the balancer. "
        f"Diffusion streams in flight at the kill: {streams}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Measure 1..N replicas and one failover run; write ``replicas.json`` and re-render the report."""
    parser = argparse.ArgumentParser(prog="genserve-replicas", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results folder (holds results.json)")
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--users", type=int, default=16, help="locust users (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="locust workers (default: %(default)s)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds per point (default: %(default)s)"
    )
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs of every replica count (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    work = args.results / "raw" / "replicas"
    repository = replica_repository(work / "repository")
    points = []
    # Up and back down (1, 2, 3, 3, 2, 1 for two rounds): a drift in the host's other load then
    # falls on every replica count alike; the report takes each count's median.
    counts = list(range(1, args.max_replicas + 1))
    order = [c for r in range(args.rounds) for c in (counts if r % 2 == 0 else counts[::-1])]
    for run, count in enumerate(order):
        spec = LoadSpec(GAN_MODEL, users=args.users, duration_s=args.duration, warmup_s=args.warmup)
        spec.workers = args.workers
        load = os.getloadavg()[0]
        with ReplicaSet(repository, count, log_dir=work / f"logs{run}", exit_timeout=10) as replicas:
            point = throughput_point(replicas, spec, work / f"gan_{run}_{count}")
        points.append(
            {"replicas": count, "users": args.users, "workers": args.workers, "load": load, **point}
        )
        print(f"{count} replica(s): {point['calls_per_s']:.0f} calls/s, {point['errors']} errors", flush=True)
    with ReplicaSet(repository, 3, log_dir=work / "logs_failover", exit_timeout=10) as replicas:
        failover = failover_run(replicas, clients=args.users, duration_s=args.duration)
    print(
        f"failover: {failover.sent} sent, {failover.answered} answered, raised {dict(failover.raised)}, "
        f"untyped {dict(failover.untyped)}, streams {failover.streams}",
        flush=True,
    )
    summary = {
        "command": "python -m genserve.benchmarks.replicas "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "throughput": points,
        "failover": failover.to_dict(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "errors_by_kind": dict(Counter(failover.raised) + Counter(failover.untyped)),
    }
    (args.results / "replicas.json").write_text(json.dumps(summary, indent=2))
    report = args.results / "report.md"
    if report.exists():
        # Only this section: the rest of the report stays as its own run rendered it
        # (`genserve bench --report-only` renders everything, this section included).
        update_section(report, replicas_section(summary))
        print(report)
    return 0


def update_section(report: Path, section: str, title: str = SECTION_TITLE) -> None:
    """Replace the section ``title`` of a rendered report, or insert it before the closing line."""
    text = report.read_text()
    if title in text:
        start = text.index(title)
        end = text.find("\n## ", start + 1)
        end = text.find("\nRaw locust", start) if end < 0 else end
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    else:
        closing = text.rfind("\nRaw locust")
        text = text[:closing] + "\n" + section + text[closing:] if closing >= 0 else text + "\n" + section
    report.write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
