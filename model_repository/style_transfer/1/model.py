"""The ``style_transfer`` endpoint: a content and a style image in, the stylized image out.

Images arrive encoded (``content``/``style``, PNG or JPEG bytes) or as uint8 pixels
(``content_pixels``/``style_pixels``). Each is checked and decoded before any model runs, resized so
its longer side is one of a few canvas sizes, and reflect-padded to a square. Two methods:

- ``feed_forward`` (default): pairs of one size share a batch of the style network;
- ``optimize``: Gatys et al.'s optimization of the image, ``iterations`` Adam steps. Each request
  is a coroutine (``genserve.server.iterative.drive`` over ``genserve.server.gatys.optimize_loop``)
  that asks ``style_targets`` once and then ``style_gradient`` once per step; the gradient
  network's dynamic batcher joins the steps of every request in flight with the same canvas size.
  A cancelled request stops at its next step.

The output is cropped back, its colour histograms are matched to the style image's
(``genserve.server.colour``, weighted by the row's ``alpha``), and it is returned as pixels and/or
PNG bytes, with the size used.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import (
    ALPHA,
    ITERATIONS,
    STYLE,
    STYLE_METHODS,
    check_pixels,
    from_uint8,
    to_uint8,
)
from genserve.server.colour import match_histograms
from genserve.server.gatys import GradientCall, optimize_loop
from genserve.server.images import (
    Letterbox,
    choose_size,
    decode_image,
    encode_png,
    letterbox,
    resize,
)
from genserve.server.iterative import Cancelled, drive
from genserve.server.model_names import STYLE_GRADIENT, STYLE_NETWORK, STYLE_TARGETS
from genserve.server.triton_glue import (
    Admission,
    check_bls_response,
    error_response,
    output_array,
    read_inputs,
    scalar_rows,
)

INPUTS = STYLE.input_names
TARGETS = ("content_features", "gram1", "gram2", "gram3", "gram4")

Row = tuple[int, np.ndarray, np.ndarray, float, Letterbox]
"""(request index, content canvas, style canvas, alpha, letterbox)."""


class TritonPythonModel:
    """Decode, letterbox, stylize (batched network or batched optimization steps), crop, match, encode."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.network = params.get("network", STYLE_NETWORK)
        self.network_max_batch = int(params.get("network_max_batch", "4"))
        self.targets = params.get("targets", STYLE_TARGETS)
        self.gradient = params.get("gradient", STYLE_GRADIENT)
        self.admission = Admission("style_transfer")

    async def execute(self, requests: list[Any]) -> list[Any]:
        if self.admission.refusing():
            return [self.admission.refusal() for _ in requests]
        self.admission.started(len(requests))
        try:
            return await self._execute(requests)
        finally:
            self.admission.finished(len(requests))

    async def _execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        feed_forward: list[Row] = []
        optimize: list[tuple[int, list[Row], int]] = []  # (request, rows, iterations)
        for index, request in enumerate(requests):
            try:
                arrays = read_inputs(request, INPUTS)
                method, iterations = _method(arrays)
                rows = [(index, *row) for row in self._prepare(arrays)]
            except ValueError as error:
                responses[index] = error_response(f"style_transfer: {error}")
                continue
            if method == "optimize":
                optimize.append((index, rows, iterations))
            else:
                feed_forward.extend(rows)
        outputs: dict[int, list[tuple[np.ndarray, int]]] = {}
        failed: dict[int, Any] = {}
        await asyncio.gather(
            self._feed_forward(feed_forward, outputs, failed),
            *(self._optimize(requests[i], rows, n, outputs, failed) for i, rows, n in optimize),
        )
        for index, request in enumerate(requests):
            if responses[index] is not None:
                continue
            if index in failed:
                responses[index] = failed[index]
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

    # -- feed-forward ---------------------------------------------------------------------------
    async def _feed_forward(self, rows: list[Row], outputs: dict, failed: dict) -> None:
        chunks = []
        for size in sorted({row[4].size for row in rows}):
            group = [row for row in rows if row[4].size == size]
            chunks += [
                group[i : i + self.network_max_batch] for i in range(0, len(group), self.network_max_batch)
            ]
        results = await asyncio.gather(*(self._stylize(chunk) for chunk in chunks), return_exceptions=True)
        for chunk, stylized in zip(chunks, results, strict=True):
            if isinstance(stylized, BaseException):
                for row in chunk:
                    failed[row[0]] = _internal(stylized)
                continue
            _finish(chunk, stylized, outputs)

    async def _stylize(self, chunk: list[Row]) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.network,
            inputs=[
                pb_utils.Tensor("content", from_uint8(np.stack([row[1] for row in chunk]))),
                pb_utils.Tensor("style", from_uint8(np.stack([row[2] for row in chunk]))),
                pb_utils.Tensor("alpha", _alphas(chunk)),
            ],
            requested_output_names=["image"],
        )
        response = await request.async_exec()
        check_bls_response(response, self.network)
        return to_uint8(output_array(response, "image"))

    # -- optimization ---------------------------------------------------------------------------
    async def _optimize(
        self, request: Any, rows: list[Row], iterations: int, outputs: dict, failed: dict
    ) -> None:
        content = from_uint8(np.stack([row[1] for row in rows]))  # (N, 3, S, S)
        try:
            targets = await self._call(
                self.targets,
                {"content": content, "style": from_uint8(np.stack([row[2] for row in rows]))},
                TARGETS,
            )
            alphas = _alphas(rows)

            async def gradient(call: GradientCall) -> np.ndarray:
                feeds = {"image": call.image, **targets, "alpha": alphas}
                return (await self._call(self.gradient, feeds, ("gradient",)))["gradient"]

            loop = optimize_loop(content, iterations=iterations)
            images = await drive(loop, gradient, cancelled=lambda: _is_cancelled(request))
        except Cancelled:
            failed[rows[0][0]] = error_response(
                "style_transfer: request cancelled", pb_utils.TritonError.CANCELLED
            )
            return
        except Exception as error:
            failed[rows[0][0]] = _internal(error)
            return
        _finish(rows, to_uint8(images), outputs)

    async def _call(
        self, model: str, feeds: dict[str, np.ndarray], names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        request = pb_utils.InferenceRequest(
            model_name=model,
            inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()],
            requested_output_names=list(names),
        )
        response = await request.async_exec()
        check_bls_response(response, model)
        return {name: output_array(response, name) for name in names}

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


def _finish(rows: list[Row], stylized: np.ndarray, outputs: dict) -> None:
    """Crop each stylized canvas back and match its colours to the style, weighted by alpha."""
    for row, image in zip(rows, stylized, strict=True):
        finished = match_histograms(row[4].crop(image), row[2], row[3])
        outputs.setdefault(row[0], []).append((finished, row[4].size))


def _alphas(rows: list[Row]) -> np.ndarray:
    return np.array([[row[3]] for row in rows], dtype=np.float32)


def _internal(error: BaseException) -> Any:
    return error_response(f"style_transfer: {error}", pb_utils.TritonError.INTERNAL)


def _is_cancelled(request: Any) -> bool:
    return bool(request.is_cancelled())


def _method(arrays: dict[str, np.ndarray | None]) -> tuple[str, int]:
    """The request's ``method`` and ``iterations`` (one value for the whole request)."""
    method = STYLE_METHODS[0]
    if arrays["method"] is not None:
        values = {_text(value) for value in np.asarray(arrays["method"]).reshape(-1)}
        if len(values) != 1:
            raise ValueError(f"method must be one value for the whole request; got {sorted(values)}")
        method = values.pop()
        if method not in STYLE_METHODS:
            raise ValueError(f"method={method!r} is not allowed; allowed: {', '.join(STYLE_METHODS)}")
    iterations = int(ITERATIONS.default)
    if arrays["iterations"] is not None:
        values = np.asarray(arrays["iterations"]).reshape(-1)
        ITERATIONS.check(values)
        if len(set(values.tolist())) != 1:
            raise ValueError(
                f"iterations must be one value for the whole request; got {sorted(set(values.tolist()))}"
            )
        iterations = int(values[0])
    return method, iterations


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _images(arrays: dict[str, np.ndarray | None], name: str) -> list[np.ndarray]:
    """The rows of ``name`` (encoded) or ``name_pixels`` (uint8), exactly one of which must be given."""
    encoded, pixels = arrays[name], arrays[f"{name}_pixels"]
    if (encoded is None) == (pixels is None):
        raise ValueError(f"give exactly one of '{name}' (encoded bytes) or '{name}_pixels' (uint8 [H, W, 3])")
    if pixels is not None:
        return [check_pixels(np.asarray(row), f"{name}_pixels") for row in pixels]
    return [decode_image(bytes(value), name) for value in np.asarray(encoded).reshape(-1)]
