"""Benchmark copies of the model repository: a subset of models, batching on or off, networks swapped.

The project's ``model_repository/`` is never written; every variant is a fresh folder whose configs
are edited as protobuf messages. With batching off, ``dynamic_batching`` (and the queue policy inside
it) is removed from every config while
``max_batch_size`` is kept, so Triton runs each request as its own execution: the same model with only
the batcher taken away.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from genserve.benchmarks.models import REPOSITORY, Network
from genserve.benchmarks.pbtxt import read_config, tensor, write_config
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
        if not batching:
            path = target / model / "config.pbtxt"
            config = read_config(path)
            config.ClearField("dynamic_batching")
            write_config(path, config, "dynamic_batching removed for the batching-off benchmark")
    if network is not None:
        _swap_network(target, endpoint, network)
    return target


def _swap_network(target: Path, endpoint: str, network: Network) -> None:
    inner = ENDPOINT_MODELS[endpoint][1]
    version = target / inner / "1"
    for old in version.glob("*.onnx*"):
        old.unlink()
    shutil.copy(network.path, version / MODEL_FILENAME)
    if endpoint != GAN_MODEL:
        return  # the small UNet has the default UNet's shapes
    c, h, w = network.image_shape
    path = target / inner / "config.pbtxt"
    config = read_config(path)
    tensor(config, "z").dims[:] = [network.latent_dim]
    tensor(config, "image").dims[:] = [c, h, w]
    for warmup in config.model_warmup:  # warm-up requests must take the new latent size too
        if "z" in warmup.inputs:
            warmup.inputs["z"].dims[:] = [network.latent_dim]
    write_config(path, config, f"{inner} swapped for the {network.key} network")
    path = target / GAN_MODEL / "config.pbtxt"
    config = read_config(path)
    tensor(config, "image").dims[:] = [h, w, c]
    write_config(path, config, f"serving the {network.key} network")
    from genserve.export.gan_graph import write_gan_endpoint  # onnx only, no torch

    write_gan_endpoint(version / MODEL_FILENAME, target / GAN_MODEL / "1" / MODEL_FILENAME)
