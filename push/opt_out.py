"""The person-level push opt-out list (push.opt_outs), which every campaign's planning respects.

A person is named the way support staff know them: their crm.users id (an id an identity
merge has since replaced is followed through crm.user_id_history), e-mail, phone or a
client id (crm.client_ids). The list holds current person ids; planning also honours a row
under an older id, and opting in removes both.
"""

from __future__ import annotations

import re
import uuid

import psycopg


class UnknownPersonError(LookupError):
    """The given id, e-mail, phone or client id names no person (or several)."""


def _current(conn: psycopg.Connection, user_id: str) -> str | None:
    """`user_id` if it is a person, or the person a merge made of it."""
    row = conn.execute(
        """SELECT coalesce(h.new_user_id, u.user_id)::text
           FROM (SELECT %s::uuid AS user_id) AS g
           LEFT JOIN crm.user_id_history h ON h.old_user_id = g.user_id
           JOIN crm.users u ON u.user_id = coalesce(h.new_user_id, g.user_id)""",
        (user_id,),
    ).fetchone()
    return row[0] if row else None


def resolve_person(conn: psycopg.Connection, who: str) -> str:
    """The current person id `who` names (person id, e-mail, phone or client id)."""
    who = who.strip()
    if not who:
        raise UnknownPersonError("no person given: expected a person id, e-mail, phone or "
                                 "client id")
    try:
        as_uuid = str(uuid.UUID(who))
    except ValueError:
        as_uuid = None
    if as_uuid and (found := _current(conn, as_uuid)):
        return found
    if "@" in who:
        what, rows = "e-mail", conn.execute(
            "SELECT user_id::text FROM crm.users WHERE lower(email) = lower(%s)", (who,))
    elif re.fullmatch(r"\+?[\d\s().-]{6,}", who):
        what, rows = "phone", conn.execute(
            """SELECT user_id::text FROM crm.users
               WHERE regexp_replace(phone, '\\D', '', 'g') = regexp_replace(%s, '\\D', '', 'g')""",
            (who,))
    else:
        what, rows = "client id", conn.execute(
            "SELECT DISTINCT user_id::text FROM crm.client_ids WHERE client_id = %s", (who,))
    ids = sorted({_current(conn, r[0]) or r[0] for r in rows})
    if not ids and as_uuid:
        raise UnknownPersonError(f"no person with id {who} in crm.users (nor a merged id of "
                                 "one in crm.user_id_history)")
    if not ids:
        raise UnknownPersonError(f"no person with {what} {who!r} in crm.users"
                                 + (" (crm.client_ids)" if what == "client id" else ""))
    if len(ids) > 1:
        raise UnknownPersonError(f"{what} {who!r} names {len(ids)} people ({', '.join(ids)}): "
                                 "give the person id")
    return ids[0]


def opt_out(conn: psycopg.Connection, who: str, source: str) -> tuple[str, bool]:
    """Put the person on the list; returns (person id, False if they already were)."""
    person = resolve_person(conn, who)
    cur = conn.execute(
        """INSERT INTO push.opt_outs (person_id, source) VALUES (%s, %s)
           ON CONFLICT (person_id) DO NOTHING""",
        (person, source),
    )
    return person, cur.rowcount == 1


def opt_in(conn: psycopg.Connection, who: str) -> tuple[str, int]:
    """Take the person off the list, under their id and any id merged into it; returns
    (person id, rows removed)."""
    person = resolve_person(conn, who)
    cur = conn.execute(
        """DELETE FROM push.opt_outs WHERE person_id = %s OR person_id IN (
               SELECT old_user_id::text FROM crm.user_id_history WHERE new_user_id::text = %s)""",
        (person, person),
    )
    return person, cur.rowcount
