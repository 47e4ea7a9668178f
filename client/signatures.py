"""The check of the server's metadata against the contract's endpoints, and the repository index.

A server built from another genserve version may take other tensors; the check turns what would be
an obscure failure at the first call into one clear :class:`SignatureMismatchError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genserve.client import contract
from genserve.client.errors import SignatureMismatchError


def _matches(expected: tuple[int, ...], shape: Sequence[int]) -> bool:
    return len(shape) == len(expected) and all(
        want in (-1, got) for want, got in zip(expected, shape, strict=True)
    )


def check_signature(model: str, metadata: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Compare a model's metadata (Triton's JSON form) with what the client expects.

    Args:
        model: Endpoint name (a key of :data:`genserve.client.contract.CONTRACT`).
        metadata: ``{"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}``.

    Returns:
        The server's output shapes by name (``-1`` where variable).

    Raises:
        SignatureMismatchError: listing every difference.
    """
    endpoint = contract.CONTRACT[model]
    problems = []
    declared = {
        kind: {t["name"]: (t["datatype"], [int(d) for d in t["shape"]]) for t in metadata.get(kind, [])}
        for kind in ("inputs", "outputs")
    }
    for kind, tensors in (("inputs", endpoint.inputs), ("outputs", endpoint.outputs)):
        for tensor in tensors:
            shape = endpoint.shape(tensor)
            found = declared[kind].get(tensor.name)
            if found is None:
                problems.append(
                    f"{kind[:-1]} '{tensor.name}' {tensor.datatype} {list(shape)} is missing on the server"
                )
            elif found[0] != tensor.datatype or not _matches(shape, found[1]):
                problems.append(
                    f"{kind[:-1]} '{tensor.name}' is {found[0]} {found[1]} on the server; "
                    f"this client expects {tensor.datatype} {list(shape)}"
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


def endpoint_infos(metadata: Mapping[str, Mapping[str, Any]]) -> list[ModelInfo]:
    """Rows for the endpoints whose metadata the server gave (it gives it only for loaded models).

    What :meth:`Client.models` lists where the repository index is an admin API.
    """
    rows = [
        ModelInfo(name, str((entry.get("versions") or [""])[-1]), "READY") for name, entry in metadata.items()
    ]
    return sorted(rows, key=lambda row: row.name)


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
