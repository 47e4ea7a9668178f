"""The client's own cost: ``Client.generate`` at batch 1 against tritonclient called directly.

Both make the same ``gan`` request (one seed, one label, the ``image`` output as binary) to the same
embedded server, alternating call by call (ABBA order) in one run so that server and host drift hit
both alike. Reported: the median client-side time per call of each, and their ratio (target: within
10%, i.e. a ratio of at most 1.10)::

    python -m genserve.benchmarks.client_overhead --iterations 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genserve.client import Client
from genserve.server.launcher import EmbeddedServer
from genserve.server.paths import MODEL_REPOSITORY

REPOSITORY = MODEL_REPOSITORY
TARGET_RATIO = 1.10


def direct_call(protocol: str, url: str) -> tuple[Callable[[], np.ndarray], Any]:
    """A function making the ``gan`` request with tritonclient alone, and the client to close."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    client = module.InferenceServerClient(url)

    def call() -> np.ndarray:
        seed = module.InferInput("seed", [1, 1], "INT64")
        seed.set_data_from_numpy(np.array([[7]], dtype=np.int64))
        label = module.InferInput("label", [1, 1], "INT64")
        label.set_data_from_numpy(np.array([[3]], dtype=np.int64))
        outputs = [module.InferRequestedOutput("image")]
        return client.infer("gan", [seed, label], outputs=outputs).as_numpy("image")

    return call, client


def measure(protocol: str, url: str, iterations: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each way, alternated in one run."""
    direct, raw = direct_call(protocol, url)
    client = Client(url, protocol=protocol)

    def ours() -> np.ndarray:
        return client.generate([3], seeds=[7])

    try:
        assert np.array_equal(direct(), ours()), "the two calls must make the same request"
        for _ in range(warmup):
            direct()
            ours()
        times: dict[str, list[float]] = {"tritonclient": [], "genserve": []}
        for index in range(iterations):
            order = (("tritonclient", direct), ("genserve", ours))
            for name, call in order if index % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)
    finally:
        client.close()
        raw.close()
    result = {f"{name}_median_s": statistics.median(values) for name, values in times.items()}
    result.update({f"{name}_p90_s": float(np.percentile(values, 90)) for name, values in times.items()})
    result["ratio"] = result["genserve_median_s"] / result["tritonclient_median_s"]
    result["iterations"] = iterations
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="client_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=1000, help="calls of each kind per protocol")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls of each kind first")
    parser.add_argument("--protocols", nargs="+", choices=("grpc", "http"), default=["grpc", "http"])
    parser.add_argument("--repository", type=Path, default=REPOSITORY, help="model repository to serve")
    parser.add_argument("--grpc-url", help="use a running server's gRPC endpoint instead of starting one")
    parser.add_argument("--http-url", help="use a running server's HTTP endpoint instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurement; print a table; return 0."""
    args = _parser().parse_args(argv)
    server = None
    urls = {"grpc": args.grpc_url, "http": args.http_url}
    if any(urls[protocol] is None for protocol in args.protocols):
        log = Path(tempfile.mkdtemp(prefix="genserve-overhead-")) / "server.log"
        server = EmbeddedServer(args.repository, log_file=log).start()
        urls = {"grpc": urls["grpc"] or server.grpc_url, "http": urls["http"] or server.http_url}
    try:
        results = {
            protocol: measure(protocol, urls[protocol], args.iterations, args.warmup)
            for protocol in args.protocols
        }
    finally:
        if server is not None:
            server.stop()
    print(f"gan at batch 1, {args.iterations} calls of each kind, alternated (median, p90 in ms):")
    print(f"{'protocol':<9} {'tritonclient':>14} {'genserve':>14} {'ratio':>7}  target <= {TARGET_RATIO:.2f}")
    for protocol, result in results.items():
        print(
            f"{protocol:<9} "
            f"{result['tritonclient_median_s'] * 1e3:>6.3f} ({result['tritonclient_p90_s'] * 1e3:.3f}) "
            f"{result['genserve_median_s'] * 1e3:>6.3f} ({result['genserve_p90_s'] * 1e3:.3f}) "
            f"{result['ratio']:>7.3f}  {'ok' if result['ratio'] <= TARGET_RATIO else 'ABOVE TARGET'}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
