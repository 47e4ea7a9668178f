"""ONNX export of tiny GAN and UNet configurations, the export CLI's errors and --if-missing."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from genserve.export import cli, diffusion, gan, onnx_export
from genserve.export.checkpoint import save_checkpoint
from genserve.server.ddim import DDIMSchedule
from genserve.server.model_facts import facts_metadata

ROOT = Path(__file__).resolve().parent.parent
HAS_GPU_TENSORRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
TINY_GAN = gan.GANConfig(width=8, latent_dim=16, embed_dim=8)
TINY_UNET = diffusion.UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4)


def _tiny_generator() -> gan.Generator:
    torch.manual_seed(0)
    generator = gan.Generator(TINY_GAN)
    generator.apply(gan.init_weights)
    return generator.eval()


def _tiny_unet() -> diffusion.UNet:
    torch.manual_seed(0)
    unet = diffusion.UNet(TINY_UNET)
    for p in unet.parameters():
        p.data.normal_(0, 0.1)
    return unet.eval()


def _dims(path: Path) -> dict[str, list]:
    model = onnx.load(str(path))
    return {
        t.name: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]
        for t in list(model.graph.input) + list(model.graph.output)
    }


def test_gan_generator_exports_with_dynamic_batch(tmp_path):
    spec = onnx_export.gan_spec(_tiny_generator())
    rows = onnx_export.export_model(spec, tmp_path / "1", measure=False)
    path = tmp_path / "1" / "model.onnx"
    dims = _dims(path)
    assert dims["z"][1:] == [16] and dims["label"][1:] == [] and dims["image"][1:] == [1, 32, 32]
    assert all(isinstance(d[0], str) for d in dims.values())
    assert onnx.load(str(path)).opset_import[0].version >= 17
    assert rows[0]["max_abs_err"] <= 1e-4 * rows[0]["quality"]["output_scale"]
    session = onnx_export.ort_session(path)
    for batch in (1, 3, 5):
        z = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
        label = np.arange(batch, dtype=np.int64) % 10
        with torch.no_grad():
            want = spec.module(torch.from_numpy(z), torch.from_numpy(label)).numpy()
        got = session.run(None, {"z": z, "label": label})[0]
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_unet_exports_and_serves_the_sampler(tmp_path):
    unet = _tiny_unet()
    schedule = DDIMSchedule()
    spec = onnx_export.unet_spec(unet, schedule)
    onnx_export.export_model(spec, tmp_path / "1", measure=False)
    path = tmp_path / "1" / "model.onnx"
    dims = _dims(path)
    assert (
        dims["x"][1:] == [1, 32, 32]
        and dims["t"][1:] == []
        and dims["y"][1:] == []
        and dims["eps"][1:] == [1, 32, 32]
    )
    ort_eps = onnx_export.ort_fn(onnx_export.ort_session(path), spec.input_names)
    from genserve.export.sampling import diffusion_samples, torch_fn

    labels, seeds = np.array([0, 4, 10]), np.array([1, 2, 3])
    a = diffusion_samples(torch_fn(unet), schedule, labels, seeds, steps=4, guidance=2.0)
    b = diffusion_samples(ort_eps, schedule, labels, seeds, steps=4, guidance=2.0)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_variants_are_built_checked_and_reported(tmp_path):
    from genserve.export.classifier import ClassifierConfig, DigitClassifier

    classifier = DigitClassifier(ClassifierConfig(width=4, features=8)).eval()
    spec = onnx_export.gan_spec(_tiny_generator(), per_label=2, classifier=classifier)
    rows = onnx_export.export_model(spec, tmp_path / "1", variants=("ortopt", "fp16", "tensorrt"))
    by_variant = {r["variant"]: r for r in rows}
    assert set(by_variant) == {"fp32", "ortopt", "fp16", "tensorrt"}
    for name in ("fp32", "ortopt"):
        row = by_variant[name]
        assert (
            row["quality"]["within_tolerance"]
            and row["images_per_s_best"] > 0
            and row["torch_images_per_s_batch1"] > 0
        )
        assert "accuracy" in row["quality"]
    assert (tmp_path / "1" / "model.ortopt.onnx").is_file()
    if not HAS_GPU_TENSORRT:
        assert by_variant["tensorrt"]["quality"]["note"].startswith("skipped: ")
    md, js = cli.write_report(rows, tmp_path / "report")
    assert "| gan_generator | ortopt | yes |" in md.read_text()
    assert len(json.loads(js.read_text())["rows"]) == 4


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genserve.cli", "export", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_unknown_model_is_a_usage_error():
    result = _cli("--models", "vae")
    assert result.returncode == 2
    assert "unknown model 'vae'; allowed: gan, diffusion, style" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_and_wrong_weights_are_one_line_errors(tmp_path):
    result = _cli("--models", "gan", "--weights-dir", str(tmp_path), "--repository", str(tmp_path / "repo"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    missing = tmp_path / "gan.safetensors"
    assert result.stderr.strip().splitlines() == [
        f"genserve export: weights not found: {missing} (train them with `genserve train gan`)"
    ]
    save_checkpoint(tmp_path / "diffusion.safetensors", "gan", TINY_GAN.to_dict(), gan.Generator(TINY_GAN))
    result = _cli(
        "--models", "diffusion", "--weights-dir", str(tmp_path), "--repository", str(tmp_path / "repo")
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "holds a gan checkpoint, expected diffusion" in result.stderr


def test_if_missing_is_cheap_when_models_are_newer_than_weights(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    for family in cli.MODELS:
        (weights / f"{family}.safetensors").write_bytes(b"x")
    for name in [*cli.MODELS.values(), *cli.ENDPOINT_GRAPHS.values()]:
        folder = tmp_path / "repo" / name / "1"
        folder.mkdir(parents=True)
        model = onnx.ModelProto()
        onnx.helper.set_model_props(model, facts_metadata({"network": name}))
        (folder / "model.onnx").write_bytes(model.SerializeToString())
    assert cli.stale_models(list(cli.MODELS), tmp_path / "repo", weights) == []
    argv = ["--if-missing", "--repository", str(tmp_path / "repo"), "--weights-dir", str(weights)]
    code = f"import sys; from genserve.export.cli import main; assert main({argv!r}) == 0;"
    code += " assert 'torch' not in sys.modules"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout and time.perf_counter() - start < 10
    future = time.time() + 10
    os.utime(weights / "gan.safetensors", (future, future))
    assert cli.stale_models(list(cli.MODELS), tmp_path / "repo", weights) == ["gan"]
    os.utime(weights / "gan.safetensors", (0, 0))
    (tmp_path / "repo" / cli.ENDPOINT_GRAPHS["gan"] / "1" / "model.onnx").unlink()
    assert cli.stale_models(list(cli.MODELS), tmp_path / "repo", weights) == ["gan"]  # the endpoint graph
    (tmp_path / "repo" / "style_network" / "1" / "model.onnx").write_bytes(
        onnx.ModelProto().SerializeToString()
    )
    assert cli.stale_models(["style"], tmp_path / "repo", weights) == ["style"]  # an export without facts


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU_TENSORRT, reason="needs tensorrt and a CUDA GPU")
def test_tensorrt_plan_builds(tmp_path):  # pragma: no cover - GPU hosts only
    spec = onnx_export.gan_spec(_tiny_generator())
    fp32 = onnx_export.export_onnx(spec, tmp_path / "model.onnx")
    fp16 = onnx_export.convert_fp16(fp32, tmp_path / "model.fp16.onnx")
    plan = onnx_export.build_tensorrt_plan(spec, fp32, fp16, tmp_path / "model.plan")
    assert plan.stat().st_size > 0
