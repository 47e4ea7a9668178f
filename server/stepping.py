"""Driving a sampler loop from a decoupled Triton model: one coroutine per request, steps batched by Triton.

Each request drives its own :func:`genserve.server.ddim.sample_loop` generator and ``await``s one network
call per step; the network's dynamic batcher joins the steps of every request in flight, whatever step
each is at. The ``diffusion`` and ``text_to_image`` endpoints both sample through :func:`run_steps` and
bound their concurrent requests with :class:`ConcurrencyLimit`. Nothing here imports Triton.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import numpy as np

from genserve.server.ddim import UNetCall


class Cancelled(Exception):
    """The client cancelled the request or went away."""


class ConcurrencyLimit:
    """At most ``limit`` requests sampling at once (decoupled requests never wait in Triton's queue).

    Args:
        limit: Requests admitted at once.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.active = 0

    def try_enter(self) -> bool:
        """Admit one more request if there is room."""
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def leave(self) -> None:
        """One admitted request is done."""
        self.active -= 1


async def run_steps(
    loop: Generator[UNetCall, np.ndarray, np.ndarray],
    network: Callable[[UNetCall], Awaitable[np.ndarray]],
    *,
    cancelled: Callable[[], bool],
    preview_every: int = 0,
    on_preview: Callable[[UNetCall], Any] | None = None,
) -> np.ndarray:
    """Drive ``loop`` to its end, one awaited network call per step; return the loop's result.

    Args:
        loop: A sampler generator that yields a :class:`UNetCall` per step and receives its output.
        network: Runs one call (e.g. a BLS request to the UNet) and returns its output rows.
        cancelled: Checked before every step; when true, sampling stops with :class:`Cancelled`.
        preview_every: After every this many steps (counted from the first of all the steps), call
            ``on_preview`` with the next call (its ``x`` is the current sample); 0 for none.
        on_preview: Called with that call; may be a coroutine function.

    Raises:
        Cancelled: ``cancelled()`` became true.
    """
    try:
        call = next(loop)  # a loop with no steps left (image-to-image at strength 0) stops here
        while True:
            if cancelled():
                raise Cancelled
            call = loop.send(await network(call))
            if preview_every and on_preview is not None and call.step % preview_every == 0:
                result = on_preview(call)  # call.step = steps done so far
                if inspect.isawaitable(result):
                    await result
    except StopIteration as done:
        return done.value
    finally:
        loop.close()
