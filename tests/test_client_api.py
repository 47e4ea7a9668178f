"""The client's public surface: pinned names, keyword-only options, light imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import genserve.client
from genserve.client import AsyncClient, Client

PUBLIC = [
    "AsyncClient",
    "CancelledError",
    "Client",
    "DeadlineExceededError",
    "DiffusionStep",
    "GenserveError",
    "InvalidInputError",
    "ModelInfo",
    "ModelNotFoundError",
    "OverloadedError",
    "RetryPolicy",
    "ServerError",
    "SignatureMismatchError",
    "UnavailableError",
    "contact_sheet",
    "enable_gevent",
    "encode_png",
    "save_png",
]
METHODS = [
    "check_models",
    "close",
    "diffuse",
    "diffuse_stream",
    "generate",
    "models",
    "ready",
    "stylize",
    "text_to_image",
    "text_to_image_stream",
    "wait_ready",
]
STREAMS = ("diffuse_stream", "text_to_image_stream")


def test_public_names_are_pinned():
    assert sorted(genserve.client.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(genserve.client, name).__module__.startswith("genserve.client")


def test_every_error_is_a_genserve_error():
    for name in PUBLIC:
        value = getattr(genserve.client, name)
        if name.endswith("Error"):
            assert issubclass(value, genserve.client.GenserveError)


def test_sync_and_async_clients_have_the_same_methods_and_keyword_only_options():
    public = lambda cls: sorted(n for n, _ in inspect.getmembers(cls, callable) if not n.startswith("_"))  # noqa: E731
    assert public(Client) == public(AsyncClient) == METHODS
    for name in METHODS:
        sync, aio = inspect.signature(getattr(Client, name)), inspect.signature(getattr(AsyncClient, name))
        assert list(sync.parameters) == list(aio.parameters), name
        for parameter in list(sync.parameters.values())[2:]:
            if name != "check_models":
                assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (name, parameter.name)
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)) == (name not in STREAMS), name
    assert (
        list(inspect.signature(Client).parameters)[1:] == list(inspect.signature(AsyncClient).parameters)[1:]
    )


def test_importing_the_client_loads_neither_torch_nor_the_server():
    code = (
        "import sys, genserve.client; "
        "heavy = ('torch', 'onnx', 'onnxruntime', 'PIL', 'genserve.server', 'genserve.export'); "
        "print(sorted(m for m in heavy "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
