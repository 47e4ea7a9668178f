"""Names of the internal models in the repository and of their ONNX tensors.

The endpoints (``gan``, ``style_transfer``, ``diffusion``) are in the client's contract; these are
the networks behind them, written by ``genserve export`` and called by the pipelines.
"""

GAN_GENERATOR = "gan_generator"
"""ONNX: ``z`` FP32 [B, latent_dim], ``label`` INT64 [B] -> ``image`` FP32 [B, C, H, W] in [-1, 1]."""

DIFFUSION_UNET = "diffusion_unet"
"""ONNX: ``x`` FP32 [B, C, H, W], ``t`` INT64 [B], ``y`` INT64 [B] (NUM_CLASSES = no label) -> ``eps``."""

STYLE_NETWORK = "style_network"
"""ONNX: ``content``, ``style`` FP32 [B, 3, H, W] in [-1, 1], ``alpha`` FP32 [B] -> ``image`` FP32."""

STYLE_TARGETS = "style_targets"
"""ONNX: ``content``, ``style`` FP32 [B, 3, H, W] -> ``content_features`` [B, 512, H/8, W/8], ``gram1`` ..
``gram4`` FP32 [B, C, C] (C = 64, 128, 256, 512): the optimization's targets, once per request."""

STYLE_GRADIENT = "style_gradient"
"""ONNX: ``image`` FP32 [B, 3, H, W], the targets, ``alpha`` FP32 [B] -> ``gradient`` [B, 3, H, W],
``loss`` [B]: one step of Gatys et al.'s optimization, written with forward operations only."""

MODEL_FILENAME = "model.onnx"

INPUT_BOUNDS_METADATA = "genserve.input_bounds"
"""ONNX metadata key: JSON ``{input: [low, high]}`` that the embedded ONNX Runtime backend checks per
request (an ONNX graph cannot raise an error that names its input, so the bounds travel with it)."""
