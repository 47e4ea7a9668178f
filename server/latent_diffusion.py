"""What a latent text-to-image pipeline needs besides its networks: its facts, prompt tokens, image checks.

``genserve export --from-diffusers`` writes each fact of the model it converts (text length, latent
shape, VAE scaling, the schedule, the prediction type) as a parameter of the pipeline's generated
``config.pbtxt``, and the prompt tokenizer as ``tokenizer.json`` beside its ``model.py``; the serving
pipeline reads both at load time, so nothing here fits only one model. No torch: this runs in
Triton's Python stub and in export's checks alike.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genserve.server.ddim import DDIMSchedule
from genserve.server.images import decode_image

PARTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
"""The ONNX networks of a pipeline; the model of part ``p`` of pipeline ``name`` is ``{name}_{p}``."""
TENSORS = {
    "text_encoder": (("input_ids",), "last_hidden_state"),
    "unet": (("sample", "timestep", "encoder_hidden_states"), "noise_pred"),
    "vae_decoder": (("latent",), "image"),
    "vae_encoder": (("image",), "latent"),
}
"""Input and output tensor names of each part, in ``forward`` order."""
TOKENIZER_FILE = "tokenizer.json"


def part_model(pipeline: str, part: str) -> str:
    """The repository name of one part of ``pipeline``."""
    return f"{pipeline}_{part}"


@dataclass(frozen=True)
class LatentFacts:
    """The facts of one converted pipeline, as its config parameters carry them.

    Attributes:
        text_length: Tokens per prompt the text encoder takes, start and end tokens included.
        text_width: Width of the text encoder's hidden states (the UNet's cross-attention width).
        pad_token_id: Token that fills a prompt up to ``text_length``.
        latent_channels: Channels of the VAE latent, the UNet's input and output.
        latent_size: Side of the square latent.
        image_size: Side of the square images the VAE decodes (and encodes, for image-to-image).
        scaling_factor: The VAE's ``scaling_factor``: the UNet sees ``(latent - shift) * scaling``.
        shift_factor: The VAE's ``shift_factor`` (0 for Stable Diffusion 1/2).
        schedule: :meth:`DDIMSchedule.to_dict` of the sampler, prediction type included.
    """

    text_length: int
    text_width: int
    pad_token_id: int
    latent_channels: int
    latent_size: int
    image_size: int
    scaling_factor: float
    shift_factor: float
    schedule: dict

    def to_parameters(self) -> dict[str, str]:
        """The facts as config parameters (strings; the schedule as JSON)."""
        values = asdict(self)
        values["schedule"] = json.dumps(self.schedule, sort_keys=True)
        return {key: str(value) for key, value in values.items()}

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> LatentFacts:
        """Read the facts back from config parameters.

        Raises:
            ValueError: naming the missing parameter (the config was not written by export).
        """
        missing = [name for name in cls.__dataclass_fields__ if name not in params]
        if missing:
            raise ValueError(f"config parameters {missing} are missing; regenerate with `genserve export`")
        return cls(
            text_length=int(params["text_length"]),
            text_width=int(params["text_width"]),
            pad_token_id=int(params["pad_token_id"]),
            latent_channels=int(params["latent_channels"]),
            latent_size=int(params["latent_size"]),
            image_size=int(params["image_size"]),
            scaling_factor=float(params["scaling_factor"]),
            shift_factor=float(params["shift_factor"]),
            schedule=json.loads(params["schedule"]),
        )

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent."""
        return (self.latent_channels, self.latent_size, self.latent_size)

    def ddim_schedule(self) -> DDIMSchedule:
        """The sampler's schedule."""
        return DDIMSchedule.from_dict(self.schedule)

    def to_unet(self, latent: np.ndarray) -> np.ndarray:
        """A VAE latent (the encoder's mean) in the UNet's scale."""
        return ((latent - self.shift_factor) * self.scaling_factor).astype(np.float32)

    def to_vae(self, latent: np.ndarray) -> np.ndarray:
        """A UNet-scale latent back in the VAE decoder's scale."""
        return (latent / self.scaling_factor + self.shift_factor).astype(np.float32)


class PromptTokenizer:
    """Prompts to the text encoder's token ids, with the ``tokenizers`` library (no transformers).

    Prompts are padded with the pad token to the model's length. A prompt with more tokens than that
    is rejected, never cut: the error says how many tokens it has and how many fit.

    Args:
        path: ``tokenizer.json`` (the fast tokenizer export writes; it adds the start and end tokens).
        length: Tokens per prompt, start and end tokens included.
        pad_token_id: Token id that fills the rest.
    """

    def __init__(self, path: Path | str, length: int, pad_token_id: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.length = int(length)
        self.pad_token_id = int(pad_token_id)

    def encode(self, prompts: Sequence[bytes | str], name: str = "prompt") -> np.ndarray:
        """int64 ``[N, length]`` token ids, one row per prompt.

        Raises:
            ValueError: naming the input and row, for bytes that are not UTF-8 or a prompt that is too long.
        """
        texts = []
        for row, prompt in enumerate(prompts):
            if isinstance(prompt, bytes):
                try:
                    prompt = prompt.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{name}[{row}] is not valid UTF-8 ({error.reason} at byte {error.start})"
                    ) from None
            texts.append(prompt)
        ids = np.full((len(texts), self.length), self.pad_token_id, dtype=np.int64)
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            tokens = encoding.ids
            if len(tokens) > self.length:
                raise ValueError(
                    f"{name}[{row}] has {len(tokens)} tokens; the text encoder takes at most {self.length} "
                    "(start and end tokens included); shorten it"
                )
            ids[row, : len(tokens)] = tokens
        return ids


def decode_init_image(data: bytes, image_size: int, name: str = "init_image") -> np.ndarray:
    """An encoded init image as float32 ``[3, S, S]`` in ``[-1, 1]``; it must be ``image_size`` square.

    The bytes are the encoded file (PNG, JPEG, ...) or, as JSON bodies carry them, a base64 ``data:`` URI.

    Raises:
        ValueError: naming the input, for bytes that are not an image or an image of another size.
    """
    if data.startswith(b"data:") and b";base64," in data[:100]:
        try:
            data = base64.b64decode(data.split(b";base64,", 1)[1], validate=True)
        except binascii.Error:
            raise ValueError(f"{name}: the data URI is not valid base64") from None
    pixels = decode_image(data, name)
    if pixels.shape[:2] != (image_size, image_size):
        height, width = pixels.shape[:2]
        raise ValueError(f"{name} is {width}x{height}; this model takes {image_size}x{image_size} images")
    return (pixels.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32)
