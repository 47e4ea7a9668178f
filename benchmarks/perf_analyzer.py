"""Triton's own C++ load generator, ``perf_analyzer``, pinned, installed and run against a server.

locust spends 0.4-0.5 ms of CPU per call in Python, so on a 2-core host it cannot drive a few
thousand calls/s and the sweep would measure the client. ``perf_analyzer`` spends a fraction of that;
locust stays for user-shaped traffic and distributed runs.

The newest tritonclient wheels no longer ship the binary; 2.51.0 (the Triton release the embedded
server runs) does. It needs ``libb64.so.0d`` and ``libcudart.so.12``, which the nvidia-pytriton wheel
carries under hashed names: :func:`install` unpacks the binary and links those libraries beside it.
``make perf-analyzer`` runs it. Usage::

    python -m genserve.benchmarks.perf_analyzer install
    python -m genserve.benchmarks.perf_analyzer run --model gan --concurrency 1,32
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from genserve.server.paths import MODEL_REPOSITORY

WHEEL = "tritonclient==2.51.0"
WHEEL_FILE = "tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl"
WHEEL_SHA256 = "c485bb0123bdf310f90bc8b03d3489b28df2ffed55b30c7eee0b795b48113d52"
BINARY_IN_WHEEL = "tritonclient-2.51.0.data/data/bin/perf_analyzer"
DEFAULT_DIR = Path(sys.prefix) / "perf_analyzer"
"""Installed inside the virtual environment, so ``make clean`` removes it with the rest."""
_LIBRARIES = {"libb64.so.0d": "libb64-", "libcudart.so.12": "libcudart-"}


def _pytriton_libs() -> Path:
    import pytriton

    folder = Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: install the server extra (nvidia-pytriton)")
    return folder


def install(folder: Path = DEFAULT_DIR) -> Path:
    """Download the pinned wheel (hash checked), unpack ``perf_analyzer`` and link its libraries.

    Returns:
        The path of the binary; an existing install is reused.
    """
    binary = folder / "perf_analyzer"
    if binary.is_file():
        return binary
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True
        )
        wheel = Path(tmp) / WHEEL_FILE
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_FILE}: sha256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as archive:
            binary.write_bytes(archive.read(BINARY_IN_WHEEL))
    binary.chmod(0o755)
    libs = _pytriton_libs()
    for name, prefix in _LIBRARIES.items():
        target = next(libs.glob(f"{prefix}*"))
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return binary


def environment(folder: Path = DEFAULT_DIR) -> dict[str, str]:
    """``os.environ`` with the binary's libraries on ``LD_LIBRARY_PATH``."""
    env = dict(os.environ)
    paths = [str(folder), str(_pytriton_libs()), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    return env


@dataclass
class Point:
    """One measured concurrency.

    Attributes:
        model: Model name.
        protocol: ``grpc`` or ``http``.
        concurrency: Requests in flight.
        throughput: Inferences (requests) per second.
        p50_s: Median latency, seconds.
        p99_s: 99th percentile latency, seconds.
        client_cpu_s_per_call: perf_analyzer's own CPU seconds per request (whole run).
        server_cpu_s_per_call: The server's CPU seconds per request (whole run), when known.
    """

    model: str
    protocol: str
    concurrency: int
    throughput: float
    p50_s: float
    p99_s: float
    client_cpu_s_per_call: float
    server_cpu_s_per_call: float | None = None


def input_data(inputs: dict[str, list[list[int | float]]]) -> dict:
    """perf_analyzer's ``--input-data`` JSON: one entry per row given, shapes without the batch axis."""
    rows = len(next(iter(inputs.values())))
    return {
        "data": [
            {name: {"content": values[i], "shape": [len(values[i])]} for name, values in inputs.items()}
            for i in range(rows)
        ]
    }


def gan_input_data(rows: int = 64) -> dict:
    """Seeds and labels for the ``gan`` endpoint, a different seed per request."""
    return input_data({"seed": [[1000 + i] for i in range(rows)], "label": [[i % 10] for i in range(rows)]})


def measure(
    url: str,
    model: str,
    concurrency: int,
    data: dict,
    *,
    protocol: str = "grpc",
    window_ms: int = 2000,
    stability_percent: int = 1000,
    request_count: int | None = None,
    server_cpu=None,  # noqa: ANN001 - () -> CPU seconds of the server, read before and after
    binary: Path | None = None,
) -> Point:
    """Run perf_analyzer at one concurrency (closed loop, batch 1 per request) and read its CSV.

    perf_analyzer repeats windows until three in a row agree within ``stability_percent`` of their
    mean; on a shared host the default, 1000%, accepts the first three (the report quotes medians
    over repeats instead). ``request_count`` switches from time windows to windows of that many
    requests (smoke runs: a window then never holds too few requests to measure).

    Raises:
        RuntimeError: perf_analyzer failed; its last output lines are in the message.
    """
    binary = binary or DEFAULT_DIR / "perf_analyzer"
    with tempfile.TemporaryDirectory() as tmp:
        data_path, csv_path = Path(tmp) / "data.json", Path(tmp) / "out.csv"
        data_path.write_text(json.dumps(data))
        command = [
            str(binary),
            "-i",
            protocol,
            "-u",
            url,
            "-m",
            model,
            "--concurrency-range",
            str(concurrency),
            "--input-data",
            str(data_path),
            *(
                ["--measurement-interval", str(window_ms)]
                if request_count is None
                else [
                    "--measurement-mode",
                    "count_windows",
                    "--measurement-request-count",
                    str(request_count),
                ]
            ),
            "--max-trials",
            "6",
            "--stability-percentage",
            str(stability_percent),
            "-f",
            str(csv_path),
        ]
        before_server = server_cpu() if server_cpu else None
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            command, capture_output=True, text=True, env=environment(binary.parent), check=False
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        after_server = server_cpu() if server_cpu else None
        if result.returncode != 0 or not csv_path.is_file():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"perf_analyzer failed ({result.returncode}): {tail}")
        row = next(csv.DictReader(csv_path.open()))
    calls = _completed_calls(result.stdout)
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    server = (after_server - before_server) / calls if server_cpu and calls else None
    return Point(
        model=model,
        protocol=protocol,
        concurrency=concurrency,
        throughput=float(row["Inferences/Second"]),
        p50_s=float(row["p50 latency"]) / 1e6,
        p99_s=float(row["p99 latency"]) / 1e6,
        client_cpu_s_per_call=client_cpu / calls if calls else float("nan"),
        server_cpu_s_per_call=server,
    )


def _completed_calls(stdout: str) -> int:
    """Every request the run sent (all trials, warm-up included), from perf_analyzer's summary lines."""
    total = 0
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("Request count:"):
            total += int(line.split(":")[1].split()[0])
    return total


def main(argv: list[str] | None = None) -> int:
    """``install`` the binary, or ``run`` it against a fresh embedded server on a model repository."""
    parser = argparse.ArgumentParser(prog="perf_analyzer", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install")
    run = sub.add_parser("run")
    run.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    run.add_argument("--model", default="gan")
    run.add_argument("--concurrency", default="1,32")
    run.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    run.add_argument("--window-ms", type=int, default=2000)
    args = parser.parse_args(argv)
    binary = install()
    if args.command == "install":
        print(binary)
        return 0
    from genserve.benchmarks.loadrun import process_group_cpu_s
    from genserve.server.launcher import EmbeddedServer

    with EmbeddedServer(args.repository) as server:
        url = server.grpc_url if args.protocol == "grpc" else server.http_url
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            point = measure(
                url,
                args.model,
                concurrency,
                gan_input_data(),
                protocol=args.protocol,
                window_ms=args.window_ms,
                server_cpu=lambda: process_group_cpu_s(server.pid or 0),
            )
            print(json.dumps(asdict(point)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
