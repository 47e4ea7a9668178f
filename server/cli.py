"""``genserve serve``: run the embedded Triton server in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from genserve.server.front_proxy import INSTALL_HINT, MAX_JSON_BODY, FrontProxyError, TlsFiles, find_nginx
from genserve.server.launcher import DEFAULT_SHM_BYTE_SIZE, EmbeddedServer, ServerError
from genserve.server.paths import MODEL_REPOSITORY
from genserve.server.replicas import ReplicaSet

ADMIN_KEY_ENV = "GENSERVE_ADMIN_KEY"


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genserve serve``; they keep Triton's own names."""
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=MODEL_REPOSITORY,
        help="Triton model repository to serve (default: %(default)s)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind HTTP, gRPC and metrics to (default: %(default)s)"
    )
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default: %(default)s)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: %(default)s)"
    )
    parser.add_argument("--log-file", type=Path, help="write the server log here instead of to stderr")
    parser.add_argument(
        "--log-verbose", type=int, default=0, help="Triton's log verbosity, 0 = off (default: %(default)s)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for every model to load (default: %(default)s)",
    )
    parser.add_argument(
        "--exit-timeout-secs",
        type=float,
        default=30.0,
        help="on SIGINT/SIGTERM, seconds in-flight requests get to finish (default: %(default)s)",
    )
    parser.add_argument(
        "--shm-byte-size",
        type=int,
        default=DEFAULT_SHM_BYTE_SIZE,
        help="shared memory per Python-backend model instance, bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--model-control-mode",
        choices=("none", "explicit", "poll"),
        default="explicit",
        help="Triton's model control mode; explicit loads every model at start, lets the admin "
        "load and unload, and lets genserve reload a model whose backend stub died (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        help="file holding the admin key; the shared-memory, model-repository, logging and trace "
        f"APIs then need the header 'admin-key: <key>' (also read from ${ADMIN_KEY_ENV}; without "
        "either, a random key nobody knows closes them)",
    )
    parser.add_argument(
        "--open-admin-apis",
        action="store_true",
        help="leave the admin APIs open to every caller (only on a host and network you trust)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="PEM certificate: HTTP and gRPC speak TLS (front proxy)"
    )
    parser.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    parser.add_argument(
        "--front-proxy",
        choices=("auto", "on", "off"),
        default="auto",
        help="nginx in front of Triton, refusing oversized request bodies with 413 before Triton "
        "parses them; auto = on when nginx is installed (default: %(default)s)",
    )
    parser.add_argument(
        "--max-json-body",
        type=int,
        default=MAX_JSON_BODY,
        help="largest JSON request body the front proxy passes, bytes (default: %(default)s)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="run N servers behind an nginx balancer on --http-port/--grpc-port, restarting any that "
        "dies; each replica's own ports and metrics are free ones, printed at start (default: %(default)s)",
    )
    parser.add_argument(
        "triton_args",
        nargs="*",
        metavar="-- TRITON_ARG",
        help="further tritonserver flags after '--', passed unchanged (e.g. -- --http-restricted-api=...)",
    )


def _want_front_proxy(choice: str) -> bool:
    if choice == "off":
        return False
    try:
        find_nginx()
    except FrontProxyError:
        if choice == "on":
            raise
        print(
            "genserve serve: no front proxy (nginx not found): Triton parses request bodies of any "
            f"size itself; {INSTALL_HINT}",
            file=sys.stderr,
        )
        return False
    return True


def admin_key(args: argparse.Namespace) -> str | None:
    """The admin key from ``--admin-key-file`` or the environment; ``None`` if neither gives one."""
    if args.admin_key_file is not None:
        return args.admin_key_file.read_text().strip() or None
    return os.environ.get(ADMIN_KEY_ENV) or None


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    return TlsFiles(cert=args.tls_cert, key=args.tls_key) if args.tls_cert is not None else None


def run_serve(args: argparse.Namespace) -> int:
    """Run the embedded server in the foreground until SIGINT/SIGTERM.

    Returns 0 after a requested stop; when Triton ends on its own, prints why in one line and
    returns its exit code (or 128 + the signal that killed it).
    """
    if args.replicas != 1:
        return run_serve_replicas(args)
    try:
        tls = _tls(args)
        front_proxy = _want_front_proxy("on" if tls is not None else args.front_proxy)
        key = admin_key(args)
    except (FrontProxyError, ValueError, OSError) as error:
        print(f"genserve serve: {error}", file=sys.stderr)
        return 1
    server = EmbeddedServer(
        args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        log_file=args.log_file,
        echo_log=args.log_file is None,
        ready_timeout=args.ready_timeout,
        exit_timeout=args.exit_timeout_secs,
        shm_byte_size=args.shm_byte_size,
        model_control_mode=args.model_control_mode,
        log_verbose=args.log_verbose,
        extra_args=tuple(args.triton_args),
        front_proxy=front_proxy,
        max_json_body=args.max_json_body,
        admin_key=key,
        open_admin_apis=args.open_admin_apis,
        tls=tls,
    )
    stopper = _StopOnSignal(server, "letting in-flight requests finish")
    failed = _start(server, stopper)
    if failed is not None:
        return failed
    print(
        f"genserve: serving {server.model_repository}\n"
        f"  HTTP    {server.http_url}\n  gRPC    {server.grpc_url}\n  metrics {server.metrics_url}\n"
        "  Ctrl-C stops the server (in-flight requests finish first)",
        flush=True,
    )
    code = server.wait()
    server.stop()
    if stopper.requested:
        return 0
    print(f"genserve serve: {server.exit_reason}, not on request; stopping", file=sys.stderr, flush=True)
    return code if code > 0 else (128 - code if code < 0 else 1)


def run_serve_replicas(args: argparse.Namespace) -> int:
    """Run ``args.replicas`` servers behind nginx in the foreground until SIGINT/SIGTERM."""
    if args.replicas < 1:
        print(f"genserve serve: --replicas must be at least 1, got {args.replicas}", file=sys.stderr)
        return 2
    if args.front_proxy == "off":
        print("genserve serve: --replicas needs nginx in front; drop --front-proxy=off", file=sys.stderr)
        return 2
    replicas = ReplicaSet(
        args.model_repository,
        args.replicas,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        log_dir=args.log_file.parent / f"{args.log_file.stem}-replicas" if args.log_file else None,
        on_restart=lambda index: print(f"genserve: replica {index} exited and was restarted", flush=True),
        max_json_body=args.max_json_body,
        ready_timeout=args.ready_timeout,
        exit_timeout=args.exit_timeout_secs,
        shm_byte_size=args.shm_byte_size,
        model_control_mode=args.model_control_mode,
        log_verbose=args.log_verbose,
        extra_args=tuple(args.triton_args),
        admin_key=admin_key(args),
        open_admin_apis=args.open_admin_apis,
    )
    stopper = _StopOnSignal(replicas, "stopping the replicas (in-flight requests finish first)")
    failed = _start(replicas, stopper)
    if failed is not None:
        return failed
    lines = [
        f"  replica {i}: gRPC {s.grpc_url}, metrics {s.metrics_url}" for i, s in enumerate(replicas.servers)
    ]
    print(
        f"genserve: serving {args.model_repository} on {args.replicas} replicas behind nginx\n"
        f"  HTTP    {replicas.http_url}\n  gRPC    {replicas.grpc_url}\n" + "\n".join(lines) + "\n"
        "  Ctrl-C stops them (in-flight requests finish first)",
        flush=True,
    )
    replicas.supervise()
    code = replicas.wait()
    replicas.stop()
    return 0 if stopper.requested else code


class _StopOnSignal:
    """Turns the first SIGINT or SIGTERM into ``target.request_stop()`` and remembers that it came."""

    def __init__(self, target: EmbeddedServer | ReplicaSet, what: str):
        self.target = target
        self.what = what
        self.requested = False
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGTERM, self._forward)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            print(f"genserve: {signal.Signals(signum).name} received, {self.what}", flush=True)
            self.target.request_stop()


def _start(target: EmbeddedServer | ReplicaSet, stopper: _StopOnSignal) -> int | None:
    """Start ``target``; ``None`` once it serves, else the exit code (0 if a signal cut the start short)."""
    try:
        target.start()
    except (ServerError, FrontProxyError) as error:
        if stopper.requested:
            return 0
        print(f"genserve serve: {error}", file=sys.stderr)
        return 1
    return None


def build_parser() -> argparse.ArgumentParser:
    """The ``genserve serve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="genserve serve",
        description="Run the embedded Triton Inference Server (the tritonserver binary of the "
        "nvidia-pytriton wheel) in the foreground. Ports bind to 127.0.0.1 unless --host says otherwise.",
    )
    add_serve_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``genserve serve``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(run_serve(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
