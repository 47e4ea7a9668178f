"""``genserve bench``: run the benchmark sweep and write its report.

``genserve bench`` runs the full sweep (about 20 minutes on 2 cores) into
``benchmarks/results/<name>/``; ``--smoke`` runs every path once in seconds; ``--report-only``
re-renders the report from an existing ``results.json``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    """The ``genserve bench`` argument parser."""
    parser = argparse.ArgumentParser(prog="genserve bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sweep: every path once, seconds per point")
    parser.add_argument("--name", help="results folder name (default: today's date, or 'smoke')")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="parent of the results folder")
    parser.add_argument(
        "--report-only", action="store_true", help="only re-render report.md from results.json"
    )
    parser.add_argument(
        "--gan-network",
        choices=("dcgan64", "gan_digits"),
        help="GAN served and timed: the 64x64x3 DCGAN (default) or the repository's digits GAN",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTriton peer")
    parser.add_argument("--duration", type=float, help="seconds per GAN point (warm-up included)")
    parser.add_argument("--gan-bound-ms", type=float, help="p99 latency bound for the GAN endpoint, ms")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``genserve bench``; returns the exit code."""
    args = build_parser().parse_args(argv)
    from genserve.benchmarks.report import write_report
    from genserve.benchmarks.sweep import Sweep, SweepConfig

    name = args.name or ("smoke" if args.smoke else time.strftime("%Y-%m-%d"))
    out_dir = args.results_dir / name
    if args.report_only:
        if not (out_dir / "results.json").exists():
            print(f"genserve bench: {out_dir / 'results.json'} does not exist", file=sys.stderr)
            return 1
        print(write_report(out_dir))
        return 0
    config = SweepConfig.smoke() if args.smoke else SweepConfig.full()
    if args.gan_network:
        config.gan_network = args.gan_network
    if args.no_peer:
        config.peer = False
    if args.duration:
        config.duration_s = args.duration
    if args.gan_bound_ms:
        config.bounds["gan"] = args.gan_bound_ms / 1000
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "genserve bench " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[2:])
    )

    from tqdm import tqdm

    sweep = Sweep(config, out_dir, command.strip())
    with tqdm(total=sweep.planned_points(), unit="point", dynamic_ncols=True) as bar:

        def progress(line: str) -> None:
            bar.set_description_str(line[:60])
            if not line.startswith(("exporting", "in-process", "starting")):
                bar.update(1)

        sweep.say = progress
        try:
            sweep.run()
        except Exception as error:
            sweep.write()
            print(f"genserve bench: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    print(write_report(out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
