"""The nginx front proxy: oversized bodies refused before Triton parses them, traffic passes unchanged."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from genserve.client import Client
from genserve.server.front_proxy import (
    MAX_JSON_BODY,
    FrontProxy,
    TlsFiles,
    Upstream,
    find_nginx,
    nginx_config,
)

MIB = 1024 * 1024


def post(url: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def seeds_body(size: int) -> bytes:
    """A syntactically valid `gan` request of about ``size`` bytes (far too many rows)."""
    count = size // 2
    values = ",".join(["1"] * count)
    return (
        f'{{"inputs":[{{"name":"seed","shape":[{count},1],"datatype":"INT64","data":[{values}]}}]}}'.encode()
    )


def test_config_is_accepted_by_nginx_for_several_upstreams_and_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_certificate(cert, key)
    upstreams = [Upstream(http_port=9000 + i, grpc_port=9100 + i) for i in range(3)]
    for tls in (None, TlsFiles(cert=cert, key=key)):
        config = nginx_config(
            upstreams, prefix=tmp_path, host="127.0.0.1", http_port=8000, grpc_port=8001, tls=tls
        )
        assert config.count("server 127.0.0.1:91") == 3
        path = tmp_path / "nginx.conf"
        path.write_text(config)
        (tmp_path / "proxy_http.conf").write_text("")
        checked = subprocess.run(
            [
                str(find_nginx()),
                "-t",
                "-q",
                "-p",
                str(tmp_path),
                "-c",
                str(path),
                "-e",
                str(tmp_path / "e.log"),
            ],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr


def make_certificate(cert: Path, key: Path) -> None:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl command."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("size", [8 * MIB, 50 * MIB])
def test_oversized_json_body_is_refused_and_the_server_stays_up(proxied, size: int) -> None:
    triton_pid = proxied.pid
    status, body = post(proxied.http_url, "/v2/models/gan/infer", seeds_body(size))
    assert status == 413
    assert str(MAX_JSON_BODY) in json.loads(body)["error"]
    assert proxied.is_ready() and proxied.pid == triton_pid and proxied.exit_code is None


def test_binary_request_may_exceed_the_json_limit(proxied) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "nonsense",
                    "shape": [6 * MIB],
                    "datatype": "UINT8",
                    "parameters": {"binary_data_size": 6 * MIB},
                }
            ]
        }
    ).encode()
    status, body = post(
        proxied.http_url,
        "/v2/models/gan/infer",
        header + bytes(6 * MIB),
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 400, body  # Triton read and judged it: the proxy let it through
    assert b"nonsense" in body


def test_binary_request_with_a_huge_json_part_is_refused(proxied) -> None:
    status, _ = post(
        proxied.http_url, "/v2/models/gan/infer", b"{}", {"Inference-Header-Content-Length": "12345678"}
    )
    assert status == 413


def test_deeply_nested_json_does_not_crash_triton_behind_the_limit(proxied) -> None:
    depth = (
        2 * MIB - 16
    )  # just under 4 MiB of brackets: under the proxy's limit, far past the default stack's reach
    status, body = post(
        proxied.http_url, "/v2/models/gan/infer", b'{"inputs":' + b"[" * depth + b"]" * (depth - 8) + b"}"
    )
    assert status in (400, 413, 500), body
    assert proxied.is_ready() and proxied.exit_code is None


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_calls_pass_through_the_proxy(proxied, protocol: str) -> None:
    url = proxied.grpc_url if protocol == "grpc" else proxied.http_url
    with Client(url, protocol=protocol, timeout=60) as client:
        images = client.generate([3, 4], seeds=[1, 2])
        steps = list(client.diffuse_stream([5], seeds=[9], steps=4, preview_every=2))
    assert images.shape == (2, 32, 32, 1) and images.dtype == np.uint8
    assert steps[-1].final and steps[-1].images.shape == (1, 32, 32, 1)
    assert len(steps) >= 2  # previews streamed, not buffered into one answer


def test_tls_round_trip_over_grpc_and_http(proxied, tmp_path: Path) -> None:
    import ssl

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_certificate(cert, key)
    upstream = Upstream(http_port=proxied.triton_http_port, grpc_port=proxied.triton_grpc_port)
    seed = np.array([[5]], np.int64)
    with FrontProxy([upstream], tls=TlsFiles(cert=cert, key=key)) as tls_proxy:
        with grpcclient.InferenceServerClient(
            tls_proxy.grpc_url, ssl=True, root_certificates=str(cert)
        ) as client:
            inputs = [grpcclient.InferInput(name, [1, 1], "INT64") for name in ("seed", "label")]
            for tensor in inputs:
                tensor.set_data_from_numpy(seed)
            over_grpc = client.infer("gan", inputs).as_numpy("image")
        client = httpclient.InferenceServerClient(
            tls_proxy.http_url,
            ssl=True,
            ssl_context_factory=lambda: ssl.create_default_context(cafile=str(cert)),
        )
        inputs = [httpclient.InferInput(name, [1, 1], "INT64") for name in ("seed", "label")]
        for tensor in inputs:
            tensor.set_data_from_numpy(seed)
        over_http = client.infer("gan", inputs).as_numpy("image")
        client.close()
        status, body = post(tls_proxy.http_url, "/v2/models/gan/infer", b"{}")  # plain HTTP to a TLS port
        assert status == 400 and b"HTTPS" in body
    assert over_grpc.shape == (1, 32, 32, 1) and np.array_equal(over_grpc, over_http)
