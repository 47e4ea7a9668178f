"""The client when things go wrong: overload, missing models, mismatched signatures, a restarted server.

These run against a small stand-in repository (Python models only, so it starts in seconds): a
``gan`` with the real signature that sleeps 0.1 s per unit of label and queues at most one request,
a ``style_transfer`` whose signature differs from the client's, and no ``diffusion``.
"""

from __future__ import annotations

import asyncio
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from genserve.client import (
    AsyncClient,
    Client,
    GenserveError,
    ModelNotFoundError,
    OverloadedError,
    SignatureMismatchError,
    UnavailableError,
)
from genserve.server.launcher import EmbeddedServer, free_port

GAN_MODEL = textwrap.dedent(
    """
    import time

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                label = pb_utils.get_input_tensor_by_name(request, "label").as_numpy()
                time.sleep(0.1 * float(label.max()))
                image = np.broadcast_to(label.reshape(-1, 1, 1, 1), (len(label), 32, 32, 1))
                tensor = pb_utils.Tensor("image", image.astype(np.uint8))
                responses.append(pb_utils.InferenceResponse([tensor]))
            return responses
    """
)
GAN_CONFIG = """
name: "gan"
backend: "python"
max_batch_size: 256
input [
  { name: "seed", data_type: TYPE_INT64, dims: [ 1 ] },
  { name: "label", data_type: TYPE_INT64, dims: [ 1 ] }
]
output [ { name: "image", data_type: TYPE_UINT8, dims: [ 32, 32, 1 ] } ]
instance_group [ { count: INSTANCES, kind: KIND_CPU } ]
dynamic_batching {
  max_queue_delay_microseconds: 0
  default_queue_policy { max_queue_size: 1, allow_timeout_override: true }
}
"""
STYLE_MODEL = textwrap.dedent(
    """
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            error = pb_utils.TritonError("never called with the right inputs")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
    """
)
STYLE_CONFIG = """
name: "style_transfer"
backend: "python"
max_batch_size: 8
input [
  { name: "content", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "style", data_type: TYPE_STRING, dims: [ 1 ] }
]
output [ { name: "image", data_type: TYPE_UINT8, dims: [ -1, -1, 3 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""
PIXELS = np.zeros((16, 16, 3), dtype=np.uint8)


def write_stand_in(repository: Path, gan_instances: int) -> Path:
    """The stand-in repository; ``gan_instances`` requests run at once, one more may queue."""
    gan_config = GAN_CONFIG.replace("INSTANCES", str(gan_instances))
    for name, model, config in (
        ("gan", GAN_MODEL, gan_config),
        ("style_transfer", STYLE_MODEL, STYLE_CONFIG),
    ):
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "model.py").write_text(model)
        (repository / name / "config.pbtxt").write_text(config)
    return repository


@pytest.fixture(scope="module")
def stand_in_repository(tmp_path_factory) -> Path:
    return write_stand_in(tmp_path_factory.mktemp("stand_in"), gan_instances=1)


@pytest.fixture(scope="module")
def stand_in(stand_in_repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("stand_in_log") / "server.log"
    with EmbeddedServer(stand_in_repository, log_file=log, exit_timeout=5) as server:
        yield server


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mismatched_and_missing_models_fail_fast(stand_in, protocol):
    url = stand_in.grpc_url if protocol == "grpc" else stand_in.http_url
    with Client(url, protocol=protocol, timeout=10) as client:
        with pytest.raises(SignatureMismatchError) as caught:
            client.stylize(PIXELS, style=PIXELS)
        message = str(caught.value)
        assert "input 'content' is INT32 [-1, 1] on the server; this client expects BYTES [-1, 1]" in message
        assert "input 'alpha' FP32 [-1, 1] is missing on the server" in message
        client.check_models(["gan"])
        with pytest.raises(ModelNotFoundError, match="diffusion"):
            client.check_models(["diffusion"])
        with pytest.raises(ModelNotFoundError):
            client.diffuse([1], seeds=[1], steps=2)
    with Client(url, protocol=protocol, timeout=10, check_models=False) as unchecked:
        with pytest.raises(ModelNotFoundError):
            unchecked.diffuse([1], seeds=[1], steps=2)
        with pytest.raises(GenserveError):
            unchecked.stylize(PIXELS, style=PIXELS)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_overload_is_typed_and_retried_with_backoff(stand_in, protocol):
    url = stand_in.grpc_url if protocol == "grpc" else stand_in.http_url

    def burst(retries: int) -> list[object]:
        def one(index: int) -> object:
            with Client(url, protocol=protocol, timeout=20, retries=retries, backoff=0.3) as client:
                try:
                    return client.generate([2], seeds=[index])
                except GenserveError as error:
                    return error

        with ThreadPoolExecutor(max_workers=6) as pool:
            return list(pool.map(one, range(6)))

    refused = [r for r in burst(retries=0) if isinstance(r, GenserveError)]
    assert refused and all(isinstance(error, OverloadedError) for error in refused)
    assert all(error.retryable and "Exceeds maximum queue size" in str(error) for error in refused)
    assert all(isinstance(r, np.ndarray) for r in burst(retries=10))


def test_a_server_stopped_mid_call_raises_a_typed_error_and_the_client_recovers(start_server, tmp_path):
    # Killing the server leaves its side of the cut connections in TIME_WAIT: the restart on the same
    # ports must still be allowed (the launcher probes ports as Triton binds them, with SO_REUSEADDR).
    repository = write_stand_in(tmp_path / "repository", gan_instances=4)
    ports = {"http_port": free_port(), "grpc_port": free_port()}
    server = start_server(repository, exit_timeout=2, **ports)
    urls = {"grpc": server.grpc_url, "http": server.http_url}
    restarted = threading.Event()
    outcomes: dict[str, object] = {}
    recovered: dict[str, object] = {}
    warmed = threading.Semaphore(0)  # one release per user once its first call came back

    def sync_user(protocol: str) -> None:
        with Client(urls[protocol], protocol=protocol, timeout=10, retries=1) as client:
            client.generate([0], seeds=[0])
            warmed.release()
            try:
                outcomes[f"sync-{protocol}"] = client.generate([9], seeds=[1])  # 0.9 s on the server
            except GenserveError as error:
                outcomes[f"sync-{protocol}"] = error
            restarted.wait(60)
            client.wait_ready(timeout=30)
            recovered[f"sync-{protocol}"] = client.generate([1], seeds=[2])

    def async_user(protocol: str) -> None:
        async def main() -> None:
            async with AsyncClient(urls[protocol], protocol=protocol, timeout=10, retries=1) as client:
                await client.generate([0], seeds=[0])
                warmed.release()
                try:
                    outcomes[f"async-{protocol}"] = await client.generate([9], seeds=[1])
                except GenserveError as error:
                    outcomes[f"async-{protocol}"] = error
                await asyncio.to_thread(restarted.wait, 60)
                await client.wait_ready(timeout=30)
                recovered[f"async-{protocol}"] = await client.generate([1], seeds=[2])

        asyncio.run(main())

    users = [
        threading.Thread(target=user, args=(protocol,))
        for user in (sync_user, async_user)
        for protocol in ("grpc", "http")
    ]
    for user in users:
        user.start()
    # On a loaded host a fixed sleep can cut the server off before a user's first call: wait for all.
    for _ in users:
        assert warmed.acquire(timeout=60), "a user's first call did not come back"
    time.sleep(0.3)  # the slow calls are now in flight
    server.stop(timeout=0.01)  # SIGTERM, then SIGKILL at once: the calls in flight are cut off
    deadline = time.monotonic() + 30
    while len(outcomes) < len(users) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(outcomes) == len(users), outcomes
    for name, outcome in outcomes.items():
        assert isinstance(outcome, UnavailableError), (name, outcome)

    start_server(repository, exit_timeout=2, **ports)
    restarted.set()
    for user in users:
        user.join(timeout=60)
    assert sorted(recovered) == sorted(outcomes)
    assert all(images.shape == (1, 32, 32, 1) for images in recovered.values())
