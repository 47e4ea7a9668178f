"""Measure the dynamic-batching knobs the model repository's configs are set from.

For each candidate ``max_queue_delay_microseconds`` the repository is copied with that delay, served,
and loaded closed-loop at low and high concurrency: the GAN endpoint with single-row requests, the
diffusion endpoint with concurrent sampling requests (the delay is the UNet's). Prints a Markdown
table; the README quotes it.

    python -m genserve.benchmarks.batching_knobs --seconds 5
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from genserve.benchmarks.pbtxt import read_config, write_config
from genserve.server.launcher import EmbeddedServer
from genserve.server.paths import MODEL_REPOSITORY

REPOSITORY = MODEL_REPOSITORY


def with_delay(source: Path, target: Path, model: str, delay_us: int) -> Path:
    """Copy ``source`` to ``target`` with ``model``'s dynamic-batching delay set to ``delay_us``."""
    shutil.copytree(source, target)
    path = target / model / "config.pbtxt"
    config = read_config(path)
    config.dynamic_batching.max_queue_delay_microseconds = delay_us
    write_config(path, config, f"batching_knobs: queue delay {delay_us} us")
    return target


def closed_loop(
    call: Callable[[grpcclient.InferenceServerClient, int], None], url: str, users: int, seconds: float
):
    """``users`` threads calling back to back for ``seconds``; return (calls/s, median latency s)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def user(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        count = 0
        try:
            while time.monotonic() < stop:
                start = time.perf_counter()
                call(client, index * 1_000_000 + count)
                with lock:
                    latencies.append(time.perf_counter() - start)
                count += 1
        finally:
            client.close()

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - started), statistics.median(latencies)


def gan_call(client: grpcclient.InferenceServerClient, seed: int) -> None:
    """One single-row ``gan`` request."""
    inputs = []
    for name, value in (("seed", seed), ("label", seed % 10)):
        item = grpcclient.InferInput(name, [1, 1], "INT64")
        item.set_data_from_numpy(np.array([[value]], np.int64))
        inputs.append(item)
    client.infer("gan", inputs)


def diffusion_call(client: grpcclient.InferenceServerClient, seed: int) -> None:
    """One ``diffusion`` request of one image, 10 steps, guidance 2, over a gRPC stream."""
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error))
    inputs = []
    for name, value, dtype in (
        ("label", np.array([seed % 10], np.int64), "INT64"),
        ("seed", np.array([seed], np.int64), "INT64"),
        ("steps", np.array([10], np.int32), "INT32"),
        ("guidance", np.array([2.0], np.float32), "FP32"),
    ):
        item = grpcclient.InferInput(name, list(value.shape), dtype)
        item.set_data_from_numpy(value)
        inputs.append(item)
    client.async_stream_infer("diffusion", inputs)
    error = answers.get(timeout=120)
    client.stop_stream()
    if error is not None:
        raise error


def main(argv: list[str] | None = None) -> int:
    """Sweep the delays and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load point")
    parser.add_argument("--gan-delays", default="0,200,1000,5000", help="µs values for gan")
    parser.add_argument("--unet-delays", default="0,500,2000,10000", help="µs values for diffusion_unet")
    args = parser.parse_args(argv)
    plans = [
        ("gan", "gan", gan_call, (1, 32), [int(d) for d in args.gan_delays.split(",")]),
        (
            "diffusion",
            "diffusion_unet",
            diffusion_call,
            (1, 8),
            [int(d) for d in args.unet_delays.split(",")],
        ),
    ]
    print("| endpoint | model whose delay varies | delay (µs) | users | calls/s | median latency (ms) |")
    print("|---|---|---|---|---|---|")
    for endpoint, model, call, user_counts, delays in plans:
        for delay in delays:
            with tempfile.TemporaryDirectory() as workdir:
                repository = with_delay(REPOSITORY, Path(workdir) / "repository", model, delay)
                with EmbeddedServer(repository, exit_timeout=5) as server:
                    warm = grpcclient.InferenceServerClient(server.grpc_url)
                    call(warm, 0)  # the first request through a pipeline pays its set-up
                    warm.close()
                    for users in user_counts:
                        rate, median = closed_loop(call, server.grpc_url, users, args.seconds)
                        print(
                            f"| {endpoint} | {model} | {delay} | {users} | {rate:.1f} | {median * 1000:.1f} |"
                        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
