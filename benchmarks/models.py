"""The networks the benchmarks serve and time, as ONNX files with a dynamic batch dimension.

Two of them are benchmark-only (untrained weights; speed does not depend on the weights): the
standard-width 64x64x3 DCGAN generator and the smaller UNet. The others are the model repository's
own ``model.onnx`` files. Exporting needs torch and is done once per folder; later runs reuse the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genserve.client.contract import NUM_CLASSES
from genserve.server.model_names import DIFFUSION_UNET, GAN_GENERATOR, MODEL_FILENAME, STYLE_NETWORK
from genserve.server.paths import MODEL_REPOSITORY

REPOSITORY = MODEL_REPOSITORY
EXAMPLE_BATCH = 2
"""Exported with an example batch of 2 so the exporter never specializes the batch dimension to 1."""


@dataclass(frozen=True)
class Network:
    """One ONNX network the benchmarks time.

    Attributes:
        key: Short name used in tables (``dcgan64``, ``unet``, ``unet_small``, ...).
        path: The ONNX file.
        kind: ``gan``, ``unet`` or ``style``: which inputs it takes.
        max_batch: Largest batch the export profile allows.
        latent_dim: ``z`` size (GAN only).
        image_shape: Output ``(C, H, W)`` (input shape for the UNet).
    """

    key: str
    path: Path
    kind: str
    max_batch: int
    latent_dim: int = 0
    image_shape: tuple[int, int, int] = (1, 32, 32)

    def inputs(self, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of ``batch`` rows, as ONNX Runtime feeds."""
        rng = np.random.default_rng(seed)
        if self.kind == "gan":
            return {
                "z": rng.standard_normal((batch, self.latent_dim)).astype(np.float32),
                "label": rng.integers(0, NUM_CLASSES, batch).astype(np.int64),
            }
        if self.kind == "unet":
            return {
                "x": rng.standard_normal((batch, *self.image_shape)).astype(np.float32),
                "t": rng.integers(0, 1000, batch).astype(np.int64),
                "y": rng.integers(0, NUM_CLASSES + 1, batch).astype(np.int64),
            }
        c, h, w = self.image_shape
        return {
            "content": rng.uniform(-1, 1, (batch, c, h, w)).astype(np.float32),
            "style": rng.uniform(-1, 1, (batch, c, h, w)).astype(np.float32),
            "alpha": np.ones(batch, dtype=np.float32),
        }


def repository_networks(repository: Path = REPOSITORY) -> dict[str, Network]:
    """The model repository's own ONNX networks (digits GAN, UNet, style network at 256)."""
    return {
        "gan_digits": Network(
            "gan_digits", repository / GAN_GENERATOR / "1" / MODEL_FILENAME, "gan", 256, 64
        ),
        "unet": Network("unet", repository / DIFFUSION_UNET / "1" / MODEL_FILENAME, "unet", 64),
        "style256": Network(
            "style256", repository / STYLE_NETWORK / "1" / MODEL_FILENAME, "style", 4, 0, (3, 256, 256)
        ),
    }


def benchmark_networks(folder: Path) -> dict[str, Network]:
    """The benchmark-only networks under ``folder`` (see :func:`export_benchmark_networks`)."""
    return {
        "dcgan64": Network("dcgan64", folder / "gan_dcgan64" / MODEL_FILENAME, "gan", 256, 100, (3, 64, 64)),
        "unet_small": Network("unet_small", folder / "diffusion_unet_small" / MODEL_FILENAME, "unet", 64),
    }


def export_benchmark_networks(folder: Path) -> dict[str, Network]:
    """Export the benchmark-only networks into ``folder`` unless they are there already.

    Needs torch (the ``export`` extra). Weights are seeded and untrained.

    Returns:
        The networks, keyed as in :func:`benchmark_networks`.
    """
    networks = benchmark_networks(folder)
    missing = [n for n in networks.values() if not n.path.exists()]
    if not missing:
        return networks
    import torch

    from genserve.export import diffusion, gan

    torch.manual_seed(0)
    for network in missing:
        if network.kind == "gan":
            module = gan.Generator(gan.DCGAN64)
            module.apply(gan.init_weights)
        else:
            module = diffusion.UNet(diffusion.SMALL)
        _export(module.eval(), network)
    return networks


def torch_module(network: Network):  # noqa: ANN201 - a torch.nn.Module; torch is imported lazily
    """The PyTorch module behind a network (untrained weights: speed only), or ``None`` if unknown."""
    import torch

    from genserve.export import diffusion, gan

    torch.manual_seed(0)
    configs = {
        "dcgan64": lambda: gan.Generator(gan.DCGAN64),
        "gan_digits": lambda: gan.Generator(gan.DIGITS),
        "unet": lambda: diffusion.UNet(diffusion.DEFAULT),
        "unet_small": lambda: diffusion.UNet(diffusion.SMALL),
    }
    build = configs.get(network.key)
    return build().eval() if build is not None else None


def _export(module, network: Network) -> None:  # noqa: ANN001 - torch.nn.Module
    import torch

    network.path.parent.mkdir(parents=True, exist_ok=True)
    names = list(network.inputs(1))
    output = "image" if network.kind == "gan" else "eps"
    example = tuple(torch.from_numpy(a) for a in network.inputs(EXAMPLE_BATCH).values())
    batch = torch.export.Dim("batch", min=1, max=network.max_batch)
    tmp = network.path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        module,
        example,
        str(tmp),
        dynamo=True,
        input_names=names,
        output_names=[output],
        dynamic_shapes={name: {0: batch} for name in names},
        external_data=False,
        verbose=False,
    )
    tmp.replace(network.path)
