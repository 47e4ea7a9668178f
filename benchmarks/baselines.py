"""In-process baselines: the ceilings a served model is measured against.

- ONNX Runtime in this process at each batch size, with the thread count the server uses: what the
  served system could reach if serving cost nothing.
- PyTorch eager on the same architecture (untrained weights; speed does not depend on them).
- The host's peak fp32 matrix-multiply GFLOP/s (numpy and torch GEMM, the better of the two), and each
  model's achieved GFLOP/s (graph FLOPs x rows/s) as a fraction of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from genserve.benchmarks.flops import count_flops
from genserve.benchmarks.models import Network, torch_module

THREADS = 2
"""ONNX Runtime and torch threads: the embedded server's ONNX Runtime sessions use both cores."""


@dataclass
class NetworkBaseline:
    """Rows per second of one network in-process.

    Attributes:
        key: Network name.
        flops_per_row: Graph FLOPs of one row.
        ort: ONNX Runtime rows/s per batch size.
        torch: PyTorch eager rows/s per batch size (empty when torch or the module is unavailable).
    """

    key: str
    flops_per_row: float
    ort: dict[int, float] = field(default_factory=dict)
    torch: dict[int, float] = field(default_factory=dict)

    @property
    def best_batch(self) -> int:
        """Batch size with the most ONNX Runtime rows/s."""
        return max(self.ort, key=self.ort.get)

    @property
    def batch_gain(self) -> float:
        """ONNX Runtime rows/s at its best batch over batch 1."""
        return self.ort[self.best_batch] / self.ort[min(self.ort)]

    def ort_rate(self, batch: int) -> float:
        """ONNX Runtime rows/s at ``batch``, interpolated (log-linear) between measured sizes."""
        sizes = sorted(self.ort)
        if batch in self.ort:
            return self.ort[batch]
        rates = [self.ort[s] for s in sizes]
        return float(np.interp(np.log(batch), np.log(sizes), rates))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the derived figures."""
        out = asdict(self)
        out["ort"] = {str(k): v for k, v in self.ort.items()}
        out["torch"] = {str(k): v for k, v in self.torch.items()}
        out.update(best_batch=self.best_batch, batch_gain=self.batch_gain)
        return out


def rows_per_second(fn: Callable[[], Any], batch: int, min_seconds: float, max_runs: int = 10_000) -> float:
    """Rows/s of ``fn`` (one call = ``batch`` rows) after a warm-up call, over at least ``min_seconds``."""
    fn()
    runs, start = 0, time.perf_counter()
    while runs < max_runs:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            break
    return runs * batch / (time.perf_counter() - start)


def ort_session(network: Network, threads: int = THREADS):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An ONNX Runtime CPU session on the network, as the server's backend makes it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(network.path), sess_options=options, providers=["CPUExecutionProvider"])


def measure_network(
    network: Network,
    batches: Sequence[int],
    *,
    min_seconds: float = 1.0,
    with_torch: bool = True,
    flop_sizes: dict[str, int] | None = None,
) -> NetworkBaseline:
    """ONNX Runtime (and PyTorch eager) rows/s of ``network`` at each batch size."""
    side = network.image_shape[1] if network.kind == "style" else 1
    result = NetworkBaseline(network.key, count_flops(network.path, flop_sizes or {"*": side}))
    session = ort_session(network)
    for batch in batches:
        feeds = network.inputs(batch)
        result.ort[batch] = rows_per_second(lambda f=feeds: session.run(None, f), batch, min_seconds)
    if with_torch:
        result.torch = _torch_rates(network, batches, min_seconds)
    return result


def _torch_rates(network: Network, batches: Sequence[int], min_seconds: float) -> dict[int, float]:
    try:
        import torch
    except ImportError:
        return {}
    module = torch_module(network)
    if module is None:
        return {}
    torch.set_num_threads(THREADS)
    rates = {}
    with torch.inference_mode():
        for batch in batches:
            args = [torch.from_numpy(a) for a in network.inputs(batch).values()]
            rates[batch] = rows_per_second(lambda a=args: module(*a), batch, min_seconds)
    return rates


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best fp32 GEMM GFLOP/s of numpy and of torch (each over ``repeats`` products of ``size``)."""
    flops = 2.0 * size**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    results = {"numpy": _best_of(lambda: a @ b, repeats, flops)}
    try:
        import torch
    except ImportError:
        return results
    torch.set_num_threads(THREADS)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    results["torch"] = _best_of(lambda: ta @ tb, repeats, flops)
    return results


def _best_of(fn: Callable[[], Any], repeats: int, flops: float) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def efficiency(baseline: NetworkBaseline, peak_gflops: float) -> dict[str, float]:
    """Achieved GFLOP/s at batch 1 and the best batch, and as fractions of the host's peak."""
    gflops_1 = baseline.flops_per_row * baseline.ort[min(baseline.ort)] / 1e9
    gflops_best = baseline.flops_per_row * baseline.ort[baseline.best_batch] / 1e9
    return {
        "gflops_batch1": gflops_1,
        "gflops_best": gflops_best,
        "fraction_of_peak_batch1": gflops_1 / peak_gflops,
        "fraction_of_peak_best": gflops_best / peak_gflops,
    }
