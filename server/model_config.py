"""The parts of a Triton model config that Python models read, as typed values.

Triton hands a Python model its config as JSON (``args["model_config"]``); this module turns it
into :class:`ModelSpec` so the checks in :mod:`genserve.server.batching` stay pure and testable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRITON_DTYPES: dict[str, np.dtype[Any]] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_UINT16": np.dtype(np.uint16),
    "TYPE_UINT32": np.dtype(np.uint32),
    "TYPE_UINT64": np.dtype(np.uint64),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT16": np.dtype(np.int16),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
    "TYPE_STRING": np.dtype(np.object_),
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model config.

    Attributes:
        name: Tensor name.
        dtype: numpy dtype of the tensor (``object`` for ``TYPE_STRING``).
        dims: Shape without the batch dimension, as requests send it; ``-1`` is any size.
        reshape: Shape the model itself sees (config ``reshape``), e.g. ``()`` for a ``[batch]`` input
            that requests send as ``[batch, 1]``; ``None`` when it equals ``dims``. Triton applies it
            before a backend sees the tensor.
        optional: Whether a request may leave the input out.
    """

    name: str
    dtype: np.dtype[Any]
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False

    @property
    def model_dims(self) -> tuple[int, ...]:
        """The shape a backend receives (past the batch axis): ``reshape`` if set, else ``dims``."""
        return self.reshape if self.reshape is not None else self.dims

    @property
    def triton_dtype(self) -> str:
        """The KServe datatype name (``FP32``, ``BYTES``, ...)."""
        name = next(key for key, value in TRITON_DTYPES.items() if value == self.dtype)
        return "BYTES" if name == "TYPE_STRING" else name.removeprefix("TYPE_")


@dataclass(frozen=True)
class ModelSpec:
    """A model config reduced to what serving code checks.

    Attributes:
        name: Model name.
        max_batch_size: Rows per execution; ``0`` means the model has no batch dimension.
        inputs: Input tensors, in config order.
        outputs: Output tensors, in config order.
        parameters: The config's ``parameters`` as plain strings.
        raw: The whole config as Triton gave it.
    """

    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_triton(cls, model_config: str | Mapping[str, Any]) -> ModelSpec:
        """Parse the config JSON that Triton passes to ``initialize``."""
        config = json.loads(model_config) if isinstance(model_config, str) else model_config
        return cls(
            name=config.get("name", ""),
            max_batch_size=int(config.get("max_batch_size", 0)),
            inputs=tuple(_tensor(entry) for entry in config.get("input", [])),
            outputs=tuple(_tensor(entry) for entry in config.get("output", [])),
            parameters={
                key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()
            },
            raw=config,
        )

    @property
    def batched(self) -> bool:
        """Whether tensors carry a leading batch dimension."""
        return self.max_batch_size > 0


def _tensor(entry: Mapping[str, Any]) -> TensorSpec:
    data_type = entry["data_type"]
    if data_type not in TRITON_DTYPES:
        raise ValueError(f"tensor '{entry['name']}': unsupported data_type {data_type}")
    reshape = entry.get("reshape")
    return TensorSpec(
        name=entry["name"],
        dtype=TRITON_DTYPES[data_type],
        dims=tuple(int(d) for d in entry.get("dims", [])),
        reshape=tuple(int(d) for d in reshape.get("shape", [])) if reshape is not None else None,
        optional=bool(entry.get("optional", False)),
    )
