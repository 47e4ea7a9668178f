"""The ``diffusion`` endpoint: a decoupled DDIM sampler whose UNet calls batch across requests.

Each request runs the DDIM loop of :mod:`genserve.server.ddim` as its own coroutine; every step
``await``s one call to the UNet model, whose dynamic batcher joins the steps of all requests in
flight, whatever step each is at. Classifier-free guidance doubles the rows of a call, not the calls.
Previews stream back as extra responses; a cancelled request stops sampling at its next step.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import (
    DIFFUSION,
    ETA,
    GUIDANCE,
    LABEL,
    PREVIEW_EVERY,
    SEED,
    STEPS,
    to_uint8,
)
from genserve.server.ddim import DDIMSchedule, UNetCall, initial_noise, sample_loop
from genserve.server.iterative import Cancelled, drive
from genserve.server.model_facts import check_image_output, network_facts
from genserve.server.model_names import DIFFUSION_UNET
from genserve.server.triton_glue import (
    Admission,
    check_bls_response,
    error_response,
    output_array,
    read_inputs,
    scalar_rows,
)

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
INPUTS = DIFFUSION.input_names


class TritonPythonModel:
    """DDIM sampling, one coroutine per request, UNet steps batched across requests."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.unet = params.get("unet", DIFFUSION_UNET)
        facts = network_facts(args["model_repository"], self.unet, "schedule", "image_shape")
        self.schedule = DDIMSchedule.from_dict(facts["schedule"])
        self.image_shape = tuple(facts["image_shape"])  # (C, H, W)
        check_image_output(config, self.image_shape)
        # Decoupled requests never wait in Triton's queue: admission is bounded here instead.
        self.max_active = int(params.get("max_concurrent_requests", "64"))
        self.active = 0
        self.admission = Admission("diffusion")

    async def execute(self, requests: list[Any]) -> None:
        await asyncio.gather(*(self._serve(request) for request in requests))

    async def _serve(self, request: Any) -> None:
        sender = request.get_response_sender()
        if self.admission.refusing():
            sender.send(self.admission.refusal(), flags=FINAL)
            return
        if self.active >= self.max_active:
            message = f"diffusion: overloaded, {self.active} requests already sampling; retry later"
            sender.send(error_response(message, pb_utils.TritonError.UNAVAILABLE), flags=FINAL)
            return
        self.active += 1
        self.admission.started()
        try:
            await self._serve_admitted(request, sender)
        finally:
            self.active -= 1
            self.admission.finished()

    async def _serve_admitted(self, request: Any, sender: Any) -> None:
        try:
            settings = self._settings(read_inputs(request, INPUTS))
        except ValueError as error:
            sender.send(error_response(f"diffusion: {error}"), flags=FINAL)
            return
        try:
            images = await self._sample(sender, **settings)
        except Cancelled:
            sender.send(
                error_response("diffusion: request cancelled", pb_utils.TritonError.CANCELLED), flags=FINAL
            )
            return
        except Exception as error:
            sender.send(error_response(f"diffusion: {error}", pb_utils.TritonError.INTERNAL), flags=FINAL)
            return
        sender.send(self._response(images, settings["steps"]), flags=FINAL)

    def _settings(self, arrays: dict[str, np.ndarray | None]) -> dict[str, Any]:
        if arrays["label"] is None:
            raise ValueError("input 'label' is missing")
        rows = arrays["label"].size
        DIFFUSION.check_images(rows)
        labels = scalar_rows(arrays["label"], LABEL, rows).astype(np.int64)
        if arrays["seed"] is None:
            raise ValueError("input 'seed' is missing")
        seeds = scalar_rows(arrays["seed"], SEED, rows).astype(np.int64)
        steps = int(scalar_rows(arrays["steps"], STEPS, 1)[0])
        if steps > self.schedule.num_train_timesteps:
            raise ValueError(
                f"steps={steps} is out of range; allowed range [1, {self.schedule.num_train_timesteps}]"
            )
        return {
            "labels": labels,
            "seeds": seeds,
            "steps": steps,
            "guidance": float(scalar_rows(arrays["guidance"], GUIDANCE, 1)[0]),
            "eta": float(scalar_rows(arrays["eta"], ETA, 1)[0]),
            "preview_every": int(scalar_rows(arrays["preview_every"], PREVIEW_EVERY, 1)[0]),
        }

    async def _sample(
        self,
        sender: Any,
        *,
        labels: np.ndarray,
        seeds: np.ndarray,
        steps: int,
        guidance: float,
        eta: float,
        preview_every: int,
    ) -> np.ndarray:
        x_T = initial_noise(seeds, self.image_shape)
        loop = sample_loop(self.schedule, x_T, labels, steps=steps, guidance=guidance, eta=eta, seeds=seeds)

        def preview(call: UNetCall) -> None:
            if preview_every and call.step % preview_every == 0:  # call.step = steps done so far
                sender.send(self._response(call.x[: len(labels)], call.step))

        return await drive(loop, self._eps, cancelled=sender.is_cancelled, on_progress=preview)

    async def _eps(self, call: UNetCall) -> np.ndarray:
        request = pb_utils.InferenceRequest(
            model_name=self.unet,
            inputs=[
                pb_utils.Tensor("x", call.x),
                pb_utils.Tensor("t", call.t.reshape(-1, 1)),
                pb_utils.Tensor("y", call.y.reshape(-1, 1)),
            ],
            requested_output_names=["eps"],
        )
        response = await request.async_exec()
        check_bls_response(response, self.unet)
        return output_array(response, "eps")

    def _response(self, images: np.ndarray, step: int) -> Any:
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor("image", to_uint8(images)),
                pb_utils.Tensor("step", np.array([step], dtype=np.int32)),
            ]
        )
