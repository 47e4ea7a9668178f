"""What an exported model says about itself: facts that ``genserve export`` writes into the ONNX file.

The latent size, image shape, label count and noise schedule belong to the trained network, so they
travel in its ONNX ``metadata_props`` (keys ``genserve.<fact>``) instead of being copied by hand into a
config. The Python pipelines read them at ``initialize``. Reading needs neither ``onnx`` nor ONNX
Runtime (NVIDIA's container runs the pipelines without them): the file's top-level protobuf fields are
scanned and the graph is skipped unread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genserve.server.model_names import MODEL_FILENAME

PREFIX = "genserve."
"""Metadata keys genserve owns start with this."""

_METADATA_PROPS = 14  # ModelProto.metadata_props (repeated StringStringEntryProto {key = 1; value = 2})
_LENGTH_DELIMITED = 2


class ModelFactsError(ValueError):
    """A model file is missing, unreadable, or carries none of the facts a pipeline needs."""


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _fields(data: memoryview) -> list[tuple[int, memoryview]]:
    """The length-delimited fields of one protobuf message, as ``(number, bytes)``; others skipped."""
    fields, position = [], 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == _LENGTH_DELIMITED:
            size, position = _varint(data, position)
            fields.append((number, data[position : position + size]))
            position += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return fields


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` as a dict.

    Raises:
        ModelFactsError: If the file is missing or is not a protobuf message.
    """
    try:
        data = memoryview(Path(path).read_bytes())
        metadata = {}
        for number, entry in _fields(data):
            if number == _METADATA_PROPS:
                parts = dict(_fields(entry))
                metadata[bytes(parts.get(1, b"")).decode()] = bytes(parts.get(2, b"")).decode()
        return metadata
    except OSError as error:
        raise ModelFactsError(f"cannot read {path}: {error.strerror}") from None
    except (IndexError, ValueError, UnicodeDecodeError) as error:
        raise ModelFactsError(f"{path} is not an ONNX model: {error}") from None


def facts_metadata(facts: Mapping[str, Any]) -> dict[str, str]:
    """Facts as ONNX metadata entries: ``genserve.<name>`` -> JSON text."""
    return {PREFIX + name: json.dumps(value, sort_keys=True) for name, value in facts.items()}


def read_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The genserve facts of an ONNX file, decoded (``{}`` if it has none)."""
    return {
        key.removeprefix(PREFIX): json.loads(value)
        for key, value in read_onnx_metadata(path).items()
        if key.startswith(PREFIX)
    }


def network_facts(pipeline_folder: str | os.PathLike[str], network: str, *needed: str) -> dict[str, Any]:
    """The facts of ``network``, the ONNX model a pipeline calls, from the repository they share.

    Args:
        pipeline_folder: The pipeline's own model folder (Triton's ``args["model_repository"]``).
        network: Name of the ONNX model beside it.
        needed: Facts that must be there.

    Raises:
        ModelFactsError: naming the file and the missing facts (an export from before facts existed).
    """
    folder = Path(pipeline_folder).parent / network
    versions = sorted(
        (int(p.name) for p in folder.glob("*") if p.name.isdigit() and (p / MODEL_FILENAME).is_file()),
        reverse=True,
    )
    if not versions:
        raise ModelFactsError(f"{folder} has no version with a {MODEL_FILENAME}; run `genserve export`")
    path = folder / str(versions[0]) / MODEL_FILENAME
    facts = read_facts(path)
    missing = [name for name in needed if name not in facts]
    if missing:
        raise ModelFactsError(
            f"{path} does not say its {', '.join(missing)}; re-export it (`genserve export --if-missing`)"
        )
    return facts


def check_image_output(config: Mapping[str, Any], image_shape: tuple[int, int, int]) -> None:
    """Refuse a pipeline config whose ``image`` output dims disagree with the network's ``(C, H, W)``.

    Raises:
        ModelFactsError: naming both shapes.
    """
    channels, height, width = image_shape
    output = next(entry for entry in config["output"] if entry["name"] == "image")
    dims = [int(d) for d in output["dims"]]
    if dims[-3:] != [height, width, channels]:
        raise ModelFactsError(
            f"{config['name']}: output 'image' dims {dims} disagree with the network's image shape "
            f"(C, H, W) = {tuple(image_shape)}"
        )
