"""Overload is rejected fast at the endpoints' bounded queues; accepted work completes."""

from __future__ import annotations

import queue
import re
import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import REPOSITORY

BURST = 40


@pytest.fixture(scope="module")
def tight_repository(tmp_path_factory) -> Path:
    """The project's repository with small admission limits, so a burst overflows them quickly."""
    repository = tmp_path_factory.mktemp("tight")
    for name in ("gan", "gan_generator", "diffusion", "diffusion_unet"):
        shutil.copytree(REPOSITORY / name, repository / name)
    gan = repository / "gan" / "config.pbtxt"
    text = re.sub(r"max_queue_size: \d+", "max_queue_size: 2", gan.read_text())
    gan.write_text(text.replace("count: 2", "count: 1"))
    diffusion = repository / "diffusion" / "config.pbtxt"
    diffusion.write_text(
        re.sub(
            r'"max_concurrent_requests", value: \{ string_value: "\d+" \}',
            '"max_concurrent_requests", value: { string_value: "4" }',
            diffusion.read_text(),
        )
    )
    return repository


def burst(client, model: str, make_inputs, stream: bool) -> list[tuple[float, object]]:
    """Send BURST requests at once; return (seconds to answer, result or error) per request."""
    answers: queue.Queue = queue.Queue()
    sent: dict[str, float] = {}

    def done(request_id, result, error):
        answers.put((time.monotonic() - sent[request_id], result, error))

    if stream:
        client.start_stream(callback=lambda result, error: answers.put((time.monotonic(), result, error)))
    for i in range(BURST):
        sent[str(i)] = time.monotonic()
        if stream:
            client.async_stream_infer(model, make_inputs(i), request_id=str(i))
        else:
            client.async_infer(model, make_inputs(i), partial(done, str(i)), request_id=str(i))
    results = []
    for _ in range(BURST):
        when, result, error = answers.get(timeout=120)
        if stream:
            request_id = result.get_response().id if result is not None else None
            when = when - min(sent.values()) if request_id is None else when - sent[request_id]
        results.append((when, error if error is not None else result))
    if stream:
        client.stop_stream()
    return results


def tensor(name, array, dtype):
    item = grpcclient.InferInput(name, list(array.shape), dtype)
    item.set_data_from_numpy(array)
    return item


def check(results, overloaded_message: str) -> None:
    rejected = [(t, r) for t, r in results if isinstance(r, Exception)]
    accepted = [(t, r) for t, r in results if not isinstance(r, Exception)]
    assert rejected and accepted
    for _, error in rejected:
        assert re.search(overloaded_message, str(error)), str(error)
    # Rejections come back without waiting for the accepted work.
    assert np.median([t for t, _ in rejected]) < np.median([t for t, _ in accepted])
    assert max(t for t, _ in rejected) < 5.0


def test_burst_beyond_the_queue_is_rejected_fast(start_server, tight_repository):
    server = start_server(tight_repository)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    rows = 256

    def gan_inputs(i: int):
        seeds = np.arange(i * rows, (i + 1) * rows, dtype=np.int64).reshape(-1, 1)
        return [tensor("seed", seeds, "INT64"), tensor("label", seeds % 10, "INT64")]

    check(burst(client, "gan", gan_inputs, stream=False), "Exceeds maximum queue size")
    assert client.is_server_ready()

    def diffusion_inputs(i: int):
        return [
            tensor("label", np.array([i % 10], np.int64), "INT64"),
            tensor("seed", np.array([i], np.int64), "INT64"),
            tensor("steps", np.array([20], np.int32), "INT32"),
            tensor("guidance", np.array([1.0], np.float32), "FP32"),
        ]

    check(burst(client, "diffusion", diffusion_inputs, stream=True), "diffusion: overloaded")
    assert client.is_server_ready()
    assert client.infer("gan", gan_inputs(0)).as_numpy("image").shape[0] == rows
    client.close()
