"""The ``text_to_image`` endpoint: latent diffusion from a prompt, UNet steps batched across requests.

Triton loads this as the ``model.py`` of a pipeline that ``genserve export --from-diffusers`` wrote
(that file imports it from here). Every fact of the model (text length, latent shape, VAE scaling,
schedule, prediction type, the part models' names) is a parameter of the generated config; prompts are
tokenized here from the exported ``tokenizer.json``.

Per request, as a coroutine: tokenize -> one text-encoder call for the prompts and the negative prompts
-> (image-to-image: one VAE-encoder call, then noise the latent to the starting step) -> the DDIM loop,
one UNet call per step -> one VAE-decoder call. Each call is a BLS request to an ONNX model whose
dynamic batcher joins the calls of every request in flight, so the UNet steps of concurrent requests
share executions (each row carries its own timestep), and so do their text encodings and decodes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from genserve.client.contract import (
    ETA,
    GUIDANCE,
    PREVIEW_EVERY,
    SEED,
    STEPS,
    STRENGTH,
    TEXT_TO_IMAGE,
    to_uint8,
)
from genserve.server.ddim import UNetCall, initial_noise, sample_loop
from genserve.server.latent_diffusion import (
    PARTS,
    TENSORS,
    TOKENIZER_FILE,
    LatentFacts,
    PromptTokenizer,
    decode_init_image,
)
from genserve.server.model_config import ModelSpec
from genserve.server.stepping import Cancelled, ConcurrencyLimit, run_steps
from genserve.server.triton_glue import (
    Admission,
    check_bls_response,
    output_array,
    read_inputs,
    scalar_rows,
    serve_decoupled,
)

INPUTS = TEXT_TO_IMAGE.input_names


class TritonPythonModel:
    """Latent text-to-image sampling, one coroutine per request, network calls batched across requests."""

    def initialize(self, args: dict[str, str]) -> None:
        spec = ModelSpec.from_triton(args["model_config"])
        self.name = spec.name
        params = spec.parameters
        self.facts = LatentFacts.from_parameters(params)
        self.schedule = self.facts.ddim_schedule()
        self.parts = {part: params[part] for part in PARTS}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = PromptTokenizer(
            folder / TOKENIZER_FILE, self.facts.text_length, self.facts.pad_token_id
        )
        # Decoupled requests never wait in Triton's queue: admission is bounded here instead.
        self.admission = Admission(self.name)
        self.limit = ConcurrencyLimit(int(params.get("max_concurrent_requests", "64")))

    async def execute(self, requests: list[Any]) -> None:
        await asyncio.gather(
            *(
                serve_decoupled(r, self.name, self.admission, self.limit, self._settings, self._run)
                for r in requests
            )
        )

    # -- checks, before any network runs ----------------------------------------------------------
    def _settings(self, request: Any) -> dict[str, Any]:
        arrays = read_inputs(request, INPUTS)
        if arrays["prompt"] is None:
            raise ValueError("input 'prompt' is missing")
        prompts = list(arrays["prompt"].reshape(-1))
        rows = len(prompts)
        TEXT_TO_IMAGE.check_images(rows, "prompt")
        negative = arrays["negative_prompt"]
        negatives = [b""] * rows if negative is None else list(negative.reshape(-1))
        if len(negatives) != rows:
            raise ValueError(
                f"input 'negative_prompt' has {len(negatives)} values; expected {rows}, one per prompt"
            )
        if arrays["seed"] is None:
            raise ValueError("input 'seed' is missing")
        steps = int(scalar_rows(arrays["steps"], STEPS, 1)[0])
        if steps > self.schedule.num_train_timesteps:
            raise ValueError(
                f"steps={steps} is out of range; allowed range [1, {self.schedule.num_train_timesteps}]"
            )
        settings: dict[str, Any] = {
            "ids": self.tokenizer.encode(prompts, "prompt"),
            "negative_ids": self.tokenizer.encode(negatives, "negative_prompt"),
            "seeds": scalar_rows(arrays["seed"], SEED, rows).astype(np.int64),
            "steps": steps,
            "guidance": float(scalar_rows(arrays["guidance"], GUIDANCE, 1)[0]),
            "eta": float(scalar_rows(arrays["eta"], ETA, 1)[0]),
            "preview_every": int(scalar_rows(arrays["preview_every"], PREVIEW_EVERY, 1)[0]),
            "init": None,
            "start_step": 0,
        }
        strength = float(scalar_rows(arrays["strength"], STRENGTH, 1)[0])
        if arrays["init_image"] is not None:
            images = list(arrays["init_image"].reshape(-1))
            if len(images) != rows:
                raise ValueError(
                    f"input 'init_image' has {len(images)} values; expected {rows}, one per prompt"
                )
            size = self.facts.image_size
            settings["init"] = np.stack(
                [decode_init_image(bytes(data), size, f"init_image[{i}]") for i, data in enumerate(images)]
            )
            settings["start_step"] = self.schedule.start_step(steps, strength)
        return settings

    # -- sampling -------------------------------------------------------------------------------
    async def _run(self, sender: Any, s: dict[str, Any]) -> Any:
        rows = len(s["seeds"])
        states = await self._call("text_encoder", np.concatenate([s["ids"], s["negative_ids"]]))
        noise = initial_noise(s["seeds"], self.facts.latent_shape)
        if s["init"] is None:
            x_T = noise
        else:
            latent = self.facts.to_unet(await self._call("vae_encoder", s["init"]))
            timesteps = self.schedule.timesteps(s["steps"])
            start = s["start_step"]
            x_T = (
                latent
                if start >= len(timesteps)
                else self.schedule.add_noise(latent, noise, np.full(rows, timesteps[start]))
            )
        loop = sample_loop(
            self.schedule,
            x_T,
            states[:rows],
            steps=s["steps"],
            guidance=s["guidance"],
            eta=s["eta"],
            seeds=s["seeds"],
            clip=self.schedule.clip_sample,
            unconditional=states[rows:],
            start_step=s["start_step"],
        )

        async def preview(call: UNetCall) -> None:
            sender.send(self._response(await self._decode(call.x[:rows]), call.step))

        latents = await run_steps(
            loop,
            self._unet,
            cancelled=sender.is_cancelled,
            preview_every=s["preview_every"],
            on_preview=preview,
        )
        if sender.is_cancelled():  # no decode for a client that has gone
            raise Cancelled
        return self._response(await self._decode(latents), s["steps"])

    async def _unet(self, call: UNetCall) -> np.ndarray:
        return await self._call("unet", call.x, call.t.reshape(-1, 1), call.y.astype(np.float32))

    async def _decode(self, latents: np.ndarray) -> np.ndarray:
        return await self._call("vae_decoder", self.facts.to_vae(latents))

    async def _call(self, part: str, *arrays: np.ndarray) -> np.ndarray:
        names, output = TENSORS[part]
        request = pb_utils.InferenceRequest(
            model_name=self.parts[part],
            inputs=[pb_utils.Tensor(n, np.ascontiguousarray(a)) for n, a in zip(names, arrays, strict=True)],
            requested_output_names=[output],
        )
        response = await request.async_exec()
        check_bls_response(response, self.parts[part])
        return output_array(response, output)

    def _response(self, images: np.ndarray, step: int) -> Any:
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor("image", to_uint8(images)),
                pb_utils.Tensor("step", np.array([step], dtype=np.int32)),
            ]
        )
