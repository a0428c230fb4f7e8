"""Who a campaign reaches: people (crm.users) picked by the campaign's segments, lifecycle
stages and feature filters, each with the device token(s) to push to.

Model outputs (ml.*), opt-outs and past deliveries may be keyed by a person id that an
identity change has since replaced; every such id is read through crm.user_id_history, so
an anonymous visitor who logged in is the same person to the campaign. Tokens are the valid
ones of crm.push_tokens minus push.token_invalidations (dead tokens the senders saw since the
last dbt build). One device per person - the send-time model's channel and token when still
valid, else the valid token used most recently - unless the campaign asks for all devices.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from push.campaign import Campaign

# Lifecycle stages from the BG/NBD chance of still being active (ml.user_lifecycle). 0.5 is the
# line ml/segments.py draws for lapsing buyers; people without orders are not scored there.
LIFECYCLE_STAGES: dict[str, str] = {
    "active": "l.p_active >= 0.5",
    "lapsing": "l.p_active >= 0.2 AND l.p_active < 0.5",
    "lost": "l.p_active < 0.2",
    "prospect": "l.user_id IS NULL",
}
NUMERIC_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}
# A person's language: the newest `language` (or `locale`) an event of theirs carried, within
# this many received days (raw.events is partitioned by received day: only those are read).
LANGUAGE_DAYS = 90
SERVICE = {"ios": "apns", "android": "fcm", "web": "fcm"}


class AudienceError(ValueError):
    """A campaign's audience that cannot be evaluated (unknown segment, stage or feature)."""


@dataclass(frozen=True)
class Recipient:
    person_id: str
    channel: str  # the push service: 'fcm' (android, web) or 'apns' (ios)
    push_token: str
    device_type: str
    timezone: str | None
    language: str | None
    best_local_hour: int | None


@dataclass
class Audience:
    people: int  # persons matching the filters, before opt-outs and tokens
    recipients: list[Recipient]
    skipped: dict[str, str] = field(default_factory=dict)  # person_id -> reason

    def skip_counts(self) -> Counter[str]:
        return Counter(self.skipped.values())


def _exists(conn: psycopg.Connection, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


def _need(conn: psycopg.Connection, table: str, why: str) -> None:
    if not _exists(conn, table):
        raise AudienceError(f"{why} reads {table}, which does not exist yet "
                            "(run `crm transform` and `crm train`)")


CURRENT_ID = "coalesce(h.new_user_id::text, {col})"
HISTORY_JOIN = "LEFT JOIN crm.user_id_history h ON h.old_user_id::text = {col}"


def _mapped(column: str) -> tuple[str, str]:
    """SQL for the current person id of `column` and the join that provides it."""
    return CURRENT_ID.format(col=column), HISTORY_JOIN.format(col=column)


def _filters(conn: psycopg.Connection, campaign: Campaign) -> tuple[list[sql.Composable], dict]:
    """WHERE conditions on u.user_id (text) for the campaign's audience, and their params."""
    audience = campaign.audience
    where: list[sql.Composable] = []
    params: dict = {}
    if audience.segments:
        _need(conn, "ml.user_segments", f"campaign {campaign.name}: audience.segments")
        known = {r[0] for r in conn.execute("SELECT DISTINCT segment FROM ml.user_segments")}
        from ml.segments import RULE_SEGMENTS

        unknown = sorted(set(audience.segments) - known - set(RULE_SEGMENTS))
        if unknown:
            raise AudienceError(
                f"campaign {campaign.name}: audience.segments: unknown segment(s) {unknown}; "
                f"known: {sorted(known | set(RULE_SEGMENTS))}"
            )
        person, join = _mapped("s.user_id")
        where.append(sql.SQL(
            f"u.user_id::text IN (SELECT {person} FROM ml.user_segments s {join} "
            "WHERE s.segment = ANY(%(segments)s))"
        ))
        params["segments"] = audience.segments
    if audience.lifecycle:
        unknown = sorted(set(audience.lifecycle) - set(LIFECYCLE_STAGES))
        if unknown:
            raise AudienceError(
                f"campaign {campaign.name}: audience.lifecycle: unknown stage(s) {unknown}; "
                f"known: {sorted(LIFECYCLE_STAGES)}"
            )
        _need(conn, "ml.user_lifecycle", f"campaign {campaign.name}: audience.lifecycle")
        person, join = _mapped("l0.user_id")
        stages = " OR ".join(f"({LIFECYCLE_STAGES[s]})" for s in audience.lifecycle)
        where.append(sql.SQL(
            f"u.user_id::text IN (SELECT u2.user_id::text FROM crm.users u2 LEFT JOIN "
            f"(SELECT {person} AS user_id, max(l0.p_active) AS p_active "
            f"FROM ml.user_lifecycle l0 {join} GROUP BY 1) l "
            f"ON l.user_id = u2.user_id::text WHERE {stages})"
        ))
    if audience.features:
        _need(conn, "crm.user_features", f"campaign {campaign.name}: audience.features")
        columns = dict(conn.execute(
            """SELECT column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'crm' AND table_name = 'user_features'"""
        ).fetchall())
        numeric = sorted(c for c, t in columns.items() if t in NUMERIC_TYPES)
        for name, bounds in audience.features.items():
            if name not in numeric:
                raise AudienceError(
                    f"campaign {campaign.name}: audience.features.{name}: crm.user_features "
                    f"has no numeric column {name!r}; numeric columns: {numeric}"
                )
            for bound, op in (("min", ">="), ("max", "<=")):
                if bound in bounds:
                    key = f"f_{len(params)}"
                    params[key] = bounds[bound]
                    where.append(sql.SQL(
                        "u.user_id IN (SELECT f.user_id FROM crm.user_features f "
                        "WHERE f.{} {} %({})s)"
                    ).format(sql.Identifier(name), sql.SQL(op), sql.SQL(key)))
    return where, params


def valid_tokens_sql() -> str:
    """Each person's tokens a sender may use: valid in crm.push_tokens, not invalidated since."""
    return """SELECT t.user_id::text AS person_id, t.push_token, t.device_type, t.last_used_at
              FROM crm.push_tokens t
              WHERE t.is_valid AND NOT EXISTS (
                  SELECT 1 FROM push.token_invalidations i WHERE i.push_token = t.push_token)"""


def _languages(conn: psycopg.Connection, people: list[str]) -> dict[str, str]:
    if not _exists(conn, "crm.client_ids"):
        return {}
    rows = conn.execute(
        f"""SELECT DISTINCT ON (c.user_id) c.user_id::text,
                   lower(split_part(replace(coalesce(e.payload ->> 'language',
                                                      e.payload ->> 'locale'), '_', '-'),
                                    '-', 1))
            FROM raw.events e JOIN crm.client_ids c ON c.client_id = e.client_id
            WHERE e.received_day > (now() AT TIME ZONE 'UTC')::date - {LANGUAGE_DAYS}
              AND (e.payload ? 'language' OR e.payload ? 'locale')
              AND c.user_id::text = ANY(%s)
            ORDER BY c.user_id, e.event_ts DESC""",
        (people,),
    ).fetchall()
    return {person: lang for person, lang in rows if lang}


def _windows(conn: psycopg.Connection) -> dict[str, tuple[int | None, str | None]]:
    """Current person id -> (best local hour, the model's push token)."""
    if not _exists(conn, "ml.user_send_windows"):
        return {}
    person, join = _mapped("w.user_id")
    rows = conn.execute(
        f"SELECT {person}, w.best_local_hour, w.push_token FROM ml.user_send_windows w {join} "
        "ORDER BY (h.new_user_id IS NULL) DESC"  # a person's own row wins over an old id's
    ).fetchall()
    out: dict[str, tuple[int | None, str | None]] = {}
    for pid, hour, token in rows:
        out.setdefault(pid, (None if hour is None else int(hour), token))
    return out


def opted_out(conn: psycopg.Connection, people: list[str]) -> set[str]:
    """People (current ids) on the opt-out list under their own id or a replaced one."""
    person, join = _mapped("o.person_id")
    return {
        r[0] for r in conn.execute(
            f"SELECT {person} FROM push.opt_outs o {join} WHERE {person} = ANY(%s)", (people,)
        )
    }


def select_people(
    conn: psycopg.Connection, campaign: Campaign, people: list[str] | None = None
) -> list[tuple[str, str | None]]:
    """(person_id, timezone) of everyone the filters pick, in a stable order. `people` narrows
    the audience to given persons (a trigger's, e.g. the abandoned-cart finder's)."""
    _need(conn, "crm.users", f"campaign {campaign.name}")
    if campaign.audience.trigger and people is None:
        raise AudienceError(
            f"campaign {campaign.name}: its audience comes from the {campaign.audience.trigger!r}"
            " trigger, which names the people of each run"
        )
    where, params = _filters(conn, campaign)
    if people is not None:
        where.append(sql.SQL("u.user_id::text = ANY(%(people)s)"))
        params["people"] = list(people)
    query = sql.SQL("SELECT u.user_id::text, u.timezone FROM crm.users u{} ORDER BY 1").format(
        sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    )
    return [(r[0], r[1]) for r in conn.execute(query, params).fetchall()]


def build_audience(
    conn: psycopg.Connection, campaign: Campaign, people: list[str] | None = None
) -> Audience:
    chosen = select_people(conn, campaign, people)
    ids = [p for p, _ in chosen]
    out = opted_out(conn, ids)
    _need(conn, "crm.push_tokens", f"campaign {campaign.name}")
    tokens: dict[str, list[tuple[str, str]]] = {}
    for pid, token, device, _last in conn.execute(
        f"SELECT * FROM ({valid_tokens_sql()}) v WHERE v.person_id = ANY(%s) "
        "ORDER BY v.person_id, v.last_used_at DESC, v.push_token",
        (ids,),
    ):
        if campaign.channel in ("best", SERVICE.get(device)):
            tokens.setdefault(pid, []).append((token, device))
    windows = _windows(conn)
    languages = _languages(conn, ids)
    audience = Audience(people=len(chosen), recipients=[])
    for pid, tz in chosen:
        if pid in out:
            audience.skipped[pid] = "opted_out"
            continue
        own = tokens.get(pid)
        if not own:
            audience.skipped[pid] = "no_valid_token"
            continue
        hour, model_token = windows.get(pid, (None, None))
        if campaign.guardrails.all_devices:
            picked = own
        else:
            # the model's token if it is still valid, else the most recently used one
            picked = [next((t for t in own if t[0] == model_token), own[0])]
        for token, device in picked:
            audience.recipients.append(Recipient(
                pid, SERVICE[device], token, device, tz, languages.get(pid), hour))
    return audience
