"""The one locust user base class: every call through the project's client, timed and reported.

:class:`GenserveUser` makes one client per simulated user (``on_start``), closes it in ``on_stop`` (a
gRPC channel left open hangs locust at exit), times each call with a monotonic clock and fires
locust's ``request`` event with the true duration and, on failure, the exception. A failed call never
hands its task a silent ``None``: the task is ended with :class:`locust.exception.RescheduleTask`
after the failure was reported.

The host (``-H``) names protocol and address: ``grpc://127.0.0.1:8001`` or ``http://127.0.0.1:8000``.
Options (also settable by environment variable, so that workers on other machines can be set alike):

- ``--genserve-pace R`` / ``GENSERVE_PACE``: paced load, ``R`` calls per second per user
  (locust's ``constant_throughput``); ``0`` (default) is closed loop, each user calling back to back.
- ``--genserve-mix gan=8,style=1,diffusion=1`` / ``GENSERVE_MIX``: relative weights of the user classes.
- ``--genserve-rows N``, ``--genserve-steps S``: images per call, diffusion steps per call.
- ``--genserve-samples PREFIX`` / ``GENSERVE_SAMPLES``: each load-generating process also writes every
  call's ``endpoint,start,latency_s,ok,cpu_s`` to ``PREFIX.<pid>.csv`` at exit, for exact percentiles.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from locust import User, constant_throughput, events
from locust.env import Environment
from locust.exception import RescheduleTask
from locust.runners import MasterRunner

from genserve.benchmarks.calls import Target, make_client
from genserve.client import Client, enable_gevent

# gRPC must run cooperatively under gevent before any channel exists, or each call blocks every user.
if not enable_gevent():
    raise RuntimeError("gRPC could not be set up for gevent; run this file with locust")

_SAMPLES: list[tuple[str, float, float, bool, float]] = []
"""Every call this process made: endpoint, start (Unix seconds), latency (seconds), success, and this
process's CPU seconds when the call ended (so the load generator's cost per call can be measured over
the steady window, without its start-up)."""


class GenserveUser(User):
    """Base class of the benchmark users; subclasses only declare tasks that call :meth:`call`."""

    abstract = True
    endpoint = "call"
    """Name under which calls are reported (the endpoint)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.target = Target.parse(self.host or "")
        self.client: Client | None = None
        self.rng = np.random.default_rng()
        options = environment.parsed_options
        self.rows = int(getattr(options, "genserve_rows", 1) or 1)
        self.steps = int(getattr(options, "genserve_steps", 10) or 10)
        pace = float(getattr(options, "genserve_pace", 0) or 0)
        self._pacer = constant_throughput(pace) if pace > 0 else None

    def wait_time(self) -> float:
        """Closed loop (no wait), or the wait that keeps this user at its paced rate."""
        return self._pacer(self) if self._pacer is not None else 0.0

    def on_start(self) -> None:
        """One client per user: the HTTP client is not shared between greenlets."""
        self.client = make_client(self.target)

    def on_stop(self) -> None:
        """Close the client, or gRPC keeps the process alive at exit."""
        if self.client is not None:
            self.client.close()
            self.client = None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(self.client, *args, **kwargs)``, time it and report it to locust.

        Returns:
            What ``fn`` returned.

        Raises:
            RescheduleTask: The call failed; its exception was reported as the request's failure.
        """
        started_wall = time.time()
        started = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(self.client, *args, **kwargs)
        except Exception as failure:  # every failure is reported, none is swallowed
            error = failure
        elapsed = time.perf_counter() - started
        _SAMPLES.append((self.endpoint, started_wall, elapsed, error is None, time.process_time()))
        self.environment.events.request.fire(
            request_type=self.target.protocol,
            name=self.endpoint,
            response_time=elapsed * 1000.0,
            response_length=int(getattr(result, "nbytes", 0)),
            exception=error,
            context={},
            start_time=started_wall,
            url=str(self.target),
        )
        if error is not None:
            raise RescheduleTask() from error
        return result


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--genserve-pace",
        type=float,
        default=float(os.environ.get("GENSERVE_PACE", "0")),
        help="calls per second per user (0 = closed loop)",
    )
    parser.add_argument(
        "--genserve-mix",
        default=os.environ.get("GENSERVE_MIX", ""),
        help="weights of the user classes, e.g. gan=8,style=1,diffusion=1",
    )
    parser.add_argument("--genserve-rows", type=int, default=int(os.environ.get("GENSERVE_ROWS", "1")))
    parser.add_argument("--genserve-steps", type=int, default=int(os.environ.get("GENSERVE_STEPS", "10")))
    parser.add_argument(
        "--genserve-samples",
        default=os.environ.get("GENSERVE_SAMPLES", ""),
        help="write every call's timing to PREFIX.<pid>.csv at exit",
    )


def parse_mix(text: str) -> dict[str, float]:
    """``"gan=8,style=1"`` -> ``{"gan": 8.0, "style": 1.0}``."""
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"--genserve-mix item {item!r} must look like NAME=WEIGHT") from None
    return mix


@events.init.add_listener
def _apply_mix(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    mix = parse_mix(getattr(options, "genserve_mix", "") or "") if options is not None else {}
    if not mix:
        return
    kept = []
    for user_class in environment.user_classes:
        weight = mix.get(user_class.mix_name, 0.0) if hasattr(user_class, "mix_name") else 0.0
        if weight > 0:
            user_class.weight = weight
            kept.append(user_class)
    if not kept:
        raise ValueError(f"--genserve-mix {options.genserve_mix!r} selects no user class")
    environment.user_classes[:] = kept


@events.quitting.add_listener
def _write_samples(environment: Environment, **_kwargs: Any) -> None:
    prefix = getattr(environment.parsed_options, "genserve_samples", "") if environment.parsed_options else ""
    if not prefix or isinstance(environment.runner, MasterRunner) or not _SAMPLES:
        return
    with open(f"{prefix}.{os.getpid()}.csv", "w", encoding="utf-8") as sink:
        sink.write("endpoint,start,latency_s,ok,cpu_s\n")
        for endpoint, start, latency, ok, cpu in _SAMPLES:
            sink.write(f"{endpoint},{start:.6f},{latency:.6f},{int(ok)},{cpu:.6f}\n")
