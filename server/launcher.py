"""Start, watch and stop a real ``tritonserver`` process on this host.

:class:`EmbeddedServer` is used by the ``genserve serve`` command, the demo, the tests and the
benchmarks alike::

    with EmbeddedServer(model_repository="model_repository") as server:
        print(server.grpc_url)

The server runs in its own process group so that Triton's backend stubs are never left behind,
even when the server itself has to be killed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

from genserve.server.backend_dir import build_backend_dir
from genserve.server.drain import DRAIN_FILE_ENV, busy_requests
from genserve.server.front_proxy import MAX_JSON_BODY, FrontProxy, TlsFiles, Upstream
from genserve.server.net import connect_host, free_port, http_ok
from genserve.server.shm_regions import regions_in_use, remove_stale_regions, server_regions
from genserve.server.triton_install import TritonInstall

__all__ = [
    "EmbeddedServer",
    "ModelLoadError",
    "PortInUseError",
    "ServerError",
    "describe_exit",
    "free_port",
    "process_group_stats",
]

DEFAULT_SHM_BYTE_SIZE = 16 * 1024 * 1024
# Triton parses a JSON body recursively on a thread stack sized from RLIMIT_STACK: at the usual
# 8 MiB a 600 kB body of nested brackets overflows it (SIGSEGV); 1 GiB (address space, touched
# only as deep as a parse goes) survives the 4 MiB the front proxy lets through, with room to spare.
TRITON_STACK_BYTES = 1 << 30
# After the server ends, how long its stubs get to notice and exit before the group is killed.
_GROUP_EXIT_WAIT_S = 5.0
_STUB = "triton_python_backend_stub"
# A stub's command line: binary, model.py, shm region, sizes, parent pid, backend dir, ..., instance.
_STUB_INSTANCE_ARG = 8
_WATCH_INTERVAL_S = 0.5
ADMIN_HEADER = "admin-key"
# Triton's API groups that change the server or reach its memory: callers need the admin key.
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
_LOG_LINES_KEPT = 2000
_FAILED_LOAD = re.compile(r"failed to load '([^']+)' version \d+: (.*)")
_MISSING_LIBRARY = "error while loading shared libraries"
_TABLE_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*UNAVAILABLE: (.*?)\s*\|$")


class ServerError(RuntimeError):
    """The embedded server could not be started or stopped cleanly."""


class PortInUseError(ServerError):
    """A port the server should listen on is taken by another process."""


class ModelLoadError(ServerError):
    """A model in the repository failed to load.

    Attributes:
        failures: Triton's reason per model name.
    """

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        detail = "; ".join(f"model '{name}' failed to load: {why}" for name, why in failures.items())
        super().__init__(detail)


def process_group_stats(pgid: int) -> dict[int, list[str]]:
    """Each process of a process group, with its ``/proc/<pid>/stat`` fields after the command name.

    The fields start with state, ppid, pgrp; zombies are included (their state is ``Z``).
    """
    members: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members[int(entry)] = fields
    return members


def describe_exit(code: int | None) -> str:
    """Why a process ended, in words: ``killed by signal SIGSEGV (11)`` or ``exited with code 1``."""
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {name} ({-code})"
    return f"exited with code {code}"


def _raise_stack_limit() -> None:
    """Runs in the child before ``exec``: the stack limit Triton's threads are sized from."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = TRITON_STACK_BYTES if hard == resource.RLIM_INFINITY else min(TRITON_STACK_BYTES, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))


def _check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As Triton does: a port in TIME_WAIT after a restart is free; one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"{what} port {port} on {host} is already in use ({error.strerror}); "
                f"stop the other process or pass another --{what}-port"
            ) from None


class EmbeddedServer:
    """A ``tritonserver`` child process serving one model repository.

    Args:
        model_repository: Folder of Triton models (``<name>/config.pbtxt``).
        host: Address to bind HTTP, gRPC and metrics to; ``127.0.0.1`` keeps it local.
        http_port: HTTP port; ``None`` picks a free one.
        grpc_port: gRPC port; ``None`` picks a free one.
        metrics_port: Prometheus metrics port; ``None`` picks a free one.
        log_file: Where the server log is written; ``None`` keeps only its tail in memory.
        echo_log: Also copy the server log to this process's stderr.
        ready_timeout: Seconds to wait for every model to be ready.
        exit_timeout: Seconds Triton waits for in-flight requests when stopped.
        shm_byte_size: Shared memory per Python-backend model instance, in bytes.
        model_control_mode: Triton's ``--model-control-mode``: ``explicit`` (every model loaded at
            start; loads and unloads need the admin key; a model whose stub died is reloaded) or
            ``none``.
        log_verbose: Triton's ``--log-verbose`` level.
        extra_args: Further ``tritonserver`` flags, passed unchanged.
        install: The Triton files to use; by default those of the ``nvidia-pytriton`` wheel.
        front_proxy: Put nginx (:mod:`genserve.server.front_proxy`) on ``http_port`` and
            ``grpc_port``, in front of a Triton bound to loopback ports of its own: request bodies
            are size-checked before Triton parses them.
        max_json_body: The proxy's limit on a JSON request body, bytes.
        admin_key: The value of the ``admin-key`` header that :data:`RESTRICTED_APIS` require;
            ``None`` makes a random one (see :attr:`admin_key`).
        open_admin_apis: Leave every API open to every caller (no key needed).
        tls: Certificate and key: the front proxy's HTTP and gRPC listeners then speak TLS
            (needs ``front_proxy``; Triton's HTTP server has no TLS of its own).
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_file: str | os.PathLike[str] | None = None,
        echo_log: bool = False,
        ready_timeout: float = 180.0,
        exit_timeout: float = 30.0,
        shm_byte_size: int = DEFAULT_SHM_BYTE_SIZE,
        model_control_mode: str = "explicit",
        log_verbose: int = 0,
        extra_args: tuple[str, ...] = (),
        install: TritonInstall | None = None,
        front_proxy: bool = False,
        max_json_body: int = MAX_JSON_BODY,
        admin_key: str | None = None,
        open_admin_apis: bool = False,
        tls: TlsFiles | None = None,
    ):
        if tls is not None and not front_proxy:
            raise ServerError("TLS is served by the front proxy: pass front_proxy=True with tls")
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.http_port = http_port if http_port is not None else free_port(host)
        self.grpc_port = grpc_port if grpc_port is not None else free_port(host)
        self.metrics_port = metrics_port if metrics_port is not None else free_port(host)
        self.log_file = Path(log_file) if log_file is not None else None
        self.echo_log = echo_log
        self.ready_timeout = ready_timeout
        self.exit_timeout = exit_timeout
        self.shm_byte_size = shm_byte_size
        self.model_control_mode = model_control_mode
        self.log_verbose = log_verbose
        self.extra_args = extra_args
        self.install = install
        self.front_proxy = front_proxy
        self.max_json_body = max_json_body
        self.open_admin_apis = open_admin_apis
        self.admin_key = admin_key or secrets.token_urlsafe(24)
        self.tls = tls
        # Behind the proxy Triton listens on loopback ports of its own.
        self.triton_host = "127.0.0.1" if front_proxy else host
        self.triton_http_port = free_port() if front_proxy else self.http_port
        self.triton_grpc_port = free_port() if front_proxy else self.grpc_port
        self.exit_code: int | None = None
        self._proxy: FrontProxy | None = None
        self._regions: set[str] = set()
        self._ended = threading.Lock()
        self._watch_thread: threading.Thread | None = None
        self._stubs: dict[str, int] = {}
        self._watch_stubs = False
        self.reloads: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=_LOG_LINES_KEPT)
        self._log_thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as tritonclient expects it."""
        return f"{connect_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as tritonclient expects it."""
        return f"{connect_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics page."""
        return f"http://{connect_host(self.host)}:{self.metrics_port}/metrics"

    @property
    def triton_http_url(self) -> str:
        """``host:port`` of Triton's own HTTP listener (behind the proxy when there is one)."""
        return f"{connect_host(self.triton_host)}:{self.triton_http_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """The header an admin call (shared memory, model control, logging, trace) must carry."""
        return {} if self.open_admin_apis else {ADMIN_HEADER: self.admin_key}

    @property
    def exit_reason(self) -> str | None:
        """Once the server has ended: why, in one line (``tritonserver was killed by signal ...``)."""
        return None if self.exit_code is None else f"tritonserver {describe_exit(self.exit_code)}"

    @property
    def regions(self) -> set[str]:
        """Triton shared-memory regions (``/dev/shm`` names) this server's processes were seen using."""
        return set(self._regions)

    @property
    def pid(self) -> int | None:
        """Process id of ``tritonserver`` while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def log(self) -> str:
        """The last lines of the server log."""
        return "".join(self._log_tail)

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self, backend_dir: Path, install: TritonInstall) -> list[str]:
        """The ``tritonserver`` command line this server runs."""
        return [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            f"--backend-config=python,shm-default-byte-size={self.shm_byte_size}",
            f"--http-address={self.triton_host}",
            f"--http-port={self.triton_http_port}",
            f"--grpc-address={self.triton_host}",
            f"--grpc-port={self.triton_grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--model-control-mode={self.model_control_mode}",
            f"--exit-timeout-secs={int(self.exit_timeout)}",
            f"--log-verbose={self.log_verbose}",
            "--strict-readiness=true",
            *self._model_control(),
            *self._restrictions(),
            *self.extra_args,
        ]

    def _model_control(self) -> list[str]:
        # Explicit mode with every model loaded at start: the stub watchdog can reload a model.
        if self.model_control_mode == "explicit" and not any(
            a.startswith("--load-model") for a in self.extra_args
        ):
            return ["--load-model=*"]
        return []

    def _restrictions(self) -> list[str]:
        if self.open_admin_apis:
            return []
        apis = ",".join(RESTRICTED_APIS)
        rule = f"{apis}:{ADMIN_HEADER}={self.admin_key}"
        return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]

    def start(self) -> EmbeddedServer:
        """Launch the server and wait until it is ready.

        Raises:
            PortInUseError: A port is taken.
            ModelLoadError: A model failed to load (the message names it and Triton's reason).
            ServerError: The server exited or did not become ready in time.
        """
        if self._process is not None:
            raise ServerError("server already started")
        if not (self.model_repository / ".").is_dir():
            raise ServerError(f"model repository {self.model_repository} does not exist")
        for what, port in (
            ("http", self.http_port),
            ("grpc", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            _check_port_free(self.host, port, what)
        install = self.install or TritonInstall.find()
        install.check()
        # Regions left by servers that were killed earlier (no process uses them any more).
        remove_stale_regions()
        self.exit_code = None
        self._regions = set()
        self._stubs = {}
        self._watch_stubs = False  # from readiness on: stubs that are still starting are not dead
        self._workdir = tempfile.TemporaryDirectory(prefix="genserve-triton-")
        backend_dir = build_backend_dir(Path(self._workdir.name) / "backends", install)
        self._log_tail.clear()
        self._process = subprocess.Popen(
            self.command(backend_dir, install),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._environment(install),
            start_new_session=True,
            preexec_fn=_raise_stack_limit,
        )
        self._log_thread = threading.Thread(target=self._pump_log, name="triton-log", daemon=True)
        self._log_thread.start()
        self._watch_thread = threading.Thread(
            target=self._watch, args=(self._process,), name="triton-watch", daemon=True
        )
        self._watch_thread.start()
        try:
            self._wait_ready()
            self._note_regions()
            self._watch_stubs = True
            if self.front_proxy:
                upstream = Upstream(http_port=self.triton_http_port, grpc_port=self.triton_grpc_port)
                self._proxy = FrontProxy(
                    [upstream],
                    host=self.host,
                    http_port=self.http_port,
                    grpc_port=self.grpc_port,
                    max_json_body=self.max_json_body,
                    tls=self.tls,
                ).start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def _drain_file(self) -> Path | None:
        return Path(self._workdir.name) / "draining" if self._workdir is not None else None

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        env[DRAIN_FILE_ENV] = str(self._drain_file)
        # The stub runs model.py with the first Python on PATH: make it this environment's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        libraries = [str(install.library_dir)]
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            libraries.append(libdir)
        if env.get("LD_LIBRARY_PATH"):
            libraries.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
        return env

    def _pump_log(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        sink: IO[str] | None = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            sink = self.log_file.open("a", encoding="utf-8")
        try:
            for raw in self._process.stdout:
                line = raw.decode("utf-8", errors="replace")
                self._log_tail.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                if self.echo_log:
                    sys.stderr.write(line)
        finally:
            if sink is not None:
                sink.close()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://{self.triton_http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._join_log()
                raise self._startup_failure()
            if http_ok(url):
                return
            # A backend stub that cannot start leaves Triton waiting for it: fail now, not at the timeout.
            missing = next((line for line in self._log_tail if _MISSING_LIBRARY in line), None)
            if missing is not None:
                raise ServerError(f"tritonserver cannot load a shared library: {missing.strip()}")
            time.sleep(0.1)
        raise ServerError(
            f"server not ready after {self.ready_timeout:.0f} s; last log lines:\n{self._last_lines(30)}"
        )

    def _startup_failure(self) -> ServerError:
        log = self.log
        failures = dict(_FAILED_LOAD.findall(log))
        for line in log.splitlines():
            row = _TABLE_ROW.match(line.strip())
            if row and row.group(1) not in failures:
                failures[row.group(1)] = row.group(3)
        if failures:
            return ModelLoadError(failures)
        missing = next((line for line in log.splitlines() if _MISSING_LIBRARY in line), None)
        if missing is not None:
            return ServerError(f"tritonserver cannot load a shared library: {missing.strip()}")
        if "Address already in use" in log or "address already in use" in log:
            return PortInUseError(f"a server port is already in use:\n{self._last_lines(10)}")
        code = self._process.returncode if self._process is not None else None
        return ServerError(f"tritonserver exited with code {code} during start-up:\n{self._last_lines(30)}")

    def _last_lines(self, count: int) -> str:
        return "".join(list(self._log_tail)[-count:])

    def _join_log(self) -> None:
        if self._log_thread is not None:
            self._log_thread.join(timeout=5)

    def is_ready(self) -> bool:
        """Whether the server answers ready on its HTTP endpoint (through the proxy if there is one)."""
        # Over TLS the proxy needs a client that trusts its certificate: ask Triton itself.
        url = self.triton_http_url if self.tls is not None else self.http_url
        return http_ok(f"http://{url}/v2/health/ready")

    # -- what a server leaves behind ---------------------------------------------------------
    def _note_regions(self) -> None:
        """Remember which Triton regions this server's processes use, to remove them once it ends."""
        process = self._process
        if process is not None:
            used = regions_in_use(process_group_stats(process.pid))
            self._regions |= used & set(server_regions())

    def _watch(self, process: subprocess.Popen[bytes]) -> None:
        """Notice the server's end, however it comes, and clean up after it at once.

        Meanwhile reload a model whose backend stub died: Triton 2.51 leaves such an instance failing
        every request it gets ("Stub process ... is not healthy") while the server reports ready.
        """
        ticks = 0
        while True:
            try:
                process.wait(timeout=_WATCH_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                ticks += 1
                if ticks % 2 == 0:
                    self._note_regions()
                if self._watch_stubs:
                    with contextlib.suppress(Exception):  # a failed check must not end the watch
                        self._check_stubs(process)
        self._after_exit(process)

    def _check_stubs(self, process: subprocess.Popen[bytes]) -> None:
        live: dict[str, int] = {}
        for pid, fields in process_group_stats(process.pid).items():
            if fields[0] == "Z":
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv[0].endswith(_STUB) and len(argv) > _STUB_INSTANCE_ARG:
                live[argv[_STUB_INSTANCE_ARG]] = pid
        dead = {instance for instance, pid in self._stubs.items() if live.get(instance) != pid}
        self._stubs = live
        # An instance whose stub was replaced (a reload, Triton's own restart) has a new pid: fine.
        for model in sorted({instance.rsplit("_", 2)[0] for instance in dead if instance not in live}):
            if process.poll() is None and not self._draining():
                self._reload(model)

    def _reload(self, model: str) -> None:
        """Reload ``model`` through the repository API, with a bumped config parameter.

        Triton ignores a load of an unchanged model, and this one has an instance without a stub.
        """
        base = f"http://{self.triton_http_url}/v2"
        headers = {"Content-Type": "application/json", **self.admin_headers}
        request = urllib.request.Request(f"{base}/models/{model}/config", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            config = json.loads(response.read())
        parameters = config.setdefault("parameters", {})
        generation = int(parameters.get("genserve_generation", {}).get("string_value", "0")) + 1
        parameters["genserve_generation"] = {"string_value": str(generation)}
        body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
        load = urllib.request.Request(f"{base}/repository/models/{model}/load", data=body, headers=headers)
        with urllib.request.urlopen(load, timeout=120) as response:
            response.read()
        self.reloads.append(model)

    def _after_exit(self, process: subprocess.Popen[bytes]) -> None:
        """Once ``tritonserver`` has exited: no stub outlives it, no region of it stays in /dev/shm."""
        with self._ended:
            if self.exit_code is not None:
                return
            self.exit_code = process.returncode
            # Stubs exit on their own when their server is gone; give them a moment, then kill them.
            deadline = time.monotonic() + _GROUP_EXIT_WAIT_S
            while _live_members(process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            deadline = time.monotonic() + _GROUP_EXIT_WAIT_S
            while _live_members(process.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            remove_stale_regions(also=self._regions)

    # -- graceful shutdown -------------------------------------------------------------------
    def _draining(self) -> bool:
        return self._drain_file is not None and self._drain_file.exists()

    def drain(self, timeout: float | None = None) -> bool:
        """Stop admitting pipeline requests and wait until none is in flight or queued.

        New requests are refused with a retryable UNAVAILABLE error from then on (see
        :mod:`genserve.server.drain`); the server keeps running until :meth:`stop`.

        Args:
            timeout: Seconds to wait at most; defaults to ``exit_timeout``.

        Returns:
            Whether the server became idle in time.
        """
        drain_file = self._drain_file
        if self._process is None or self._process.poll() is not None or drain_file is None:
            return False
        drain_file.touch()
        deadline = time.monotonic() + (self.exit_timeout if timeout is None else timeout)
        while time.monotonic() < deadline and self._process is not None and self._process.poll() is None:
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                    busy = busy_requests(response.read().decode(errors="replace"))
            except OSError:
                return False
            if not any(busy.values()):
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float | None = None, *, drain: bool = True) -> int | None:
        """Stop gracefully: drain the pipelines, SIGTERM, then reap the process group.

        Args:
            timeout: Seconds to wait for the exit after SIGTERM before killing; defaults to
                ``exit_timeout`` plus a margin.
            drain: First let admitted pipeline requests finish (up to ``exit_timeout``).

        Returns:
            The server's exit code, or ``None`` if it was not running.
        """
        if drain and self._process is not None:
            self.drain()
        # nginx first (it lets requests through it finish): Triton waits out its exit timeout while
        # the proxy still holds keep-alive connections to it.
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        process, self._process = self._process, None
        if process is None:
            return None
        if timeout is None:
            timeout = self.exit_timeout + 10
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        # Backend stubs share the server's process group; none may outlive it, nor its regions.
        self._after_exit(process)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=_GROUP_EXIT_WAIT_S)
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        self._join_log()
        if process.stdout is not None:
            process.stdout.close()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code

    def request_stop(self) -> None:
        """Drain, then SIGTERM, in the background (safe in a signal handler); :meth:`stop` then reaps."""
        process = self._process
        if process is None:
            return

        def drain_then_terminate() -> None:
            self.drain()
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

        threading.Thread(target=drain_then_terminate, name="triton-drain", daemon=True).start()

    def wait(self) -> int:
        """Block until the server process exits; return its exit code."""
        if self._process is None:
            raise ServerError("server not started")
        return self._process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _live_members(pgid: int) -> list[int]:
    return [pid for pid, fields in process_group_stats(pgid).items() if fields[0] != "Z"]
