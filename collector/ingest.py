"""Bulk loading of newline-delimited events (imports, backfills) through the collector's own
validation and storage path, so a file and an HTTP request end up exactly the same in the
database, including idempotency: loading a file twice stores its events once.

A file is read in pieces of about `PIECE_BYTES`, cut at line ends, and each piece is parsed,
validated and written (one transaction, the collector's `storage.write`) by one of a few worker
processes: parsing and validation are Python work that one process could not do as fast as
PostgreSQL takes a COPY, and each worker waits on the database while another validates, so
both cores stay busy. Memory stays bounded whatever the file's size: at most two pieces per
worker are in flight, and the file is never read whole. Deduplication needs no coordination
between workers: the raw.events key settles repeats across pieces (see collector.storage).
Rejection indices and line numbers are positions in the whole file, as for a serial load.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import datetime as dt
import gc
import gzip
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from collector import jsonparse
from collector.storage import Submission
from collector.validation import Rejection, validate_events
from collector.writer import DatabaseUnavailable, EventWriter

CHUNK = 5_000  # items per transaction when loading Python objects (ingest_items)
IN_FLIGHT = 2  # validate the next chunk while the database writes the previous one
# A piece of a file is one transaction: big enough that commits and round trips cost little,
# small enough that the pieces in flight stay a few tens of MB of Python objects.
PIECE_BYTES = 4 << 20
EXAMPLES = 5
# What bytes.strip() removes: a line made only of these is blank and skipped.
_BLANK = b" \t\r\x0b\x0c"


@dataclass
class IngestSummary:
    accepted: int = 0
    rejected: int = 0
    # The first few refusals, to show the user what is wrong without flooding the terminal.
    examples: list[Rejection] = field(default_factory=list)

    def add(self, other: IngestSummary) -> None:
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.examples.extend(other.examples[: max(0, EXAMPLES - len(self.examples))])


class _NotJson:
    """Marks a line that could not be parsed; validation is skipped for it."""

    def __init__(self, line_no: int, text: bytes, error: str) -> None:
        self.line_no, self.text, self.error = line_no, text, error


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _validate(chunk: list[Any], offset: int) -> tuple[list, list[Rejection]]:
    """Validate one chunk; rejection indices are positions in the whole input."""
    positions = [n for n, item in enumerate(chunk) if not isinstance(item, _NotJson)]
    events, rejections = validate_events([chunk[n] for n in positions], dt.datetime.now(dt.UTC))
    for r in rejections:
        r.index = offset + positions[r.index]
    broken = [
        Rejection(offset + n, [f"line {item.line_no}: not valid JSON ({item.error})"], item.text)
        for n, item in enumerate(chunk)
        if isinstance(item, _NotJson)
    ]
    return events, sorted(rejections + broken, key=lambda r: r.index)


async def _store(writer: EventWriter, sub: Submission) -> int:
    """Write one submission, waiting for a database that restarts during a long backfill;
    returns how many valid events the database refused (they become rejections)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable),
        wait=wait_exponential(multiplier=0.2, max=5),
        stop=stop_after_delay(120),
        reraise=True,
    ):
        with attempt:
            await writer.submit(sub)
    return len(sub.refused)


def _summary(events: list, rejections: list[Rejection], refused: list[Rejection]) -> IngestSummary:
    return IngestSummary(
        len(events) - len(refused), len(rejections) + len(refused),
        sorted(rejections + refused, key=lambda r: r.index)[:EXAMPLES],
    )


async def _ingest(
    items: Iterable[Any], database_url: str, source: str, on_chunk=None
) -> IngestSummary:
    """The in-process path, for Python objects (importers, tests): validation of the next
    chunk overlaps the database's write of the previous one."""
    summary = IngestSummary()
    writer = EventWriter(database_url, max_wait=0)
    await writer.start()
    inflight: set[asyncio.Task] = set()

    async def store(sub: Submission) -> None:
        refused = await _store(writer, sub)
        # Events the database refused although valid are rejections too (see storage.write).
        summary.accepted -= refused
        summary.rejected += refused

    try:
        offset = 0
        for chunk in _chunks(items, CHUNK):
            gc.disable()  # as in the workers: a chunk's fresh objects are not cycles
            try:
                events, rejections = _validate(chunk, offset)
            finally:
                gc.enable()
            offset += len(chunk)
            sub = Submission(events, rejections, source, dt.datetime.now(dt.UTC))
            inflight.add(asyncio.create_task(store(sub)))
            summary.add(IngestSummary(len(events), len(rejections), rejections))
            if len(inflight) >= IN_FLIGHT:
                done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            if on_chunk:
                on_chunk(len(chunk))
        for task in asyncio.as_completed(inflight):
            await task
    finally:
        for task in inflight:
            task.cancel()
        await writer.close()
    return summary


def ingest_items(
    items: Iterable[Any], *, database_url: str, source: str, progress: bool = True
) -> IngestSummary:
    """Validate and store events (dicts, as parsed from JSON); returns the counts."""
    if not progress:
        return asyncio.run(_ingest(items, database_url, source))
    with Progress(
        TextColumn("[bold]ingest[/]"), TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(), transient=True,
    ) as bar:
        task = bar.add_task("ingest", total=None)
        return asyncio.run(
            _ingest(items, database_url, source, lambda n: bar.advance(task, n))
        )


# --- files: pieces parsed, validated and written by worker processes


@dataclass(slots=True)
class _Piece:
    """A run of whole lines of the input and where it starts in the whole file."""

    data: bytes
    first_line: int  # line number of its first line (1-based)
    first_index: int  # position of its first non-blank line among all non-blank lines
    lines: int
    items: int


def _piece(data: bytes, first_line: int, first_index: int) -> _Piece:
    # Blank lines are not items: count them at memory speed, not line by line in Python. With
    # blanks' characters deleted, a blank line is an empty line; most pieces have none, and
    # then counting line breaks is enough.
    squeezed = data.translate(None, _BLANK)
    ends = data.endswith(b"\n")
    if not (b"\n\n" in squeezed or squeezed.startswith(b"\n") or squeezed.endswith(b"\n") != ends):
        lines = data.count(b"\n") + (0 if ends else 1)
        return _Piece(data, first_line, first_index, lines, lines)
    parts = squeezed.split(b"\n")
    trailing = 1 if ends else 0  # the empty part after the last newline
    lines = len(parts) - trailing
    return _Piece(data, first_line, first_index, lines, lines - (parts.count(b"") - trailing))


def _pieces(stream: BinaryIO, size: int = PIECE_BYTES) -> Iterator[_Piece]:
    """Cut the stream into pieces of about `size` bytes that end at a line end."""
    line, index = 1, 0
    while True:
        data = stream.read(size)
        if not data:
            return
        if not data.endswith(b"\n"):
            data += stream.readline()  # finish the last line (or take the file's tail)
        piece = _piece(data, line, index)
        line, index = line + piece.lines, index + piece.items
        yield piece


# Lines looked at together for numbers orjson would alter (see jsonparse): the look costs
# a call per block, not per line, and only a block that has one is parsed line by line.
SUSPECT_BLOCK = 32


def _parse(piece: _Piece) -> list[Any]:
    lines = piece.data.split(b"\n")
    if piece.data.endswith(b"\n"):
        lines.pop()
    # orjson alone is exact unless the text holds a long digit run or a big negative exponent
    # (jsonparse.suspect): one look at the whole piece, then at blocks of lines, spares that
    # look on every line.
    suspect = jsonparse.suspect(piece.data)
    out: list[Any] = []
    append = out.append
    fast = orjson.loads
    for start in range(0, len(lines), SUSPECT_BLOCK):
        block = lines[start : start + SUSPECT_BLOCK]
        loads = jsonparse.loads if suspect and jsonparse.suspect(b"\n".join(block)) else fast
        for n, line in enumerate(block, start=piece.first_line + start):
            try:
                append(loads(line))
            except ValueError as exc:  # orjson.JSONDecodeError, or nesting too deep
                if line.strip():  # a blank line is no item (and not worth a look first)
                    out.append(_NotJson(n, line.rstrip(b"\r"), str(exc)))
    return out


class _Worker:
    """One process's event loop and database connection, kept across the pieces it loads."""

    runner: asyncio.Runner | None = None
    writer: EventWriter | None = None
    source = ""

    @classmethod
    def start(cls, database_url: str, source: str) -> None:
        cls.runner = asyncio.Runner()
        cls.writer = EventWriter(database_url, max_wait=0, lanes=1)
        cls.source = source
        cls.runner.run(cls.writer.start())
        # What the process holds by now (modules, the catalogue's validators) is never garbage:
        # out of the collector's sight it costs nothing to each collection.
        gc.freeze()

    @classmethod
    def load(cls, piece: _Piece) -> IngestSummary:
        assert cls.runner is not None and cls.writer is not None
        # A piece is tens of thousands of fresh dicts, models and rows, none of them in a
        # reference cycle: the cyclic collector, run every few hundred allocations, would walk
        # them over and over (almost half of the validation time, measured). Reference
        # counting frees them; the collector runs again between pieces.
        gc.disable()
        try:
            events, rejections = _validate(_parse(piece), piece.first_index)
            sub = Submission(events, rejections, cls.source, dt.datetime.now(dt.UTC))
            cls.runner.run(_store(cls.writer, sub))
        finally:
            gc.enable()
        summary = _summary(events, rejections, sub.refused)
        for r in summary.examples:
            r.item = None  # only the index and the errors are shown; spare the pickling
        return summary


def _load_piece(piece: _Piece) -> IngestSummary:
    return _Worker.load(piece)


def default_workers() -> int:
    """One worker per core: while one waits on PostgreSQL the other validates."""
    return max(1, min(4, os.cpu_count() or 1))


def ingest_stream(
    stream: BinaryIO, *, database_url: str, source: str, workers: int | None = None,
    on_stored: Callable[[int], None] | None = None, tell: Callable[[], int] | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> IngestSummary:
    """Load newline-delimited JSON from a binary stream. `on_stored(position)` is told, as
    pieces are stored, how far into the input everything is stored: by default in bytes of
    the stream, or as `tell()` measured when each piece was read (a compressed file's own
    position)."""
    workers = workers or default_workers()
    summary = IngestSummary()
    # fork: the workers start with the catalogue's validators already built.
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with cf.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_Worker.start, initargs=(database_url, source)
    ) as pool:
        inflight: dict[cf.Future, int] = {}
        read = 0

        def settle(done: Iterable[cf.Future]) -> None:
            for future in done:
                inflight.pop(future)
                part = future.result()
                # Pieces finish out of order: keep each one's examples, the first few win.
                summary.accepted += part.accepted
                summary.rejected += part.rejected
                summary.examples.extend(part.examples)
            if on_stored:  # stored up to where the oldest piece still loading began
                on_stored(min(inflight.values(), default=read))

        for piece in _pieces(stream, piece_bytes):
            started = read
            read = tell() if tell else read + len(piece.data)
            inflight[pool.submit(_load_piece, piece)] = started
            if len(inflight) >= 2 * workers:  # bounded memory: the reader waits for the pool
                done, _ = cf.wait(inflight, return_when=cf.FIRST_COMPLETED)
                settle(done)
        settle(cf.wait(inflight).done)
    summary.examples = sorted(summary.examples, key=lambda r: r.index)[:EXAMPLES]
    return summary


def _open(file: Path) -> tuple[BinaryIO, BinaryIO]:
    """(the stream of lines, the file on disk whose position tells the progress)."""
    raw = file.open("rb")
    if raw.read(2) == b"\x1f\x8b":  # gzip, whatever the file is called
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw), raw  # type: ignore[return-value]
    raw.seek(0)
    return raw, raw


def ingest_file(
    path: str, *, database_url: str, progress: bool = True, workers: int | None = None
) -> IngestSummary:
    """Load a JSONL file, plain or gzip-compressed (or '-' for stdin). Rejected lines are kept
    in raw.rejected_events."""
    if path == "-":
        return ingest_stream(sys.stdin.buffer, database_url=database_url, source="ingest:stdin",
                             workers=workers)
    file = Path(path)
    source = f"ingest:{file.name}"
    stream, raw = _open(file)
    with raw, stream:
        if not progress:
            return ingest_stream(stream, database_url=database_url, source=source,
                                 workers=workers)
        with Progress(
            TextColumn(f"[bold]{file.name}[/]"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), TimeElapsedColumn(), transient=True,
            console=Console(stderr=True),  # stdout keeps only the counts, for scripts
        ) as bar:
            task = bar.add_task("read", total=file.stat().st_size)
            # Bytes of the file on disk stored so far (compressed bytes for a gzip file).
            return ingest_stream(
                stream, database_url=database_url, source=source, workers=workers,
                on_stored=lambda pos: bar.update(task, completed=pos), tell=raw.tell,
            )
