"""One export pipeline for every family: ONNX, its optimized variants, their checks and report rows.

A family is an :class:`ExportSpec`: its network and tensors, how to export it (dynamic shapes, opset),
its parity cases, timing inputs, INT8 calibration data, TensorRT profile, quality check and the rule
that keeps a lossy variant. :func:`export_model` runs the same loop for each; it writes into the
model's version folder:

- ``model.onnx``: FP32, dynamic batch (and whatever else the spec keeps dynamic), compared with PyTorch
  on every parity case (the exporter can silently fix a dimension); the model's facts go into its
  metadata (:mod:`genserve.server.model_facts`);
- ``model.ortopt.onnx``: ONNX Runtime's extended-level graph optimizations, saved offline (portable
  fusions; the host-specific layout transforms of the "all" level happen at load time anyway);
- ``model.int8.onnx``: static INT8 (QDQ, per-channel weights), calibrated on real inputs, kept only if
  the family's quality check and keep rule vouch for it;
- ``model.fp16.onnx``: FP16 inside, FP32 inputs and outputs, for GPU hosts;
- ``model.plan``: a TensorRT plan (FP16, min/opt/max profile) where ``tensorrt`` imports and a CUDA GPU
  is present.

Every variant gets a parity figure against PyTorch, its quality figures and images/s at batch 1 and at
its best batch, beside PyTorch eager measured in the same run. The GAN generator's and the UNet's specs
are here; the style network's is in :mod:`genserve.export.style_export`.
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

from genserve.client.contract import GAN_MAX_BATCH, NUM_CLASSES, gan_latents, to_uint8
from genserve.export import diffusion, gan
from genserve.export.classifier import DigitClassifier, per_label_accuracy, predict
from genserve.export.sampling import diffusion_samples, evaluation_rows, gan_samples, torch_fn
from genserve.server import ddim, model_facts
from genserve.server.model_names import DIFFUSION_UNET, GAN_GENERATOR, MODEL_FILENAME

OPSET = 18
DIFFUSION_MAX_BATCH = 64
"""The UNet's export profile maximum (rows of one step, guidance doubles a request's rows)."""
PARITY_TOLERANCE = 1e-4
"""FP32 variants must match PyTorch within this fraction of the output scale (max |output|)."""
INT8_ACCURACY_POINTS = 5.0
"""A digit family's INT8 variant is kept only if its accuracy is within this many points of FP32's."""
PARITY_BATCHES = (1, 3)
SPEED_BATCHES = (1, 8, 32)
THREADS = 1
"""Intra-op threads of ONNX Runtime and PyTorch in the GAN and UNet timings: one each, so figures stay
comparable on a shared host (PyTorch's OpenMP at 2 threads collapsed when other jobs held the cores)."""
QUALITY_STEPS = 25
QUALITY_GUIDANCE = 2.0
VARIANTS = ("ortopt", "int8", "fp16", "tensorrt")
LOSSY_VARIANTS = ("int8",)
"""Variants that change the numbers enough to need the quality check's consent."""
NOTES = {
    "fp32": "reference export",
    "ortopt": "ONNX Runtime extended graph optimizations saved offline (CPU provider)",
    "int8": "static INT8 QDQ, per-channel weights, MinMax calibration on real inputs, for CPU hosts",
    "fp16": "FP16 inside, FP32 inputs and outputs, for GPU hosts",
    "tensorrt": "TensorRT FP16 plan, min/opt/max profile (GPU)",
}

Fn = Callable[..., np.ndarray]
Inputs = tuple[np.ndarray, ...]
Case = tuple[dict[str, int], Inputs]
"""One parity case: what it is (``{"batch": 3}``, ``{"batch": 1, "size": 512}``) and its inputs."""
Profile = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Quality:
    """What a family's quality check says about one variant.

    Attributes:
        figures: Numbers for the report (accuracy, style loss, ...).
        images: uint8 samples from fixed seeds, compared pixel by pixel with PyTorch's; ``None`` if
            the family makes none.
    """

    figures: dict[str, Any]
    images: np.ndarray | None = None


@dataclass
class ExportSpec:
    """One family's network and everything the export loop needs to know about it.

    Attributes:
        name: Model-repository name.
        module: The PyTorch module (eval mode).
        input_names: ONNX input names, in ``forward`` order.
        output_name: ONNX output name.
        max_batch: Export profile maximum.
        random_inputs: ``(batch, seed) -> inputs``: the export example, parity cases and timings.
        parity_cases: The cases FP32 and every variant are compared with PyTorch on; by default
            random batches of 1, 3 and ``max_batch``.
        example_inputs: The inputs the export traces; by default a random batch of 2 (never 1, which
            the exporter would specialize).
        dynamic_shapes: ``torch.onnx.export``'s ``dynamic_shapes``; by default the batch axis of
            every input.
        dynamic_output_axes: Output axes that must come out symbolic.
        opset: ONNX opset.
        threads: Intra-op threads for PyTorch and ONNX Runtime while exporting and timing.
        speed_batches: Batch sizes timed.
        calibration_inputs: ``() -> list of inputs`` (real data) for INT8 calibration.
        quantize_ops: Op types the INT8 variant quantizes.
        quality: ``fn -> Quality``: the family's quality check of a numpy function of the network.
        keep: ``(fp32 figures, variant figures) -> reason to drop or None``, for lossy variants; it
            may add figures (e.g. the drop against FP32) to the variant's.
        tensorrt_profile: ``(input name, dims past batch as the plan sees them) -> (min, opt, max)``
            shapes; by default batch 1 / 32 / ``max_batch``.
        facts: What the network says about itself, written into the ONNX metadata for the pipelines.
    """

    name: str
    module: torch.nn.Module
    input_names: tuple[str, ...]
    output_name: str
    max_batch: int
    random_inputs: Callable[[int, int], Inputs]
    parity_cases: Callable[[], list[Case]] | None = None
    example_inputs: Callable[[], Inputs] | None = None
    dynamic_shapes: dict[str, dict[int, Any]] | None = None
    dynamic_output_axes: tuple[int, ...] = (0,)
    opset: int = OPSET
    threads: int = THREADS
    speed_batches: tuple[int, ...] = SPEED_BATCHES
    calibration_inputs: Callable[[], list[Inputs]] = field(default=list)
    quantize_ops: tuple[str, ...] = ("Conv",)
    quality: Callable[[Fn], Quality] | None = None
    keep: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None
    tensorrt_profile: Callable[[str, tuple[int, ...]], Profile] | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def cases(self) -> list[Case]:
        """The parity cases."""
        if self.parity_cases is not None:
            return self.parity_cases()
        batches = (*PARITY_BATCHES, self.max_batch)
        return [({"batch": b}, self.random_inputs(b, 100 + i)) for i, b in enumerate(batches)]

    def profile(self, name: str, dims: tuple[int, ...], opt_batch: int = 32) -> Profile:
        """The TensorRT min/opt/max shapes of one input."""
        if self.tensorrt_profile is not None:
            return self.tensorrt_profile(name, dims)
        return (1, *dims), (min(opt_batch, self.max_batch), *dims), (self.max_batch, *dims)


ModelSpec = ExportSpec
"""The earlier name of :class:`ExportSpec`."""


# -- the digit families ----------------------------------------------------------------------------
def digit_quality(
    samples: Callable[[Fn], tuple[np.ndarray, np.ndarray]], classifier: DigitClassifier
) -> Callable[[Fn], Quality]:
    """A quality check that classifies conditional samples: per-label accuracy, uint8 samples."""

    def check(fn: Fn) -> Quality:
        images, labels = samples(fn)
        predicted, _ = predict(classifier, images)
        return Quality({"accuracy": per_label_accuracy(predicted, labels)}, to_uint8(images))

    return check


def keep_accuracy(fp32: dict[str, Any], figures: dict[str, Any]) -> str | None:
    """Drop a variant whose samples' accuracy falls more than ``INT8_ACCURACY_POINTS`` below FP32's."""
    drop = 100.0 * (fp32["accuracy"]["all"] - figures["accuracy"]["all"])
    figures["accuracy_drop_points"] = round(drop, 2)
    return f"accuracy {drop:.1f} points below FP32" if drop > INT8_ACCURACY_POINTS else None


def gan_spec(
    generator: gan.Generator,
    name: str = GAN_GENERATOR,
    per_label: int = 20,
    classifier: DigitClassifier | None = None,
) -> ExportSpec:
    """The spec of a GAN generator: inputs ``z`` FP32 [B, latent_dim] and ``label`` INT64 [B].

    ``classifier`` enables the quality figures (and with them the INT8 variant).
    """
    config = generator.config
    latent = config.latent_dim

    def random_inputs(batch: int, seed: int) -> Inputs:
        rng = np.random.default_rng(seed)
        return gan_latents(rng.integers(0, 2**62, batch), latent), rng.integers(0, NUM_CLASSES, batch)

    def calibration() -> list[Inputs]:
        labels, seeds = evaluation_rows(8, seed_base=5_000_000)
        z = gan_latents(seeds, latent)
        return [(z[i : i + 16], labels[i : i + 16]) for i in range(0, len(labels), 16)]

    def samples(fn: Fn) -> tuple[np.ndarray, np.ndarray]:
        labels, seeds = evaluation_rows(per_label)
        return gan_samples(fn, latent, labels, seeds), labels

    return ExportSpec(
        name,
        generator,
        ("z", "label"),
        "image",
        GAN_MAX_BATCH,
        random_inputs,
        calibration_inputs=calibration,
        quantize_ops=("Conv", "ConvTranspose"),
        quality=digit_quality(samples, classifier) if classifier is not None else None,
        keep=keep_accuracy,
        facts={
            "latent_dim": latent,
            "image_shape": [config.channels, config.image_size, config.image_size],
            "num_classes": config.num_classes,
        },
    )


def unet_spec(
    unet: diffusion.UNet,
    schedule: ddim.DDIMSchedule,
    name: str = DIFFUSION_UNET,
    per_label: int = 10,
    classifier: DigitClassifier | None = None,
) -> ExportSpec:
    """The spec of a UNet: inputs ``x`` FP32 [B, C, S, S], ``t`` INT64 [B], ``y`` INT64 [B]."""
    c, s = unet.config.channels, unet.config.image_size
    T = schedule.num_train_timesteps

    def random_inputs(batch: int, seed: int) -> Inputs:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch, c, s, s)).astype(np.float32)
        return x, rng.integers(0, T, batch), rng.integers(0, NUM_CLASSES + 1, batch)

    def calibration() -> list[Inputs]:
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

    return ExportSpec(
        name,
        unet,
        ("x", "t", "y"),
        "eps",
        DIFFUSION_MAX_BATCH,
        random_inputs,
        calibration_inputs=calibration,
        quality=digit_quality(samples, classifier) if classifier is not None else None,
        keep=keep_accuracy,
        facts={
            "image_shape": [c, s, s],
            "num_classes": unet.config.num_classes,
            "schedule": schedule.to_dict(),
        },
    )


# -- export and variants ---------------------------------------------------------------------------
def export_onnx(spec: ExportSpec, path: Path) -> Path:
    """Export ``spec.module`` to one self-contained ONNX file and record its facts in the metadata.

    Raises:
        RuntimeError: If a dimension the spec keeps dynamic came out fixed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notices
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch)
    dynamic_shapes = spec.dynamic_shapes or {name: {0: batch} for name in spec.input_names}
    inputs = spec.example_inputs() if spec.example_inputs is not None else spec.random_inputs(2, 0)
    example = tuple(torch.from_numpy(a) for a in inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module.eval(),
            example,
            str(path),
            dynamo=True,
            input_names=list(spec.input_names),
            output_names=[spec.output_name],
            dynamic_shapes=dynamic_shapes,
            opset_version=spec.opset,
            external_data=False,
            verbose=False,
        )
    Path(str(path) + ".data").unlink(missing_ok=True)  # a stale external-data file from an older export
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    expected = {name: tuple(axes) for name, axes in dynamic_shapes.items()} | {
        spec.output_name: spec.dynamic_output_axes
    }
    for tensor in list(model.graph.input) + list(model.graph.output):
        dims = tensor.type.tensor_type.shape.dim
        fixed = [axis for axis in expected.get(tensor.name, ()) if not dims[axis].dim_param]
        if fixed:
            raise RuntimeError(
                f"{path}: {tensor.name} has fixed dims {fixed}; the export must keep them dynamic"
            )
    if spec.facts:
        onnx.helper.set_model_props(model, model_facts.facts_metadata(spec.facts))
        onnx.save(model, str(path))
    return path


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

    def __init__(self, names: Sequence[str], batches: list[Inputs]) -> None:
        self._feeds = [
            {n: (a.astype(np.int64) if a.dtype.kind in "iu" else a) for n, a in zip(names, b, strict=True)}
            for b in batches
        ]
        self._iterator = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._feeds)


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


def quantize_int8(spec: ExportSpec, fp32: Path, out: Path) -> Path:
    """Static INT8 of a network, calibrated on its real inputs."""
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
    spec: ExportSpec, fp32: Path, fp16: Path | None, out: Path, opt_batch: int = 32
) -> Path:
    """Build a TensorRT plan, FP16, with the spec's min/opt/max profile for every input.

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
        profile.set_shape(tensor.name, *spec.profile(tensor.name, tuple(tensor.shape)[1:], opt_batch))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {source}")
    out.write_bytes(bytes(plan))
    return out


def tensorrt_fn(plan: Path, spec: ExportSpec) -> Fn:
    """Run a TensorRT plan on the GPU through torch CUDA tensors, as a numpy function of the inputs."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()

    def call(*arrays: np.ndarray) -> np.ndarray:
        inputs = {
            name: torch.from_numpy(
                np.ascontiguousarray(a.astype(np.int64) if a.dtype.kind in "iu" else a)
            ).cuda()
            for name, a in zip(spec.input_names, arrays, strict=True)
        }
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        shape = tuple(context.get_tensor_shape(spec.output_name))
        output = torch.empty(shape, dtype=torch.float32, device="cuda")
        context.set_tensor_address(spec.output_name, output.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return output.cpu().numpy()

    return call


# -- checks ----------------------------------------------------------------------------------------
def parity(spec: ExportSpec, reference: Fn, candidate: Fn) -> tuple[float, float, list[dict]]:
    """Largest ``|candidate - reference|`` over the spec's cases, the reference's scale, and per case."""
    error, scale, per_case = 0.0, 0.0, []
    for case, inputs in spec.cases():
        want, got = reference(*inputs), candidate(*inputs)
        if got.shape != want.shape:
            raise RuntimeError(f"{spec.name}: {case} gave shape {got.shape}, expected {want.shape}")
        case_error = float(np.max(np.abs(got.astype(np.float64) - want)))
        error, scale = max(error, case_error), max(scale, float(np.max(np.abs(want))))
        per_case.append({**case, "max_abs_err": case_error})
    return error, scale, per_case


def images_per_second(spec: ExportSpec, fn: Fn, batch: int, min_seconds: float = 0.4) -> float:
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


def speeds(spec: ExportSpec, fn: Fn) -> dict[str, float | int]:
    """Images/s at batch 1 and at the best of the spec's batches."""
    figures = {b: images_per_second(spec, fn, b) for b in spec.speed_batches}
    best = max(figures, key=figures.get)
    return {"images_per_s_batch1": figures.get(1), "images_per_s_best": figures[best], "best_batch": best}


def row(spec: ExportSpec, variant: str, path: Path | None, **figures: object) -> dict:
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


def _first_line(failure: Exception) -> str:
    text = str(failure).strip()
    return text.splitlines()[0][:200] if text else type(failure).__name__


def export_model(
    spec: ExportSpec,
    version_dir: Path,
    *,
    variants: Sequence[str] = VARIANTS,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Export ``spec`` and its variants into ``version_dir``; check and (if ``measure``) time each one.

    Args:
        spec: The family.
        version_dir: Model-repository version folder, e.g. ``model_repository/gan_generator/1``.
        variants: Which of ``ortopt``, ``int8``, ``fp16``, ``tensorrt`` to build (FP32 always).
        measure: Check quality and time every variant and PyTorch eager; ``False`` only checks FP32
            parity (no variants).
        progress: Called with a line of text before each stage.

    Returns:
        Report rows, one per variant: ``max_abs_err`` vs PyTorch, ``quality`` (the family's figures,
        ``parity`` per case, ``kept``, ``note``), images/s at batch 1 and best batch, PyTorch eager's
        in the same run. A lossy variant without a quality check, or one its keep rule refuses, is
        reported and deleted.

    Raises:
        RuntimeError: If the FP32 export fixed a dynamic dimension or misses the parity tolerance.
    """
    say = progress or (lambda _line: None)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants {unknown} are unknown; allowed: {', '.join(VARIANTS)}")
    torch.set_num_threads(spec.threads)
    version_dir = Path(version_dir)
    reference = torch_fn(spec.module)
    fp32 = version_dir / MODEL_FILENAME
    say(f"{spec.name}: exporting {fp32}")
    export_onnx(spec, fp32)
    error, scale, cases = parity(spec, reference, ort_fn(ort_session(fp32, spec.threads), spec.input_names))
    if error > PARITY_TOLERANCE * scale:
        raise RuntimeError(
            f"{spec.name}: ONNX Runtime differs from PyTorch by {error:.2e} (scale {scale:.2f})"
        )
    say(f"{spec.name}: fp32 max abs error {error:.2e} on {len(cases)} cases (output scale {scale:.2f})")
    if not measure:
        figures = {"parity": cases, "output_scale": scale, "kept": True, "note": NOTES["fp32"]}
        return [row(spec, "fp32", fp32, max_abs_err=error, quality=figures)]

    say(f"{spec.name}: timing PyTorch eager")
    torch_speed = speeds(spec, reference)
    torch_figures = {
        "torch_images_per_s_batch1": torch_speed["images_per_s_batch1"],
        "torch_images_per_s_best": torch_speed["images_per_s_best"],
    }
    torch_quality = spec.quality(reference) if spec.quality is not None else None
    fp16 = version_dir / "model.fp16.onnx"
    builders: dict[str, tuple[Path, Callable[[], Path]]] = {
        "fp32": (fp32, lambda: fp32),
        "ortopt": (
            version_dir / "model.ortopt.onnx",
            lambda: optimize_offline(fp32, version_dir / "model.ortopt.onnx"),
        ),
        "int8": (
            version_dir / "model.int8.onnx",
            lambda: quantize_int8(spec, fp32, version_dir / "model.int8.onnx"),
        ),
        "fp16": (fp16, lambda: convert_fp16(fp32, fp16)),
        "tensorrt": (
            version_dir / "model.plan",
            lambda: build_tensorrt_plan(
                spec, fp32, fp16 if fp16.is_file() else None, version_dir / "model.plan"
            ),
        ),
    }
    rows: list[dict] = []
    fp32_figures: dict[str, Any] = {}
    for variant in ("fp32", *[v for v in VARIANTS if v in variants]):
        path, build = builders[variant]
        note = NOTES[variant]
        reason = tensorrt_unavailable_reason() if variant == "tensorrt" else None
        if reason is not None:
            say(f"{spec.name}: TensorRT skipped: {reason}")
            rows.append(row(spec, variant, None, quality={"kept": False, "note": f"skipped: {reason}"}))
            continue
        say(f"{spec.name}: {variant}")
        try:
            build()
            fn = (
                tensorrt_fn(path, spec)
                if variant == "tensorrt"
                else ort_fn(ort_session(path, spec.threads), spec.input_names)
            )
            error, scale, cases = parity(spec, reference, fn)
        except Exception as failure:  # a variant that cannot be built or run here is reported, not fatal
            path.unlink(missing_ok=True)
            first = _first_line(failure)
            rows.append(
                row(spec, variant, None, quality={"kept": False, "note": f"{note}; not usable here: {first}"})
            )
            say(f"{spec.name}: {variant} not usable here: {first}")
            continue
        figures: dict[str, Any] = {"parity": cases, "output_scale": scale, "note": note, "kept": True}
        if variant in ("fp32", "ortopt"):
            figures["within_tolerance"] = error <= PARITY_TOLERANCE * scale
        drop = None
        if spec.quality is not None:
            result = spec.quality(fn)
            figures.update(result.figures)
            if result.images is not None and torch_quality is not None and torch_quality.images is not None:
                same = result.images == torch_quality.images
                figures["same_uint8_pixels_as_torch"] = float(np.mean(same))
                diff = np.abs(result.images.astype(int) - torch_quality.images)
                figures["max_uint8_diff_vs_torch"] = int(np.max(diff))
            if variant == "fp32":
                fp32_figures = result.figures
            if variant in LOSSY_VARIANTS and spec.keep is not None:
                drop = spec.keep(fp32_figures, figures)
        elif variant in LOSSY_VARIANTS:
            drop = "no quality check to vouch for it"
        if drop is not None:
            figures["kept"] = False
            figures["note"] = f"{note}; dropped: {drop}"
            path.unlink(missing_ok=True)
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
        say(f"{spec.name}: {variant} max abs error {error:.2e}, {rows[-1]['images_per_s_best']} images/s")
    for r in rows:
        r["torch_quality"] = torch_quality.figures if torch_quality is not None else {}
    return rows
