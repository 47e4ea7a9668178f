"""The typed contract and every endpoint's config.pbtxt say the same thing (parsed with protobuf)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from genserve.client import contract
from genserve.server.paths import MODEL_REPOSITORY


def load(name: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((MODEL_REPOSITORY / name / "config.pbtxt").read_text(), config)
    return config


def config_datatype(tensor) -> str:  # noqa: ANN001 - a ModelInput or ModelOutput
    name = model_config_pb2.DataType.Name(tensor.data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def differences(tensors: tuple[contract.Tensor, ...], declared, kind: str) -> list[str]:  # noqa: ANN001
    problems = []
    by_name = {tensor.name: tensor for tensor in declared}
    if list(by_name) != [tensor.name for tensor in tensors]:
        problems.append(f"{kind} names {list(by_name)} != contract {[t.name for t in tensors]}")
    for tensor in tensors:
        found = by_name.get(tensor.name)
        if found is None:
            continue
        dims = tuple(found.dims)
        if config_datatype(found) != tensor.datatype:
            problems.append(f"{kind} {tensor.name}: {config_datatype(found)} != {tensor.datatype}")
        if len(dims) != len(tensor.dims) or any(
            want not in (-1, got) for want, got in zip(tensor.dims, dims, strict=True)
        ):
            problems.append(f"{kind} {tensor.name}: dims {list(dims)} != contract {list(tensor.dims)}")
        if kind == "input" and found.optional != tensor.optional:
            problems.append(f"input {tensor.name}: optional {found.optional} != contract {tensor.optional}")
    return problems


@pytest.mark.parametrize("name", sorted(contract.CONTRACT))
def test_config_matches_the_contract(name):
    endpoint = contract.CONTRACT[name]
    config = load(name)
    problems = differences(endpoint.inputs, config.input, "input")
    problems += differences(endpoint.outputs, config.output, "output")
    if config.max_batch_size != endpoint.max_batch_size:
        problems.append(f"max_batch_size {config.max_batch_size} != contract {endpoint.max_batch_size}")
    if config.model_transaction_policy.decoupled != endpoint.decoupled:
        problems.append(f"decoupled {config.model_transaction_policy.decoupled} != contract")
    assert not problems, f"{name}/config.pbtxt differs from client/contract.py: " + "; ".join(problems)


def test_a_changed_config_is_caught():
    config = load(contract.GAN_MODEL)
    config.input[0].data_type = model_config_pb2.TYPE_INT32
    config.output[0].dims[:] = [32, 32]
    problems = differences(contract.GAN.inputs, config.input, "input")
    problems += differences(contract.GAN.outputs, config.output, "output")
    assert problems == ["input seed: INT32 != INT64", "output image: dims [32, 32] != contract [-1, -1, -1]"]


def test_every_endpoint_is_described():
    assert tuple(contract.CONTRACT) == contract.ENDPOINTS


def test_client_and_server_share_one_message_per_check():
    # The client raises the contract's own ValueError text; the server's pipelines call the same code.
    with pytest.raises(ValueError, match=r"size=300 is not allowed; allowed sizes \[256, 512\]"):
        contract.STYLE.input("size").check_choice(300)
    with pytest.raises(ValueError, match=r"label has 17 values; allowed 1\.\.16 images per request"):
        contract.DIFFUSION.check_images(17)
    with pytest.raises(ValueError, match="content: image is 4x100; each side must be at least 8"):
        contract.check_image_size(4, 100, "content")
