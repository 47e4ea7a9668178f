"""Benchmark copies of the model repository: a subset of models, batching on or off, networks swapped.

The project's ``model_repository/`` is never written; every variant is a fresh folder. With batching
off, ``dynamic_batching`` (and the queue policy inside it) is removed from every config while
``max_batch_size`` is kept, so Triton runs each request as its own execution: the same model with only
the batcher taken away.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from genserve.benchmarks.models import REPOSITORY, Network
from genserve.client.contract import DIFFUSION_MODEL, GAN_MODEL, STYLE_MODEL
from genserve.server.model_names import DIFFUSION_UNET, GAN_GENERATOR, MODEL_FILENAME, STYLE_NETWORK

ENDPOINT_MODELS = {
    GAN_MODEL: (GAN_MODEL, GAN_GENERATOR),
    STYLE_MODEL: (STYLE_MODEL, STYLE_NETWORK),
    DIFFUSION_MODEL: (DIFFUSION_MODEL, DIFFUSION_UNET),
}
"""Endpoint -> the models it needs (the endpoint first, then the network it calls)."""


def build_repository(
    target: Path,
    endpoint: str,
    *,
    batching: bool = True,
    network: Network | None = None,
    source: Path = REPOSITORY,
) -> Path:
    """Write a model repository serving one endpoint into ``target`` (replacing what is there).

    Args:
        target: Folder to write.
        endpoint: ``gan``, ``style_transfer`` or ``diffusion``.
        batching: Keep ``dynamic_batching``; ``False`` removes it from every config.
        network: An ONNX network to serve instead of the repository's own (``dcgan64`` for ``gan``,
            ``unet_small`` for ``diffusion``); configs are adapted to its shapes.
        source: The repository copied from.

    Returns:
        ``target``.
    """
    if endpoint not in ENDPOINT_MODELS:
        raise ValueError(f"endpoint={endpoint!r} is unknown; allowed: {', '.join(ENDPOINT_MODELS)}")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for model in ENDPOINT_MODELS[endpoint]:
        shutil.copytree(source / model, target / model, ignore=shutil.ignore_patterns("__pycache__"))
        config = target / model / "config.pbtxt"
        text = config.read_text()
        if not batching:
            text = without_dynamic_batching(text)
        config.write_text(text)
    if network is not None:
        _swap_network(target, endpoint, network)
    return target


def without_dynamic_batching(config: str) -> str:
    """The config text with its ``dynamic_batching { ... }`` block removed (braces matched)."""
    match = re.search(r"^\s*dynamic_batching\s*\{", config, flags=re.MULTILINE)
    if match is None:
        return config
    depth, end = 0, match.end() - 1
    for end in range(match.end() - 1, len(config)):
        depth += {"{": 1, "}": -1}.get(config[end], 0)
        if depth == 0:
            break
    return (
        config[: match.start()]
        + "\n# dynamic_batching removed for the batching-off benchmark"
        + config[end + 1 :]
    )


def _replace(text: str, pattern: str, replacement: str, what: str) -> str:
    new, count = re.subn(pattern, replacement, text)
    if count == 0:
        raise ValueError(f"benchmark repository: could not adapt {what} (pattern {pattern!r} not found)")
    return new


def _swap_network(target: Path, endpoint: str, network: Network) -> None:
    inner = ENDPOINT_MODELS[endpoint][1]
    version = target / inner / "1"
    for old in version.glob("*.onnx*"):
        old.unlink()
    shutil.copy(network.path, version / MODEL_FILENAME)
    if endpoint != GAN_MODEL:
        return  # the small UNet has the default UNet's shapes
    c, h, w = network.image_shape
    config = target / inner / "config.pbtxt"
    text = config.read_text()
    text = _replace(text, r'("z",[^\n]*dims: \[ )\d+( \])', rf"\g<1>{network.latent_dim}\g<2>", "z dims")
    text = _replace(
        text, r'(name: "image",[^\n]*dims: \[ )[\d, ]+( \])', rf"\g<1>{c}, {h}, {w}\g<2>", "image"
    )
    config.write_text(text)
    config = target / GAN_MODEL / "config.pbtxt"
    text = config.read_text()
    text = _replace(
        text, r'(name: "image",[^\n]*dims: \[ )[\d, ]+( \])', rf"\g<1>{h}, {w}, {c}\g<2>", "image"
    )
    config.write_text(text)
    from genserve.export.gan_graph import write_gan_endpoint  # onnx only, no torch

    write_gan_endpoint(version / MODEL_FILENAME, target / GAN_MODEL / "1" / MODEL_FILENAME)
