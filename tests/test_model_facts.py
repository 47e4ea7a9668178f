"""Exported models say what they are; the configs beside them must agree, and nobody copies the facts."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import onnx
import pytest

from genserve.benchmarks.pbtxt import read_config, tensor, write_config
from genserve.client.contract import NUM_CLASSES
from genserve.export.checkpoint import read_checkpoint, weights_path
from genserve.server.model_facts import ModelFactsError, network_facts, read_facts, read_onnx_metadata
from genserve.server.model_names import DIFFUSION_UNET, GAN_GENERATOR, MODEL_FILENAME, STYLE_NETWORK
from genserve.server.paths import MODEL_REPOSITORY

NETWORKS = (GAN_GENERATOR, DIFFUSION_UNET, STYLE_NETWORK)


def disagreements(repository: Path) -> list[str]:
    """Where a config in ``repository`` says something else than the network it serves or calls."""
    gan_facts = read_facts(repository / GAN_GENERATOR / "1" / MODEL_FILENAME)
    unet_facts = read_facts(repository / DIFFUSION_UNET / "1" / MODEL_FILENAME)
    c, h, w = gan_facts["image_shape"]
    uc, uh, uw = unet_facts["image_shape"]
    generator, gan = (
        read_config(repository / GAN_GENERATOR / "config.pbtxt"),
        read_config(repository / "gan/config.pbtxt"),
    )
    unet, diffusion = (
        read_config(repository / name / "config.pbtxt") for name in (DIFFUSION_UNET, "diffusion")
    )
    claims = {
        "gan_generator z": (list(tensor(generator, "z").dims), [gan_facts["latent_dim"]]),
        "gan_generator image": (list(tensor(generator, "image").dims), [c, h, w]),
        "gan image": (list(tensor(gan, "image").dims), [h, w, c]),
        "diffusion_unet x": (list(tensor(unet, "x").dims), [uc, uh, uw]),
        "diffusion_unet eps": (list(tensor(unet, "eps").dims), [uc, uh, uw]),
        "diffusion image": (list(tensor(diffusion, "image").dims)[1:], [uh, uw, uc]),
    }
    return [
        f"{what}: config {said} != model {known}" for what, (said, known) in claims.items() if said != known
    ]


@pytest.mark.parametrize("network", NETWORKS)
def test_metadata_reader_agrees_with_onnx(network):
    path = MODEL_REPOSITORY / network / "1" / MODEL_FILENAME
    expected = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert read_onnx_metadata(path) == expected
    assert read_facts(path), f"{path} says nothing about itself; re-export it"


def test_configs_agree_with_their_models():
    assert disagreements(MODEL_REPOSITORY) == []


def test_a_config_that_disagrees_is_caught(tmp_path):
    for name in (GAN_GENERATOR, "gan", DIFFUSION_UNET, "diffusion"):
        shutil.copytree(MODEL_REPOSITORY / name, tmp_path / name, ignore=shutil.ignore_patterns("*.onnx"))
    for network in (GAN_GENERATOR, DIFFUSION_UNET):
        shutil.copy(MODEL_REPOSITORY / network / "1" / MODEL_FILENAME, tmp_path / network / "1")
    config = read_config(tmp_path / "gan" / "config.pbtxt")
    tensor(config, "image").dims[:] = [64, 64, 3]
    write_config(tmp_path / "gan" / "config.pbtxt", config)
    assert disagreements(tmp_path) == ["gan image: config [64, 64, 3] != model [32, 32, 1]"]


def test_facts_are_the_checkpoints_own():
    gan_config, _ = read_checkpoint(weights_path("gan"), "gan")
    diffusion_config, _ = read_checkpoint(weights_path("diffusion"), "diffusion")
    gan_facts = read_facts(MODEL_REPOSITORY / GAN_GENERATOR / "1" / MODEL_FILENAME)
    unet_facts = read_facts(MODEL_REPOSITORY / DIFFUSION_UNET / "1" / MODEL_FILENAME)
    assert gan_facts["latent_dim"] == gan_config["latent_dim"]
    assert gan_facts["num_classes"] == unet_facts["num_classes"] == NUM_CLASSES
    assert unet_facts["schedule"] == diffusion_config["schedule"]


@pytest.mark.parametrize(
    "path", sorted(MODEL_REPOSITORY.glob("**/*.pbtxt")), ids=lambda p: str(p.parent.name)
)
def test_no_config_copies_a_model_fact(path):
    text = path.read_text()
    for fact in ("num_train_timesteps", "beta_", "latent_dim", "image_shape"):
        assert not re.search(rf'key: "{fact}', text), f"{path}: {fact} is the model's to say"


def test_a_model_without_facts_is_a_clear_error(tmp_path):
    (tmp_path / "net" / "1").mkdir(parents=True)
    (tmp_path / "net" / "1" / MODEL_FILENAME).write_bytes(onnx.ModelProto().SerializeToString())
    with pytest.raises(ModelFactsError, match="does not say its latent_dim; re-export it"):
        network_facts(tmp_path / "gan", "net", "latent_dim")
    with pytest.raises(ModelFactsError, match="no version with a model.onnx"):
        network_facts(tmp_path / "gan", "missing", "latent_dim")
