"""The database a benchmark runs on: the one given (a scratch database, emptied by the
benchmark), else an embedded server in the benchmark's work folder, stopped on exit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def scratch_database(work: Path, url: str | None = None) -> Iterator[str]:
    """Yields the database's URL, migrated."""
    from crm.db.migrate import migrate

    server = None
    if url is None:
        from crm.db.embedded import EmbeddedPostgres

        server = EmbeddedPostgres(work / "pgdata")
        url = server.start()
    try:
        migrate(url)
        yield url
    finally:
        if server is not None:
            server.stop(mode="immediate")
