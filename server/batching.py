"""Gather requests into one batch, run once, scatter the rows back.

Every Python model of genserve (the embedded ONNX Runtime backend and the pipelines) uses these
pure functions, so a bad request gets its own error and never fails the batch it shares.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from genserve.server.model_config import ModelSpec, TensorSpec

Arrays = Mapping[str, np.ndarray]


class RequestError(ValueError):
    """A request's inputs do not fit the model config; the message names the input."""


def check_inputs(spec: ModelSpec, arrays: Mapping[str, np.ndarray | None]) -> int:
    """Check one request's inputs, as a backend receives them, against the model config.

    Shapes are checked against each input's :attr:`TensorSpec.model_dims` (Triton has already applied
    the config's ``reshape``).

    Args:
        spec: The model config.
        arrays: Input name to array (``None`` where the request left it out).

    Returns:
        The request's row count (1 for a model without a batch dimension).

    Raises:
        RequestError: naming the first input that is missing or has the wrong dtype or shape.
    """
    rows: int | None = None
    for tensor in spec.inputs:
        array = arrays.get(tensor.name)
        if array is None:
            if tensor.optional:
                continue
            raise RequestError(f"input '{tensor.name}' is missing")
        _check_dtype(tensor, array)
        shape = tuple(array.shape)
        if spec.batched:
            if len(shape) != len(tensor.model_dims) + 1:
                expected = _dims(tensor.model_dims)
                raise RequestError(
                    f"input '{tensor.name}' has shape {list(shape)}; expected [batch, {expected}]"
                )
            batch = shape[0]
            if not 1 <= batch <= spec.max_batch_size:
                raise RequestError(
                    f"input '{tensor.name}' has batch size {batch}; allowed 1..{spec.max_batch_size}"
                )
            if rows is not None and batch != rows:
                raise RequestError(f"input '{tensor.name}' has {batch} rows; other inputs have {rows}")
            rows = batch
            shape = shape[1:]
        if not _dims_match(shape, tensor.model_dims):
            expected = (
                f"[batch, {_dims(tensor.model_dims)}]" if spec.batched else f"[{_dims(tensor.model_dims)}]"
            )
            full = list(array.shape)
            raise RequestError(f"input '{tensor.name}' has shape {full}; expected {expected}")
    return rows if rows is not None else 1


def _check_dtype(tensor: TensorSpec, array: np.ndarray) -> None:
    if tensor.dtype == np.object_:
        ok = array.dtype == np.object_ or array.dtype.kind in "SU"
    else:
        ok = array.dtype == tensor.dtype
    if not ok:
        raise RequestError(f"input '{tensor.name}' has dtype {array.dtype}; expected {tensor.triton_dtype}")


def _dims(dims: Sequence[int]) -> str:
    return ", ".join("-1" if d < 0 else str(d) for d in dims)


def _dims_match(shape: Sequence[int], dims: Sequence[int]) -> bool:
    return len(shape) == len(dims) and all(d < 0 or d == s for s, d in zip(shape, dims, strict=True))


def group_by_shape(requests: Sequence[Arrays]) -> list[list[int]]:
    """Group request indices whose inputs can be concatenated (same shapes past the batch axis)."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, arrays in enumerate(requests):
        key = tuple(sorted((name, array.shape[1:], array.dtype.str) for name, array in arrays.items()))
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def concatenate(requests: Sequence[Arrays]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Join the requests' arrays row-wise; return the batch and each request's row count."""
    rows = [len(next(iter(arrays.values()))) for arrays in requests]
    names = requests[0].keys()
    batch = {name: np.concatenate([arrays[name] for arrays in requests], axis=0) for name in names}
    return batch, rows


def split_rows(outputs: Arrays, rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Split batched outputs back into per-request outputs.

    Raises:
        RuntimeError: an output does not have exactly as many rows as the requests together.
    """
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise RuntimeError(f"output '{name}' has shape {list(array.shape)}; expected {total} rows")
    offsets = np.cumsum([0, *rows])
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True)
    ]
