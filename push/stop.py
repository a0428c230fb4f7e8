"""A graceful stop for a sending run: SIGTERM or SIGINT (Ctrl-C; Dagster's run termination,
which interrupts the step's process and maps SIGTERM to SIGINT) asks the run to stop
claiming rows, wait for the answers of the requests in flight and commit them, so a stopped
run and its resumption send every message exactly once. A second signal stops at once (what
is then still in flight is in doubt, as after a kill).

The handlers are installed only while a run is going and only in the main thread (Python
delivers signals there); the previous handlers (Dagster's, Python's default) come back after.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunStopped(Exception):
    """The run stopped on a signal after settling what was in flight; resume to send the rest."""

    def __init__(self, signum: int, sent: int, left_planned: int, in_doubt: int = 0,
                 line: str = "") -> None:
        self.signum, self.sent, self.left_planned, self.in_doubt = (
            signum, sent, left_planned, in_doubt)
        self.line = line  # the run's `sent=<n> skipped=<n> failed=<n>`
        doubt = (f", {in_doubt} in doubt (sent, answer not received: resent with the same "
                 "collapse id on resume)") if in_doubt else ""
        super().__init__(
            f"stopped by {signal.Signals(signum).name}: {sent} sent, {left_planned} left "
            f"planned{doubt}; run it again to send the rest")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 143 for SIGTERM, 130 for SIGINT


class Stop:
    """Signals received so far, and asyncio events of sending loops to wake on one."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._events: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]] = []

    @property
    def signum(self) -> int | None:
        return self.signals[0] if self.signals else None

    def request(self, signum: int) -> None:
        self.signals.append(signum)
        for loop, event, after in self._events:
            if len(self.signals) > after and not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    def event(self, nth: int = 1) -> asyncio.Event:
        """An event of the running loop, set once `nth` signals have arrived (1: stop
        claiming, 2: stop at once)."""
        event = asyncio.Event()
        if len(self.signals) >= nth:
            event.set()
        # Each campaign's sending loop asks for events; those of finished loops can never
        # be woken again, so a long run keeps only the live ones.
        self._events = [entry for entry in self._events if not entry[0].is_closed()]
        self._events.append((asyncio.get_running_loop(), event, nth - 1))
        return event


@contextmanager
def stop_on_signals() -> Iterator[Stop]:
    """A Stop fed by SIGTERM and SIGINT while the block runs (in the main thread only)."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
