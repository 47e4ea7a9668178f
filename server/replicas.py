"""Several embedded Triton servers behind one nginx balancer: ``genserve serve --replicas N``.

What a Kubernetes Service in front of several pods does, on one host: every replica is a full
:class:`~genserve.server.launcher.EmbeddedServer` on its own loopback ports, and nginx
(:mod:`genserve.server.front_proxy`) takes gRPC and HTTP on the public ports and spreads requests over
the replicas round robin. When a replica dies, nginx passes each new request that its refused
connection never delivered on to the next replica; requests that were in flight on it fail with
502 / ``UNAVAILABLE``, which the client raises as ``UnavailableError`` and, for idempotent calls,
retries on a live replica within the call's deadline. The replica set restarts a dead replica on its
old ports when asked (:meth:`ReplicaSet.restart`) or, under :meth:`ReplicaSet.supervise`, by itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from genserve.server.front_proxy import MAX_JSON_BODY, FrontProxy, Upstream
from genserve.server.launcher import EmbeddedServer, ServerError
from genserve.server.net import free_ports


class ReplicaSet:
    """N embedded servers on loopback behind one nginx front proxy.

    Args:
        model_repository: The repository every replica serves.
        replicas: How many servers (1 or more).
        host: Address the balancer listens on.
        http_port: The balancer's HTTP port.
        grpc_port: The balancer's gRPC port.
        log_dir: Folder for each replica's log (``replica<i>.log``); ``None`` keeps no file.
        on_restart: Called with a replica's index after :meth:`supervise` restarted it.
        max_json_body: The balancer's limit on a JSON request body, bytes (see
            :mod:`genserve.server.front_proxy`).
        server_options: Further :class:`EmbeddedServer` arguments, the same for every replica.
    """

    def __init__(
        self,
        model_repository: Path,
        replicas: int,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        log_dir: Path | None = None,
        on_restart: Callable[[int], None] | None = None,
        max_json_body: int = MAX_JSON_BODY,
        **server_options: Any,
    ):
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.log_dir = log_dir
        # Every port of every replica and of the balancer chosen at once, so that no two coincide.
        ports = iter(free_ports(3 * replicas + 2))
        self.servers = [
            EmbeddedServer(
                model_repository,
                host="127.0.0.1",
                http_port=next(ports),
                grpc_port=next(ports),
                metrics_port=next(ports),
                log_file=log_dir / f"replica{index}.log" if log_dir is not None else None,
                **server_options,
            )
            for index in range(replicas)
        ]
        spare_http, spare_grpc = next(ports), next(ports)
        self.proxy = FrontProxy(
            [Upstream(http_port=server.http_port, grpc_port=server.grpc_port) for server in self.servers],
            host=host,
            http_port=http_port if http_port is not None else spare_http,
            grpc_port=grpc_port if grpc_port is not None else spare_grpc,
            max_json_body=max_json_body,
        )
        self.on_restart = on_restart
        self._stopping = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def http_url(self) -> str:
        """``host:port`` of the balancer's HTTP endpoint."""
        return self.proxy.http_url

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the balancer's gRPC endpoint."""
        return self.proxy.grpc_url

    def start(self) -> ReplicaSet:
        """Start every replica (at once: loading models is mostly waiting on one core each), then nginx.

        Raises:
            ServerError: A replica failed to start; whatever had started is stopped.
            FrontProxyError: nginx is missing or failed to start; the replicas are stopped.
        """
        try:
            with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
                for future in [pool.submit(server.start) for server in self.servers]:
                    future.result()
            self.proxy.start()
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to replica ``index``'s tritonserver (a crash, for failover tests) and reap it."""
        server = self.servers[index]
        if server.pid is None:
            raise ServerError(f"replica {index} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(server.pid, sig)
        server.wait()
        server.stop()

    def restart(self, index: int) -> None:
        """Start replica ``index`` again on its old ports and wait until it is ready."""
        server = self.servers[index]
        with self._lock:
            server.stop()
            server.start()

    def supervise(self) -> None:
        """Restart any replica that exits, until :meth:`stop`; returns at once (threads watch)."""
        for index in range(len(self.servers)):
            watcher = threading.Thread(target=self._watch, args=(index,), name=f"replica{index}", daemon=True)
            watcher.start()
            self._watchers.append(watcher)

    def _watch(self, index: int) -> None:
        server = self.servers[index]
        while not self._stopping.is_set():
            if server.pid is None:
                self._stopping.wait(0.5)
                continue
            server.wait()
            if self._stopping.is_set():
                return
            try:
                self.restart(index)
            except ServerError:
                self._stopping.wait(5.0)  # the next round tries again
                continue
            if self.on_restart is not None:
                self.on_restart(index)

    def wait(self) -> int:
        """Block until nginx exits; return its exit code."""
        return self.proxy.wait()

    def request_stop(self) -> None:
        """Begin stopping without waiting (safe in a signal handler): SIGTERM to nginx and every replica."""
        self._stopping.set()
        self.proxy.request_stop()
        for server in self.servers:
            server.request_stop()

    def stop(self) -> None:
        """Stop nginx, then every replica (each lets its in-flight requests finish)."""
        self._stopping.set()
        self.proxy.stop()
        with ThreadPoolExecutor(max_workers=len(self.servers)) as pool:
            list(pool.map(lambda server: server.stop(), self.servers))

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
