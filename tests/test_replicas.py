"""Several real embedded servers behind nginx: failover under load, and ``genserve serve --replicas``."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from genserve.benchmarks.replicas import SECTION_TITLE, failover_run, replica_repository, update_section
from genserve.client import errors as client_errors
from genserve.server.launcher import free_port
from genserve.server.replicas import ReplicaSet

from conftest import REPOSITORY, processes_in_group
from tiny_model import tiny_affine_weights, write_tiny_model

TYPED_ERRORS = {name for name in dir(client_errors) if name.endswith("Error") and name != "GenserveError"}


@pytest.mark.slow
def test_a_replica_killed_under_load_loses_no_call(tmp_path: Path) -> None:
    if not (REPOSITORY / "gan_generator" / "1" / "model.onnx").exists():
        pytest.fail("models not exported: run `make export` (genserve export)")
    repository = replica_repository(tmp_path / "repository")
    with ReplicaSet(repository, 3, log_dir=tmp_path / "logs", exit_timeout=5) as replicas:
        result = failover_run(replicas, clients=16, duration_s=20.0, kill_at_s=6.0, victim=1, deadline_s=10.0)
    summary = result.to_dict()
    assert result.sent == result.answered + result.errors, summary  # nothing lost silently
    assert not result.untyped, summary  # every failure is a GenserveError subclass
    assert set(result.raised) <= TYPED_ERRORS, summary
    assert result.overruns == 0 and result.slowest_s <= result.deadline_s + result.GRACE_S, summary
    assert result.sent > 100 and result.success_rate >= 0.99, summary
    # Streams on the killed replica raise a typed error; the others finish or raise one too.
    for name, outcome in result.streams.items():
        if name.startswith("direct"):
            assert outcome in TYPED_ERRORS, summary
        else:
            assert outcome == "images" or outcome in TYPED_ERRORS, summary
    assert result.victim_calls_after_restart > 0, summary  # the balancer sends to it again


def test_serve_replicas_balances_both_protocols_and_stops_cleanly(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "repository", "tiny")
    http_port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("genserve")), "serve", "--replicas", "2",
         f"--model-repository={tmp_path / 'repository'}", f"--http-port={http_port}",
         f"--grpc-port={grpc_port}", f"--log-file={tmp_path / 'serve.log'}", "--exit-timeout-secs=5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    x = np.ones((1, 16), np.float32)
    try:
        wait_ready(f"127.0.0.1:{http_port}", process)
        with httpclient.InferenceServerClient(f"127.0.0.1:{http_port}") as client:
            served = [client.infer("tiny", [tiny_input(httpclient, x)]).as_numpy("y") for _ in range(4)]
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            served += [client.infer("tiny", [tiny_input(grpcclient, x)]).as_numpy("y") for _ in range(4)]
        weight, bias = tiny_affine_weights(16)
        for y in served:
            np.testing.assert_allclose(y, x @ weight + bias, rtol=1e-5, atol=1e-5)
        replica_ports = [
            int(port) for port in re.findall(r"replica \d+: gRPC 127.0.0.1:(\d+)", read(process))
        ]
        assert len(replica_ports) == 2
        # Both replicas took part: round robin sent each about half of the 8 requests.
        for port in replica_ports:
            with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
                stats = client.get_inference_statistics("tiny", as_json=True)
            assert int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    time.sleep(0.2)
    assert processes_in_group(process.pid) == [], "a replica or nginx outlived genserve serve"


def tiny_input(module, x: np.ndarray):
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def read(process: subprocess.Popen[bytes]) -> str:
    """The output that ``genserve serve`` printed once it was serving (up to its Ctrl-C line)."""
    assert process.stdout is not None
    lines = []
    for raw in process.stdout:
        lines.append(raw.decode())
        if "Ctrl-C" in lines[-1]:
            break
    return "".join(lines)


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with httpclient.InferenceServerClient(url) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "genserve serve exited during start-up"
            try:
                if client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
    raise AssertionError("genserve serve --replicas 2 not ready")


def test_the_replicas_section_is_inserted_once_and_then_replaced(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("# bench\n\n## Other\n\nfigures\n\nRaw locust CSV/HTML: `raw/` (not committed).\n")
    update_section(report, f"{SECTION_TITLE}\n\nfirst run\n")
    first = report.read_text()
    assert first.index("## Other") < first.index(SECTION_TITLE) < first.index("Raw locust")
    update_section(report, f"{SECTION_TITLE}\n\nsecond run\n")
    assert report.read_text() == first.replace("first run", "second run")
