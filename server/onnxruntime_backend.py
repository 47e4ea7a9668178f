"""A Python-based Triton backend that runs ``platform: "onnxruntime_onnx"`` models with ONNX Runtime.

The embedded server copies this file to ``<backend-dir>/onnxruntime/model.py``; Triton then uses it
for every model whose config names the ONNX Runtime platform or backend, so the configs stay exactly
those NVIDIA's container reads with its native ONNX Runtime backend.

It honours from the config: tensor names, dtypes and dims (``-1`` allowed), ``max_batch_size``,
``default_model_filename``, the parameters ``intra_op_thread_count``, ``inter_op_thread_count`` and
``execution_mode`` (as the native backend does), and the execution providers: the instance kind
(``KIND_GPU`` asks for CUDA), ``optimization.execution_accelerators`` (``tensorrt``), or an explicit
comma-separated ``execution_providers`` parameter. Providers this ONNX Runtime lacks fall back to CPU.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from genserve.client.contract import Bound
from genserve.server.batching import check_inputs, concatenate, group_by_shape, split_rows
from genserve.server.model_config import ModelSpec
from genserve.server.model_names import INPUT_BOUNDS_METADATA
from genserve.server.triton_glue import error_response, read_inputs

# What ONNX Runtime's Gather says of an index outside its table.
_INDEX_ERROR = "out of data bounds"
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "gpu": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def choose_providers(spec: ModelSpec, device_kind: str, device_id: int) -> list[Any]:
    """Pick ONNX Runtime execution providers from the config; CPU is always the last resort."""
    wanted: list[str] = []
    if spec.parameters.get("execution_providers"):
        for name in spec.parameters["execution_providers"].split(","):
            name = name.strip()
            wanted.append(_PROVIDER_ALIASES.get(name.lower(), name))
    else:
        accelerators = spec.raw.get("optimization", {}).get("execution_accelerators", {})
        if device_kind == "GPU":
            for accelerator in accelerators.get("gpu_execution_accelerator", []):
                wanted.append(_PROVIDER_ALIASES.get(accelerator.get("name", "").lower(), ""))
            wanted.append("CUDAExecutionProvider")
    available = set(ort.get_available_providers())
    chosen: list[Any] = []
    for name in wanted:
        if name and name in available and name not in chosen:
            chosen.append((name, {"device_id": device_id}) if name != "CPUExecutionProvider" else name)
        elif name and name not in available:
            pb_utils.Logger.log_warn(f"{spec.name}: execution provider {name} unavailable, skipped")
    chosen.append("CPUExecutionProvider")
    return chosen


def session_options(spec: ModelSpec) -> ort.SessionOptions:
    """Session options from the config parameters the native backend also reads."""
    options = ort.SessionOptions()
    params = spec.parameters
    if "intra_op_thread_count" in params:
        options.intra_op_num_threads = int(params["intra_op_thread_count"])
    if "inter_op_thread_count" in params:
        options.inter_op_num_threads = int(params["inter_op_thread_count"])
    if params.get("execution_mode") == "1":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    return options


def input_bounds(session: ort.InferenceSession) -> dict[str, Bound]:
    """The per-input value bounds the model carries in its metadata (none for a plain network)."""
    text = session.get_modelmeta().custom_metadata_map.get(INPUT_BOUNDS_METADATA)
    if not text:
        return {}
    return {name: Bound(name, low, high) for name, (low, high) in json.loads(text).items()}


class TritonPythonModel:
    """Runs one ONNX model; batches every request of an execution through one session call."""

    def initialize(self, args: dict[str, str]) -> None:
        self.spec = ModelSpec.from_triton(args["model_config"])
        filename = self.spec.raw.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model file {path} not found")
        providers = choose_providers(
            self.spec, args.get("model_instance_kind", "CPU"), int(args.get("model_instance_device_id", 0))
        )
        self.session = ort.InferenceSession(
            path, sess_options=session_options(self.spec), providers=providers
        )
        self._check_signature()
        self.bounds = input_bounds(self.session)
        self.input_names = [tensor.name for tensor in self.spec.inputs]
        self.output_names = [tensor.name for tensor in self.spec.outputs]
        # No dim of -1 past the batch axis: every valid request of an execution joins one batch.
        self.fixed_shapes = all(d >= 0 for tensor in self.spec.inputs for d in tensor.model_dims)

    def _check_signature(self) -> None:
        model_inputs = {node.name for node in self.session.get_inputs()}
        model_outputs = {node.name for node in self.session.get_outputs()}
        for tensor in self.spec.inputs:
            if tensor.name not in model_inputs:
                raise pb_utils.TritonModelException(
                    f"config input '{tensor.name}' is not an input of the ONNX model {sorted(model_inputs)}"
                )
        for tensor in self.spec.outputs:
            if tensor.name not in model_outputs:
                raise pb_utils.TritonModelException(
                    f"config output '{tensor.name}' is not an output of the ONNX model "
                    f"{sorted(model_outputs)}"
                )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        valid: list[int] = []
        arrays: list[dict[str, np.ndarray]] = []
        names = self.input_names
        for index, request in enumerate(requests):
            inputs = read_inputs(request, names)
            try:
                check_inputs(self.spec, inputs)
            except ValueError as error:
                responses[index] = error_response(str(error))
                continue
            valid.append(index)
            arrays.append({name: array for name, array in inputs.items() if array is not None})
        if self.bounds:
            valid, arrays = self._check_bounds(valid, arrays, responses)

        if not self.spec.batched:
            groups = [[i] for i in range(len(arrays))]
        elif self.fixed_shapes and all(a.keys() == arrays[0].keys() for a in arrays):
            groups = [list(range(len(arrays)))] if arrays else []  # every request fits one batch
        else:
            groups = group_by_shape(arrays)
        for group in groups:
            members = [valid[i] for i in group]
            try:
                if not self.spec.batched:
                    batch, rows = arrays[group[0]], [1]
                elif len(group) == 1:  # nothing to join: the request's own arrays, no copy
                    batch = arrays[group[0]]
                    rows = [len(next(iter(batch.values())))]
                else:
                    batch, rows = concatenate([arrays[i] for i in group])
                results = self.session.run(self.output_names, batch)
                outputs = dict(zip(self.output_names, results, strict=True))
                parts = split_rows(outputs, rows) if self.spec.batched else [outputs]
                for index, part in zip(members, parts, strict=True):
                    responses[index] = self._response(part)
            except Exception as error:  # one failed run fails only its own group
                message, code = self._run_error(error)
                for index in members:
                    responses[index] = error_response(message, code)
        return responses

    def _run_error(self, error: Exception) -> tuple[str, int]:
        """The message and Triton code for a failed run: the caller's fault when ONNX Runtime says so.

        An index outside a table (an embedding's Gather) is ONNX Runtime's INVALID_ARGUMENT: the
        request carried a value the model cannot take, so it names the integer inputs it could be.
        """
        text = str(error)
        if "INVALID_ARGUMENT" in text and _INDEX_ERROR in text:
            names = ", ".join(f"'{t.name}'" for t in self.spec.inputs if np.issubdtype(t.dtype, np.integer))
            return (
                f"{self.spec.name}: a value of input {names} is outside the model's range: {text}",
                pb_utils.TritonError.INVALID_ARG,
            )
        return f"{self.spec.name}: {text}", pb_utils.TritonError.INTERNAL

    def _check_bounds(
        self, valid: list[int], arrays: list[dict[str, np.ndarray]], responses: list[Any]
    ) -> tuple[list[int], list[dict[str, np.ndarray]]]:
        """Check the value bounds once over all requests; only if that fails, find the bad ones."""
        try:
            for name, bound in self.bounds.items():
                present = [a[name] for a in arrays if name in a]
                if present:
                    bound.check(np.concatenate(present) if len(present) > 1 else present[0])
            return valid, arrays
        except ValueError:
            pass
        kept: tuple[list[int], list[dict[str, np.ndarray]]] = ([], [])
        for index, request_arrays in zip(valid, arrays, strict=True):
            try:
                for name, bound in self.bounds.items():
                    if name in request_arrays:
                        bound.check(request_arrays[name])
            except ValueError as error:
                responses[index] = error_response(str(error))
                continue
            kept[0].append(index)
            kept[1].append(request_arrays)
        return kept

    def _response(self, outputs: dict[str, np.ndarray]) -> Any:
        tensors = []
        for tensor in self.spec.outputs:
            array = outputs[tensor.name]
            if array.dtype != tensor.dtype:
                raise RuntimeError(
                    f"output '{tensor.name}' has dtype {array.dtype}; config says {tensor.dtype}"
                )
            tensors.append(pb_utils.Tensor(tensor.name, np.ascontiguousarray(array)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.session = None
