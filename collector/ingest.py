"""Bulk loading of newline-delimited events (imports, backfills) through the collector's own
validation and storage path, so a file and an HTTP request end up exactly the same in the
database, including idempotency: loading a file twice stores its events once."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from collector import jsonparse
from collector.storage import Submission
from collector.validation import Rejection, validate_events
from collector.writer import DatabaseUnavailable, EventWriter

CHUNK = 5_000
IN_FLIGHT = 2  # validate the next chunk while the database writes the previous one


@dataclass
class IngestSummary:
    accepted: int = 0
    rejected: int = 0
    # The first few refusals, to show the user what is wrong without flooding the terminal.
    examples: list[Rejection] = field(default_factory=list)


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


async def _ingest(
    items: Iterable[Any], database_url: str, source: str, on_chunk=None
) -> IngestSummary:
    summary = IngestSummary()
    writer = EventWriter(database_url, max_wait=0)
    await writer.start()
    inflight: set[asyncio.Task] = set()

    async def store(sub: Submission) -> None:
        # The database may restart during a long backfill: wait for it instead of failing.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(DatabaseUnavailable),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(120),
            reraise=True,
        ):
            with attempt:
                await writer.submit(sub)
        # Events the database refused although valid are rejections too (see storage.write).
        summary.accepted -= len(sub.refused)
        summary.rejected += len(sub.refused)

    try:
        offset = 0
        for chunk in _chunks(items, CHUNK):
            events, rejections = _validate(chunk, offset)
            offset += len(chunk)
            sub = Submission(events, rejections, source, dt.datetime.now(dt.UTC))
            inflight.add(asyncio.create_task(store(sub)))
            summary.accepted += len(events)
            summary.rejected += len(rejections)
            summary.examples.extend(rejections[: max(0, 5 - len(summary.examples))])
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


def _lines(stream: BinaryIO, on_bytes=None) -> Iterator[Any]:
    for line_no, line in enumerate(stream, start=1):
        if on_bytes:
            on_bytes(len(line))
        if not line.strip():
            continue
        try:
            yield jsonparse.loads(line)
        except ValueError as exc:  # orjson.JSONDecodeError, or nesting too deep
            yield _NotJson(line_no, line.rstrip(b"\r\n"), str(exc))


def ingest_file(path: str, *, database_url: str, progress: bool = True) -> IngestSummary:
    """Load a JSONL file (or '-' for stdin). Rejected lines are kept in raw.rejected_events."""
    if path == "-":
        return ingest_items(
            _lines(sys.stdin.buffer), database_url=database_url, source="ingest:stdin",
            progress=progress,
        )
    file = Path(path)
    source = f"ingest:{file.name}"
    with file.open("rb") as stream:
        if not progress:
            return asyncio.run(_ingest(_lines(stream), database_url, source))
        with Progress(
            TextColumn(f"[bold]{file.name}[/]"), BarColumn(), TransferSpeedColumn(),
            TimeElapsedColumn(), transient=True,
        ) as bar:
            task = bar.add_task("read", total=file.stat().st_size)
            lines = _lines(stream, lambda n: bar.advance(task, n))
            return asyncio.run(_ingest(lines, database_url, source))
