"""Every config in model_repository/ is what NVIDIA's container reads unchanged.

ONNX models must suit Triton's native ONNX Runtime backend (platform, file names, tensor names, dtypes,
dims, batch dimension, known parameters only); Python models must import nothing the container lacks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from genserve.client.contract import ENDPOINTS

from conftest import REPOSITORY

# Parameters Triton's native ONNX Runtime backend reads; anything else would be embedded-only.
NATIVE_ONNXRUNTIME_PARAMETERS = {
    "intra_op_thread_count",
    "inter_op_thread_count",
    "execution_mode",
    "enable_mem_arena",
    "enable_mem_pattern",
    "memory.enable_memory_arena_shrinkage",
    "session.use_device_allocator_for_initializers",
    "cudnn_conv_algo_search",
}
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
}
PYTHON_IMPORTS_ALLOWED = {
    "numpy",
    "PIL",
    "triton_python_backend_utils",
    "json",
    "asyncio",
    "typing",
    "__future__",
}

# The default configs, and the alternatives picked by `tritonserver --model-config-name=<name>`.
CONFIG_PATHS = sorted([*REPOSITORY.glob("*/config.pbtxt"), *REPOSITORY.glob("*/configs/*.pbtxt")])


def model_folder(path: Path) -> Path:
    return path.parent if path.name == "config.pbtxt" else path.parent.parent


def config_id(path: Path) -> str:
    return f"{model_folder(path).name}:{path.stem}"


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    # Strict parse: an unknown or misspelt field fails here, as it would in Triton.
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_has_the_endpoints_and_their_networks():
    names = {model_folder(path).name for path in CONFIG_PATHS}
    assert set(ENDPOINTS) <= names
    assert {"gan_generator", "diffusion_unet", "style_network"} <= names


@pytest.mark.parametrize("path", CONFIG_PATHS, ids=config_id)
def test_config_names_its_folder_and_has_a_version(path):
    config = load_config(path)
    assert config.name == model_folder(path).name
    assert (model_folder(path) / "1").is_dir()


@pytest.mark.parametrize("path", [p for p in CONFIG_PATHS if p.name != "config.pbtxt"], ids=config_id)
def test_alternative_configs_keep_the_default_signature(path):
    default = load_config(model_folder(path) / "config.pbtxt")
    alternative = load_config(path)
    for field in ("platform", "backend", "max_batch_size", "input", "output", "model_transaction_policy"):
        assert getattr(alternative, field) == getattr(default, field), field


ONNX_CONFIGS = [p for p in CONFIG_PATHS if load_config(p).platform == "onnxruntime_onnx"]


@pytest.mark.parametrize("path", ONNX_CONFIGS, ids=config_id)
def test_onnx_config_matches_its_model(path):
    config = load_config(path)
    assert not config.backend or config.backend == "onnxruntime"
    unknown = set(config.parameters) - NATIVE_ONNXRUNTIME_PARAMETERS
    assert not unknown, f"parameters the native ONNX Runtime backend does not know: {unknown}"
    model_file = model_folder(path) / "1" / (config.default_model_filename or "model.onnx")
    assert model_file.exists(), f"{model_file} missing: run `genserve export`"
    model = onnx.load(str(model_file), load_external_data=False)
    graph_io = {"input": model.graph.input, "output": model.graph.output}
    for kind, tensors in (("input", config.input), ("output", config.output)):
        onnx_tensors = {t.name: t for t in graph_io[kind]}
        assert {t.name for t in tensors} == set(onnx_tensors), kind
        for tensor in tensors:
            onnx_type = onnx_tensors[tensor.name].type.tensor_type
            assert model_config_pb2.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[onnx_type.elem_type]
            onnx_dims = [d.dim_value if d.dim_value else -1 for d in onnx_type.shape.dim]
            dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            if config.max_batch_size > 0:
                assert onnx_dims[0] == -1, f"{tensor.name}: the ONNX batch dimension must be dynamic"
                onnx_dims = onnx_dims[1:]
            assert len(onnx_dims) == len(dims), tensor.name
            for onnx_dim, dim in zip(onnx_dims, dims, strict=True):
                assert onnx_dim == dim or onnx_dim == -1, f"{tensor.name}: config {dims} vs ONNX {onnx_dims}"


PYTHON_MODELS = sorted(REPOSITORY.glob("*/1/model.py"))


@pytest.mark.parametrize("path", PYTHON_MODELS, ids=lambda p: p.parent.parent.name)
def test_python_models_import_only_what_the_container_has(path):
    assert load_config(path.parent.parent / "config.pbtxt").backend == "python"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            top = module.split(".")[0]
            allowed = top in PYTHON_IMPORTS_ALLOWED or module.startswith(
                ("genserve.server", "genserve.client")
            )
            assert allowed, f"{path}: imports {module}"


def test_serving_code_never_imports_torch_or_export():
    server_dir = Path(__file__).resolve().parents[1] / "server"
    for path in server_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    assert not name.startswith(("torch", "genserve.export")), f"{path.name} imports {name}"
