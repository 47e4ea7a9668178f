"""Where the project's model repository lies: the one default every command and test starts from."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The source tree's root (the folder that holds ``server/``, ``client/``, ``model_repository/``)."""

MODEL_REPOSITORY = PROJECT_ROOT / "model_repository"
"""The Triton model repository: committed configs, model files written by ``genserve export``."""
