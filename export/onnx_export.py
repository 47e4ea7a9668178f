"""ONNX export of the GAN generator and the diffusion UNet, their optimized variants and their checks.

For each model this writes into its model-repository version folder:

- ``model.onnx``: FP32, dynamic batch (exported with an example batch of 2, then run at 1, 3 and the
  maximum batch, since the exporter can silently fix a dimension);
- ``model.ortopt.onnx``: ONNX Runtime's extended-level graph optimizations, saved offline (portable
  fusions; the host-specific layout transforms of the "all" level happen at load time anyway);
- ``model.int8.onnx``: static INT8 (QDQ, per-channel weights), calibrated on real inputs (seeded
  latents; noised training digits), kept only if the digit classifier's accuracy on its samples stays
  within 5 points of FP32's;
- ``model.fp16.onnx``: FP16 inside, FP32 inputs and outputs, for GPU hosts;
- ``model.plan``: a TensorRT plan (FP16, min/opt/max batch profile) where ``tensorrt`` imports and a
  CUDA GPU is present.

Every variant gets a parity figure against PyTorch, a quality figure and images/s at batch 1 and at its
best batch, beside PyTorch eager measured in the same run.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from genserve.client.contract import GAN_MAX_BATCH, NUM_CLASSES, to_uint8
from genserve.export import diffusion, gan
from genserve.export.classifier import DigitClassifier, per_label_accuracy, predict
from genserve.export.sampling import diffusion_samples, evaluation_rows, gan_latents, gan_samples, torch_fn
from genserve.server import ddim, model_facts
from genserve.server.model_names import DIFFUSION_UNET, GAN_GENERATOR, MODEL_FILENAME

OPSET = 18
DIFFUSION_MAX_BATCH = 64
"""The UNet's export profile maximum (rows of one step, guidance doubles a request's rows)."""
PARITY_TOLERANCE = 1e-4
"""FP32 variants must match PyTorch within this fraction of the output scale (max |output|)."""
INT8_ACCURACY_POINTS = 5.0
"""An INT8 variant is kept only if its samples' classifier accuracy is within this many points of FP32's."""
PARITY_BATCHES = (1, 3)
SPEED_BATCHES = (1, 8, 32)
THREADS = 1
"""Intra-op threads of ONNX Runtime and PyTorch in the timings: one each, so figures stay comparable on a
shared host (PyTorch's OpenMP at 2 threads collapsed when other jobs held the cores)."""
QUALITY_STEPS = 25
QUALITY_GUIDANCE = 2.0

Fn = Callable[..., np.ndarray]


@dataclass
class ModelSpec:
    """One exportable network: how to build it, its tensors and its inputs.

    Attributes:
        name: Model-repository name.
        module: The PyTorch module (eval mode).
        input_names: ONNX input names, in ``forward`` order.
        output_name: ONNX output name.
        max_batch: Export profile maximum.
        random_inputs: ``(batch, seed) -> inputs`` for parity and timing.
        calibration_inputs: ``() -> list of inputs`` (real data) for INT8 calibration.
        samples: ``fn -> images`` generated with a numpy function of the network, for quality.
        quantize_ops: Op types the INT8 variant quantizes.
        facts: What the network says about itself, written into the ONNX metadata for the pipelines
            (see :mod:`genserve.server.model_facts`).
    """

    name: str
    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_name: str
    max_batch: int
    random_inputs: Callable[[int, int], tuple[np.ndarray, ...]]
    calibration_inputs: Callable[[], list[tuple[np.ndarray, ...]]] = field(default=list)
    samples: Callable[[Fn], tuple[np.ndarray, np.ndarray]] | None = None
    quantize_ops: tuple[str, ...] = ("Conv",)
    facts: dict[str, Any] = field(default_factory=dict)


# -- the two networks ------------------------------------------------------------------------------
def gan_spec(generator: gan.Generator, name: str = GAN_GENERATOR, per_label: int = 20) -> ModelSpec:
    """The spec of a GAN generator: inputs ``z`` FP32 [B, latent_dim] and ``label`` INT64 [B]."""
    latent = generator.config.latent_dim

    def random_inputs(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        return gan_latents(rng.integers(0, 2**62, batch), latent), rng.integers(0, NUM_CLASSES, batch)

    def calibration() -> list[tuple[np.ndarray, ...]]:
        labels, seeds = evaluation_rows(8, seed_base=5_000_000)
        z = gan_latents(seeds, latent)
        return [(z[i : i + 16], labels[i : i + 16]) for i in range(0, len(labels), 16)]

    def samples(fn: Fn) -> tuple[np.ndarray, np.ndarray]:
        labels, seeds = evaluation_rows(per_label)
        return gan_samples(fn, latent, labels, seeds), labels

    config = generator.config
    return ModelSpec(
        name,
        generator,
        ("z", "label"),
        "image",
        GAN_MAX_BATCH,
        random_inputs,
        calibration,
        samples,
        ("Conv", "ConvTranspose"),
        facts={
            "latent_dim": latent,
            "image_shape": [config.channels, config.image_size, config.image_size],
            "num_classes": config.num_classes,
        },
    )


def unet_spec(
    unet: diffusion.UNet, schedule: ddim.DDIMSchedule, name: str = DIFFUSION_UNET, per_label: int = 10
) -> ModelSpec:
    """The spec of a UNet: inputs ``x`` FP32 [B, C, S, S], ``t`` INT64 [B], ``y`` INT64 [B]."""
    c, s = unet.config.channels, unet.config.image_size
    T = schedule.num_train_timesteps

    def random_inputs(batch: int, seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, c, s, s)).astype(np.float32)
        return x, rng.integers(0, T, batch), rng.integers(0, NUM_CLASSES + 1, batch)

    def calibration() -> list[tuple[np.ndarray, ...]]:
        from genserve.export.data import load_split

        train, _ = load_split()
        rng = np.random.default_rng(3)
        index = rng.choice(len(train), 128, replace=False)
        t = rng.integers(0, T, 128)
        x = schedule.add_noise(train.images[index], rng.standard_normal((128, c, s, s)), t)
        y = np.where(rng.random(128) < 0.5, train.labels[index], NUM_CLASSES)
        return [(x[i : i + 16], t[i : i + 16], y[i : i + 16]) for i in range(0, 128, 16)]

    def samples(fn: Fn) -> tuple[np.ndarray, np.ndarray]:
        labels, seeds = evaluation_rows(per_label)
        images = diffusion_samples(
            fn, schedule, labels, seeds, steps=QUALITY_STEPS, guidance=QUALITY_GUIDANCE
        )
        return images, labels

    facts = {"image_shape": [c, s, s], "num_classes": unet.config.num_classes, "schedule": schedule.to_dict()}
    return ModelSpec(
        name,
        unet,
        ("x", "t", "y"),
        "eps",
        DIFFUSION_MAX_BATCH,
        random_inputs,
        calibration,
        samples,
        facts=facts,
    )


# -- export and variants ---------------------------------------------------------------------------
def export_onnx(spec: ModelSpec, path: Path) -> Path:
    """Export ``spec.module`` to one self-contained ONNX file with a dynamic batch dimension.

    Raises:
        RuntimeError: If the batch dimension came out fixed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch)
    example = tuple(torch.from_numpy(a) for a in spec.random_inputs(2, 0))  # batch 2: never specialized
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module.eval(),
            example,
            str(path),
            dynamo=True,
            input_names=list(spec.input_names),
            output_names=[spec.output_name],
            dynamic_shapes={name: {0: batch} for name in spec.input_names},
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
    Path(str(path) + ".data").unlink(missing_ok=True)  # a stale external-data file from an older export
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for tensor in list(model.graph.input) + list(model.graph.output):
        dim = tensor.type.tensor_type.shape.dim[0]
        if not dim.dim_param:
            raise RuntimeError(f"{path}: {tensor.name} has a fixed batch dimension {dim.dim_value}")
    write_facts(path, spec.facts)
    return path


def write_facts(path: Path, facts: dict[str, Any]) -> None:
    """Record ``facts`` in the ONNX file's metadata (replacing genserve's earlier entries)."""
    if not facts:
        return
    model = onnx.load(str(path))
    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(model_facts.PREFIX)]
    onnx.helper.set_model_props(model, dict(kept) | model_facts.facts_metadata(facts))
    onnx.save(model, str(path))


def ort_session(path: Path, threads: int = THREADS, providers: Sequence[str] = ("CPUExecutionProvider",)):  # noqa: ANN201
    """An ONNX Runtime session on ``path``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def ort_fn(session, input_names: Sequence[str]) -> Fn:  # noqa: ANN001 - onnxruntime.InferenceSession
    """Wrap a session as a numpy function of the inputs in order."""

    def call(*arrays: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(a) for name, a in zip(input_names, arrays, strict=True)}
        for name, a in zip(input_names, arrays, strict=True):
            feeds[name] = a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32)
        return session.run(None, feeds)[0]

    return call


def optimize_offline(fp32: Path, out: Path) -> Path:
    """ONNX Runtime's extended graph optimizations, saved as a model file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(fp32), sess_options=options, providers=["CPUExecutionProvider"])
    return out


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of input tuples."""

    def __init__(self, names: Sequence[str], batches: list[tuple[np.ndarray, ...]]) -> None:
        self._feeds = iter(
            [
                {
                    n: (a.astype(np.int64) if a.dtype.kind in "iu" else a)
                    for n, a in zip(names, b, strict=True)
                }
                for b in batches
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - not called by MinMax calibration
        raise NotImplementedError


def quantize_static_int8(fp32: Path, out: Path, reader: object, op_types: Sequence[str]) -> Path:
    """Static INT8 (QDQ, per-channel weights, MinMax calibration on what ``reader`` feeds)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        prepared.unlink(missing_ok=True)
    return out


def quantize_int8(spec: ModelSpec, fp32: Path, out: Path) -> Path:
    """Static INT8 of a GAN or UNet, calibrated on its real inputs."""
    reader = _Calibration(spec.input_names, spec.calibration_inputs())
    return quantize_static_int8(fp32, out, reader, spec.quantize_ops)


def convert_fp16(fp32: Path, out: Path) -> Path:
    """FP16 weights and activations, FP32 inputs and outputs (``keep_io_types``)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    return out


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT plans cannot be built here, or ``None`` if they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        reason = "the tensorrt package is not installed"
        return reason + ("" if torch.cuda.is_available() else " and no CUDA GPU is present")
    if not torch.cuda.is_available():
        return "no CUDA GPU is present"
    return None


def build_tensorrt_plan(
    spec: ModelSpec, fp32: Path, fp16: Path | None, out: Path, opt_batch: int = 32
) -> Path:
    """Build a TensorRT plan with a min/opt/max batch profile, FP16.

    TensorRT 10 takes the FP32 ONNX file with the FP16 builder flag; TensorRT 11 dropped that flag, so
    there the FP16 ONNX file is parsed into a strongly typed network.

    Raises:
        RuntimeError: If parsing or building fails.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    strongly_typed = major >= 11 or not hasattr(trt.BuilderFlag, "FP16")
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    source = fp16 if strongly_typed and fp16 is not None else fp32
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {source}: {errors}")
    config = builder.create_builder_config()
    if not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]
        opt = min(opt_batch, spec.max_batch)
        profile.set_shape(tensor.name, (1, *rest), (opt, *rest), (spec.max_batch, *rest))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {source}")
    out.write_bytes(bytes(plan))
    return out


# -- checks ----------------------------------------------------------------------------------------
def max_abs_error(
    spec: ModelSpec, reference: Fn, candidate: Fn, batches: Sequence[int]
) -> tuple[float, float]:
    """Largest ``|candidate - reference|`` over random batches, and the reference's output scale."""
    error, scale = 0.0, 0.0
    for i, batch in enumerate(batches):
        inputs = spec.random_inputs(batch, 100 + i)
        want, got = reference(*inputs), candidate(*inputs)
        if got.shape != want.shape:
            raise RuntimeError(f"{spec.name}: batch {batch} gave shape {got.shape}, expected {want.shape}")
        error = max(error, float(np.max(np.abs(got.astype(np.float64) - want))))
        scale = max(scale, float(np.max(np.abs(want))))
    return error, scale


def images_per_second(spec: ModelSpec, fn: Fn, batch: int, min_seconds: float = 0.4) -> float:
    """Rows per second at ``batch``, after one warm-up call, over at least ``min_seconds``."""
    inputs = spec.random_inputs(batch, 7)
    fn(*inputs)
    runs, start = 0, time.perf_counter()
    while True:
        fn(*inputs)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return round(runs * batch / elapsed, 1)


def speeds(spec: ModelSpec, fn: Fn, batches: Sequence[int] = SPEED_BATCHES) -> dict[str, float | int]:
    """Images/s at batch 1 and at the best of ``batches``."""
    figures = {b: images_per_second(spec, fn, b) for b in batches}
    best = max(figures, key=figures.get)
    return {"images_per_s_batch1": figures[1], "images_per_s_best": figures[best], "best_batch": best}


def quality(spec: ModelSpec, fn: Fn, classifier: DigitClassifier) -> tuple[dict, np.ndarray]:
    """Per-label classifier accuracy of samples made with ``fn``, and the uint8 samples."""
    images, labels = spec.samples(fn)
    predicted, _ = predict(classifier, images)
    return per_label_accuracy(predicted, labels), to_uint8(images)


def row(spec: ModelSpec, variant: str, path: Path | None, **figures: object) -> dict:
    """One line of the parity report, in the schema every family uses."""
    result = {
        "model": spec.name,
        "variant": variant,
        "path": str(path) if path is not None else None,
        "max_abs_err": None,
        "quality": {},
        "images_per_s_batch1": None,
        "images_per_s_best": None,
        "best_batch": None,
        "torch_images_per_s_batch1": None,
        "torch_images_per_s_best": None,
    }
    result.update(figures)
    return result


VARIANTS = ("ortopt", "int8", "fp16", "tensorrt")


def export_model(
    spec: ModelSpec,
    version_dir: Path,
    *,
    variants: Sequence[str] = VARIANTS,
    classifier: DigitClassifier | None = None,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Export ``spec`` and its variants into ``version_dir``; check and (if ``measure``) time each one.

    Args:
        spec: The network.
        version_dir: Model-repository version folder, e.g. ``model_repository/gan_generator/1``.
        variants: Which of ``ortopt``, ``int8``, ``fp16``, ``tensorrt`` to build (FP32 always).
        classifier: The digit classifier for the quality figures; ``None`` skips them (and INT8's gate,
            so INT8 is then not kept).
        measure: Time every variant and PyTorch eager; ``False`` only checks FP32 parity.
        progress: Called with a line of text before each stage.

    Returns:
        Report rows, one per variant: ``max_abs_err`` vs PyTorch, ``quality`` (accuracy, parity
        details, ``kept``, ``note``), images/s at batch 1 and best batch, PyTorch eager's in the same run.

    Raises:
        RuntimeError: If the FP32 export fixed the batch or misses the parity tolerance.
    """
    say = progress or (lambda _line: None)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants {unknown} are unknown; allowed: {', '.join(VARIANTS)}")
    torch.set_num_threads(THREADS)
    version_dir = Path(version_dir)
    reference = torch_fn(spec.module)
    parity_batches = (*PARITY_BATCHES, spec.max_batch)
    fp32 = version_dir / MODEL_FILENAME
    say(f"{spec.name}: exporting {fp32}")
    export_onnx(spec, fp32)
    fp32_fn = ort_fn(ort_session(fp32), spec.input_names)
    error, scale = max_abs_error(spec, reference, fp32_fn, parity_batches)
    if error > PARITY_TOLERANCE * scale:
        raise RuntimeError(
            f"{spec.name}: ONNX Runtime differs from PyTorch by {error:.2e} (scale {scale:.2f})"
        )
    say(f"{spec.name}: fp32 max abs error {error:.2e} at batches {parity_batches} (output scale {scale:.2f})")
    if not measure:
        return [row(spec, "fp32", fp32, max_abs_err=error, quality={"output_scale": scale, "kept": True})]

    torch_speed = speeds(spec, reference)
    torch_figures = {
        "torch_images_per_s_batch1": torch_speed["images_per_s_batch1"],
        "torch_images_per_s_best": torch_speed["images_per_s_best"],
    }
    torch_quality, torch_images = quality(spec, reference, classifier) if classifier else ({}, None)
    builders: dict[str, tuple[Path, Callable[[], Path], str]] = {
        "fp32": (fp32, lambda: fp32, f"reference export, opset {OPSET}"),
        "ortopt": (
            version_dir / "model.ortopt.onnx",
            lambda: optimize_offline(fp32, version_dir / "model.ortopt.onnx"),
            "ONNX Runtime extended graph optimizations saved offline (CPU provider)",
        ),
        "int8": (
            version_dir / "model.int8.onnx",
            lambda: quantize_int8(spec, fp32, version_dir / "model.int8.onnx"),
            "static INT8 QDQ, per-channel weights, MinMax calibration on real inputs, for CPU hosts",
        ),
        "fp16": (
            version_dir / "model.fp16.onnx",
            lambda: convert_fp16(fp32, version_dir / "model.fp16.onnx"),
            "FP16 inside, FP32 inputs and outputs, for GPU hosts",
        ),
    }
    rows = []
    fp32_accuracy = None
    for variant in ("fp32", *[v for v in VARIANTS if v in variants and v != "tensorrt"]):
        path, build, note = builders[variant]
        say(f"{spec.name}: {variant}")
        try:
            build()
            fn = ort_fn(ort_session(path), spec.input_names)
            error, scale = max_abs_error(spec, reference, fn, parity_batches)
        except Exception as failure:  # a variant that cannot be built or run here is reported, not fatal
            path.unlink(missing_ok=True)
            first = (
                str(failure).strip().splitlines()[0][:200] if str(failure).strip() else type(failure).__name__
            )
            rows.append(
                row(spec, variant, None, quality={"kept": False, "note": f"{note}; not usable here: {first}"})
            )
            say(f"{spec.name}: {variant} not usable here: {first}")
            continue
        figures: dict = {"output_scale": scale, "note": note, "kept": True}
        if variant in ("fp32", "ortopt"):
            figures["within_tolerance"] = error <= PARITY_TOLERANCE * scale
        if classifier is not None:
            accuracy, images = quality(spec, fn, classifier)
            figures["accuracy"] = accuracy
            figures["same_uint8_pixels_as_torch"] = float(np.mean(images == torch_images))
            figures["max_uint8_diff_vs_torch"] = int(np.max(np.abs(images.astype(int) - torch_images)))
            if variant == "fp32":
                fp32_accuracy = accuracy["all"]
            if variant == "int8":
                drop = 100.0 * (fp32_accuracy - accuracy["all"])
                figures["accuracy_drop_points"] = round(drop, 2)
                if drop > INT8_ACCURACY_POINTS:
                    figures["kept"] = False
                    figures["note"] = note + f"; dropped: accuracy {drop:.1f} points below FP32"
        elif variant == "int8":
            figures["kept"] = False
            figures["note"] = note + "; dropped: no classifier to check its quality"
        rows.append(
            row(
                spec,
                variant,
                path if figures["kept"] else None,
                max_abs_err=error,
                quality=figures,
                **speeds(spec, fn),
                **torch_figures,
            )
        )
        if not figures["kept"]:
            path.unlink(missing_ok=True)
        say(f"{spec.name}: {variant} max abs error {error:.2e}, {rows[-1]['images_per_s_best']} images/s")
    if "tensorrt" in variants:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            say(f"{spec.name}: TensorRT skipped: {reason}")
            rows.append(row(spec, "tensorrt", None, quality={"kept": False, "note": f"skipped: {reason}"}))
        else:
            fp16 = version_dir / "model.fp16.onnx"
            plan = build_tensorrt_plan(
                spec, fp32, fp16 if fp16.is_file() else None, version_dir / "model.plan"
            )
            rows.append(
                row(
                    spec,
                    "tensorrt",
                    plan,
                    quality={"kept": True, "note": "FP16 plan, batch profile 1/32/max; timed by the server"},
                )
            )
    for r in rows:
        r["torch_quality"] = torch_quality
    return rows
