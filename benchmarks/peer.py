"""The peer: the same ONNX GAN served by PyTriton's Python binding, the way its users write it.

PyTriton (``pytriton.triton.Triton``) is what a Python team picks to put a model behind Triton without
writing a model repository: an inference callable decorated with ``@batch``, bound with a
``DynamicBatcher``. Here it serves a model named ``gan`` with genserve's signature (``seed``, ``label``
in; uint8 ``image`` out) doing the same work per row (latent from the seed with the same hash, ONNX
Runtime with the same thread count, uint8 conversion), so the same client and the same locust users
drive both servers. Its batching is configured like genserve's: same maximum batch and queue delay.

Run as its own process (``python -m genserve.benchmarks.peer --onnx ...``); it prints ``READY`` once
its models are loaded and serves until SIGTERM. :class:`PeerServer` starts and stops it on free ports.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import numpy as np

from genserve.benchmarks.pbtxt import read_config
from genserve.client.contract import GAN
from genserve.server.launcher import free_port
from genserve.server.paths import MODEL_REPOSITORY


def genserve_queue_delay_us(repository: Path = MODEL_REPOSITORY) -> int:
    """The queue delay of genserve's ``gan`` endpoint; the peer batches with the same one."""
    config = read_config(repository / GAN.name / "config.pbtxt")
    return int(config.dynamic_batching.max_queue_delay_microseconds)


THREADS = 2


def build_infer(onnx_path: Path, latent_dim: int):  # noqa: ANN201 - a PyTriton inference callable
    """The ``@batch`` inference callable: seeds and labels -> uint8 images."""
    import onnxruntime as ort
    from pytriton.decorators import batch

    from genserve.client.contract import gan_latents, to_uint8

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])

    @batch
    def infer(seed: np.ndarray, label: np.ndarray) -> dict[str, np.ndarray]:
        z = gan_latents(seed, latent_dim)
        images = session.run(None, {"z": z, "label": label.reshape(-1).astype(np.int64)})[0]
        return {"image": to_uint8(images)}

    return infer


def serve(
    onnx_path: Path,
    latent_dim: int,
    image_shape: tuple[int, int, int],
    ports: tuple[int, int, int],
    queue_delay_us: int,
) -> None:
    """Serve the GAN with PyTriton on 127.0.0.1 until SIGTERM."""
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    http_port, grpc_port, metrics_port = ports
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        allow_gpu_metrics=False,
    )
    c, h, w = image_shape
    # Bound to 127.0.0.1 only; no admin-API token, so the sweep can read the statistics API as it does
    # genserve's.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=GAN.name,
            infer_func=build_infer(onnx_path, latent_dim),
            inputs=[Tensor(name=t.name, dtype=t.numpy_dtype, shape=t.dims) for t in GAN.inputs],
            outputs=[Tensor(name="image", dtype=np.uint8, shape=(h, w, c))],
            config=ModelConfig(
                max_batch_size=GAN.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us),
            ),
            strict=False,
        )
        triton.connect()
        print("READY", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


class PeerServer:
    """The peer as a child process in its own process group, on free ports of 127.0.0.1.

    Args:
        onnx_path: The GAN generator (``z``, ``label`` -> ``image``).
        latent_dim: ``z`` size.
        image_shape: Generator output ``(C, H, W)``.
        log_file: Where its output goes.
        ready_timeout: Seconds to wait for it to serve.
        queue_delay_us: Its batcher's queue delay; by default that of genserve's ``gan`` config.
    """

    def __init__(
        self,
        onnx_path: Path,
        latent_dim: int,
        image_shape: tuple[int, int, int],
        log_file: Path,
        ready_timeout: float = 120.0,
        queue_delay_us: int | None = None,
    ) -> None:
        self.onnx_path, self.latent_dim, self.image_shape = onnx_path, latent_dim, image_shape
        self.queue_delay_us = genserve_queue_delay_us() if queue_delay_us is None else queue_delay_us
        self.log_file, self.ready_timeout = log_file, ready_timeout
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        """``host:port`` of its HTTP endpoint."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of its gRPC endpoint."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        """Its process id (also its process group id)."""
        return self._process.pid if self._process else None

    def start(self) -> PeerServer:
        """Start it and wait until ``gan`` answers ready.

        Raises:
            RuntimeError: If it exits or is not ready in time.
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # PyTriton's backend stub must load this Python's libpython, not another one on the system.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH", "")]))
        shape = ",".join(str(d) for d in self.image_shape)
        command = [
            sys.executable,
            "-m",
            "genserve.benchmarks.peer",
            f"--onnx={self.onnx_path}",
            f"--latent-dim={self.latent_dim}",
            f"--image-shape={shape}",
            f"--ports={self.http_port},{self.grpc_port},{self.metrics_port}",
            f"--queue-delay-us={self.queue_delay_us}",
        ]
        with self.log_file.open("wb") as sink:
            self._process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.ready_timeout
        url = f"http://{self.http_url}/v2/models/gan/ready"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the PyTriton peer exited with {self._process.returncode}; see {self.log_file}"
                )
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the PyTriton peer was not ready after {self.ready_timeout:.0f} s; see {self.log_file}"
        )

    def stop(self) -> None:
        """SIGTERM, then kill its whole process group."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> PeerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the peer process."""
    parser = argparse.ArgumentParser(description="Serve a GAN generator with PyTriton (benchmark peer)")
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--latent-dim", type=int, required=True)
    parser.add_argument("--image-shape", required=True, help="C,H,W")
    parser.add_argument("--ports", required=True, help="HTTP,GRPC,METRICS")
    parser.add_argument("--queue-delay-us", type=int, default=None, help="default: genserve's gan config")
    args = parser.parse_args(argv)
    shape = tuple(int(d) for d in args.image_shape.split(","))
    ports = tuple(int(p) for p in args.ports.split(","))
    delay = genserve_queue_delay_us() if args.queue_delay_us is None else args.queue_delay_us
    serve(args.onnx, args.latent_dim, shape, ports, delay)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
