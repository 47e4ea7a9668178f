"""Overload soak: diffusion requests at a multiple of the server's capacity, open loop, for a while.

The server must shed what it cannot take quickly (``diffusion`` admits at most
``max_concurrent_requests`` at once and refuses the rest with ``UNAVAILABLE: overloaded``), finish
what it admitted within the bound that admission sets, never crash, keep its memory flat, and every
request sent must end as a success or a typed error (sent = succeeded + raised).

    python -m genserve.benchmarks.soak --seconds 60 --factor 4 --out benchmarks/results/soak.json

First a closed-loop probe measures capacity (requests/s at ``probe_users`` concurrent requests); then
requests start at ``factor`` times that rate, each on its own task, whatever the server answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genserve.client import AsyncClient, GenserveError, OverloadedError
from genserve.server.launcher import EmbeddedServer, process_group_stats
from genserve.server.paths import MODEL_REPOSITORY

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class SoakResult:
    """What one soak measured (times in seconds, memory in bytes)."""

    seconds: float
    factor: float
    capacity_per_s: float
    rate_per_s: float
    sent: int = 0
    succeeded: int = 0
    raised: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    untyped: int = 0
    rejection_p50_s: float = float("nan")
    rejection_p99_s: float = float("nan")
    accepted_p50_s: float = float("nan")
    accepted_p99_s: float = float("nan")
    accepted_bound_s: float = float("nan")
    crashes: int = 0
    rss_first_bytes: float = float("nan")
    rss_last_bytes: float = float("nan")
    rss_change: float = float("nan")
    rss_samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        """Every request sent ended as a success or a typed error."""
        return self.sent == self.succeeded + self.raised and self.untyped == 0


def group_rss(pid: int) -> int:
    """Resident memory of a server's whole process group (Triton and its stubs), bytes."""
    total = 0
    for member, fields in process_group_stats(pid).items():
        if fields[0] == "Z":
            continue
        try:
            with open(f"/proc/{member}/statm") as statm:
                total += int(statm.read().split()[1]) * _PAGE
        except OSError:
            continue
    return total


async def _one(client: AsyncClient, seed: int, steps: int, timeout: float, log: list) -> None:
    start = time.monotonic()
    try:
        await client.diffuse([seed % 10], seeds=[seed], steps=steps, timeout=timeout)
        log.append(("ok", time.monotonic() - start))
    except OverloadedError:
        log.append(("rejected", time.monotonic() - start))
    except GenserveError as error:
        log.append((type(error).__name__, time.monotonic() - start))
    except Exception as error:  # the client's contract says this never happens: count it
        log.append((f"untyped {type(error).__name__}", time.monotonic() - start))


async def _capacity(url: str, users: int, seconds: float, steps: int) -> float:
    done = 0
    stop = time.monotonic() + seconds

    async def user(index: int) -> None:
        nonlocal done
        async with AsyncClient(url, timeout=60, retries=0) as client:
            seed = index * 10**6
            while time.monotonic() < stop:
                await client.diffuse([seed % 10], seeds=[seed], steps=steps)
                done += 1
                seed += 1

    start = time.monotonic()
    await asyncio.gather(*(user(i) for i in range(users)))
    return done / (time.monotonic() - start)


async def _soak(server: EmbeddedServer, result: SoakResult, steps: int, timeout: float) -> list:
    log: list = []
    pid = server.pid
    assert pid is not None
    async with AsyncClient(server.grpc_url, timeout=timeout, retries=0) as client:
        tasks = []
        start = time.monotonic()
        next_sample = start
        sent = 0
        while (now := time.monotonic()) < start + result.seconds:
            if now >= next_sample:
                result.rss_samples.append((round(now - start, 2), group_rss(pid)))
                next_sample += 1.0
            due = int((now - start) * result.rate_per_s) + 1
            for _ in range(due - sent):
                tasks.append(asyncio.ensure_future(_one(client, 10**7 + sent, steps, timeout, log)))
                sent += 1
            await asyncio.sleep(0.002)
        result.sent = sent
        await asyncio.gather(*tasks)
        result.rss_samples.append((round(time.monotonic() - start, 2), group_rss(pid)))
    return log


def summarize(result: SoakResult, log: list, max_concurrent: int) -> None:
    """Fill ``result``'s counts, percentiles and memory figures from the call log."""
    outcomes = Counter(kind for kind, _ in log)
    result.succeeded = outcomes.pop("ok", 0)
    result.untyped = sum(count for kind, count in outcomes.items() if kind.startswith("untyped"))
    result.raised = sum(outcomes.values()) - result.untyped
    result.errors = dict(outcomes)
    rejected = [seconds for kind, seconds in log if kind == "rejected"]
    accepted = [seconds for kind, seconds in log if kind == "ok"]
    if rejected:
        result.rejection_p50_s, result.rejection_p99_s = (float(v) for v in np.percentile(rejected, [50, 99]))
    if accepted:
        result.accepted_p50_s, result.accepted_p99_s = (float(v) for v in np.percentile(accepted, [50, 99]))
    # Admission lets max_concurrent requests share the capacity: the longest an admitted one needs.
    result.accepted_bound_s = max_concurrent / result.capacity_per_s
    rss = [value for _, value in result.rss_samples]
    tenth = max(1, len(rss) // 10)
    # Skip the first samples: ONNX Runtime's arenas grow while the load ramps up.
    result.rss_first_bytes = float(np.mean(rss[tenth : 2 * tenth]))
    result.rss_last_bytes = float(np.mean(rss[-tenth:]))
    result.rss_change = result.rss_last_bytes / result.rss_first_bytes - 1


def run_soak(
    server: EmbeddedServer,
    *,
    seconds: float = 60.0,
    factor: float = 4.0,
    steps: int = 10,
    probe_users: int = 16,
    probe_seconds: float = 5.0,
    timeout: float = 60.0,
    max_concurrent: int = 64,
) -> SoakResult:
    """Measure capacity, then soak ``server`` at ``factor`` times it for ``seconds``."""
    capacity = asyncio.run(_capacity(server.grpc_url, probe_users, probe_seconds, steps))
    result = SoakResult(seconds=seconds, factor=factor, capacity_per_s=capacity, rate_per_s=factor * capacity)
    pid, reloads = server.pid, list(server.reloads)
    log = asyncio.run(_soak(server, result, steps, timeout))
    result.crashes = (
        int(server.pid != pid or server.exit_code is not None) + len(server.reloads) - len(reloads)
    )
    summarize(result, log, max_concurrent)
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: serve the repository, soak it, print and optionally write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="soak duration (default: %(default)s)")
    parser.add_argument("--factor", type=float, default=4.0, help="rate / capacity (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per request (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    with EmbeddedServer(MODEL_REPOSITORY, exit_timeout=10) as server:
        result = run_soak(server, seconds=args.seconds, factor=args.factor, steps=args.steps)
    figures = {key: value for key, value in asdict(result).items() if key != "rss_samples"}
    print(json.dumps(figures, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.balanced and result.crashes == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
