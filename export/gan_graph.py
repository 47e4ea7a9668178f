"""The whole ``gan`` endpoint as one ONNX graph: seed and label in, uint8 image out.

seed -> splitmix64 hash -> 53-bit uniforms -> Box-Muller -> latent ``z`` -> the exported generator ->
``to_uint8`` (clip, scale, round half to even, cast, NCHW -> NHWC). Every step is the op for op twin
of :func:`genserve.client.contract.seeded_normal` and :func:`~genserve.client.contract.to_uint8`,
which use only operations IEEE 754 rounds exactly, so the graph gives the very bytes the numpy code
gives, on any host. Its config says ``platform: "onnxruntime_onnx"``: NVIDIA's container runs the
endpoint on its native ONNX Runtime backend with no Python at all, the embedded server with one hop.

The generator's nodes keep their names inside the graph under a prefix. Input bounds travel in the
model's metadata (``INPUT_BOUNDS_METADATA``) for the embedded backend to check per request; a label
outside them also makes the graph's embedding lookup fail, so no host serves a wrong image for it.
This module needs onnx and numpy only (no torch): the benchmarks build the endpoint around any
exported generator with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from genserve.client import contract
from genserve.server.model_names import INPUT_BOUNDS_METADATA

PREFIX = "generator/"
_SHIFT_11 = 11


class _Builder:
    """Appends ONNX nodes and constants with unique names; methods return the output name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"latent/{hint}_{self._count}"

    def const(self, value: object, dtype: type) -> str:
        name = self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: object) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attributes))
        return out

    def u64(self, value: int | np.uint64) -> str:
        return self.const(np.uint64(value), np.uint64)

    def f64(self, value: float) -> str:
        return self.const(value, np.float64)

    def horner(self, z: str, coeffs: tuple[float, ...]) -> str:
        """``contract._horner``: the same sequence of multiplies and adds."""
        result = self.op("Expand", self.f64(coeffs[-1]), self.op("Shape", z))
        for c in coeffs[-2::-1]:
            result = self.op("Add", self.op("Mul", result, z), self.f64(c))
        return result

    def splitmix64(self, x: str) -> str:
        z = self.op("Add", x, self.u64(contract.GOLDEN))
        for shift, mix in ((30, contract.MIX1), (27, contract.MIX2)):
            z = self.op("BitwiseXor", z, self.op("BitShift", z, self.u64(shift), direction="RIGHT"))
            z = self.op("Mul", z, self.u64(mix))
        return self.op("BitwiseXor", z, self.op("BitShift", z, self.u64(31), direction="RIGHT"))


def _exact_log(b: _Builder, u: str) -> str:
    """``contract.exact_log`` for ``u`` in (0, 1]: frexp done with a comparison table (exact)."""
    # u = mantissa * 2**exponent, mantissa in [0.5, 1): exponent = 1 - #{j in 1..53 : u < 2**(1-j)}.
    thresholds = b.const([2.0 ** (1 - j) for j in range(1, 54)], np.float64)
    below = b.op("Less", b.op("Unsqueeze", u, b.const([-1], np.int64)), thresholds)
    count = b.op("ReduceSum", b.op("Cast", below, to=TensorProto.INT64), b.const([-1], np.int64), keepdims=0)
    scale = b.op("Gather", b.const([2.0 ** (c - 1) for c in range(54)], np.float64), count)  # 2**-exponent
    mantissa = b.op("Mul", u, scale)
    exponent = b.op("Sub", b.f64(1.0), b.op("Cast", count, to=TensorProto.DOUBLE))
    low = b.op("Less", mantissa, b.f64(contract.SQRT_HALF))
    mantissa = b.op("Where", low, b.op("Mul", mantissa, b.f64(2.0)), mantissa)
    exponent = b.op("Sub", exponent, b.op("Cast", low, to=TensorProto.DOUBLE))
    s = b.op("Div", b.op("Sub", mantissa, b.f64(1.0)), b.op("Add", mantissa, b.f64(1.0)))
    log_mantissa = b.op("Mul", s, b.horner(b.op("Mul", s, s), contract.LOG_COEFFS))
    high = b.op("Mul", exponent, b.f64(contract.LN2_HI))
    return b.op("Add", high, b.op("Add", b.op("Mul", exponent, b.f64(contract.LN2_LO)), log_mantissa))


def _exact_cos_sin(b: _Builder, turns: str) -> tuple[str, str]:
    """``contract.exact_cos_sin``."""
    quadrant = b.op("Round", b.op("Mul", turns, b.f64(4.0)))  # half to even, like np.rint
    angle = b.op("Sub", turns, b.op("Mul", quadrant, b.f64(0.25)))
    angle = b.op(
        "Add", b.op("Mul", angle, b.f64(contract.TWO_PI)), b.op("Mul", angle, b.f64(contract.TWO_PI_LO))
    )
    square = b.op("Mul", angle, angle)
    sin = b.op("Mul", angle, b.horner(square, contract.SIN_COEFFS))
    cos = b.horner(square, contract.COS_COEFFS)
    index = b.op("Mod", b.op("Cast", quadrant, to=TensorProto.INT64), b.const(4, np.int64))
    odd = b.op("Cast", b.op("Mod", index, b.const(2, np.int64)), to=TensorProto.BOOL)
    cos_sign = b.op("Gather", b.const(contract.QUADRANT_COS_SIGN, np.float64), index)
    sin_sign = b.op("Gather", b.const(contract.QUADRANT_SIN_SIGN, np.float64), index)
    return (
        b.op("Mul", b.op("Where", odd, sin, cos), cos_sign),
        b.op("Mul", b.op("Where", odd, cos, sin), sin_sign),
    )


def latent_nodes(b: _Builder, seed: str, size: int, stream: int = 0) -> str:
    """Nodes computing ``seeded_normal(seed, size, stream)`` as float32 ``[N, size]`` from seed ``[N, 1]``."""
    half = (size + 1) // 2
    with np.errstate(over="ignore"):
        stream_key = contract.splitmix64(np.array([stream], dtype=np.uint64))[0]
        offsets = np.arange(2 * half, dtype=np.uint64).reshape(1, -1) * contract.GOLDEN
    seeds = b.op("Cast", seed, to=TensorProto.UINT64)  # [N, 1]
    key = b.splitmix64(b.op("BitwiseXor", seeds, b.u64(stream_key)))
    bits = b.splitmix64(b.op("Add", key, b.const(offsets, np.uint64)))  # [N, 2 * half]
    top = b.op("Cast", b.op("BitShift", bits, b.u64(_SHIFT_11), direction="RIGHT"), to=TensorProto.DOUBLE)
    uniform = b.op("Div", b.op("Add", top, b.f64(1.0)), b.f64(2.0**53))
    u1 = b.op("Slice", uniform, b.const([0], np.int64), b.const([half], np.int64), b.const([1], np.int64))
    u2 = b.op(
        "Slice", uniform, b.const([half], np.int64), b.const([2 * half], np.int64), b.const([1], np.int64)
    )
    radius = b.op("Sqrt", b.op("Mul", b.f64(-2.0), _exact_log(b, u1)))
    cos, sin = _exact_cos_sin(b, u2)
    normal = b.op("Concat", b.op("Mul", radius, cos), b.op("Mul", radius, sin), axis=1)
    normal = b.op("Slice", normal, b.const([0], np.int64), b.const([size], np.int64), b.const([1], np.int64))
    return b.op("Cast", normal, to=TensorProto.FLOAT)


def _to_uint8_nodes(b: _Builder, images: str) -> str:
    """``contract.to_uint8`` on float32 NCHW: the same float32 clip, add, multiply and rounding."""
    clipped = b.op("Clip", images, b.const(-1.0, np.float32), b.const(1.0, np.float32))
    scaled = b.op("Mul", b.op("Add", clipped, b.const(1.0, np.float32)), b.const(127.5, np.float32))
    pixels = b.op("Cast", b.op("Round", scaled), to=TensorProto.UINT8)
    return b.op("Transpose", pixels, perm=[0, 2, 3, 1])


def _latent_dim(generator: onnx.ModelProto) -> int:
    z = next(t for t in generator.graph.input if t.name == "z")
    return int(z.type.tensor_type.shape.dim[1].dim_value)


def gan_endpoint_model(generator: onnx.ModelProto) -> onnx.ModelProto:
    """The ``gan`` endpoint around an exported generator (inputs ``z`` [B, latent], ``label`` [B]).

    Returns:
        A model with inputs ``seed`` and ``label`` (INT64 ``[B, 1]``) and output ``image`` (UINT8
        ``[B, H, W, C]``); the generator's nodes keep their names under ``generator/``.
    """
    latent_dim = _latent_dim(generator)
    inner = onnx.compose.add_prefix(generator, PREFIX)
    out_shape = [d.dim_value for d in generator.graph.output[0].type.tensor_type.shape.dim[1:]]
    channels, height, width = out_shape
    b = _Builder()
    z = latent_nodes(b, "seed", latent_dim)
    b.nodes.append(helper.make_node("Identity", [z], [f"{PREFIX}z"], name="latent/z"))
    # An invalid label becomes an index past the embedding table, so the lookup fails loudly.
    label = b.op("Squeeze", "label", b.const([1], np.int64))
    valid = b.op(
        "And",
        b.op("GreaterOrEqual", label, b.const(contract.LABEL.low, np.int64)),
        b.op("LessOrEqual", label, b.const(contract.LABEL.high, np.int64)),
    )
    b.nodes.append(
        helper.make_node(
            "Where", [valid, label, b.const(2**62, np.int64)], [f"{PREFIX}label"], name="latent/label"
        )
    )
    before = len(b.nodes)  # the nodes above feed the generator, the ones below read its output
    image = _to_uint8_nodes(b, f"{PREFIX}{generator.graph.output[0].name}")
    b.nodes.append(helper.make_node("Identity", [image], ["image"], name="image"))
    graph = helper.make_graph(
        nodes=[*b.nodes[:before], *inner.graph.node, *b.nodes[before:]],
        name="gan_endpoint",
        inputs=[
            helper.make_tensor_value_info("seed", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch", 1]),
        ],
        outputs=[
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", height, width, channels])
        ],
        initializer=[*b.initializers, *inner.graph.initializer],
        value_info=list(inner.graph.value_info),
    )
    opsets = {o.domain: o.version for o in generator.opset_import}
    opsets[""] = max(opsets.get("", 18), 18)  # BitwiseXor needs opset 18
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = generator.ir_version
    for function in inner.functions:
        model.functions.append(function)
    bounded = [t for t in contract.GAN.inputs if t.bound is not None]
    bounds = {t.name: [int(t.bound.low), int(t.bound.high)] for t in bounded}
    helper.set_model_props(model, {INPUT_BOUNDS_METADATA: json.dumps(bounds), "latent_dim": str(latent_dim)})
    onnx.checker.check_model(model)
    return model


def write_gan_endpoint(generator_path: Path, out_path: Path) -> Path:
    """Build the endpoint graph around the generator file and write it (self-contained) to ``out_path``."""
    model = gan_endpoint_model(onnx.load(str(generator_path)))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return out_path


def endpoint_mismatches(endpoint_path: Path, generator_path: Path, seeds: np.ndarray) -> int:
    """How many images the endpoint graph makes that differ from numpy latents + generator + to_uint8.

    Runs both in ONNX Runtime on one batch of ``seeds`` (labels cycle through 0..9).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    endpoint = ort.InferenceSession(str(endpoint_path), options, providers=["CPUExecutionProvider"])
    generator = ort.InferenceSession(str(generator_path), options, providers=["CPUExecutionProvider"])
    seeds = np.asarray(seeds, dtype=np.int64)
    labels = np.arange(len(seeds), dtype=np.int64) % contract.NUM_CLASSES
    (images,) = endpoint.run(["image"], {"seed": seeds.reshape(-1, 1), "label": labels.reshape(-1, 1)})
    z = contract.gan_latents(seeds, _latent_dim(onnx.load(str(generator_path))))
    (reference,) = generator.run(["image"], {"z": z, "label": labels})
    return int(np.any(images != contract.to_uint8(reference), axis=(1, 2, 3)).sum())
