"""Checkpoints as safetensors files that carry their config, plus the JSON model card beside them.

A checkpoint is ``{family, config, weights}``: the family and the config dataclass travel in the
safetensors metadata, so a loader rebuilds the architecture and refuses a file of another family or
shape with one clear error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Where the committed weights and cards live: ``<family>.safetensors`` and ``<family>.json``."""


class CheckpointError(ValueError):
    """A checkpoint is missing, of another family, or does not fit the architecture it names."""


def weights_path(family: str, folder: Path = WEIGHTS_DIR) -> Path:
    """``folder/<family>.safetensors``."""
    return folder / f"{family}.safetensors"


def card_path(family: str, folder: Path = WEIGHTS_DIR) -> Path:
    """``folder/<family>.json``."""
    return folder / f"{family}.json"


def save_checkpoint(path: Path, family: str, config: dict[str, Any], module: nn.Module) -> None:
    """Write ``module``'s state dict with ``family`` and ``config`` in the metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"family": family, "config": json.dumps(config, sort_keys=True)})


def read_checkpoint(path: Path, family: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read ``(config, state_dict)`` from a checkpoint of ``family``.

    Raises:
        CheckpointError: If the file is missing, unreadable, or of another family.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights not found: {path} (train them with `genserve train {family}`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except Exception as error:  # safetensors raises several types for a damaged file
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint: {error}") from None
    found = metadata.get("family")
    if found != family:
        raise CheckpointError(f"{path} holds a {found or 'unknown'} checkpoint, expected {family}")
    return json.loads(metadata.get("config", "{}")), state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """Load ``state`` into ``module`` strictly; a mismatch becomes one :class:`CheckpointError` line."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(f"{path} does not fit {type(module).__name__}: {first}") from None
    return module.eval()


def load_model(
    path: Path | None, family: str, build: Callable[[dict[str, Any]], ModuleT]
) -> tuple[ModuleT, dict[str, Any]]:
    """Rebuild the module a checkpoint of ``family`` describes and load its weights (eval mode).

    Args:
        path: The checkpoint; ``None`` means the committed ``export/weights/<family>.safetensors``.
        family: The family the checkpoint must belong to.
        build: Makes the untrained module from the checkpoint's config; raises ``KeyError``,
            ``TypeError`` or ``ValueError`` on a config it cannot use.

    Returns:
        The module and the checkpoint's config.

    Raises:
        CheckpointError: If the file is missing, of another family, or does not fit its config.
    """
    path = Path(path) if path is not None else weights_path(family)
    config, state = read_checkpoint(path, family)
    try:
        module = build(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has an invalid {family} config: {error}") from None
    return load_into(module, state, path), config


def write_card(path: Path, card: dict[str, Any]) -> None:
    """Write a model card as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")


def read_card(path: Path) -> dict[str, Any]:
    """Read a model card; an empty dict if there is none."""
    return json.loads(path.read_text()) if path.is_file() else {}
