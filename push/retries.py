"""The retry policy both push senders share: a bounded number of requests in flight, retries
for what the service says is temporary (429, 5xx) with exponential backoff and jitter that
honour Retry-After up to a cap, and every way a send can end mapped to one SendResult.

A sender supplies `once()`, one request that returns a SendResult for a final answer and
raises Retryable for a temporary one; payload errors are final answers, so they are never
retried."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter


@dataclass(frozen=True)
class SendResult:
    status: str  # "sent" | "failed"
    reason: str | None = None
    dead_token: bool = False


class Retryable(Exception):
    """A temporary answer (429, 5xx, an expired provider token): try again after a wait."""

    def __init__(self, reason: str, retry_after: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class WaitRetryAfter(wait_base):
    """Retry-After when the server sent one (capped), else exponential backoff with jitter."""

    def __init__(self, cap: float = 30.0) -> None:
        self.cap = cap
        self.fallback = wait_exponential_jitter(multiplier=0.2, max=cap)

    def __call__(self, retry_state) -> float:  # type: ignore[override]
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.fallback(retry_state)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds; None when absent or not a number of seconds."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def send_with_retries(
    once: Callable[[], Awaitable[SendResult]],
    limit: asyncio.Semaphore,
    attempts: int,
    retry_cap: float,
    transport_errors: tuple[type[BaseException], ...],
) -> SendResult:
    """Run `once` inside `limit`, retrying Retryable up to `attempts` tries in all.

    Ends as a SendResult whatever happens: the last temporary reason when the tries run out,
    `transport:<error>` when the connection failed (one of `transport_errors`). The slot is
    held through the waits so a throttled service sees fewer requests, not the same number."""
    async with limit:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Retryable),
                stop=stop_after_attempt(attempts),
                wait=WaitRetryAfter(retry_cap),
                reraise=True,
            ):
                with attempt:
                    return await once()
        except Retryable as exc:
            return SendResult("failed", exc.reason)
        except transport_errors as exc:
            return SendResult("failed", f"transport:{type(exc).__name__}")
    raise AssertionError("unreachable: AsyncRetrying either returns or raises")
