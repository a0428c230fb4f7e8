"""The ledger on a real PostgreSQL: re-planning adds nothing, settled rows stay settled,
opt-outs and expiry are skips with their reason."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import psycopg

from push.ledger import PlannedPush, counts, due, plan, settle

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _rows(n: int, prefix: str) -> list[PlannedPush]:
    return [
        PlannedPush(
            f"{prefix}{i}", "fcm", f"tok-{prefix}{i}", NOW, NOW + timedelta(hours=1), "t", "b"
        )
        for i in range(n)
    ]


def test_replanning_is_idempotent_and_resume_settles_each_once(db: psycopg.Connection) -> None:
    run = str(uuid4())
    rows = _rows(10, "p")
    assert plan(db, "c1", run, rows) == 10
    assert plan(db, "c1", run, rows) == 0
    first = due(db, "c1", run, NOW)
    for row in first[:4]:  # "killed" after four sends
        assert settle(db, row[0], "sent")
    rest = due(db, "c1", run, NOW)
    assert len(rest) == 6
    assert {r[0] for r in rest}.isdisjoint(r[0] for r in first[:4])
    for row in rest:
        assert settle(db, row[0], "sent")
    assert not settle(db, first[0][0], "sent")
    assert counts(db, "c1", run) == {"sent": 10}


def test_opt_out_and_expiry_are_skips(db: psycopg.Connection) -> None:
    run = str(uuid4())
    db.execute("INSERT INTO push.opt_outs (person_id) VALUES ('oo0') ON CONFLICT DO NOTHING")
    plan(db, "c2", run, _rows(3, "oo"))
    assert due(db, "c2", run, NOW + timedelta(hours=2)) == []
    reasons = dict(
        db.execute(
            "SELECT person_id, reason FROM push.deliveries WHERE campaign='c2' AND run_id=%s",
            (run,),
        ).fetchall()
    )
    assert reasons == {"oo0": "opted_out", "oo1": "expired", "oo2": "expired"}
