"""The serving side: the embedded Triton launcher, the ONNX Runtime backend, pipeline helpers (no torch)."""
