"""Write keys: who may send events, and from which browser origins.

Keys are random tokens shown once at creation; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import psycopg

KEY_PREFIX = "wk_"


@dataclass(frozen=True, slots=True)
class WriteKey:
    name: str
    allowed_origins: tuple[str, ...]

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create(
    database_url: str, name: str, origins: list[str] | None = None, *, replace: bool = False
) -> str:
    """Create a key and return it in clear (the only time it is seen).

    `replace` deletes an existing key of that name first (the demo re-creates its own key).
    """
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    clean = sorted({o.rstrip("/") for o in origins or []})
    with psycopg.connect(database_url) as conn:
        if replace:
            conn.execute("DELETE FROM ops.write_keys WHERE name = %s", (name,))
        try:
            conn.execute(
                "INSERT INTO ops.write_keys (name, key_hash, key_prefix, allowed_origins) "
                "VALUES (%s, %s, %s, %s)",
                (name, hash_key(key), key[:8], clean),
            )
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"a write key named {name!r} already exists") from None
    return key


def list_keys(database_url: str) -> list[dict]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "SELECT name, key_prefix, allowed_origins, created_at, revoked_at "
            "FROM ops.write_keys ORDER BY created_at"
        )
        cols = [c.name for c in cur.description or []]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def revoke(database_url: str, name: str) -> bool:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(
            "UPDATE ops.write_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
            (name,),
        )
        return cur.rowcount == 1


LOOKUP_SQL = (
    "SELECT name, allowed_origins FROM ops.write_keys WHERE key_hash = %s AND revoked_at IS NULL"
)


async def lookup(conn: psycopg.AsyncConnection, key: str) -> WriteKey | None:
    cur = await conn.execute(LOOKUP_SQL, (hash_key(key),))
    row = await cur.fetchone()
    return WriteKey(row[0], tuple(row[1])) if row else None
