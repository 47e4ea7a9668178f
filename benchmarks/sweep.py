"""The benchmark sweep: every endpoint under locust load on the embedded server, and its baselines.

For each endpoint and each repository variant (dynamic batching on / off, and for diffusion the default
and the small UNet) one embedded server is started on free ports of 127.0.0.1, then load points run
against it: closed-loop concurrency over gRPC and HTTP, paced load at target rates, the load generator
and server pinned to separate cores, and a second run of one curve on a fresh server (noise). The PyTriton
peer serves the same GAN under the same load. In-process baselines are measured in the same run.
Everything lands in ``results.json``; :mod:`genserve.benchmarks.report` renders it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genserve.benchmarks import baselines, hostinfo, text_to_image_bench
from genserve.benchmarks.loadrun import LoadSpec, measure_point, pin_process_group
from genserve.benchmarks.models import (
    Network,
    benchmark_networks,
    export_benchmark_networks,
    repository_networks,
)
from genserve.benchmarks.peer import PeerServer
from genserve.benchmarks.repository import ENDPOINT_MODELS, build_repository
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, STYLE_MODEL
from genserve.server.launcher import EmbeddedServer

Progress = Callable[[str], None]


@dataclass
class SweepConfig:
    """What the sweep runs; :meth:`full` and :meth:`smoke` are the two presets.

    Attributes:
        gan_concurrency: Users per GAN point over gRPC (batching on, off, and the peer).
        gan_http_concurrency: Users per GAN point over HTTP.
        style_concurrency: Users per style-transfer point over gRPC.
        style_http_concurrency: Users per style-transfer point over HTTP (batching on).
        diffusion_concurrency: Concurrent sampling requests per diffusion point over gRPC.
        diffusion_http_concurrency: The same over HTTP (batching on, the first UNet only).
        duration_s: Length of a GAN point (warm-up included).
        warmup_s: Leading seconds left out of a point's figures.
        slow_duration_s: Length of a style or diffusion point.
        steps: DDIM steps per diffusion request (guidance on: 2 UNet rows per image and step).
        paced_fractions: Paced GAN load as fractions of the best closed-loop throughput.
        paced_users: Users sending the paced load.
        pinned_concurrency: GAN concurrencies measured with load generator and server on separate cores.
        unets: Diffusion UNets to serve (``unet``, ``unet_small``).
        gan_network: ``dcgan64`` (benchmark model, 64x64x3) or ``gan_digits`` (the repository's).
        style_batching_off: Also run style transfer with batching off.
        repeat: Run the GAN gRPC batching-on curve a second time on a fresh server.
        peer: Run the PyTriton peer.
        baseline_seconds: Minimum seconds per in-process timing.
        gan_batches: In-process batch sizes for the GAN.
        unet_batches: In-process batch sizes for the UNets.
        style_batches: In-process batch sizes for the style network.
        bounds: p99 latency bound per endpoint, seconds.
        text_to_image: The text-to-image step-batching run (:mod:`text_to_image_bench`).
    """

    gan_concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    gan_http_concurrency: tuple[int, ...] = (1, 4, 16, 64)
    style_concurrency: tuple[int, ...] = (1, 4, 16)
    style_http_concurrency: tuple[int, ...] = (1, 4)
    diffusion_concurrency: tuple[int, ...] = (1, 4, 8, 16)
    diffusion_http_concurrency: tuple[int, ...] = (4, 16)
    duration_s: float = 8.0
    warmup_s: float = 2.0
    slow_duration_s: float = 14.0
    steps: int = 10
    paced_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25)
    paced_users: int = 32
    pinned_concurrency: tuple[int, ...] = (16, 64)
    unets: tuple[str, ...] = ("unet", "unet_small")
    gan_network: str = "dcgan64"
    style_batching_off: bool = True
    repeat: bool = True
    peer: bool = True
    baseline_seconds: float = 1.0
    gan_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    unet_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    style_batches: tuple[int, ...] = (1, 2, 4)
    bounds: dict[str, float] = field(
        default_factory=lambda: {GAN_MODEL: 0.1, STYLE_MODEL: 10.0, DIFFUSION_MODEL: 10.0}
    )
    text_to_image: text_to_image_bench.BenchConfig = field(default_factory=text_to_image_bench.BenchConfig)

    @classmethod
    def full(cls) -> SweepConfig:
        """The sweep the committed report comes from (about 20 minutes on 2 cores)."""
        return cls()

    @classmethod
    def smoke(cls) -> SweepConfig:
        """Every path once, tiny: seconds per point, for CI."""
        return cls(
            gan_concurrency=(1, 4),
            gan_http_concurrency=(2,),
            style_concurrency=(1,),
            style_http_concurrency=(),
            diffusion_concurrency=(1, 2),
            diffusion_http_concurrency=(2,),
            duration_s=2.0,
            # No warm-up cut: on a loaded host locust may start sending late in its 2 s run.
            warmup_s=0.0,
            slow_duration_s=3.0,
            steps=2,
            paced_fractions=(0.5,),
            paced_users=2,
            pinned_concurrency=(2,),
            unets=("unet",),
            gan_network="gan_digits",
            style_batching_off=False,
            baseline_seconds=0.05,
            gan_batches=(1, 2),
            unet_batches=(1, 2),
            style_batches=(1,),
            text_to_image=text_to_image_bench.BenchConfig.smoke(),
        )


class Sweep:
    """Runs a :class:`SweepConfig` and collects its results into ``out_dir/results.json``.

    Args:
        config: What to run.
        out_dir: ``benchmarks/results/<name>``; raw files go to ``out_dir/raw``.
        command: The command line that started the sweep (recorded in the report).
        progress: Called with a short line before each step.
    """

    def __init__(self, config: SweepConfig, out_dir: Path, command: str, progress: Progress | None = None):
        self.config = config
        self.out_dir = out_dir
        self.raw = out_dir / "raw"
        self.command = command
        self.say = progress or (lambda _line: None)
        self.points: list[dict[str, Any]] = []
        self.networks: dict[str, Network] = {}
        self.results: dict[str, Any] = {}

    def planned_points(self) -> int:
        """How many load points the sweep will run (for a progress bar)."""
        c = self.config
        gan = 2 * (len(c.gan_concurrency) + len(c.gan_http_concurrency))
        gan += len(c.paced_fractions) + len(c.pinned_concurrency)
        gan += len(c.gan_concurrency) if c.repeat else 0
        peer = (len(c.gan_concurrency) + len(c.gan_http_concurrency)) if c.peer else 0
        style = len(c.style_concurrency) * (2 if c.style_batching_off else 1) + len(c.style_http_concurrency)
        diffusion = 2 * len(c.unets) * len(c.diffusion_concurrency) + len(c.diffusion_http_concurrency)
        return gan + peer + style + diffusion

    def run(self) -> dict[str, Any]:
        """Run everything; write and return the results."""
        self.raw.mkdir(parents=True, exist_ok=True)
        started = time.time()
        self.results = {
            "command": self.command,
            "config": asdict(self.config),
            "host": hostinfo.describe(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "load_before": os.getloadavg(),
        }
        self._networks()
        self.results["baselines"] = self._baselines()
        self._gan()
        self._style()
        self._diffusion()
        self.say("text_to_image: step batching on vs off")
        self.results["text_to_image"] = text_to_image_bench.run(self.config.text_to_image, self.out_dir)
        self.results["points"] = self.points
        self.results["load_after"] = os.getloadavg()
        self.results["duration_s"] = time.time() - started
        self.write()
        return self.results

    def write(self) -> Path:
        """Write ``results.json`` (points so far included)."""
        self.results["points"] = self.points
        path = self.out_dir / "results.json"
        path.write_text(json.dumps(self.results, indent=1, default=_jsonable))
        return path

    # -- networks and baselines ---------------------------------------------------------------
    def _networks(self) -> None:
        self.say("exporting the benchmark-only networks (once per results folder)")
        folder = self.raw / "models"
        needed = {self.config.gan_network, *self.config.unets}
        if needed & set(benchmark_networks(folder)):
            self.networks.update(export_benchmark_networks(folder))
        self.networks.update(repository_networks())

    def _baselines(self) -> dict[str, Any]:
        c = self.config
        self.say("in-process baselines: GEMM peak")
        peak = baselines.gemm_peak_gflops(repeats=3 if c.baseline_seconds < 0.5 else 5)
        best_peak = max(peak.values())
        out: dict[str, Any] = {"gemm_gflops": peak, "peak_gflops": best_peak, "networks": {}}
        plan = [(c.gan_network, c.gan_batches, True), *[(u, c.unet_batches, True) for u in c.unets]]
        plan.append(("style256", c.style_batches, False))
        for key, batches, with_torch in plan:
            self.say(f"in-process baselines: {key}")
            result = baselines.measure_network(
                self.networks[key], batches, min_seconds=c.baseline_seconds, with_torch=with_torch
            )
            out["networks"][key] = {**result.to_dict(), **baselines.efficiency(result, best_peak)}
        self.write_partial("baselines", out)
        return out

    def write_partial(self, key: str, value: Any) -> None:
        """Record one section and write the results so far (a crash keeps what was measured)."""
        self.results[key] = value
        self.write()

    # -- servers -------------------------------------------------------------------------------
    @contextmanager
    def _server(
        self, tag: str, endpoint: str, *, batching: bool, network: Network | None
    ) -> Iterator[EmbeddedServer]:
        repository = build_repository(self.raw / "repos" / tag, endpoint, batching=batching, network=network)
        self.say(f"starting the embedded server: {tag}")
        server = EmbeddedServer(repository, log_file=self.raw / "logs" / f"{tag}.log", exit_timeout=10)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def _point(
        self,
        tags: dict[str, Any],
        spec: LoadSpec,
        *,
        host: str,
        http_url: str,
        models: list[str],
        pgid: int,
    ) -> dict[str, Any]:
        name = "_".join(str(v) for v in tags.values()) + f"_u{spec.users}"
        if spec.pace:
            name += f"_pace{spec.pace:g}"
        self.say(f"{name}")
        result = measure_point(
            name,
            spec,
            host=host,
            http_url=http_url,
            models=models,
            server_pgid=pgid,
            prefix=self.raw / "locust" / name,
        )
        point = {"tags": dict(tags), **result.to_dict()}
        self.points.append(point)
        self.write()
        return point

    # -- GAN -------------------------------------------------------------------------------------
    def _gan(self) -> None:
        c = self.config
        network = self.networks[c.gan_network]
        swap = network if c.gan_network != "gan_digits" else None
        models = list(ENDPOINT_MODELS[GAN_MODEL])
        best = 0.0
        for batching in (True, False):
            tag = f"gan_{'on' if batching else 'off'}"
            with self._server(tag, GAN_MODEL, batching=batching, network=swap) as server:
                pgid = server.pid or 0
                for protocol, levels in (("grpc", c.gan_concurrency), ("http", c.gan_http_concurrency)):
                    host = f"{protocol}://{server.grpc_url if protocol == 'grpc' else server.http_url}"
                    for users in levels:
                        point = self._point(
                            self._tags("genserve", GAN_MODEL, batching, protocol, "closed", c.gan_network),
                            LoadSpec(GAN_MODEL, users, c.duration_s, c.warmup_s),
                            host=host,
                            http_url=server.http_url,
                            models=models,
                            pgid=pgid,
                        )
                        if batching and protocol == "grpc":
                            best = max(best, point["throughput"])
                if batching:
                    self._gan_extras(server, best, models)
        if c.repeat:
            with self._server("gan_on_repeat", GAN_MODEL, batching=True, network=swap) as server:
                for users in c.gan_concurrency:
                    self._point(
                        self._tags("genserve", GAN_MODEL, True, "grpc", "repeat", c.gan_network),
                        LoadSpec(GAN_MODEL, users, c.duration_s, c.warmup_s),
                        host=f"grpc://{server.grpc_url}",
                        http_url=server.http_url,
                        models=models,
                        pgid=server.pid or 0,
                    )
        if c.peer:
            self._peer(network)

    def _gan_extras(self, server: EmbeddedServer, best: float, models: list[str]) -> None:
        c = self.config
        host = f"grpc://{server.grpc_url}"
        for fraction in c.paced_fractions:
            rate = max(1.0, fraction * best)
            self._point(
                {
                    **self._tags("genserve", GAN_MODEL, True, "grpc", "paced", c.gan_network),
                    "fraction": fraction,
                },
                LoadSpec(GAN_MODEL, c.paced_users, c.duration_s, c.warmup_s, pace=rate / c.paced_users),
                host=host,
                http_url=server.http_url,
                models=models,
                pgid=server.pid or 0,
            )
        if (os.cpu_count() or 1) < 2:
            return
        cpus = sorted(os.sched_getaffinity(0))
        load_cpu, server_cpus = str(cpus[0]), ",".join(str(x) for x in cpus[1:])
        pin_process_group(server.pid or 0, server_cpus)
        try:
            for users in c.pinned_concurrency:
                self._point(
                    {
                        **self._tags("genserve", GAN_MODEL, True, "grpc", "pinned", c.gan_network),
                        "cpus": load_cpu,
                    },
                    LoadSpec(GAN_MODEL, users, c.duration_s, c.warmup_s, cpus=load_cpu),
                    host=host,
                    http_url=server.http_url,
                    models=models,
                    pgid=server.pid or 0,
                )
        finally:
            pin_process_group(server.pid or 0, ",".join(str(x) for x in cpus))

    def _peer(self, network: Network) -> None:
        c = self.config
        self.say("starting the PyTriton peer")
        with PeerServer(
            network.path, network.latent_dim, network.image_shape, self.raw / "logs" / "peer.log"
        ) as peer:
            for protocol, levels in (("grpc", c.gan_concurrency), ("http", c.gan_http_concurrency)):
                host = f"{protocol}://{peer.grpc_url if protocol == 'grpc' else peer.http_url}"
                for users in levels:
                    self._point(
                        self._tags("pytriton", GAN_MODEL, True, protocol, "closed", c.gan_network),
                        LoadSpec(GAN_MODEL, users, c.duration_s, c.warmup_s),
                        host=host,
                        http_url=peer.http_url,
                        models=[GAN_MODEL],
                        pgid=peer.pid or 0,
                    )

    # -- style transfer and diffusion -------------------------------------------------------------
    def _style(self) -> None:
        c = self.config
        models = list(ENDPOINT_MODELS[STYLE_MODEL])
        for batching in (True, False) if c.style_batching_off else (True,):
            tag = f"style_{'on' if batching else 'off'}"
            with self._server(tag, STYLE_MODEL, batching=batching, network=None) as server:
                http = c.style_http_concurrency if batching else ()
                for protocol, levels in (("grpc", c.style_concurrency), ("http", http)):
                    for users in levels:
                        self._point(
                            self._tags("genserve", STYLE_MODEL, batching, protocol, "closed", "style256"),
                            LoadSpec(STYLE_MODEL, users, c.slow_duration_s, c.warmup_s * 2),
                            host=_host(server, protocol),
                            http_url=server.http_url,
                            models=models,
                            pgid=server.pid or 0,
                        )

    def _diffusion(self) -> None:
        c = self.config
        models = list(ENDPOINT_MODELS[DIFFUSION_MODEL])
        for unet in c.unets:
            swap = self.networks[unet] if unet != "unet" else None
            for batching in (True, False):
                tag = f"diffusion_{unet}_{'on' if batching else 'off'}"
                with self._server(tag, DIFFUSION_MODEL, batching=batching, network=swap) as server:
                    http = c.diffusion_http_concurrency if batching and unet == c.unets[0] else ()
                    for protocol, levels in (("grpc", c.diffusion_concurrency), ("http", http)):
                        for users in levels:
                            self._point(
                                self._tags("genserve", DIFFUSION_MODEL, batching, protocol, "closed", unet),
                                LoadSpec(
                                    DIFFUSION_MODEL, users, c.slow_duration_s, c.warmup_s * 2, steps=c.steps
                                ),
                                host=_host(server, protocol),
                                http_url=server.http_url,
                                models=models,
                                pgid=server.pid or 0,
                            )

    @staticmethod
    def _tags(
        system: str, endpoint: str, batching: bool, protocol: str, kind: str, network: str
    ) -> dict[str, Any]:
        return {
            "system": system,
            "endpoint": endpoint,
            "batching": "on" if batching else "off",
            "protocol": protocol,
            "kind": kind,
            "network": network,
        }


def _host(server: EmbeddedServer | PeerServer, protocol: str) -> str:
    """Locust's host for a server and protocol: ``grpc://...`` or ``http://...``."""
    return f"{protocol}://{server.grpc_url if protocol == 'grpc' else server.http_url}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
