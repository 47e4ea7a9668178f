"""Model definitions, training, ONNX export and quality checks (needs torch)."""
