"""Count the floating-point operations of one row of an ONNX model, from its graph.

Only the operators that dominate these networks are counted (a multiply-add is 2 FLOPs):
``Conv``, ``ConvTranspose``, ``MatMul`` and ``Gemm``. Norms, activations and additions are left out, so
the figure is a slight undercount, which makes achieved GFLOP/s conservative.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference


def _fixed(model: onnx.ModelProto, sizes: dict[str, int]) -> onnx.ModelProto:
    """A copy whose symbolic input dims are fixed: batch 1, other symbols from ``sizes`` (default 1)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]
    for tensor in model.graph.input:
        for index, dim in enumerate(tensor.type.tensor_type.shape.dim):
            if dim.dim_param or dim.dim_value <= 0:
                value = 1 if index == 0 else sizes.get(dim.dim_param, sizes.get("*", 1))
                dim.Clear()
                dim.dim_value = value
    return shape_inference.infer_shapes(model, data_prop=True)


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.dim_value > 0 else -1 for d in dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(onnx.helper.get_attribute_value(attribute))
    return default


def _batch_one(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, *shape[1:]) if shape and shape[0] == -1 else shape


def count_flops(path: Path, sizes: dict[str, int] | None = None) -> float:
    """FLOPs of one row (batch 1) of the model at ``path``.

    Args:
        path: ONNX file.
        sizes: Values for symbolic dims other than the batch (e.g. ``{"*": 256}`` for image sides).

    Raises:
        ValueError: If a counted node's shapes could not be inferred.
    """
    model = _fixed(onnx.load(str(path)), sizes or {})
    shapes = _shapes(model)
    total = 0.0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
            continue
        try:
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            out = shapes[node.output[0]]
        except KeyError:
            raise ValueError(f"{path}: no shape inferred for {node.op_type} node {node.name!r}") from None
        # The batch (first) dim is 1 by construction; shape inference loses it behind some pad nodes.
        a, out = _batch_one(a), _batch_one(out)
        if -1 in out or -1 in a or -1 in b:
            raise ValueError(f"{path}: {node.op_type} node {node.name!r} has unknown dims {a} {b} -> {out}")
        if node.op_type == "Conv":
            # out (N, Cout, ...) ; weight (Cout, Cin/group, k...)
            total += 2.0 * np.prod(out) * np.prod(b[1:])
        elif node.op_type == "ConvTranspose":
            # every input element meets Cout/group * k... weights; weight (Cin, Cout/group, k...)
            total += 2.0 * np.prod(a) * np.prod(b[1:])
        elif node.op_type == "MatMul":
            total += 2.0 * np.prod(out) * a[-1]
        else:  # Gemm: A (M, K) (transA swaps)
            k = a[0] if _attribute(node, "transA", 0) else a[-1]
            total += 2.0 * np.prod(out) * k
    return float(total)
