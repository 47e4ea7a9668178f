"""The optimization loop of Gatys-style transfer in plain numpy: Adam on the image, written once.

No model is imported here. Like the DDIM loop (``genserve.server.ddim``), the loop is a generator
that *asks* for the loss gradient of its current image and receives it through ``send``, so the
offline evaluation (ONNX Runtime in process), the tests and the serving pipeline (which batches the
gradient calls of many requests into one execution of the gradient network) drive the same code::

    loop = optimize_loop(content, iterations=50)
    call = next(loop)                       # GradientCall: image [N, 3, H, W], step, steps
    while True:
        try:
            call = loop.send(gradient(call.image))   # [N, 3, H, W]
        except StopIteration as done:
            images = done.value             # [N, 3, H, W] in [-1, 1]
            break

The image starts as the content (the optimization then only has to add the style, and the content's
structure stays) and is kept in ``[-1, 1]``. Rows are independent: Adam's moments are per pixel.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

LEARNING_RATE = 0.02
"""Adam step size in image units (the image spans 2.0); what the quality figures were measured with."""
BETAS = (0.9, 0.999)
EPSILON = 1e-8


@dataclass(frozen=True)
class GradientCall:
    """What the loop needs: the loss gradient of these images.

    Attributes:
        image: float32 ``[N, 3, H, W]`` current images in ``[-1, 1]``.
        step: Iterations done so far (0-based index of this one).
        steps: Iterations in the loop.
    """

    image: np.ndarray
    step: int
    steps: int


def optimize_loop(
    content: np.ndarray, *, iterations: int, learning_rate: float = LEARNING_RATE
) -> Generator[GradientCall, np.ndarray, np.ndarray]:
    """Adam on the image, starting from ``content``; yields one gradient request per iteration.

    Args:
        content: float32 ``[N, 3, H, W]`` in ``[-1, 1]``, the starting image.
        iterations: Number of Adam steps, at least 1.
        learning_rate: Adam step size.

    Yields:
        A :class:`GradientCall` per iteration; send back the gradient, shaped like its image.

    Returns:
        float32 ``[N, 3, H, W]`` in ``[-1, 1]``.
    """
    if iterations < 1:
        raise ValueError(f"iterations={iterations} is out of range; allowed: at least 1")
    x = np.array(content, dtype=np.float32)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    beta1, beta2 = BETAS
    for step in range(iterations):
        grad = yield GradientCall(x, step, iterations)
        grad = np.asarray(grad, dtype=np.float32).reshape(x.shape)
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad * grad
        m_hat = m / (1 - beta1 ** (step + 1))
        v_hat = v / (1 - beta2 ** (step + 1))
        x = np.clip(x - learning_rate * m_hat / (np.sqrt(v_hat) + EPSILON), -1.0, 1.0).astype(np.float32)
    return x
