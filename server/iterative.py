"""Driving an iterative loop (DDIM sampling, style optimization) from a Triton Python model.

Both loops are generators that yield what they need next and receive it through ``send``
(``genserve.server.ddim.sample_loop``, ``genserve.server.gatys.optimize_loop``). A pipeline serves
each request as a coroutine that awaits one model call per step: concurrent requests then have
their steps in flight at once, and the called network's dynamic batcher joins them into one
execution. This module holds that driver, so the pipelines share cancellation and progress.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

Call = TypeVar("Call")
Result = TypeVar("Result")


class Cancelled(Exception):
    """The client cancelled the request or went away."""


async def drive(
    loop: Generator[Call, Any, Result],
    step: Callable[[Call], Awaitable[Any]],
    *,
    cancelled: Callable[[], bool],
    on_progress: Callable[[Call], None] | None = None,
) -> Result:
    """Run ``loop`` to its end, awaiting ``step(call)`` for every call it yields.

    Args:
        loop: A started-or-not generator; its return value is the result.
        step: Runs one call (e.g. a BLS request to a network) and returns what the loop expects.
        cancelled: Checked before every step; when true the loop is closed and :class:`Cancelled` raised.
        on_progress: Called with each call after the first, i.e. after every step but the last
            (previews: ``call.step`` is the number of steps done).

    Returns:
        The loop's return value.
    """
    call = next(loop)
    try:
        while True:
            if cancelled():
                raise Cancelled
            call = loop.send(await step(call))
            if on_progress is not None:
                on_progress(call)
    except StopIteration as done:
        return done.value
    finally:
        loop.close()
