"""Generated captions of the digits: several phrasings per digit, some kept out of training.

The text-to-image model learns from captions such as "a handwritten 7" or "the digit seven". Its
quality check prompts it with *held-out* phrasings, which never appear in training: they recombine
the training words (numeral or name of the digit, "handwritten", "drawn thin"...) in new sentences,
so a model passes only if it reads the digit out of the sentence rather than memorising sentences.
"""

from __future__ import annotations

import numpy as np
import torch

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

TRAIN_PHRASINGS = (
    "a handwritten {numeral}",
    "the digit {name}",
    "{name}, drawn thick",
    "{name}, drawn thin",
    "a picture of the number {numeral}",
    "number {name}",
    "{numeral}",
    "{name}",
    "an image of the digit {numeral}",
    "a {name} written by hand",
    "digit {numeral} on a black background",
    "a small sketch of a {name}",
    "the number {numeral}, handwritten",
    "a scanned {name}",
)
"""Templates the model is trained on; ``{numeral}`` is "7", ``{name}`` is "seven"."""

HELD_OUT_PHRASINGS = (
    "a handwritten {name}",
    "the digit {numeral}",
    "a picture of the number {name}",
    "a small sketch of the number {numeral}, drawn thin",
    "{numeral}, written by hand",
)
"""Templates kept out of training, for the quality check (each swaps numeral and name or re-orders)."""

UNCONDITIONAL = ""
"""The empty caption: what classifier-free guidance dropout trains and the negative prompt defaults to."""


def caption(digit: int, template: str) -> str:
    """Fill ``template`` for ``digit`` (0..9)."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit={digit} is out of range; allowed range [0, 9]")
    return template.format(numeral=str(int(digit)), name=DIGIT_NAMES[int(digit)])


def all_captions() -> list[str]:
    """Every caption of every digit, training and held-out phrasings (the tokenizer's corpus)."""
    return [caption(d, t) for t in TRAIN_PHRASINGS + HELD_OUT_PHRASINGS for d in range(10)]


def training_captions(labels: torch.Tensor, generator: torch.Generator, dropout: float) -> list[str]:
    """One random training phrasing per label; a ``dropout`` share become the empty caption.

    Args:
        labels: int64 ``[B]`` digits.
        generator: Torch generator that makes the choice deterministic.
        dropout: Share of rows captioned :data:`UNCONDITIONAL` (classifier-free guidance).

    Returns:
        ``B`` captions.
    """
    B = len(labels)
    choice = torch.randint(0, len(TRAIN_PHRASINGS), (B,), generator=generator).tolist()
    drop = (torch.rand(B, generator=generator) < dropout).tolist()
    return [
        UNCONDITIONAL if dropped else caption(int(d), TRAIN_PHRASINGS[c])
        for d, c, dropped in zip(labels.tolist(), choice, drop, strict=True)
    ]


def held_out_prompts(per_phrasing: int) -> tuple[list[str], np.ndarray]:
    """Held-out prompts for every digit, ``per_phrasing`` rows of each, digit-major.

    Returns:
        ``(prompts, labels)``: ``10 * len(HELD_OUT_PHRASINGS) * per_phrasing`` captions and their
        int64 digits.
    """
    prompts, labels = [], []
    for d in range(10):
        for template in HELD_OUT_PHRASINGS:
            prompts += [caption(d, template)] * per_phrasing
            labels += [d] * per_phrasing
    return prompts, np.asarray(labels, dtype=np.int64)
