"""The ``style_transfer`` endpoint: a content and a style image in, the stylized image out.

Images arrive encoded (``content``/``style``, PNG or JPEG bytes) or as uint8 pixels
(``content_pixels``/``style_pixels``). Each is checked and decoded before any model runs, resized so
its longer side is one of a few canvas sizes, and reflect-padded to a square: pairs of one size share
a batch of the style network. The output is cropped back, its colour histograms are matched to the
style image's (``genserve.server.colour``, weighted by the row's ``alpha``), and it is returned as
pixels and/or PNG bytes, with the size used.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import ALPHA, STYLE, check_pixels, from_uint8, to_uint8
from genserve.server.colour import match_histograms
from genserve.server.images import (
    Letterbox,
    choose_size,
    decode_image,
    encode_png,
    letterbox,
    resize,
)
from genserve.server.model_names import STYLE_NETWORK
from genserve.server.triton_glue import (
    Admission,
    check_bls_response,
    error_response,
    output_array,
    read_inputs,
    scalar_rows,
)

INPUTS = STYLE.input_names


class TritonPythonModel:
    """Decode, letterbox, batch by size, stylize, crop, encode."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.network = params.get("network", STYLE_NETWORK)
        self.network_max_batch = int(params.get("network_max_batch", "4"))
        self.admission = Admission("style_transfer")

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.admission.refusing():
            return [self.admission.refusal() for _ in requests]
        self.admission.started(len(requests))
        try:
            return self._execute(requests)
        finally:
            self.admission.finished(len(requests))

    def _execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        rows: list[
            tuple[int, np.ndarray, np.ndarray, float, Letterbox]
        ] = []  # (request, content, style, alpha, box)
        for index, request in enumerate(requests):
            try:
                rows.extend((index, *row) for row in self._prepare(read_inputs(request, INPUTS)))
            except ValueError as error:
                responses[index] = error_response(f"style_transfer: {error}")
        outputs: dict[int, list[tuple[np.ndarray, int]]] = {}
        failed: dict[int, str] = {}
        for size in sorted({row[4].size for row in rows}):
            group = [row for row in rows if row[4].size == size]
            for start in range(0, len(group), self.network_max_batch):
                chunk = group[start : start + self.network_max_batch]
                try:
                    stylized = self._stylize(chunk)
                except Exception as error:
                    for row in chunk:
                        failed[row[0]] = f"style_transfer: {error}"
                    continue
                for row, image in zip(chunk, stylized, strict=True):
                    finished = match_histograms(row[4].crop(image), row[2], row[3])
                    outputs.setdefault(row[0], []).append((finished, size))
        for index, request in enumerate(requests):
            if responses[index] is not None:
                continue
            if index in failed:
                responses[index] = error_response(failed[index], pb_utils.TritonError.INTERNAL)
            else:
                responses[index] = self._response(outputs[index], request.requested_output_names())
        return responses

    def _prepare(
        self, arrays: dict[str, np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray, float, Letterbox]]:
        contents = _images(arrays, "content")
        styles = _images(arrays, "style")
        if len(styles) not in (1, len(contents)):
            raise ValueError(
                f"got {len(contents)} content images and {len(styles)} style images; give 1 or as many"
            )
        if len({image.shape for image in contents}) > 1:
            raise ValueError("content images of one request must share one size; send them separately")
        styles = styles * len(contents) if len(styles) == 1 else styles
        alphas = scalar_rows(arrays["alpha"], ALPHA, len(contents))
        requested = None
        if arrays["size"] is not None:
            requested = int(np.asarray(arrays["size"]).reshape(-1)[0])
        prepared = []
        for content, style, alpha in zip(contents, styles, alphas, strict=True):
            size = choose_size(*content.shape[:2], requested)
            canvas, box = letterbox(content, size)
            prepared.append((canvas, resize(style, size, size), float(alpha), box))
        return prepared

    def _stylize(self, chunk: list) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.network,
            inputs=[
                pb_utils.Tensor("content", from_uint8(np.stack([row[1] for row in chunk]))),
                pb_utils.Tensor("style", from_uint8(np.stack([row[2] for row in chunk]))),
                pb_utils.Tensor("alpha", np.array([[row[3]] for row in chunk], dtype=np.float32)),
            ],
            requested_output_names=["image"],
        )
        response = request.exec()
        check_bls_response(response, self.network)
        return to_uint8(output_array(response, "image"))

    def _response(self, results: list[tuple[np.ndarray, int]], requested: list[str]) -> Any:
        wanted = set(requested) or {"image", "size"}
        tensors = []
        if "image" in wanted:
            tensors.append(pb_utils.Tensor("image", np.stack([image for image, _ in results])))
        if "image_png" in wanted:
            encoded = np.array([[encode_png(image)] for image, _ in results], dtype=np.object_)
            tensors.append(pb_utils.Tensor("image_png", encoded))
        if "size" in wanted:
            tensors.append(pb_utils.Tensor("size", np.array([[size] for _, size in results], dtype=np.int32)))
        return pb_utils.InferenceResponse(tensors)


def _images(arrays: dict[str, np.ndarray | None], name: str) -> list[np.ndarray]:
    """The rows of ``name`` (encoded) or ``name_pixels`` (uint8), exactly one of which must be given."""
    encoded, pixels = arrays[name], arrays[f"{name}_pixels"]
    if (encoded is None) == (pixels is None):
        raise ValueError(f"give exactly one of '{name}' (encoded bytes) or '{name}_pixels' (uint8 [H, W, 3])")
    if pixels is not None:
        return [check_pixels(np.asarray(row), f"{name}_pixels") for row in pixels]
    return [decode_image(bytes(value), name) for value in np.asarray(encoded).reshape(-1)]
