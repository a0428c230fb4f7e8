"""A small HTTP/2 client on asyncio over the `h2` state machine: a pool of a few TLS
connections, each carrying many concurrent streams, for request/answer APIs such as APNs.

Why not httpx: its per-request cost in Python (the pool, the request and response models)
held the APNs sender near 500 sends a second on this project's machine. Here a request is a
HEADERS and a DATA frame written into the connection's buffer; the buffered frames of every
request made in one event-loop turn go out in one write, and answers are read the same way.

The pool respects each connection's SETTINGS_MAX_CONCURRENT_STREAMS (APNs starts a new
connection low and raises it once the first request is accepted) and waits for a free
stream rather than failing; a connection that is lost or sent GOAWAY is dropped and replaced
on the next request. After a GOAWAY the streams up to its last_stream_id are still answered
on the old connection, and those above it (not processed) are sent again on a new one; the
requests a lost connection still carried fail with H2ConnectionError (in doubt)."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack


class H2ConnectionError(ConnectionError):
    """The connection carrying a request broke before its answer arrived."""


class H2StreamRefused(H2ConnectionError):
    """The server did not process the request (a stream above GOAWAY's last_stream_id, or
    reset with REFUSED_STREAM): safe to send again, and the pool does, on another connection."""


class _GracefulGoawayConnection(h2.connection.H2Connection):
    """h2 closes its state machine on a received GOAWAY, so the answers still owed on streams
    up to its last_stream_id (RFC 9113 6.8: they may still be processed and answered) would be
    refused as a protocol error and those requests left in doubt. Here the connection keeps
    reading them; the pool starts no new stream on it."""

    def _receive_goaway_frame(self, frame):  # type: ignore[no-untyped-def]
        before = self.state_machine.state
        result = super()._receive_goaway_frame(frame)
        if before is not h2.connection.ConnectionState.CLOSED:
            self.state_machine.state = before
        return result


@dataclass(frozen=True)
class H2Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class PlainHpackEncoder(hpack.Encoder):
    """HPACK without Huffman coding (optional in RFC 7541): the pure-Python Huffman coder was
    a third of this client's CPU per request; header blocks grow by about a fifth."""

    def encode(self, headers, huffman: bool = True) -> bytes:  # type: ignore[override]
        return super().encode(headers, huffman=False)


def fast_connection(client_side: bool, validate_inbound: bool = True
                    ) -> h2.connection.H2Connection:
    """An h2 connection that trusts its own caller's header lists (no outbound validation or
    normalisation: the callers here build them) and writes them without Huffman coding."""
    cls = _GracefulGoawayConnection if client_side else h2.connection.H2Connection
    conn = cls(h2.config.H2Configuration(
        client_side=client_side, header_encoding=None, validate_outbound_headers=False,
        normalize_outbound_headers=False, validate_inbound_headers=validate_inbound))
    conn.encoder = PlainHpackEncoder()
    return conn


class _Stream:
    __slots__ = ("body", "future", "headers", "status")

    def __init__(self, future: asyncio.Future[H2Response]) -> None:
        self.future = future
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: H2Pool) -> None:
        self.pool = pool
        # the service's answers are a status and two or three headers: checking them against
        # RFC 9113's header rules cost as much CPU as building the request
        self.h2 = fast_connection(client_side=True, validate_inbound=False)
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.usable = True
        self.max_streams = 1  # until the server's SETTINGS say otherwise
        self._flush_scheduled = False
        self._window_open = asyncio.Event()

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(H2ConnectionError(f"HTTP/2 protocol error: {exc}"))
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    headers = dict(event.headers)
                    stream.status = int(headers.get(b":status", b"0"))
                    stream.headers = headers
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body.extend(event.data)
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self._finish(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None and not stream.future.done():
                    refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                    stream.future.set_exception((H2StreamRefused if refused else
                                                 H2ConnectionError)(
                        f"stream reset by the server (error {event.error_code!r})"))
                self.pool._released()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                changed = event.changed_settings.get(
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                if changed is not None:
                    self.max_streams = changed.new_value
                    self.pool._released(all_waiters=True)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_open.set()
            elif isinstance(event, h2.events.ConnectionTerminated):
                # GOAWAY: streams above last_stream_id were not processed; the rest may still
                # be answered, but no new stream may start here
                self.usable = False
                self.pool._drop(self)
                last = event.last_stream_id or 0
                for sid in [s for s in self.streams if s > last]:
                    stream = self.streams.pop(sid)
                    if not stream.future.done():
                        stream.future.set_exception(H2StreamRefused(
                            f"GOAWAY from the server (error {event.error_code!r}) above "
                            f"stream {last}"))
                if not self.streams and self.transport is not None:
                    self.transport.close()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(H2ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    # requests ----------------------------------------------------------------------
    @property
    def free(self) -> int:
        return self.max_streams - len(self.streams) if self.usable else 0

    async def request(self, headers: list[tuple[bytes, bytes]], body: bytes) -> H2Response:
        stream_id = self.h2.get_next_available_stream_id()
        future: asyncio.Future[H2Response] = asyncio.get_running_loop().create_future()
        self.streams[stream_id] = _Stream(future)
        self.h2.send_headers(stream_id, headers, end_stream=not body)
        if body:
            while self.h2.local_flow_control_window(stream_id) < len(body):
                self._window_open.clear()
                self._flush()
                await self._window_open.wait()
                if not self.usable and stream_id not in self.streams:
                    break
            else:
                self.h2.send_data(stream_id, body, end_stream=True)
        self._schedule_flush()
        try:
            return await future
        except asyncio.CancelledError:  # a timeout: free the stream
            if self.streams.pop(stream_id, None) is not None and self.usable:
                self.h2.reset_stream(stream_id)
                self._schedule_flush()
            self.pool._released()
            raise

    def _finish(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and not stream.future.done():
            stream.future.set_result(H2Response(stream.status, stream.headers, bytes(stream.body)))
        self.pool._released()
        if not self.usable and not self.streams and self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        self.usable = False
        self.pool._drop(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            if not stream.future.done():
                stream.future.set_exception(exc)
        self._window_open.set()
        self.pool._released()
        if self.transport is not None:
            self.transport.close()

    def _schedule_flush(self) -> None:
        # every request made in this loop turn leaves in one write
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None and not self.transport.is_closing():
            self.h2.close_connection()
            self._flush()
            self.transport.close()


class H2Pool:
    """Up to `connections` HTTP/2 connections to one host, opened as the load needs them."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext,
                 connections: int = 4, connect_timeout: float = 10.0) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.max_connections = connections
        self.connect_timeout = connect_timeout
        self.authority = host.encode() if port == 443 else f"{host}:{port}".encode()
        self._conns: list[_Connection] = []
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def request(self, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes = b"", refused_retries: int = 3) -> H2Response:
        """One request's answer. A stream the server refused unprocessed (GOAWAY, REFUSED_STREAM)
        goes again on another connection, up to `refused_retries` times: it cannot have been
        delivered, so this sends nothing twice."""
        for attempt in range(refused_retries + 1):
            conn = await self._acquire()
            try:
                return await conn.request([(b":method", method), (b":scheme", b"https"),
                                           (b":authority", self.authority), (b":path", path),
                                           *headers], body)
            except H2StreamRefused:
                if attempt == refused_retries:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _acquire(self) -> _Connection:
        while True:
            best = max(self._conns, key=lambda c: c.free, default=None)
            # a new connection when every open one is full, up to the pool's size
            if (best is None or best.free <= 0) and (
                    len(self._conns) + self._connecting < self.max_connections):
                best = await self._connect()
            if best is not None and best.free > 0:
                return best
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:  # cancelled while queued
                    self._waiters.remove(waiter)

    async def _connect(self) -> _Connection:
        self._connecting += 1
        try:
            loop = asyncio.get_running_loop()
            _transport, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise H2ConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        finally:
            self._connecting -= 1
        if conn.transport is None or conn.transport.get_extra_info(
                "ssl_object").selected_alpn_protocol() != "h2":
            conn.close()
            raise H2ConnectionError(f"{self.host}:{self.port} does not speak HTTP/2 (ALPN h2)")
        self._conns.append(conn)
        self._released(all_waiters=True)  # the tasks queued while it was connecting
        return conn

    def _released(self, all_waiters: bool = False) -> None:
        """A stream (or a connection's worth) came free: wake the next waiter(s) in line."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not all_waiters:
                    return

    def _drop(self, conn: _Connection) -> None:
        if conn in self._conns:
            self._conns.remove(conn)
        self._released(all_waiters=True)

    async def aclose(self) -> None:
        conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        await asyncio.sleep(0)  # let the transports close in this loop
