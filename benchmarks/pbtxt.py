"""Triton model configs read and written as protobuf messages (``config.pbtxt`` text format).

Benchmarks change a copy's batching or shapes by editing the message, not the text, so a field
that moved or a comment in the way cannot make an edit miss or land in the wrong place.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig


def read_config(path: Path) -> ModelConfig:
    """Parse a ``config.pbtxt``."""
    config = ModelConfig()
    text_format.Parse(Path(path).read_text(), config)
    return config


def write_config(path: Path, config: ModelConfig, comment: str = "") -> None:
    """Write ``config`` as ``config.pbtxt`` text, with ``comment`` as a first line if given."""
    header = f"# {comment}\n" if comment else ""
    Path(path).write_text(header + text_format.MessageToString(config))


def tensor(config: ModelConfig, name: str):  # noqa: ANN201 - a ModelInput or ModelOutput
    """The input or output called ``name``.

    Raises:
        KeyError: If the config has no such tensor.
    """
    for entry in [*config.input, *config.output]:
        if entry.name == name:
            return entry
    raise KeyError(f"model {config.name!r} has no tensor {name!r}")
