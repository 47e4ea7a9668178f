"""The client against the real embedded server: every method, both protocols, sync and asyncio."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from genserve.client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    DiffusionStep,
    InvalidInputError,
    encode_png,
)

PROTOCOLS = ("grpc", "http")
PHOTO = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)
PAINTING = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def url_of(served, protocol: str) -> str:
    return served.grpc_url if protocol == "grpc" else served.http_url


@pytest.fixture(scope="module", params=PROTOCOLS)
def client(request, served):
    with Client(url_of(served, request.param), protocol=request.param, timeout=30) as client:
        yield client


def unet_inferences(served) -> int:
    stats = httpclient.InferenceServerClient(served.http_url).get_inference_statistics("diffusion_unet")
    return int(stats["model_stats"][0]["inference_count"])


def assert_sampling_stopped(served) -> None:
    """The UNet stops receiving steps: the server cancelled the sampling."""
    time.sleep(0.5)
    before = unet_inferences(served)
    time.sleep(1.0)
    assert unet_inferences(served) == before, "the server kept sampling after the call was cancelled"


# -- server -----------------------------------------------------------------------------------
def test_ready_models_and_signatures(client):
    assert client.ready()
    client.wait_ready(timeout=5)
    models = {model.name: model for model in client.models()}
    for name in ("gan", "style_transfer", "diffusion"):
        assert models[name].ready and models[name].version == "1"
    client.check_models()


def test_unreachable_server_is_not_ready_and_wait_ready_raises():
    from genserve.client import UnavailableError
    from genserve.server.launcher import free_port

    with Client(f"127.0.0.1:{free_port()}", protocol="http", timeout=2) as client:
        assert client.ready() is False
        with pytest.raises(UnavailableError, match="not ready after 0.3 s"):
            client.wait_ready(timeout=0.3)
        with pytest.raises(UnavailableError):
            client.generate([1], seeds=[1])


# -- endpoints --------------------------------------------------------------------------------
def test_generate_is_deterministic_across_protocols_and_batches(served):
    results = []
    for protocol in PROTOCOLS:
        with Client(url_of(served, protocol), protocol=protocol) as client:
            batch = client.generate([0, 1, 2, 3], seeds=[10, 11, 12, 13])
            alone = client.generate(2, seeds=[12])
            assert batch.shape == (4, 32, 32, 1) and batch.dtype == np.uint8
            assert np.array_equal(alone[0], batch[2])
            random = client.generate([5, 5])
            assert random.shape == (2, 32, 32, 1)
            results.append(batch)
    assert np.array_equal(results[0], results[1])


def test_stylize_accepts_paths_bytes_pil_and_arrays(client, tmp_path):
    from PIL import Image

    path = tmp_path / "photo.png"
    path.write_bytes(encode_png(PHOTO))
    from_array = client.stylize(PHOTO, style=PAINTING, alpha=0.8)
    assert from_array.dtype == np.uint8 and from_array.shape == (round(60 * 256 / 90), 256, 3)
    # A file travels encoded and is decoded by the server: the same pixels, the same result.
    assert np.array_equal(client.stylize(path, style=Image.fromarray(PAINTING), alpha=0.8), from_array)


def test_server_side_rejection_is_typed_and_the_server_stays_ready(client):
    with pytest.raises(InvalidInputError, match="content: not a decodable image"):
        client.stylize(b"not an image", style=PAINTING)
    assert client.ready()


def test_diffuse_streams_previews_to_the_callback(client):
    previews: list[DiffusionStep] = []
    images = client.diffuse([1, 7], seeds=[5, 6], steps=6, preview_every=2, on_preview=previews.append)
    assert images.shape == (2, 32, 32, 1) and images.dtype == np.uint8
    assert [p.step for p in previews] == [2, 4]
    assert all(p.images.shape == (2, 32, 32, 1) and not p.final for p in previews)
    steps = list(client.diffuse_stream([1, 7], seeds=[5, 6], steps=6, preview_every=3))
    assert [s.step for s in steps] == [3, 6] and steps[-1].final
    assert np.array_equal(steps[-1].images, images)


def test_diffusion_is_deterministic_across_protocols(served):
    finals = []
    for protocol in PROTOCOLS:
        with Client(url_of(served, protocol), protocol=protocol) as client:
            finals.append(client.diffuse([3], seeds=[2**63 - 1], steps=4))
    assert np.array_equal(finals[0], finals[1])


class Stop(Exception):
    pass


def test_a_raising_callback_cancels_the_sampling(client, served):
    def stop(step: DiffusionStep) -> None:
        raise Stop

    with pytest.raises(Stop):
        client.diffuse([1], seeds=[1], steps=1000, preview_every=5, on_preview=stop)
    assert_sampling_stopped(served)


def test_a_timeout_cancels_the_sampling(client, served):
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        client.diffuse([2], seeds=[1], steps=1000, timeout=0.5)
    assert time.monotonic() - started < 3
    assert_sampling_stopped(served)


def test_one_http_client_serves_many_threads(served):
    with Client(served.http_url, protocol="http") as client:
        expected = client.generate([4], seeds=[9])
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda i: client.generate([4], seeds=[9]), range(12)))
    assert all(np.array_equal(result, expected) for result in results)


# -- shared memory ----------------------------------------------------------------------------
def test_shared_memory_round_trip(client, served):
    expected_gan = client.generate([0, 9], seeds=[1, 2])
    expected_style = client.stylize(PHOTO, style=PAINTING)
    with Client(
        client.url, protocol=client.protocol, shared_memory=True, admin_key=served.admin_key
    ) as shared:
        for _ in range(2):  # the second call reuses the registered region
            assert np.array_equal(shared.generate([0, 9], seeds=[1, 2]), expected_gan)
        assert np.array_equal(shared.stylize(PHOTO, style=PAINTING), expected_style)
        regions = [region.name for region in shared._shm.regions()]
        assert regions and all(os.path.exists(f"/dev/shm/{name}") for name in regions)
    status = httpclient.InferenceServerClient(served.http_url).get_system_shared_memory_status(
        headers=served.admin_headers
    )
    assert not [region for region in status if region["name"] in regions]
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in regions)


# -- asyncio ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_has_every_method(served, protocol):
    url = url_of(served, protocol)
    with Client(url, protocol=protocol) as sync:
        expected = sync.generate([1, 2], seeds=[3, 4])
        expected_style = sync.stylize(PHOTO, style=PAINTING, size=256)

    async def main() -> None:
        async with AsyncClient(url, protocol=protocol, timeout=30) as client:
            assert await client.ready()
            await client.wait_ready(timeout=5)
            assert "gan" in {model.name for model in await client.models()}
            await client.check_models()
            assert np.array_equal(await client.generate([1, 2], seeds=[3, 4]), expected)
            generated = await asyncio.gather(*(client.generate([i], seeds=[i]) for i in range(4)))
            assert [g.shape for g in generated] == [(1, 32, 32, 1)] * 4
            stylized = await client.stylize(PHOTO, style=PAINTING, size=256)
            assert np.array_equal(stylized, expected_style)
            seen = []

            async def on_preview(step: DiffusionStep) -> None:
                seen.append(step.step)

            images = await client.diffuse([4], seeds=[8], steps=6, preview_every=2, on_preview=on_preview)
            assert images.shape == (1, 32, 32, 1) and seen == [2, 4]
            steps = [step async for step in client.diffuse_stream([4], seeds=[8], steps=6, preview_every=2)]
            assert [s.step for s in steps] == [2, 4, 6]
            assert np.array_equal(steps[-1].images, images)
            with pytest.raises(InvalidInputError):
                await client.generate([10])

    asyncio.run(main())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_leaving_the_stream_cancels_the_sampling(served, protocol):
    async def main() -> None:
        async with AsyncClient(url_of(served, protocol), protocol=protocol) as client:
            async for step in client.diffuse_stream([1], seeds=[1], steps=1000, preview_every=5):
                assert step.step == 5
                break

    asyncio.run(main())
    assert_sampling_stopped(served)


def test_async_task_cancellation_cancels_the_sampling(served):
    async def main() -> None:
        async with AsyncClient(served.grpc_url) as client:
            task = asyncio.create_task(client.diffuse([1], seeds=[1], steps=1000))
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    assert_sampling_stopped(served)


def test_async_shared_memory_round_trip(served):
    with Client(served.grpc_url) as sync:
        expected = sync.generate([3], seeds=[3])

    async def main() -> list[str]:
        async with AsyncClient(
            served.http_url, protocol="http", shared_memory=True, admin_key=served.admin_key
        ) as client:
            assert np.array_equal(await client.generate([3], seeds=[3]), expected)
            return [region.key for region in client._shm.regions()]

    keys = asyncio.run(main())
    assert keys and not any(os.path.exists(f"/dev/shm{key}") for key in keys)


# -- gevent (locust) --------------------------------------------------------------------------
GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time

    import gevent

    from genserve.client import Client

    url, protocol = sys.argv[1:3]
    intervals = []


    def user(index):
        with Client(url, protocol=protocol) as client:
            client.generate([1], seeds=[index])
            assert client.diffuse([1], seeds=[index], steps=3, preview_every=1).shape == (1, 32, 32, 1)
            for _ in range(5):
                started = time.perf_counter()
                client.generate([1], seeds=[index])
                intervals.append((started, time.perf_counter()))


    gevent.joinall([gevent.spawn(user, index) for index in range(8)], raise_error=True)
    overlaps = sum(1 for a in intervals for b in intervals if a < b and b[0] < a[1])
    print(json.dumps({"calls": len(intervals), "overlaps": overlaps}))
    """
)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_client_runs_concurrently_under_gevent_and_exits(served, protocol, tmp_path):
    script = tmp_path / "users.py"
    script.write_text(GEVENT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), url_of(served, protocol), protocol],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["calls"] == 40
    assert result["overlaps"] > 0, "calls from different greenlets never overlapped: the client blocks gevent"
