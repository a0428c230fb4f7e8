"""The demo's push services: the local fake FCM and APNs (push/fake_servers.py) unless the
user has set CRM_FCM_* / CRM_APNS_* (then theirs are used, and the demo says so), and the
summary of what push.deliveries recorded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PREFIXES = ("CRM_FCM_", "CRM_APNS_")


@dataclass
class PushSetup:
    fake: bool
    settings: list[str] = field(default_factory=list)  # the user's variables when not fake

    def describe(self) -> str:
        if self.fake:
            return ("local fake FCM and APNs (push/fake_servers.py, TEST servers: nothing "
                    "reaches Google or Apple)")
        return "the services set in the environment (" + ", ".join(self.settings) + ")"


def user_settings() -> list[str]:
    return sorted(k for k in os.environ if k.startswith(PREFIXES) and os.environ[k])


@contextmanager
def push_services(folder: Path) -> Iterator[PushSetup]:
    """For the block: the user's push settings if any is set, else the fakes started on free
    ports with their settings in os.environ (the in-process Dagster run reads them there),
    removed and the fakes stopped afterwards."""
    mine = user_settings()
    if mine:
        yield PushSetup(fake=False, settings=mine)
        return
    from push.fake_servers import FakePush

    fakes = FakePush(folder)
    env = fakes.start()
    os.environ.update(env)
    try:
        yield PushSetup(fake=True)
    finally:
        for name in env:
            os.environ.pop(name, None)
        fakes.stop()


# (channel, status, reason) -> rows; channel '' when a person had no device to push to
Deliveries = dict[tuple[str, str, str], int]


def read_deliveries(conn: psycopg.Connection) -> Deliveries:
    return {(channel or "", status, reason or ""): n for channel, status, reason, n in
            conn.execute("SELECT channel, status, reason, count(*) FROM push.deliveries "
                         "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()}


def totals(deliveries: Deliveries) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, status, _), n in deliveries.items():
        out[status] = out.get(status, 0) + n
    return out
