"""Imports of real shop data sets into `raw.events`, through the collector's validation path.

Each importer is a pure mapping (`*_events(path) -> ImportPlan`) plus a loader that hands the
events to `collector.ingest.ingest_items`, so a file lands exactly as the same events sent to
the HTTP collector would. Event ids and timestamps are derived from the source rows, never
from the clock, so importing a file twice stores its events once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

# Fixed forever: changing it would give re-imported rows new ids (duplicates).
IMPORT_NAMESPACE = uuid.UUID("5b0c3e8e-2f4a-4d61-9a57-6c1d0b8e7f21")


def import_event_id(source: str, key: str) -> str:
    return str(uuid.uuid5(IMPORT_NAMESPACE, f"{source}:{key}"))


@dataclass
class ImportPlan:
    """The events a file maps to, and what was deliberately left out (with counts)."""

    source: str
    events: list[dict[str, Any]]
    rows_read: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class ImportResult:
    plan: ImportPlan
    accepted: int
    rejected: int


def load(plan: ImportPlan, database_url: str, progress: bool = True) -> ImportResult:
    from collector.ingest import ingest_items

    summary = ingest_items(plan.events, database_url=database_url, source=plan.source,
                           progress=progress)
    return ImportResult(plan, summary.accepted, summary.rejected)
