"""What this client sends to and reads from each endpoint, and the check against the server's metadata.

A server built from another genserve version may take other tensors; the check turns what would be
an obscure failure at the first call into one clear :class:`SignatureMismatchError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genserve.client import contract
from genserve.client.errors import SignatureMismatchError


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as the client expects the server's metadata to list it.

    Attributes:
        name: Tensor name.
        datatype: Triton datatype (``INT64``, ``UINT8``, ``BYTES``, ...).
        shape: Dims including the batch dim; ``-1`` accepts any size the server declares.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> str:
        """``NAME DATATYPE [dims]``."""
        return f"'{self.name}' {self.datatype} {list(self.shape)}"


@dataclass(frozen=True)
class Signature:
    """The inputs the client may send and the outputs it reads, for one endpoint."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


SIGNATURES: dict[str, Signature] = {
    contract.GAN_MODEL: Signature(
        inputs=(TensorSpec("seed", "INT64", (-1, 1)), TensorSpec("label", "INT64", (-1, 1))),
        outputs=(TensorSpec("image", "UINT8", (-1, -1, -1, -1)),),
    ),
    contract.STYLE_MODEL: Signature(
        inputs=(
            TensorSpec("content", "BYTES", (-1, 1)),
            TensorSpec("content_pixels", "UINT8", (-1, -1, -1, 3)),
            TensorSpec("style", "BYTES", (-1, 1)),
            TensorSpec("style_pixels", "UINT8", (-1, -1, -1, 3)),
            TensorSpec("alpha", "FP32", (-1, 1)),
            TensorSpec("size", "INT32", (-1, 1)),
        ),
        outputs=(TensorSpec("image", "UINT8", (-1, -1, -1, 3)),),
    ),
    contract.DIFFUSION_MODEL: Signature(
        inputs=(
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("seed", "INT64", (-1,)),
            TensorSpec("steps", "INT32", (1,)),
            TensorSpec("guidance", "FP32", (1,)),
            TensorSpec("eta", "FP32", (1,)),
            TensorSpec("preview_every", "INT32", (1,)),
        ),
        outputs=(TensorSpec("image", "UINT8", (-1, -1, -1, -1)), TensorSpec("step", "INT32", (1,))),
    ),
}


def _matches(expected: TensorSpec, datatype: str, shape: Sequence[int]) -> bool:
    if datatype != expected.datatype or len(shape) != len(expected.shape):
        return False
    return all(want in (-1, got) for want, got in zip(expected.shape, shape, strict=True))


def check_signature(model: str, metadata: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Compare a model's metadata (Triton's JSON form) with what the client expects.

    Args:
        model: Endpoint name (a key of :data:`SIGNATURES`).
        metadata: ``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``.

    Returns:
        The server's output shapes by name (``-1`` where variable).

    Raises:
        SignatureMismatchError: listing every difference.
    """
    expected = SIGNATURES[model]
    problems = []
    declared = {
        kind: {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in metadata.get(kind, [])}
        for kind in ("inputs", "outputs")
    }
    for kind, specs in (("inputs", expected.inputs), ("outputs", expected.outputs)):
        for spec in specs:
            found = declared[kind].get(spec.name)
            if found is None:
                problems.append(f"{kind[:-1]} {spec.describe()} is missing on the server")
            elif not _matches(spec, *found):
                problems.append(
                    f"{kind[:-1]} '{spec.name}' is {found[0]} {found[1]} on the server; "
                    f"this client expects {spec.datatype} {list(spec.shape)}"
                )
    if problems:
        raise SignatureMismatchError(
            "the server's model does not match this client: "
            + "; ".join(problems)
            + ". Client and server come from different genserve versions; use matching versions",
            model=model,
        )
    return output_shapes(metadata)


def output_shapes(metadata: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """A model's output dims by name, from its metadata, without checking them."""
    return {t["name"]: tuple(int(d) for d in t["shape"]) for t in metadata.get("outputs", [])}


@dataclass(frozen=True)
class ModelInfo:
    """One version of a model in the server's repository.

    Attributes:
        name: Model name.
        version: Version, as Triton spells it (``"1"``); empty for a model that has none loaded.
        state: ``READY``, ``UNAVAILABLE``, ``LOADING``, ...
        reason: Why it is not ready, if Triton says.
    """

    name: str
    version: str
    state: str
    reason: str = ""

    @property
    def ready(self) -> bool:
        """Whether this version serves requests."""
        return self.state == "READY"


def model_infos(index: Sequence[Mapping[str, Any]]) -> list[ModelInfo]:
    """Triton's repository index as :class:`ModelInfo` rows, sorted by name and version."""
    rows = [
        ModelInfo(
            str(entry.get("name", "")),
            str(entry.get("version", "")),
            str(entry.get("state", "")),
            str(entry.get("reason", "")),
        )
        for entry in index
    ]
    return sorted(rows, key=lambda row: (row.name, row.version.zfill(12)))
