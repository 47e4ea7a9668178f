"""Between :class:`InferRequest` and tritonclient's tensor objects, for gRPC and HTTP alike.

tritonclient's gRPC and HTTP modules (and their asyncio twins, which reuse them) share the
``InferInput`` / ``InferRequestedOutput`` / ``InferResult`` interface, so one piece of code serves all.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from genserve.client._requests import InferRequest
from genserve.client.errors import SignatureMismatchError
from genserve.client.shm import Layout, Region, read_output, write_inputs

DATATYPES = {
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.float32): "FP32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.object_): "BYTES",
}
NUMPY_TYPES = {name: dtype for dtype, name in DATATYPES.items()}


def build(
    module: ModuleType,
    request: InferRequest,
    shm: tuple[Region, Layout] | None = None,
) -> tuple[list[Any], list[Any]]:
    """The tritonclient inputs and requested outputs for ``request``; shared-memory ones per ``shm``."""
    inputs = []
    if shm is not None:
        write_inputs(shm[0], shm[1], request)
    for name, array in request.inputs.items():
        tensor = module.InferInput(name, list(array.shape), DATATYPES[array.dtype])
        if shm is not None and name in shm[1].inputs:
            offset, size = shm[1].inputs[name]
            tensor.set_shared_memory(shm[0].name, size, offset)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    outputs = []
    for name in request.outputs:
        output = module.InferRequestedOutput(name)
        if shm is not None and name in shm[1].outputs:
            offset, size = shm[1].outputs[name]
            output.set_shared_memory(shm[0].name, size, offset)
        outputs.append(output)
    return inputs, outputs


def read(
    result: Any, request: InferRequest, shm: tuple[Region, Layout] | None = None
) -> dict[str, np.ndarray]:
    """The requested outputs of a tritonclient ``InferResult`` as numpy arrays (copies)."""
    arrays = {}
    for name in request.outputs:
        if shm is not None and name in shm[1].outputs:
            datatype, shape = _output_header(result, name)
            array = read_output(shm[0], shm[1].outputs[name][0], NUMPY_TYPES[datatype], shape)
        else:
            array = result.as_numpy(name)
        if array is None:
            raise SignatureMismatchError(f"the response has no output '{name}'", model=request.model)
        arrays[name] = array
    return arrays


def _output_header(result: Any, name: str) -> tuple[str, tuple[int, ...]]:
    output = result.get_output(name)
    if output is None:
        raise SignatureMismatchError(f"the response has no output '{name}'")
    if isinstance(output, dict):  # HTTP: the JSON header
        return output["datatype"], tuple(int(d) for d in output["shape"])
    return output.datatype, tuple(int(d) for d in output.shape)  # gRPC: a protobuf message
