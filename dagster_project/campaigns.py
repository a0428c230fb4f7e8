"""The push campaigns as assets: one per campaign file (campaigns/*.yaml), in the group
`campaigns`, depending on exactly the tables its audience and message read. Materialising one
is `push.run.run_campaign` for that campaign: plan the run in the ledger, deliver what is due.
The push package does not import Dagster; this module only schedules it.

- Campaigns with a `schedule` go out with the nightly job, after the models that feed them.
  Triggered campaigns (the abandoned-cart reminder) are left out of it: their sensor runs them.
- `<campaign>_on_change` launches a campaign's run when its audience assets are re-materialised
  after the campaign last ran, or when its file's content changes (its hash is in the cursor).
- `abandoned_cart_reminders` looks every five minutes: reminders of people who bought since are
  cancelled, and if anyone is due a run of the campaign is requested for exactly those people.
- Checks on each campaign: one row per (campaign, run, person), and no pushed person over the
  campaign's frequency caps.
"""

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg
from pydantic import Field

from dagster_project.resources import CrmDatabase, PushServices
from push.campaign import REPO_ROOT, Campaign, CampaignFileError, campaign_files, load_campaign
from push.message import FIELDS, check_templates

GROUP = "campaigns"
AUDIENCE_SENSOR_INTERVAL = 60  # seconds; the daemon's default would be 30
CART_SENSOR_INTERVAL = 300  # the abandoned-cart trigger looks every five minutes
CART_TRIGGER = "abandoned_cart"


def _k(*parts: str) -> dg.AssetKey:
    return dg.AssetKey(list(parts))


RAW_EVENTS = _k("raw", "events")
# Read by every campaign (push/audience.py): the people, their tokens, identity changes, the
# language of their latest events (client ids + raw events), the send-time model's window.
ALWAYS = [_k("crm", "users"), _k("crm", "push_tokens"), _k("crm", "user_id_history"),
          _k("crm", "client_ids"), RAW_EVENTS, _k("ml", "user_send_windows")]
SEGMENTS, LIFECYCLE = _k("ml", "user_segments"), _k("ml", "user_lifecycle")
FEATURES = _k("crm", "user_features")
# A template naming a product field reads the top recommendation and its product.
MESSAGE_PRODUCT = [_k("ml", "user_recommendations"), _k("crm", "dim_products")]


def audience_keys(campaign: Campaign) -> list[dg.AssetKey]:
    """The assets that decide who is in the audience: a re-materialisation of one of them is
    a new audience. Without filters the audience is everyone in crm.users; a triggered
    campaign's people come from raw events."""
    if campaign.audience.trigger:
        return [RAW_EVENTS]
    keys = ([SEGMENTS] if campaign.audience.segments else []) + (
        [LIFECYCLE] if campaign.audience.lifecycle else []) + (
        [FEATURES] if campaign.audience.features else [])
    return keys or [_k("crm", "users")]


def reads(campaign: Campaign) -> list[dg.AssetKey]:
    """Every asset the campaign's run reads, in a stable order."""
    keys = [*ALWAYS, *audience_keys(campaign)]
    if check_templates(campaign) & set(FIELDS):
        keys += MESSAGE_PRODUCT
    return sorted(set(keys), key=lambda k: k.to_user_string())


def asset_key(campaign: Campaign | str) -> dg.AssetKey:
    return _k(GROUP, campaign if isinstance(campaign, str) else campaign.name)


def op_name(campaign: Campaign | str) -> str:
    """The op of a campaign's asset: where its run config goes."""
    return asset_key(campaign).to_python_identifier()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class CampaignRunConfig(dg.Config):
    run_id: str = Field("", description="The ledger's run id; empty: the campaign's default "
                        "(the UTC day; for a triggered campaign the UTC minute). Re-executing "
                        "a run with the same id sends nothing twice.")
    people: list[str] | None = Field(None, description="Person ids to narrow the audience "
                                     "to (a trigger's); empty: the audience as declared.")
    now: str = Field("", description="The run's clock, ISO 8601 with a zone; empty: now.")


def _now(value: str) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise dg.Failure(f"config now: {value!r} is not an ISO 8601 date-time") from None
    if at.tzinfo is None:
        raise dg.Failure(f"config now: {value!r} has no time zone (add +00:00)")
    return at


def _table(rows: dict[str, int], what: str) -> dg.MetadataValue:
    lines = [f"| {what} | rows |", "|---|---:|"] + [f"| {k} | {v:,} |" for k, v in rows.items()]
    return dg.MetadataValue.md("\n".join(lines) if rows else f"no {what}")


def _shown(path: Path) -> str:
    """A campaign file as the UI names it: relative to the repository, or where it is
    (CRM_CAMPAIGNS_DIR folders are outside the checkout)."""
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def _campaign_asset(path: Path, campaign: Campaign) -> dg.AssetsDefinition:
    key = asset_key(campaign)
    how = (f"triggered by {campaign.audience.trigger} (its sensor)" if campaign.audience.trigger
           else f"schedule {campaign.schedule}" if campaign.schedule else "on demand")

    @dg.asset(
        key=key, deps=reads(campaign), group_name=GROUP, kinds={"python"},
        description=f"{campaign.description or campaign.name} Sends: {how}; "
        f"send time: {campaign.send_time}; file: {_shown(path)}.",
        metadata={"campaign_file": _shown(path)},
    )
    def run(context: dg.AssetExecutionContext, config: CampaignRunConfig, crm_db: CrmDatabase,
            push: PushServices) -> dg.MaterializeResult:
        from push.audience import AudienceError
        from push.message import MessageTemplateError
        from push.run import CampaignBusyError, run_campaign
        from push.stop import RunStopped

        try:
            # The file as it is now (a changed message goes out without a reload).
            current = load_campaign(path)
            senders = push.senders()
            summary = run_campaign(crm_db.resolved_url(), current, now=_now(config.now),
                                   senders=senders, run_id=config.run_id or None,
                                   people=config.people)
        except (CampaignFileError, AudienceError, MessageTemplateError,
                CampaignBusyError) as exc:
            raise dg.Failure(description=str(exc)) from None
        except RunStopped as exc:
            # the run's termination (SIGINT/SIGTERM to this process) stopped the send
            # gracefully: what was in flight is settled, the next run sends the rest once
            raise dg.Failure(description=str(exc), metadata={
                "sent": exc.sent, "left_planned": exc.left_planned,
                "in_doubt": exc.in_doubt}) from None
        context.log.info(f"campaign {summary.campaign} run {summary.run_id}: {summary.line()}")
        sample = summary.sample
        return dg.MaterializeResult(metadata={
            "run_id": summary.run_id,
            "audience": summary.audience,
            "reachable": summary.recipients,
            "planned_new": summary.planned_new,
            "sent": summary.sent,
            "skipped": summary.skipped,
            "failed": summary.failed,
            "waiting": summary.waiting,
            "skipped_by_reason": _table(summary.skips, "skip reason"),
            "failed_by_reason": _table(summary.failures, "failure reason"),
            "sample_message": dg.MetadataValue.md(
                f"**{sample['title']}**\n\n{sample['body']}\n\n({sample['channel']}, at "
                f"{sample['send_at']})" if sample else "no message planned"),
            "channels_configured": ", ".join(sorted(senders)) or "none",
            "summary": summary.line(),
        })

    return run


def _broken_asset(path: Path, error: CampaignFileError) -> dg.AssetsDefinition:
    """A campaign file that does not validate: an asset that fails with the file's error, so
    the graph and the nightly run show it and the rest of the code location still loads."""

    @dg.asset(key=_k(GROUP, path.stem), group_name=GROUP, kinds={"python"},
              description=f"Broken campaign file: {error}")
    def broken() -> None:
        raise dg.Failure(description=str(error))

    return broken


# --- checks -------------------------------------------------------------------------------

# Rows of one (campaign, run, person) beyond the one allowed, people mapped to their current
# id: extra device rows of a campaign that does not push to all devices, or two ids that an
# identity change merged, each planned.
DUPLICATES_SQL = """
SELECT count(*) - count(DISTINCT (d.run_id, coalesce(h.new_user_id::text, d.person_id), d.device))
       + count(*) FILTER (WHERE d.device > 0 AND NOT %(all_devices)s),
       count(*)
FROM push.deliveries d
LEFT JOIN crm.user_id_history h ON h.old_user_id::text = d.person_id
WHERE d.campaign = %(campaign)s
"""

# Each push of the campaign's latest run, with the person's other pushes (any campaign, one
# per (campaign, run)) sent in the day and the week before it.
CAPS_SQL = """
WITH latest AS (
    SELECT run_id FROM push.deliveries WHERE campaign = %(campaign)s
    ORDER BY planned_at DESC LIMIT 1
),
sent AS (
    SELECT DISTINCT ON (d.campaign, d.run_id, coalesce(h.new_user_id::text, d.person_id))
           coalesce(h.new_user_id::text, d.person_id) AS person, d.campaign, d.run_id,
           coalesce(d.finished_at, d.send_at) AS at
    FROM push.deliveries d
    LEFT JOIN crm.user_id_history h ON h.old_user_id::text = d.person_id
    WHERE d.status = 'sent'
    ORDER BY d.campaign, d.run_id, coalesce(h.new_user_id::text, d.person_id),
             coalesce(d.finished_at, d.send_at)
)
SELECT m.person,
       count(*) FILTER (WHERE s.at > m.at - interval '1 day'),
       count(*) FILTER (WHERE s.at > m.at - interval '7 days')
FROM sent m
LEFT JOIN sent s ON s.person = m.person AND s.at <= m.at
     AND NOT (s.campaign = m.campaign AND s.run_id = m.run_id)
     AND s.at > m.at - interval '7 days'
WHERE m.campaign = %(campaign)s AND m.run_id IN (SELECT run_id FROM latest)
GROUP BY m.person, m.at
"""


def _ledger_ready(crm_db: CrmDatabase) -> bool:
    return bool(crm_db.scalar("SELECT to_regclass('crm.user_id_history') IS NOT NULL"))


def _checks(path: Path, campaign: Campaign) -> list[dg.AssetChecksDefinition]:
    key = asset_key(campaign)

    @dg.asset_check(asset=key, name="one_row_per_person_and_run",
                    description="No (campaign, run, person) has more than one ledger row "
                    "(one per device only for a campaign that pushes to all devices), "
                    "identity changes followed.")
    def one_row(crm_db: CrmDatabase) -> dg.AssetCheckResult:
        if not _ledger_ready(crm_db):
            return dg.AssetCheckResult(passed=True, metadata={"note": "no crm tables yet"})
        current = load_campaign(path)
        extra, rows = crm_db.query(DUPLICATES_SQL, {
            "campaign": current.name, "all_devices": current.guardrails.all_devices})[0]
        return dg.AssetCheckResult(passed=extra == 0,
                                   metadata={"duplicate_rows": extra, "ledger_rows": rows})

    @dg.asset_check(asset=key, name="within_frequency_caps",
                    description="No person pushed by the campaign's latest run had more "
                    "pushes (of every campaign) in the day or week before than its caps allow.")
    def within_caps(crm_db: CrmDatabase) -> dg.AssetCheckResult:
        if not _ledger_ready(crm_db):
            return dg.AssetCheckResult(passed=True, metadata={"note": "no crm tables yet"})
        current = load_campaign(path)
        guard = current.guardrails
        rows = crm_db.query(CAPS_SQL, {"campaign": current.name})
        over = sorted({person for person, day, week in rows
                       if day >= guard.per_day or week >= guard.per_week})
        return dg.AssetCheckResult(passed=not over, metadata={
            "pushed": len(rows), "over_caps": len(over), "per_day": guard.per_day,
            "per_week": guard.per_week, "sample_over": ", ".join(over[:10]) or "none"})

    return [one_row, within_caps]


# --- sensors ------------------------------------------------------------------------------


def _materialised(instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> int:
    """The event-log position of the newest materialisation of any of `keys` (0: none)."""
    return max((r.asset_entry.last_materialization_storage_id or 0
                for r in instance.get_asset_records(keys)), default=0)


def _in_progress(instance: dg.DagsterInstance, key: dg.AssetKey, done: int) -> bool:
    """A run that will materialise `key` (the nightly job, a launched one) is not finished."""
    planned = instance.get_latest_planned_materialization_info(key)
    if planned is None or planned.storage_id <= done:
        return False
    run = instance.get_run_by_id(planned.run_id)
    return run is not None and not run.is_finished


def _change_sensor(path: Path, campaign: Campaign) -> dg.SensorDefinition:
    key, watched = asset_key(campaign), audience_keys(campaign)

    @dg.sensor(name=f"{campaign.name}_on_change", target=[key],
               minimum_interval_seconds=AUDIENCE_SENSOR_INTERVAL,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Runs {campaign.name} when "
               f"{', '.join(k.to_user_string() for k in watched)} is re-materialised after "
               f"the campaign last ran, or when {path.name} changes.")
    def on_change(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        instance = context.instance
        if not path.is_file():
            return dg.SkipReason(f"{path}: the campaign file is gone (reload the code location)")
        digest = file_hash(path)
        try:
            load_campaign(path)
        except CampaignFileError as exc:  # cursor kept: a fixed file is still a change
            return dg.SkipReason(f"not launched: {exc}")
        audience = _materialised(instance, watched)
        own = _materialised(instance, [key])
        state = json.loads(context.cursor) if context.cursor else None
        cursor = json.dumps({"audience": audience, "file_sha256": digest})
        if state is None:
            return dg.SensorResult(skip_reason=dg.SkipReason(
                "first evaluation: the audience and the file as they are now are the "
                "baseline"), cursor=cursor)
        why = []
        if digest != state.get("file_sha256"):
            why.append("file")
        if audience > max(int(state.get("audience", 0)), own):
            why.append("audience")
        if not why:
            return dg.SkipReason("neither the audience nor the campaign file changed")
        if _in_progress(instance, key, own):
            return dg.SkipReason("a run that materialises the campaign is in progress; "
                                 "looked at again once it has finished")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(
                run_key=f"{campaign.name}:{'+'.join(why)}:{audience}:{digest[:16]}",
                asset_selection=[key], tags={"crm/campaign": campaign.name,
                                             "crm/trigger": "+".join(why)})],
            cursor=cursor)

    return on_change


@dataclass(frozen=True)
class CartRequest:
    people: list[str]
    cancelled: int
    run_id: str


def cart_request(url: str, campaign: Campaign, now: datetime) -> CartRequest:
    """Cancel reminders of people who bought since; who is due a reminder now."""
    from push.abandoned_cart import cancel_purchased, reminders_due
    from push.run import default_run_id

    with psycopg.connect(url, autocommit=True) as conn:
        cancelled = cancel_purchased(conn, campaign.name, now)
        due = reminders_due(conn, campaign.name, now)
    return CartRequest(sorted(c.person_id for c in due), cancelled,
                       default_run_id(campaign, now))


def _cart_sensor(path: Path, campaign: Campaign) -> dg.SensorDefinition:
    key = asset_key(campaign)

    @dg.sensor(name=f"{campaign.name}_reminders", target=[key],
               minimum_interval_seconds=CART_SENSOR_INTERVAL,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Every {CART_SENSOR_INTERVAL // 60} minutes: cancels reminders of "
               f"people who bought since, and runs {campaign.name} for the people whose "
               "checkout is at least an hour old with no order since, not yet reminded.")
    def reminders(context: dg.SensorEvaluationContext,
                  crm_db: CrmDatabase) -> dg.RunRequest | dg.SkipReason:
        missing = crm_db.scalar(
            "SELECT array_remove(ARRAY[CASE WHEN to_regclass('crm.users') IS NULL THEN "
            "'crm.users' END, CASE WHEN to_regclass('push.deliveries') IS NULL THEN "
            "'push.deliveries' END], NULL)")
        if missing:
            return dg.SkipReason(f"{', '.join(missing)} not built yet")
        now = datetime.now(UTC)
        req = cart_request(crm_db.resolved_url(), load_campaign(path), now)
        if req.cancelled:
            context.log.info(f"{req.cancelled} reminder(s) cancelled: bought since")
        if not req.people:
            return dg.SkipReason(f"no abandoned cart due a reminder ({req.cancelled} "
                                 "cancelled)")
        digest = hashlib.sha256("\n".join(req.people).encode()).hexdigest()[:16]
        return dg.RunRequest(
            # the same people still waiting at the next tick (run queued) ask for nothing new
            run_key=f"{campaign.name}:{digest}",
            asset_selection=[key],
            run_config={"ops": {op_name(campaign): {"config": {
                "people": req.people, "run_id": req.run_id,
                "now": now.isoformat()}}}},
            tags={"crm/campaign": campaign.name, "crm/trigger": CART_TRIGGER,
                  "crm/people": str(len(req.people))})

    return reminders


# --- the domain ---------------------------------------------------------------------------


def load() -> tuple[list[tuple[Path, Campaign]], list[tuple[Path, CampaignFileError]]]:
    """The campaign files that validate, and those that do not with their error (the file
    and each bad field named, as `crm campaign list` names them)."""
    good: list[tuple[Path, Campaign]] = []
    bad: list[tuple[Path, CampaignFileError]] = []
    seen: dict[str, Path] = {}
    for path in campaign_files():
        try:
            campaign = load_campaign(path)
            if campaign.name in seen:
                raise CampaignFileError(f"{path}: campaign name {campaign.name!r} already "
                                        f"used by {seen[campaign.name]}")
            check_templates(campaign)
        except (CampaignFileError, ValueError) as exc:
            bad.append((path, exc if isinstance(exc, CampaignFileError)
                        else CampaignFileError(str(exc))))
            continue
        seen[campaign.name] = path
        good.append((path, campaign))
    return good, bad


CAMPAIGNS, BROKEN = load()
CAMPAIGN_ASSETS = [_campaign_asset(path, c) for path, c in CAMPAIGNS] + [
    _broken_asset(path, error) for path, error in BROKEN]
CAMPAIGN_CHECKS = [check for path, c in CAMPAIGNS for check in _checks(path, c)]
SENSORS = [_cart_sensor(path, c) if c.audience.trigger == CART_TRIGGER
           else _change_sensor(path, c) for path, c in CAMPAIGNS]
# What the nightly job must not send: triggered campaigns (their sensor does) and campaigns
# without a schedule (sent on demand or when their audience changes).
NOT_NIGHTLY = dg.AssetSelection.assets(
    *[asset_key(c) for _, c in CAMPAIGNS if c.audience.trigger or not c.schedule])

defs = dg.Definitions(assets=CAMPAIGN_ASSETS, asset_checks=CAMPAIGN_CHECKS, sensors=SENSORS)
