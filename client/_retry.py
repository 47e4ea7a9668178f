"""Deadlines and retries: exponential backoff with jitter, never past the call's deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from genserve.client.errors import DeadlineExceededError, GenserveError, OverloadedError

T = TypeVar("T")


class Deadline:
    """The moment a call must be done by, on the monotonic clock.

    Args:
        timeout: Seconds from now.
    """

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.expires = time.monotonic() + timeout

    def remaining(self) -> float:
        """Seconds left (0 once expired)."""
        return max(0.0, self.expires - time.monotonic())

    def check(self, model: str | None = None) -> float:
        """Seconds left; raise :class:`DeadlineExceededError` if none are."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError(f"no answer within the timeout of {self.timeout:g} s", model=model)
        return left


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried on retryable errors (overloaded, unavailable).

    Attributes:
        retries: Further attempts after the first.
        backoff: Upper bound of the first wait, in seconds; it doubles with each attempt.
        max_backoff: Largest wait between two attempts, in seconds.
    """

    retries: int = 2
    backoff: float = 0.05
    max_backoff: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based): "full jitter" backoff."""
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return (rng or random).uniform(0.0, ceiling)

    def should_retry(self, error: GenserveError, attempt: int, *, idempotent: bool) -> bool:
        """Whether to try again after ``error`` on attempt ``attempt`` (0-based).

        Only retryable errors are retried. A non-idempotent call is retried only when the server
        certainly did not run it (it refused the request as overloaded); after a timeout or a lost
        connection it might have run, so it is not repeated. genserve's own calls are all
        idempotent: their seeds are fixed before the first attempt.
        """
        if not error.retryable or attempt >= self.retries:
            return False
        return idempotent or isinstance(error, OverloadedError)


def call_with_retries(
    attempt: Callable[[Deadline], T],
    *,
    deadline: Deadline,
    policy: RetryPolicy,
    idempotent: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``attempt(deadline)`` until it succeeds, fails for good, or the deadline leaves no room.

    Raises:
        GenserveError: The last attempt's error.
    """
    number = 0
    while True:
        try:
            return attempt(deadline)
        except GenserveError as error:
            wait = retry_wait(error, number, deadline, policy, idempotent)
            if wait is None:
                raise
        sleep(wait)
        number += 1


async def call_with_retries_async(
    attempt: Callable[[Deadline], Awaitable[T]],
    *,
    deadline: Deadline,
    policy: RetryPolicy,
    idempotent: bool = True,
) -> T:
    """The asyncio twin of :func:`call_with_retries`."""
    number = 0
    while True:
        try:
            return await attempt(deadline)
        except GenserveError as error:
            wait = retry_wait(error, number, deadline, policy, idempotent)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        number += 1


def retry_wait(
    error: GenserveError, number: int, deadline: Deadline, policy: RetryPolicy, idempotent: bool = True
) -> float | None:
    """Seconds to wait before retrying after ``error`` on attempt ``number``; ``None``: do not retry."""
    if not policy.should_retry(error, number, idempotent=idempotent):
        return None
    wait = policy.delay(number)
    # A retry needs time to run too: give up when the wait would eat the rest of the deadline.
    if wait >= deadline.remaining():
        return None
    return wait
