"""The main job: build a model, serve it on the embedded Triton server, call it, print what it served."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from genserve.server.launcher import EmbeddedServer


def main(argv: list[str] | None = None) -> int:
    """Run the demo end to end."""
    parser = argparse.ArgumentParser(prog="genserve demo", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("outputs/demo"), help="output folder")
    args = parser.parse_args(argv)
    repository = args.output / "model_repository"
    # Export runs in its own process: the serving side never imports the export tools.
    subprocess.run([sys.executable, "-m", "genserve.export.tiny", str(repository)], check=True)
    with EmbeddedServer(repository, log_file=args.output / "server.log") as server:
        print(f"server ready: gRPC {server.grpc_url}, HTTP {server.http_url}")
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = np.arange(4 * 16, dtype=np.float32).reshape(4, 16) / 64
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        start = time.perf_counter()
        y = client.infer("tiny", [tensor]).as_numpy("y")
        elapsed = time.perf_counter() - start
        client.close()
        print(f"served model 'tiny': input {x.shape} -> output {y.shape} in {elapsed * 1000:.1f} ms")
    return 0
