"""Latency per request of both style-transfer methods at both canvas sizes.

``python -m genserve.benchmarks.style_modes --name cpu-2core`` starts the embedded server, sends
one request at a time (a 640x640 synthetic content and style image, through genserve's client over gRPC) for
``feed_forward`` and ``optimize`` at 256 and 512, after one warm-up call each, and writes
``style_modes.json`` and the report's "Style transfer methods" section. ``--smoke`` is the
seconds-long version CI runs (one call each at 256, two iterations).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from genserve.benchmarks.calls import style_images
from genserve.benchmarks.replicas import update_section
from genserve.client import Client
from genserve.client.contract import STYLE_METHODS, STYLE_SIZES

RESULTS = Path(__file__).resolve().parent / "results"
SECTION_TITLE = "## Style transfer methods: latency per request"


def measure(url: str, *, sizes: tuple[int, ...], repeats: int, iterations: int) -> list[dict[str, Any]]:
    """Median and spread of single-request latencies for every (method, size)."""
    content, style = style_images(640)
    rows = []
    with Client(url, timeout=1800) as client:
        client.wait_ready(timeout=120)
        for method in STYLE_METHODS:
            for size in sizes:
                extra = {"iterations": iterations} if method == "optimize" else {}
                client.stylize(content, style=style, size=size, method=method, **extra)  # warm-up
                seconds = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    client.stylize(content, style=style, size=size, method=method, **extra)
                    seconds.append(time.perf_counter() - started)
                rows.append(
                    {
                        "method": method,
                        "size": size,
                        "iterations": iterations if method == "optimize" else None,
                        "calls": repeats,
                        "median_s": round(statistics.median(seconds), 3),
                        "min_s": round(min(seconds), 3),
                        "max_s": round(max(seconds), 3),
                    }
                )
    return rows


def section(summary: dict[str, Any]) -> str:
    """The report's markdown section for ``style_modes.json``."""
    lines = [
        SECTION_TITLE,
        "",
        f"One request at a time, 640x640 synthetic images, gRPC, genserve's client; {summary['host']}.",
        f"Command: `{summary['command']}`. `optimize` runs {summary['iterations']} Adam steps, each one",
        "forward and explicit backward pass of the VGG19 encoder to relu4_1 (`style_gradient`).",
        "",
        "| method | canvas | median (s) | min (s) | max (s) | calls |",
        "|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        lines.append(
            f"| {row['method']} | {row['size']} | {row['median_s']} | {row['min_s']} | {row['max_s']} "
            f"| {row['calls']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the measurement (starting an embedded server unless ``--url``) and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="cpu-2core", help="results folder under benchmarks/results")
    parser.add_argument("--url", help="an already running server's gRPC address")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="one call each at 256, two iterations")
    parser.add_argument("--host", default="2-core CPU host, shared with other work", help="for the report")
    args = parser.parse_args(argv)
    sizes = (STYLE_SIZES[0],) if args.smoke else STYLE_SIZES
    repeats, iterations = (1, 2) if args.smoke else (args.repeats, args.iterations)
    if args.url:
        rows = measure(args.url, sizes=sizes, repeats=repeats, iterations=iterations)
    else:
        from genserve.server.launcher import EmbeddedServer
        from genserve.server.paths import MODEL_REPOSITORY

        with EmbeddedServer(MODEL_REPOSITORY) as server:
            rows = measure(server.grpc_url, sizes=sizes, repeats=repeats, iterations=iterations)
    command = "python -m genserve.benchmarks.style_modes " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {"host": args.host, "command": command.strip(), "iterations": iterations, "rows": rows}
    folder = RESULTS / args.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "style_modes.json").write_text(json.dumps(summary, indent=2) + "\n")
    report = folder / "report.md"
    if report.is_file():
        update_section(report, section(summary), SECTION_TITLE)
    print(section(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
