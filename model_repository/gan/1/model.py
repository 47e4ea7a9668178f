"""The ``gan`` endpoint: seeds and labels in, uint8 images out.

Dynamic batching gathers requests; bad rows get their own error; the valid ones become one batch of
latents (drawn from each row's seed alone, so an image never depends on its batch-mates), one call
to the ONNX generator, and uint8 images split back per request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import LABEL, SEED, seeded_normal, to_uint8
from genserve.server.batching import split_rows
from genserve.server.model_names import GAN_GENERATOR
from genserve.server.triton_glue import (
    check_bls_response,
    error_response,
    output_array,
    read_inputs,
    scalar_rows,
)


class TritonPythonModel:
    """Seeds -> latents -> generator -> uint8."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.latent_dim = int(config["parameters"]["latent_dim"]["string_value"])
        self.generator = config["parameters"].get("generator", {}).get("string_value", GAN_GENERATOR)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        valid, seeds, labels = [], [], []
        for index, request in enumerate(requests):
            arrays = read_inputs(request, ("seed", "label"))
            try:
                rows = len(arrays["seed"]) if arrays["seed"] is not None else 1
                request_seeds = scalar_rows(arrays["seed"], SEED, rows)
                request_labels = scalar_rows(arrays["label"], LABEL, rows)
            except ValueError as error:
                responses[index] = error_response(str(error))
                continue
            valid.append(index)
            seeds.append(request_seeds)
            labels.append(request_labels)
        if not valid:
            return responses
        try:
            images = self._generate(np.concatenate(seeds), np.concatenate(labels))
            parts = split_rows({"image": images}, [len(s) for s in seeds])
            for index, part in zip(valid, parts, strict=True):
                responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor("image", part["image"])])
        except Exception as error:
            for index in valid:
                responses[index] = error_response(f"gan: {error}", pb_utils.TritonError.INTERNAL)
        return responses

    def _generate(self, seeds: np.ndarray, labels: np.ndarray) -> np.ndarray:
        latents = seeded_normal(seeds, self.latent_dim)
        request = pb_utils.InferenceRequest(
            model_name=self.generator,
            inputs=[
                pb_utils.Tensor("z", latents),
                pb_utils.Tensor("label", labels.astype(np.int64).reshape(-1, 1)),
            ],
            requested_output_names=["image"],
        )
        response = request.exec()
        check_bls_response(response, self.generator)
        return to_uint8(output_array(response, "image"))
