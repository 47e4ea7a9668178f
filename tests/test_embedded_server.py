"""The embedded server: a real tritonserver process, dynamic batching, clear failures, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from genserve.server.launcher import ModelLoadError, PortInUseError

from conftest import processes_in_group
from tiny_model import write_tiny_model

SLOW_MODEL = textwrap.dedent(
    """
    import time
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            time.sleep(0.5)
            inputs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
            return [pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]) for x in inputs]
    """
)
SLOW_CONFIG = """
name: "slow"
backend: "python"
max_batch_size: 0
input [ { name: "x", data_type: TYPE_FP32, dims: [ 2 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 2 ] } ]
instance_group [ { count: 1, kind: KIND_CPU } ]
"""


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("repository")
    write_tiny_model(repository, "tiny", max_queue_delay_us=2000)
    write_tiny_model(repository, "tiny_unbatched", dynamic_batching=False)
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repository / "slow" / "config.pbtxt").write_text(SLOW_CONFIG)
    return repository


def infer_tiny(client: grpcclient.InferenceServerClient, x: np.ndarray, model: str = "tiny") -> np.ndarray:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(model, [tensor]).as_numpy("y")


def test_dynamic_batching_under_concurrent_load(start_server, tiny_repository):
    server = start_server(tiny_repository)
    rows = np.random.default_rng(0).standard_normal((1200, 16)).astype(np.float32)
    session = ort.InferenceSession(str(tiny_repository / "tiny" / "1" / "model.onnx"))
    expected = session.run(["y"], {"x": rows})[0]
    clients = threading.local()

    def one(i: int) -> np.ndarray:
        if not hasattr(clients, "client"):
            clients.client = grpcclient.InferenceServerClient(server.grpc_url)
        return infer_tiny(clients.client, rows[i : i + 1])

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(len(rows))))
    served = np.concatenate(results)
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)

    stats_client = httpclient.InferenceServerClient(server.http_url)
    stats = stats_client.get_inference_statistics("tiny")["model_stats"][0]
    stats_client.close()
    assert int(stats["inference_count"]) == len(rows)
    assert int(stats["inference_stats"]["fail"]["count"]) == 0
    assert int(stats["execution_count"]) <= len(rows) / 4, stats["execution_count"]


def test_bad_request_fails_alone_and_server_stays_ready(start_server, tiny_repository):
    server = start_server(tiny_repository)
    client = httpclient.InferenceServerClient(server.http_url)
    wrong = httpclient.InferInput("x", [2, 15], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 15), np.float32))
    with pytest.raises(InferenceServerException, match="input 'x'.*Expected \\[-1,16\\], got \\[2,15\\]"):
        client.infer("tiny", [wrong])
    wrong_dtype = httpclient.InferInput("x", [1, 16], "FP64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 16), np.float64))
    with pytest.raises(
        InferenceServerException, match="data-type is 'FP64', but model 'tiny' expects 'FP32'"
    ):
        client.infer("tiny", [wrong_dtype])
    too_big = httpclient.InferInput("x", [65, 16], "FP32")
    too_big.set_data_from_numpy(np.zeros((65, 16), np.float32))
    with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
        client.infer("tiny", [too_big])
    assert client.is_server_ready()
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert infer_tiny(grpc, np.ones((3, 16), np.float32), "tiny_unbatched").shape == (3, 16)
    grpc.close()
    client.close()


def test_taken_port_is_a_clear_error(start_server, tiny_repository):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"http port {port} on 127.0.0.1 is already in use"):
            start_server(tiny_repository, http_port=port)


def test_broken_model_names_the_model_and_reason(start_server, tmp_path):
    repository = tmp_path / "repository"
    write_tiny_model(repository, "good")
    broken = write_tiny_model(repository, "broken")
    (broken / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as error:
        start_server(repository)
    assert time.monotonic() - started < 60
    assert "broken" in error.value.failures
    assert "model 'broken' failed to load" in str(error.value)
    assert "good" not in error.value.failures


def test_missing_repository_is_a_clear_error(start_server, tmp_path):
    with pytest.raises(Exception, match="model repository .* does not exist"):
        start_server(tmp_path / "nowhere")


def test_sigterm_lets_in_flight_requests_finish_and_leaves_no_process(start_server, tiny_repository):
    server = start_server(tiny_repository)
    pgid = server.pid
    assert len(processes_in_group(pgid)) >= 2  # tritonserver and at least one backend stub

    def call(_: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_url, connection_timeout=30, network_timeout=30)
        x = httpclient.InferInput("x", [2], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
        try:
            return client.infer("slow", [x]).as_numpy("y")
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(call, i) for i in range(4)]
        time.sleep(0.3)  # the four requests are now queued or executing (0.5 s each, one instance)
        os.kill(pgid, signal.SIGTERM)
        results = [future.result(timeout=30) for future in futures]
    assert all(np.array_equal(r, [1.0, 2.0]) for r in results)
    assert server.wait() == 0
    server.stop()
    assert processes_in_group(pgid) == []


def test_killed_server_leaves_no_stub_behind(start_server, tiny_repository):
    server = start_server(tiny_repository)
    pgid = server.pid
    os.kill(pgid, signal.SIGKILL)
    server.wait()
    server.stop()
    assert processes_in_group(pgid) == []


def test_serve_command_forwards_sigint(tmp_path, tiny_repository):
    from genserve.server.launcher import free_port

    ports = [str(free_port()) for _ in range(3)]
    command = [
        sys.executable,
        "-m",
        "genserve.cli",
        "serve",
        "--model-repository",
        str(tiny_repository),
    ]
    command += ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    command += ["--log-file", str(tmp_path / "serve.log"), "--exit-timeout-secs", "5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        banner = [process.stdout.readline() for _ in range(3)]
        assert f"127.0.0.1:{ports[0]}" in "".join(banner)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        assert client.is_server_ready()
        client.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    with socket.socket() as probe:  # the server is gone: nothing listens on its port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", int(ports[0])))


def test_serve_help_documents_every_option():
    from genserve.server.cli import build_parser

    help_text = subprocess.run(
        [sys.executable, "-m", "genserve.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    serve = build_parser()
    for action in serve._actions:
        for option in action.option_strings:
            assert option in help_text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help"
    for triton_name in ("--model-repository", "--http-port", "--grpc-port", "--metrics-port", "--host"):
        assert triton_name in help_text


def test_missing_binary_is_a_clear_error(start_server, tiny_repository, tmp_path):
    from dataclasses import replace

    from genserve.server.triton_install import TritonInstall, TritonNotInstalledError

    install = replace(TritonInstall.find(), binary=tmp_path / "bin" / "tritonserver")
    with pytest.raises(TritonNotInstalledError, match=f"tritonserver binary not found at {tmp_path}"):
        start_server(tiny_repository, install=install)


def test_missing_shared_library_is_a_clear_error(start_server, tiny_repository, tmp_path, monkeypatch):
    from dataclasses import replace

    from genserve.server.launcher import ServerError
    from genserve.server.triton_install import TritonInstall

    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    install = replace(
        TritonInstall.find(), library_dir=tmp_path
    )  # an empty folder: the stub's libraries lack
    started = time.monotonic()
    with pytest.raises(
        ServerError, match="tritonserver cannot load a shared library: .*cannot open shared object"
    ):
        start_server(tiny_repository, install=install)
    assert time.monotonic() - started < 60  # not the readiness timeout
