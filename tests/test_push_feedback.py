"""The open-rate feedback loop on real parts: a campaign sent by push.run.run_campaign to the
local fake FCM over HTTP, the apps' push_received and push_opened events carrying the delivery
ids the fake server received posted through the collector's ingest path, a dbt rebuild, and
the send-time model trained in MLflow before and after.

The shop: eight people on Android in Novosibirsk (UTC+7), each active at 09:00 local for a week.
Five daily runs of a campaign go out at 20:00 local; every device reports each push, and four
of the people open each one at 20:05. The mart must count 40 sent, 40 delivered and 20
opened; the model must move the openers' best hour to the evening and leave the others at 9:
a receipt is the shop's send, not the person's habit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg

from ml import marts
from ml import send_time as st
from ml.train import train
from push.run import run_campaign
from tests.push_shop import campaign
from tests.test_push_run import FakeFcm, fake_fcm  # noqa: F401  (the `fake_fcm` fixture)
from tests.warehouse import Warehouse, ev, person_id

ZONE = "Asia/Novosibirsk"  # UTC+7 all year
PEOPLE = [f"fb-{i}" for i in range(8)]
OPENERS = PEOPLE[:4]
HABIT_HOUR, OPEN_HOUR = 9, 20
RUN_DAYS = range(10, 15)  # September 2026
CAMPAIGN = campaign(name="feedback_loop_test", send_time="now",
                    message={"title": "Evening picks", "body": "New in the shop"},
                    guardrails={"per_week": 7})


def _device(name: str) -> dict[str, str]:
    return {"client_id": f"phone-{name}", "device_type": "android",
            "push_token": f"fcm-{name}:TOKEN", "timezone": ZONE}


def _local(day: int, hour: int, minute: int = 0) -> str:
    """'DD HH:MM' in UTC (the form ev() takes) of a Novosibirsk wall-clock time."""
    utc = datetime(2026, 9, day, hour, minute, tzinfo=UTC) - timedelta(hours=7)
    return utc.strftime("%d %H:%M")


def _history() -> list[dict]:
    """A login and a week of visits at 09:00 local, 1-7 September."""
    out = []
    for name in PEOPLE:
        out.append(ev("user_login", _local(1, HABIT_HOUR), user_id=f"ACC-{name}", **_device(name)))
        out += [ev("page_view", _local(day, HABIT_HOUR, 5), **_device(name))
                for day in range(1, 8)]
    return out


def _best_hours(url: str) -> dict[str, int]:
    return dict(Warehouse(url).rows(
        "select user_id, best_local_hour from ml.user_send_windows where user_id = any(%s)",
        [person_id(f"account:ACC-{n}") for n in PEOPLE]))


def test_opens_linked_by_delivery_id_reach_the_mart_and_the_send_time_model(
        clean_warehouse: psycopg.Connection, database_url: str, mlflow_store: str,
        fake_fcm: FakeFcm) -> None:  # noqa: F811  (the imported fixture)
    clean_warehouse.execute("DELETE FROM push.deliveries WHERE campaign = %s", (CAMPAIGN.name,))
    clean_warehouse.execute("DROP SCHEMA IF EXISTS ml CASCADE")
    wh = Warehouse(database_url)
    wh.ingest(_history())
    wh.transform()
    train(database_url, only=["send-time"])
    who = {person_id(f"account:ACC-{n}"): n for n in PEOPLE}
    before = {who[p]: h for p, h in _best_hours(database_url).items()}
    assert before == dict.fromkeys(PEOPLE, HABIT_HOUR)

    token_owner = {_device(n)["push_token"]: n for n in PEOPLE}
    sends: dict[str, list[str]] = defaultdict(list)  # name -> delivery ids received
    for day in RUN_DAYS:
        now = datetime(2026, 9, day, OPEN_HOUR - 7, tzinfo=UTC)
        seen = len(fake_fcm.state.received)
        summary = run_campaign(database_url, CAMPAIGN, now=now,
                               senders={"fcm": fake_fcm.sender()})
        assert summary.line() == f"sent={len(PEOPLE)} skipped=0 failed=0"
        for message in fake_fcm.state.received[seen:]:
            sends[token_owner[message["token"]]].append(message["data"]["delivery_id"])
    assert sorted(sends) == PEOPLE and all(len(v) == len(RUN_DAYS) for v in sends.values())

    feedback = []
    for name, delivery_ids in sends.items():
        for day, delivery_id in zip(RUN_DAYS, delivery_ids, strict=True):
            feedback.append(ev("push_received", _local(day, OPEN_HOUR, 0) + ":02",
                               delivery_id=delivery_id, **_device(name)))
            if name in OPENERS:
                feedback.append(ev("push_opened", _local(day, OPEN_HOUR, 5),
                                   delivery_id=delivery_id, **_device(name)))
    wh.ingest(feedback)
    wh.transform()

    stats = wh.rows(
        """select planned, sent, failed, skipped, delivered, opened, delivery_rate, open_rate,
                  median_seconds_to_open
           from crm.push_campaign_stats where campaign = %s and grain = 'campaign'""",
        CAMPAIGN.name)
    assert stats == [(40, 40, 0, 0, 40, 20, 1.0, 0.5, 298.0)]
    runs = wh.rows("select run_id, sent, opened from crm.push_campaign_stats "
                   "where campaign = %s and grain = 'run' order by run_id", CAMPAIGN.name)
    assert runs == [(f"2026-09-{d}", 8, 4) for d in RUN_DAYS]
    opened_by = dict(wh.rows(
        "select current_person_id, count(*) filter (where is_opened) "
        "from crm.push_delivery_outcomes where campaign = %s group by 1", CAMPAIGN.name))
    assert {who[p]: n for p, n in opened_by.items()} == {
        n: len(RUN_DAYS) if n in OPENERS else 0 for n in PEOPLE}

    # What the model reads: the opens at 20 local, and no weight at all at 20 for the people
    # who only received the pushes.
    model = st.fit(marts.send_events(database_url), marts.zones(database_url))
    counts = dict(zip(model.person_ids.to_list(), model.counts[:, OPEN_HOUR], strict=True))
    assert {who[p]: c for p, c in counts.items() if p in who} == {
        n: len(RUN_DAYS) * model.params.open_weight if n in OPENERS else 0.0 for n in PEOPLE}

    train(database_url, only=["send-time"])
    after = {who[p]: h for p, h in _best_hours(database_url).items()}
    moved = {n: int(st.circular_hour_distance(after[n], OPEN_HOUR)) for n in OPENERS}
    assert all(d <= 1 for d in moved.values()), after  # the evening, within the hour
    assert {n: after[n] for n in PEOPLE if n not in OPENERS} == dict.fromkeys(
        [n for n in PEOPLE if n not in OPENERS], HABIT_HOUR)
