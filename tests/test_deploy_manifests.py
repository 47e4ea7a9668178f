"""The deployment files without a cluster: manifests render, validate and pass checkov; the image's
entry point closes Triton's admin APIs unless given a key."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from genserve.server.launcher import free_port
from genserve.server.triton_install import TritonInstall

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
CHECK = ROOT / "docker" / "kubernetes" / "check.py"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    if not TOOLS_PYTHON.exists():
        pytest.fail(f"{TOOLS_PYTHON} missing: run `make tools` (kubernetes-validate and checkov, pinned)")
    return subprocess.run(
        [str(TOOLS_PYTHON), str(CHECK), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_manifests_render_validate_and_pass_checkov() -> None:
    done = run_check()
    assert done.returncode == 0, done.stdout + done.stderr
    for kustomization in ("base", "overlays/gpu", "overlays/repository-volume", "monitoring", "kserve"):
        assert f"rendered {kustomization}:" in done.stdout
    assert "manifests OK" in done.stdout


@pytest.mark.slow
def test_check_fails_on_a_finding_outside_the_allowlist(tmp_path: Path) -> None:
    # An overlay that makes the container privileged, adds a field containers do not have and cuts the
    # grace period below Triton's exit timeout: checkov, the schema and the cross-check each flag theirs.
    base = ROOT / "docker" / "kubernetes" / "base"
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(base, tmp_path)}]\npatches: [{{path: privileged.yaml}}]\n"
    )
    (tmp_path / "privileged.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: genserve}\nspec:\n  template:\n    spec:\n"
        "      terminationGracePeriodSeconds: 10\n"
        "      containers:\n        - name: triton\n          readinessGates: []\n"
        "          securityContext: {privileged: true, allowPrivilegeEscalation: true}\n"
    )
    done = run_check("--kustomization", str(tmp_path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CKV_K8S_16" in done.stdout  # privileged container, not on the allow-list
    assert "readinessGates" in done.stdout  # strict schema: no such container field
    assert "terminationGracePeriodSeconds 10 < preStop 5 s + Triton's --exit-timeout-secs 30" in done.stdout
    assert "CKV_K8S_43" not in done.stdout.split("FAIL", 1)[1]  # the listed finding stays accepted


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "tritonserver exited during start-up"
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("tritonserver not ready")


def post_logging(url: str, key: str | None) -> int:
    request = urllib.request.Request(f"{url}/v2/logging", data=b"{}", method="POST")
    if key is not None:
        request.add_header("admin-key", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def entrypoint(tmp_path: Path) -> Iterator:
    """Run docker/entrypoint.sh with the wheel's real tritonserver on an empty repository."""
    install = TritonInstall.find()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tritonserver").symlink_to(install.binary)
    (tmp_path / "models").mkdir()
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        ports = [f"--grpc-port={free_port()}", f"--metrics-port={free_port()}"]
        environment = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
            "LD_LIBRARY_PATH": str(install.library_dir),
            **env,
        }
        process = subprocess.Popen(
            [str(ENTRYPOINT), f"--model-repository={tmp_path / 'models'}", "--http-address=127.0.0.1",
             "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", f"--http-port={port}", *ports,
             "--allow-gpu-metrics=false", "--exit-timeout-secs=2"],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        return url, process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def test_entrypoint_takes_the_admin_key_from_a_file_or_the_environment(entrypoint, tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    key_file.write_text("from-the-secret\n")
    url, _ = entrypoint({"GENSERVE_ADMIN_KEY_FILE": str(key_file), "GENSERVE_ADMIN_KEY": "ignored"})
    assert post_logging(url, None) == 403
    assert post_logging(url, "ignored") == 403
    assert post_logging(url, "from-the-secret") == 200
    url, _ = entrypoint({"GENSERVE_ADMIN_KEY": "from-the-environment"})
    assert post_logging(url, "from-the-environment") == 200
    assert post_logging(url, "change-me") == 403


def test_entrypoint_without_a_key_closes_the_admin_apis(entrypoint, tmp_path: Path) -> None:
    url, process = entrypoint({"GENSERVE_ADMIN_KEY_FILE": str(tmp_path / "absent")})
    assert post_logging(url, None) == 403
    assert post_logging(url, "") == 403
    with urllib.request.urlopen(f"{url}/v2/health/live", timeout=5) as response:  # inference side open
        assert response.status == 200
    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    assert "admin APIs are closed" in output


def test_the_autoscaling_metric_is_built_from_counters_triton_exports(start_server, tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    from tiny_model import write_tiny_model

    rule = (ROOT / "docker" / "kubernetes" / "monitoring" / "prometheus-adapter-rules.yaml").read_text()
    query = rule.split("metricsQuery:", 1)[1]
    counters = set(re.findall(r"\b(nv_[a-z_]+)\{", query)) | set(
        re.findall(r"seriesQuery: '(nv_[a-z_]+)", rule)
    )
    assert counters >= {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    write_tiny_model(tmp_path / "repository", "tiny")
    server = start_server(tmp_path / "repository")
    with httpclient.InferenceServerClient(server.http_url) as client:
        x = httpclient.InferInput("x", [1, 16], "FP32")
        x.set_data_from_numpy(np.zeros((1, 16), np.float32))
        client.infer("tiny", [x])
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        page = response.read().decode()
    exported = set(re.findall(r"^(nv_[a-z_]+)\{", page, flags=re.MULTILINE))
    assert counters <= exported, f"not exported by Triton: {sorted(counters - exported)}"
