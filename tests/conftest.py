"""Shared fixtures: real Triton servers on free ports, always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genserve.server.launcher import EmbeddedServer, process_group_stats
from genserve.server.paths import MODEL_REPOSITORY


def processes_in_group(pgid: int) -> list[int]:
    """Pids of live (not zombie) processes in a process group."""
    return [pid for pid, fields in process_group_stats(pgid).items() if fields[0] != "Z"]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    """Start an embedded server on a repository; every server started is stopped at teardown."""
    started: list[EmbeddedServer] = []

    def start(repository: Path, **options) -> EmbeddedServer:
        options.setdefault("log_file", tmp_path / f"server{len(started)}.log")
        options.setdefault("exit_timeout", 10)
        server = EmbeddedServer(repository, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


REPOSITORY = MODEL_REPOSITORY
ONNX_MODELS = (
    "gan",
    "gan_generator",
    "diffusion_unet",
    "style_network",
    "style_targets",
    "style_gradient",
    *(f"text_to_image_{part}" for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder")),
)


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> Iterator[EmbeddedServer]:
    """The project's own model repository on a real embedded server, shared by the whole session."""
    missing = [name for name in ONNX_MODELS if not (REPOSITORY / name / "1" / "model.onnx").exists()]
    if missing:
        pytest.fail(f"models not exported: {', '.join(missing)}; run `make export` (genserve export)")
    log = tmp_path_factory.mktemp("served") / "server.log"
    server = EmbeddedServer(REPOSITORY, log_file=log, exit_timeout=10)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proxied(tmp_path_factory) -> Iterator[EmbeddedServer]:
    """The project's repository behind the nginx front proxy, as `genserve serve` runs it by default."""
    from genserve.server.front_proxy import FrontProxyError, find_nginx

    try:
        find_nginx()
    except FrontProxyError as error:
        pytest.fail(str(error))
    log = tmp_path_factory.mktemp("proxied") / "server.log"
    server = EmbeddedServer(REPOSITORY, log_file=log, exit_timeout=10, front_proxy=True)
    server.start()
    yield server
    server.stop()
