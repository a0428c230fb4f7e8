"""HTTP/1.1 limits uvicorn's httptools protocol does not have: request-head size and header
count, and a deadline for the request head (slowloris).

httptools buffers a header until it is complete, so a 100 MB header would be read into memory
before any callback could refuse it: the size is therefore counted on the raw bytes, before
the parser sees them. Idle keep-alive connections are closed by uvicorn's own
`timeout_keep_alive`; slow and short bodies by the app's body deadline (`collector.app`).

uvicorn loads this class by name (`http="collector.http_limits:GuardedHttpToolsProtocol"`),
so worker processes find it too; `configure` sets the limits in each process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from collector import metrics

PROTOCOL = "collector.http_limits:GuardedHttpToolsProtocol"


@dataclass
class HttpLimits:
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 100
    head_timeout: float = 10.0  # from the connection (or the last response) to a full head


LIMITS = HttpLimits()


def configure(limits: HttpLimits) -> None:
    global LIMITS
    LIMITS = limits


class _Refused(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = LIMITS
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._in_head:
            room = self._limits.max_head_bytes - self._head_bytes
            if len(data) > room:
                # Feed what fits; if the head is still not complete, it is too large.
                head, data = data[:room], data[room:]
                self._head_bytes += len(head)
                super().data_received(head)
                if self._in_head and self._refusal is None:
                    self._refuse(431, f"request head larger than {self._limits.max_head_bytes} "
                                      "bytes")
                if self._refusal is not None or not data:
                    return
            else:
                self._head_bytes += len(data)
        super().data_received(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refusal = (431, f"more than {self._limits.max_headers} request headers")
            raise _Refused  # stops the parser; answered in send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            metrics.SERVER_ERRORS.labels("503").inc()  # uvicorn answers it, not the app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._header_count = True, 0, 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # the parser stopped because we raised in a callback
            self._send_and_close(*self._refusal)
            return
        metrics.REQUESTS.labels("400").inc()
        super().send_400_response(msg)

    # --- helpers -------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        self._send_and_close(status, message)

    def _send_and_close(self, status: int, message: str) -> None:
        self._cancel_head_timer()
        metrics.REQUESTS.labels(str(status)).inc()
        body = message.encode()
        if not self.transport.is_closing():
            self.transport.write(
                STATUS_LINE[status]
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: " + str(len(body)).encode() + b"\r\n"
                + b"connection: close\r\n\r\n" + body
            )
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes:  # a request started but its head did not arrive in time
            self._refusal = (408, "request head not received in time")
            self._send_and_close(408, f"request head not received within "
                                      f"{self._limits.head_timeout:g} s")
        else:  # an idle connection that never sent a request
            metrics.IDLE_CLOSED.inc()
            self.transport.close()


