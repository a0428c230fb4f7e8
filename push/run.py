"""One campaign run: audience -> plan (ledger rows, guardrails decided) -> deliver what is due.

`run_campaign` is the one entry point for the terminal (`crm campaign run`) and the
orchestrator alike. Re-running the same run (same campaign, same run id) plans nothing new and
sends nothing twice; rows whose best window is still ahead stay 'planned' and go out with a
later run of the campaign (or `crm campaign deliver`) once due.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from push.abandoned_cart import cancel_purchased, not_yet_reminded, reminders_due
from push.audience import build_audience
from push.campaign import (
    Campaign,
    CampaignFileError,
    campaign_files,
    load_campaign,
    load_campaigns,
)
from push.deliver import Sender, deliver
from push.ledger import plan
from push.planner import plan_campaign
from push.stop import RunStopped, Stop, stop_on_signals


class CampaignBusyError(RuntimeError):
    """Another process is running the same campaign right now."""


@dataclass
class RunSummary:
    campaign: str
    run_id: str
    dry_run: bool
    audience: int = 0  # people the filters pick
    recipients: int = 0  # of them, with a device to push to and not opted out
    planned_new: int = 0  # ledger rows written by this call
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    skips: dict[str, int] = field(default_factory=dict)  # by reason
    failures: dict[str, int] = field(default_factory=dict)
    sample: dict[str, str] | None = None
    to_send: int = 0  # rows of this run planned to go out (now or in their window)
    waiting: int = 0  # planned rows whose send time is still ahead

    def line(self) -> str:
        return f"sent={self.sent} skipped={self.skipped} failed={self.failed}"


def resolve(campaign: Campaign | str) -> Campaign:
    """A Campaign as given, the campaign file at a path, or the campaign of that name."""
    if isinstance(campaign, Campaign):
        return campaign
    if campaign.endswith((".yaml", ".yml", ".toml")):
        path = Path(campaign)
        if not path.is_file():
            raise CampaignFileError(f"{path}: no such campaign file")
        return load_campaign(path)
    campaigns = load_campaigns()
    if campaign not in campaigns:
        raise CampaignFileError(
            f"no campaign named {campaign!r}; campaign files define: {sorted(campaigns)}"
        )
    return campaigns[campaign]


def default_run_id(campaign: Campaign, now: datetime) -> str:
    """One run per campaign per UTC day: a second run that day resumes the first. A triggered
    campaign runs every few minutes for whoever the trigger names: one run per UTC minute."""
    if campaign.audience.trigger:
        return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def trigger_people(conn: psycopg.Connection, campaign: Campaign, now: datetime,
                   people: list[str] | None) -> list[str] | None:
    """Who a run plans. For the abandoned-cart trigger: the finder's people (checkout at least
    an hour old, no order since), or the given ones; either way without those already
    reminded of that checkout, so a trigger that fires again never reminds twice."""
    if campaign.audience.trigger != "abandoned_cart":
        return people
    if people is None:
        return [c.person_id for c in reminders_due(conn, campaign.name, now)]
    return not_yet_reminded(conn, campaign.name, people, now=now)


def cancel_bought(conn: psycopg.Connection, campaign: Campaign, now: datetime) -> int:
    """Before anything of an abandoned-cart campaign goes out: reminders of people who have
    bought since are settled as skipped ('purchased')."""
    if campaign.audience.trigger != "abandoned_cart":
        return 0
    return cancel_purchased(conn, campaign.name, now)


def default_senders() -> dict[str, Sender]:
    """Senders configured in the environment: FCM from CRM_FCM_CREDENTIALS, APNs from
    CRM_APNS_KEY when push/apns.py is installed. A channel without one fails its rows with
    the reason 'no_sender:<channel>'."""
    senders: dict[str, Sender] = {}
    if os.environ.get("CRM_FCM_CREDENTIALS"):
        from push.fcm import FcmSender

        senders["fcm"] = FcmSender.from_env()
    if os.environ.get("CRM_APNS_KEY"):
        try:
            from push.apns import ApnsSender  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            senders["apns"] = ApnsSender.from_env()
    return senders


def _status_counts(conn: psycopg.Connection, campaign: str) -> dict[str, int]:
    return dict(conn.execute(
        "SELECT status, count(*) FROM push.deliveries WHERE campaign = %s GROUP BY status",
        (campaign,),
    ).fetchall())


def _reasons(conn: psycopg.Connection, campaign: str, run_id: str, status: str) -> dict[str, int]:
    return dict(conn.execute(
        """SELECT reason, count(*) FROM push.deliveries
           WHERE campaign = %s AND run_id = %s AND status = %s GROUP BY reason ORDER BY reason""",
        (campaign, run_id, status),
    ).fetchall())


def open_runs(conn: psycopg.Connection, campaign: str) -> list[str]:
    """Runs of the campaign with rows still to send, oldest first."""
    return [r[0] for r in conn.execute(
        """SELECT run_id FROM push.deliveries WHERE campaign = %s AND status = 'planned'
           GROUP BY run_id ORDER BY min(planned_at)""",
        (campaign,),
    )]


async def _deliver_all(conn: psycopg.Connection, campaigns: list[str], now: datetime,
                       senders: Mapping[str, Sender] | None, stop: Stop | None = None
                       ) -> dict[str, dict[str, int]]:
    """Deliver the due rows of every open run of each campaign, in one event loop (a sender's
    connection pool belongs to the loop it was first used in)."""
    active = dict(default_senders() if senders is None else senders)
    out: dict[str, dict[str, int]] = {}
    try:
        for campaign in campaigns:
            totals = out.setdefault(campaign, {"sent": 0, "failed": 0})
            for run_id in open_runs(conn, campaign):
                sent = await deliver(conn, campaign, run_id, now, active, stop=stop)
                for k, v in sent.items():
                    totals[k] = totals.get(k, 0) + v
    finally:
        # a sender's connections belong to this event loop: close them with it (FcmSender
        # opens new ones on its next use, so a caller's sender stays usable)
        for sender in active.values():
            close = getattr(sender, "aclose", None)
            if close:
                await close()
    return out


def _stopped(conn: psycopg.Connection, stop: Stop, campaigns: list[str],
             totals: Mapping[str, int], line: str = "") -> RunStopped:
    """The error a stopped run ends with: what it sent and the campaigns' rows left planned."""
    left = conn.execute(
        "SELECT count(*) FROM push.deliveries WHERE campaign = ANY(%s) AND status = 'planned'",
        (campaigns,),
    ).fetchone()[0]
    assert stop.signum is not None
    return RunStopped(stop.signum, totals.get("sent", 0), left, totals.get("in_doubt", 0), line)


def _lock(conn: psycopg.Connection, campaign: str) -> None:
    """One process per campaign at a time (released with the connection, also on a kill)."""
    got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"push:{campaign}",))
    if not got.fetchone()[0]:
        raise CampaignBusyError(f"campaign {campaign!r} is being run by another process")


def run_campaign(
    database_url: str,
    campaign: Campaign | str,
    now: datetime | None = None,
    dry_run: bool = False,
    senders: Mapping[str, Sender] | None = None,
    *,
    run_id: str | None = None,
    people: list[str] | None = None,
) -> RunSummary:
    """Plan and deliver one run of `campaign` (a Campaign or a campaign file's name).

    `now` (aware) defaults to the clock; `senders` maps 'fcm' / 'apns' to a sender (default:
    from the environment, see default_senders); `people` narrows the audience to given
    persons (a trigger's); a dry run writes nothing and sends nothing.

    SIGTERM or SIGINT during the run stops it gracefully (push/stop.py): nothing more is
    claimed, the answers in flight are committed, and RunStopped is raised with the counts."""
    camp = resolve(campaign)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. 2026-06-01T09:00:00+00:00)")
    run_id = run_id or default_run_id(camp, now)
    summary = RunSummary(camp.name, run_id, dry_run)
    with stop_on_signals() as stop, psycopg.connect(database_url, autocommit=True) as conn:
        if not dry_run:
            _lock(conn, camp.name)
        people = trigger_people(conn, camp, now, people)
        audience = build_audience(conn, camp, people)
        planned = plan_campaign(conn, camp, run_id, now, audience)
        summary.audience = audience.people
        summary.recipients = len({r.person_id for r in audience.recipients})
        summary.to_send = len(planned.to_send())
        first = next(iter(planned.to_send()), None)
        if first:
            summary.sample = {"person_id": first.person_id, "channel": first.channel or "",
                              "send_at": first.send_at.isoformat(), "title": first.title,
                              "body": first.body}
        if dry_run:
            summary.skips = planned.skips()
            summary.skipped = sum(summary.skips.values())
            summary.waiting = sum(1 for r in planned.to_send() if r.send_at > now)
            return summary
        before = _status_counts(conn, camp.name)
        summary.planned_new = plan(conn, camp.name, run_id, planned.rows)
        cancel_bought(conn, camp, now)  # this run's rows and older ones still waiting
        totals = asyncio.run(_deliver_all(conn, [camp.name], now, senders, stop))[camp.name]
        after = _status_counts(conn, camp.name)
        summary.sent = totals.get("sent", 0)
        summary.failed = totals.get("failed", 0)
        summary.skipped = after.get("skipped", 0) - before.get("skipped", 0)
        summary.skips = _reasons(conn, camp.name, run_id, "skipped")
        summary.failures = _reasons(conn, camp.name, run_id, "failed")
        summary.waiting = conn.execute(
            """SELECT count(*) FROM push.deliveries
               WHERE campaign = %s AND status = 'planned' AND send_at > %s""",
            (camp.name, now),
        ).fetchone()[0]
        if stop.signum is not None:
            raise _stopped(conn, stop, [camp.name], totals, summary.line())
    return summary


def _triggered(names: list[str]) -> list[Campaign]:
    """The campaigns of `names` whose files declare a trigger. A file that does not load is
    passed over here (its rows still go out); `crm campaign list` names its problem."""
    out: list[Campaign] = []
    for path in campaign_files():
        try:
            camp = load_campaign(path)
        except CampaignFileError:
            continue
        if camp.name in names and camp.audience.trigger:
            out.append(camp)
    return out


def deliver_due(
    database_url: str, now: datetime | None = None, senders: Mapping[str, Sender] | None = None
) -> dict[str, dict[str, int]]:
    """Send every campaign's rows that have come due since their run planned them."""
    now = now or datetime.now(UTC)
    with stop_on_signals() as stop, psycopg.connect(database_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT DISTINCT campaign FROM push.deliveries WHERE status = 'planned' ORDER BY 1"
        )]
        for name in names:
            _lock(conn, name)
        for camp in _triggered(names):
            cancel_bought(conn, camp, now)
        out = asyncio.run(_deliver_all(conn, names, now, senders, stop))
        if stop.signum is not None:
            totals = {"sent": sum(t.get("sent", 0) for t in out.values()),
                      "in_doubt": sum(t.get("in_doubt", 0) for t in out.values())}
            raise _stopped(conn, stop, names, totals)
        return out
