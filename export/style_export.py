"""Export the style-transfer network to ONNX, with its optimized variants, parity and speed figures.

``export_style`` writes into a model-repository version folder:

- ``model.onnx``: FP32, dynamic batch and dynamic content and style heights and widths (multiples
  of 8), inputs ``content``, ``style`` FP32 ``[B, 3, H, W]`` in ``[-1, 1]`` and ``alpha`` FP32 ``[B]``,
  output ``image`` FP32 ``[B, 3, H, W]``;
- ``model.ortopt.onnx``: ONNX Runtime's offline graph optimization (extended level: fusions that
  stay portable across hosts; the layout transforms of the "all" level are host-specific and are
  applied at load time anyway);
- ``model.int8.onnx``: static INT8 (QDQ, per-channel weights) calibrated on training images, kept
  only if its AdaIN style loss on the held-out pairs stays within 10% of FP32's;
- ``model.fp16.onnx``: FP16 weights and activations with FP32 inputs and outputs, for GPU hosts;
- ``model.plan``: a TensorRT FP16 plan, only where ``tensorrt`` imports and a CUDA GPU is present
  (not exercised on the CPU-only development hosts).

Every variant is checked in ONNX Runtime against PyTorch at several batch sizes and at 256 and 512
pixels (the exporter can silently fix a dimension), measured on the held-out quality pairs, and
timed against PyTorch eager in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from genserve.export import style_quality
from genserve.export.onnx_export import (
    convert_fp16,
    optimize_offline,
    ort_session,
    quantize_static_int8,
    tensorrt_unavailable_reason,
    write_facts,
)
from genserve.export.style import StyleNetwork, load_style_network
from genserve.server.model_names import STYLE_NETWORK

INPUT_NAMES = ("content", "style", "alpha")
OUTPUT_NAME = "image"
MAX_BATCH = 64
MAX_SIDE = 2048
PARITY_TOLERANCE = 1e-4
"""FP32 variants must match PyTorch within this fraction of the output scale."""
INT8_STYLE_LOSS_TOLERANCE = 0.10
"""The INT8 variant is kept only if its style loss is within this fraction of FP32's."""
THREADS = 2

Runner = style_quality.Runner


def _random_inputs(batch: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random images (upsampled noise, so the network sees structure) and alphas in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(-1, 1, (2 * batch, 3, size // 8, size // 8)).astype(np.float32))
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear").numpy()
    alpha = rng.uniform(0, 1, batch).astype(np.float32)
    alpha[0] = 1.0
    return images[:batch], images[batch:], alpha


def export_onnx(network: StyleNetwork, path: Path) -> Path:
    """Export ``network`` with the dynamo exporter: dynamic batch, dynamic content and style sizes.

    The example batch is 2 and the content and style sizes differ, so that no dimension is
    specialized to a constant; ``check_dynamic_dims`` verifies the result.
    """
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    # Sizes are 8 x a free integer: the graph then round-trips them exactly (3 pools, 3 upsamplings).
    side = {name: torch.export.Dim(name, min=1, max=MAX_SIDE // 8) for name in ("h8", "w8", "hs8", "ws8")}
    dynamic_shapes = {
        "content": {0: batch, 2: 8 * side["h8"], 3: 8 * side["w8"]},
        "style": {0: batch, 2: 8 * side["hs8"], 3: 8 * side["ws8"]},
        "alpha": {0: batch},
    }
    content = torch.rand(2, 3, 64, 96) * 2 - 1  # (2, 3, 64, 96)
    style = torch.rand(2, 3, 80, 56) * 2 - 1  # (2, 3, 80, 56)
    alpha = torch.tensor([1.0, 0.5])  # (2,)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        network.eval(),
        (content, style, alpha),
        str(path),
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=dynamic_shapes,
        opset_version=20,
        external_data=False,  # one self-contained file (about 28 MB)
        verbose=False,
    )
    check_dynamic_dims(path)
    write_facts(path, {"image_channels": 3, "size_multiple": 8})
    return path


def check_dynamic_dims(path: Path) -> None:
    """Raise ``RuntimeError`` unless batch, height and width of every input and output are symbolic."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        dynamic = [0] if value.name == "alpha" else [0, 2, 3]
        fixed = [i for i in dynamic if not dims[i].dim_param]
        if fixed:
            raise RuntimeError(
                f"{path}: {value.name} has fixed dims {fixed}; the export must keep them dynamic"
            )


def ort_runner(session) -> Runner:  # noqa: ANN001 - onnxruntime.InferenceSession
    """Wrap an ONNX Runtime session as a numpy ``Runner``."""

    def run(content: np.ndarray, style: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {"content": content, "style": style, "alpha": alpha})[0]

    return run


def parity(
    run: Runner, reference: Runner, checks: Sequence[tuple[int, int]], seed: int = 0
) -> tuple[float, float, list[dict]]:
    """Compare ``run`` with ``reference`` on random inputs for each ``(batch, size)``.

    Returns:
        ``(max_abs_err, output_scale, per_check)``; the scale is the largest absolute reference output.
    """
    worst, scale, rows = 0.0, 0.0, []
    for batch, size in checks:
        inputs = _random_inputs(batch, size, seed + 1000 * batch + size)
        expected = reference(*inputs)
        got = run(*inputs)
        if got.shape != expected.shape:
            raise RuntimeError(f"output shape {got.shape} differs from PyTorch's {expected.shape}")
        error = float(np.abs(got.astype(np.float64) - expected).max())
        worst, scale = max(worst, error), max(scale, float(np.abs(expected).max()))
        rows.append({"batch": batch, "size": size, "max_abs_err": error})
    return worst, scale, rows


def images_per_second(run: Runner, batch: int, size: int, repeats: int = 2) -> float:
    """Throughput of ``run`` at one batch size and square image size.

    One warm-up call, then the fastest of ``repeats`` timed calls: on a shared host the fastest
    run is the one least disturbed by other work.
    """
    content, style, alpha = _random_inputs(batch, size, seed=7)
    run(content, style, alpha)
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run(content, style, alpha)
        fastest = min(fastest, time.perf_counter() - started)
    return batch / fastest


def speeds(run: Runner, batch_sizes: Sequence[int], size: int, repeats: int = 2) -> dict[int, float]:
    """Images per second at each batch size."""
    return {batch: round(images_per_second(run, batch, size, repeats), 3) for batch in batch_sizes}


class _CalibrationReader:
    """Feeds (content, style, alpha) batches of training images to ONNX Runtime's calibrator."""

    def __init__(self, size: int, count: int = 8, seed: int = 0):
        from genserve.client.contract import from_uint8

        rng = np.random.default_rng(seed)
        names = style_quality.TRAIN_IMAGES
        images = [style_quality.square_image(style_quality.load_image(name), size) for name in names]
        self._feeds = []
        for _ in range(count):
            content, style = rng.choice(len(images), size=2, replace=False)
            self._feeds.append(
                {
                    "content": from_uint8(images[content][None]),
                    "style": from_uint8(images[style][None]),
                    "alpha": rng.uniform(0.5, 1.0, 1).astype(np.float32),
                }
            )
        self._iterator = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration feed, or ``None`` when done."""
        return next(self._iterator, None)

    def rewind(self) -> None:
        """Start over (ONNX Runtime may read the data more than once)."""
        self._iterator = iter(self._feeds)


def quantize_int8(fp32: Path, out: Path, size: int) -> Path:
    """Static INT8 quantization (QDQ, per-channel weights) of the convolutions, calibrated on images."""
    return quantize_static_int8(fp32, out, _CalibrationReader(size), ["Conv"])


def build_tensorrt_plan(onnx_fp32: Path, onnx_fp16: Path, plan: Path, *, opt_batch: int, size: int) -> Path:
    """Build a TensorRT plan with one optimization profile; FP16 as the installed version offers it.

    TensorRT 10 takes the FP32 model with the FP16 builder flag; versions without that flag (11 on)
    build strongly typed networks, so they get the FP16 model (FP32 inputs and outputs).
    The profile spans batch 1 .. ``MAX_BATCH`` (optimized at ``opt_batch``) and square images
    8 .. 2 x ``size`` pixels (optimized at ``size``). Runs only where TensorRT and a GPU exist.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
    strongly_typed = fp16_flag is None
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    source = onnx_fp16 if strongly_typed else onnx_fp32
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {source}: {errors}")
    config = builder.create_builder_config()
    if not strongly_typed:
        config.set_flag(fp16_flag)
    profile = builder.create_optimization_profile()
    for name in ("content", "style"):
        profile.set_shape(name, (1, 3, 8, 8), (opt_batch, 3, size, size), (MAX_BATCH, 3, 2 * size, 2 * size))
    profile.set_shape("alpha", (1,), (opt_batch,), (MAX_BATCH,))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a plan from {source}")
    plan.write_bytes(bytes(serialized))
    return plan


def tensorrt_runner(plan: Path) -> Runner:
    """Run a TensorRT plan on the GPU through torch CUDA tensors, as a numpy ``Runner``."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()

    def run(content: np.ndarray, style: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        inputs = {
            name: torch.from_numpy(array).cuda()
            for name, array in zip(INPUT_NAMES, (content, style, alpha), strict=True)
        }
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        output = torch.empty(content.shape, dtype=torch.float32, device="cuda")
        context.set_tensor_address(OUTPUT_NAME, output.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return output.cpu().numpy()

    return run


def _row(variant: str, path: Path | None, **figures: object) -> dict:
    row = {
        "model": STYLE_NETWORK,
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
    row.update(figures)
    return row


def _export_fp32_checked(
    network: StyleNetwork,
    reference: Runner,
    path: Path,
    checks: list[tuple[int, int]],
    say: Callable[[str], None],
) -> dict:
    """Export FP32 and check ONNX Runtime against PyTorch at every (batch, size) of ``checks``."""
    say(f"{STYLE_NETWORK}: exporting {path}")
    export_onnx(network, path)
    error, scale, parity_rows = parity(ort_runner(ort_session(path, THREADS)), reference, checks)
    if error > PARITY_TOLERANCE * scale:
        limit = f"{PARITY_TOLERANCE} x {scale:.3g}"
        raise RuntimeError(f"fp32: ONNX Runtime differs from PyTorch by {error:.3g} (> {limit})")
    say(f"{STYLE_NETWORK}: fp32 max_abs_err {error:.3g}")
    quality = {
        "parity": parity_rows,
        "output_scale": round(scale, 5),
        "kept": True,
        "note": "reference export",
    }
    return _row("fp32", path, max_abs_err=error, quality=quality)


def export_style(
    version_dir: Path,
    *,
    weights: Path,
    batch_sizes: Sequence[int] = (1, 3, 4),
    size: int = 256,
    vgg_weights: Path | None = None,
    large_size: int = 512,
    repeats: int = 2,
    progress: Callable[[str], None] | None = None,
    quick: bool = False,
) -> list[dict]:
    """Export the style network and its variants into ``version_dir``; check and time each one.

    Args:
        version_dir: Model-repository version folder (e.g. ``model_repository/style_network/1``).
        weights: Style checkpoint (``export/weights/style.safetensors``).
        batch_sizes: Batch sizes for the parity checks and the speed figures.
        size: Square image size of the speed and quality figures (a multiple of 8).
        vgg_weights: The torchvision VGG19 file, for a checkpoint trained on one.
        large_size: A second, larger size checked for parity and timed at batch 1.
        repeats: Timed runs per (variant, batch size), after one warm-up run.
        progress: Called with a line of text before each stage (e.g. ``print``).
        quick: Only the FP32 export and its parity check: no variants, no speed or quality figures.

    Returns:
        One dict per variant (``fp32``, ``ortopt``, ``int8``, ``fp16``, ``tensorrt``) with ``model``,
        ``variant``, ``path`` (``None`` if not written or not kept), ``max_abs_err`` against PyTorch,
        ``quality`` (held-out figures, parity details, ``kept`` and a ``note``), ``images_per_s_batch1``,
        ``images_per_s_best``, ``best_batch`` and the PyTorch eager figures measured in the same run.

    Raises:
        ValueError: ``size`` or ``large_size`` is not a multiple of 8, or ``weights`` is no style checkpoint.
        RuntimeError: The FP32 export lost a dynamic dimension or misses the parity tolerance.
    """
    from genserve.export.style import check_image_size

    say = progress or (lambda _line: None)
    check_image_size(size, size, "size")
    check_image_size(large_size, large_size, "large_size")
    torch.set_num_threads(THREADS)
    version_dir = Path(version_dir)
    network = load_style_network(Path(weights), vgg_weights)
    reference = style_quality.torch_runner(network)
    checks = [(batch, size) for batch in batch_sizes] + [(1, large_size)]
    if quick:
        return [_export_fp32_checked(network, reference, version_dir / "model.onnx", checks, say)]

    say(f"{STYLE_NETWORK}: timing PyTorch eager at {size}x{size}")
    torch_speed = speeds(reference, batch_sizes, size, repeats)
    torch_large = round(images_per_second(reference, 1, large_size, 1), 3)
    torch_best = max(torch_speed, key=torch_speed.get)
    torch_figures = {
        "torch_images_per_s_batch1": torch_speed.get(1),
        "torch_images_per_s_best": torch_speed[torch_best],
    }

    fp32_path = version_dir / "model.onnx"
    say(f"{STYLE_NETWORK}: exporting {fp32_path}")
    export_onnx(network, fp32_path)
    variants: list[tuple[str, Path, Callable[[], Path], str]] = [
        ("fp32", fp32_path, lambda: fp32_path, "reference export"),
        (
            "ortopt",
            version_dir / "model.ortopt.onnx",
            lambda: optimize_offline(fp32_path, version_dir / "model.ortopt.onnx"),
            "ONNX Runtime extended graph optimizations, saved offline",
        ),
        (
            "int8",
            version_dir / "model.int8.onnx",
            lambda: quantize_int8(fp32_path, version_dir / "model.int8.onnx", size),
            "static INT8 (QDQ, per-channel weights, MinMax calibration on 8 training pairs) for CPU hosts",
        ),
        (
            "fp16",
            version_dir / "model.fp16.onnx",
            lambda: convert_fp16(fp32_path, version_dir / "model.fp16.onnx"),
            "FP16 with FP32 inputs/outputs, for GPU hosts",
        ),
    ]

    rows: list[dict] = []
    fp32_style_loss: float | None = None
    for variant, path, build, note in variants:
        say(f"{STYLE_NETWORK}: {variant} -> {path}")
        build()
        try:
            session = ort_session(path, THREADS)
        except Exception as error:  # e.g. an FP16 op without a CPU kernel
            rows.append(
                _row(variant, path, quality={"kept": True, "note": f"{note}; not runnable on CPU: {error}"})
            )
            continue
        run = ort_runner(session)
        error, scale, parity_rows = parity(run, reference, checks)
        quality = style_quality.evaluate(network, run, size)
        quality.pop("pairs")
        quality.update(parity=parity_rows, output_scale=round(scale, 5), kept=True, note=note)
        if variant in ("fp32", "ortopt") and error > PARITY_TOLERANCE * scale:
            limit = f"{PARITY_TOLERANCE} x {scale:.3g}"
            raise RuntimeError(f"{variant}: ONNX Runtime differs from PyTorch by {error:.3g} (> {limit})")
        if variant == "fp32":
            fp32_style_loss = quality["style_loss"]
        if variant == "int8" and fp32_style_loss is not None:
            ratio = quality["style_loss"] / fp32_style_loss
            quality["style_loss_vs_fp32"] = round(ratio, 4)
            if abs(ratio - 1.0) > INT8_STYLE_LOSS_TOLERANCE:
                quality["kept"] = False
                quality["note"] = f"{note}; rejected: style loss {ratio:.3f}x FP32's (allowed within 10%)"
        say(f"{STYLE_NETWORK}: {variant} max_abs_err {error:.3g}; timing")
        speed = speeds(run, batch_sizes, size, repeats)
        quality[f"images_per_s_{size}"] = speed
        quality[f"images_per_s_{large_size}_batch1"] = round(images_per_second(run, 1, large_size, 1), 3)
        quality[f"torch_images_per_s_{size}"] = torch_speed
        quality[f"torch_images_per_s_{large_size}_batch1"] = torch_large
        best = max(speed, key=speed.get)
        kept = quality["kept"]
        if not kept:
            del session, run
            path.unlink(missing_ok=True)
        rows.append(
            _row(
                variant,
                path if kept else None,
                max_abs_err=error,
                quality=quality,
                images_per_s_batch1=speed.get(1),
                images_per_s_best=speed[best],
                best_batch=best,
                **torch_figures,
            )
        )

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        say(f"{STYLE_NETWORK}: TensorRT skipped: {reason}")
        rows.append(_row("tensorrt", None, quality={"kept": False, "note": f"skipped: {reason}"}))
        return rows
    plan = version_dir / "model.plan"
    say(f"{STYLE_NETWORK}: tensorrt -> {plan}")
    build_tensorrt_plan(
        fp32_path, version_dir / "model.fp16.onnx", plan, opt_batch=max(batch_sizes), size=size
    )
    run = tensorrt_runner(plan)
    error, scale, parity_rows = parity(run, reference, checks)
    quality = style_quality.evaluate(network, run, size)
    quality.pop("pairs")
    quality.update(
        parity=parity_rows, output_scale=round(scale, 5), kept=True, note="TensorRT FP16 plan (GPU)"
    )
    speed = speeds(run, batch_sizes, size, repeats)
    quality[f"images_per_s_{size}"] = speed
    best = max(speed, key=speed.get)
    rows.append(
        _row(
            "tensorrt",
            plan,
            max_abs_err=error,
            quality=quality,
            images_per_s_batch1=speed.get(1),
            images_per_s_best=speed[best],
            best_batch=best,
            **torch_figures,
        )
    )
    return rows
