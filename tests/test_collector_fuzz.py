"""Random hostile bodies interleaved with valid traffic from several clients.

Hypothesis generates the junk (bytes, arbitrary JSON, events carrying NULs, deep nesting,
numbers a double cannot hold, damaged gzip, odd encodings) while three clients keep sending
valid batches through the same collector. Every hostile request must get a 2xx or 4xx
answer, never a 5xx; every valid request must get 202, and every valid event must be stored
exactly once.
"""

from __future__ import annotations

import gzip
import json
import threading

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.events import batch, page_view

_text = st.text(max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | _text)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_text, inner, max_size=6),
    max_leaves=30,
)


def _event_with(field: str, raw_value: bytes) -> bytes:
    return orjson.dumps(page_view())[:-1] + b',"' + field.encode() + b'":' + raw_value + b"}"


_nul_event = st.builds(lambda s, k: orjson.dumps([page_view(**{k: s + "\u0000"})]),
                       _text, st.sampled_from(["note", "client_id", "user_id", "email"]))
_deep_event = st.integers(200, 1020).map(
    lambda n: _event_with("extra", b'{"d":' * n + b"1" + b"}" * n))
_long_number = st.sampled_from([
    b"123456789012345678901234567890", b"1.0000000000000000000001", b"-9223372036854775809",
    b"1e-400", b"1e400", b"0.30000000000000000000001",
]).map(lambda n: b"[" + _event_with("amount", n) + b"]")
def _dumps(value: object) -> bytes:  # the standard library writes integers of any size
    return json.dumps(value).encode()


_bodies = st.one_of(
    st.binary(max_size=3000),
    _json.map(_dumps),
    st.lists(_json, min_size=1, max_size=50).map(_dumps),
    _nul_event,
    _deep_event,
    _long_number,
)


def _encode(body: bytes, how: str) -> tuple[bytes, dict[str, str]]:
    if how == "plain":
        return body, {}
    packed = gzip.compress(body)
    damaged = {"gzip": packed, "gzip-truncated": packed[: max(1, len(packed) // 2)],
               "gzip-trailing": packed + b"xx", "gzip-claimed": body}[how]
    return damaged, {"Content-Encoding": "gzip"}


def test_hostile_bodies_never_cost_valid_traffic(collector, db):
    stop = threading.Event()
    sent: list[list[dict]] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def valid_client() -> None:
        with httpx.Client(headers={"X-Write-Key": collector.write_key}, timeout=30) as http:
            while not stop.is_set():
                events = batch(5)
                r = http.post(f"{collector.url}/v1/events", json=events)
                with lock:
                    sent.append(events)
                    statuses.append(r.status_code)

    clients = [threading.Thread(target=valid_client) for _ in range(3)]
    for t in clients:
        t.start()
    hostile = httpx.Client(headers={"X-Write-Key": collector.write_key}, timeout=30)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=_bodies, how=st.sampled_from(
        ["plain", "plain", "gzip", "gzip-truncated", "gzip-trailing", "gzip-claimed"]))
    def hostile_request(body: bytes, how: str) -> None:
        content, headers = _encode(body, how)
        r = hostile.post(f"{collector.url}/v1/events", content=content, headers=headers)
        assert r.status_code < 500, (r.status_code, r.text, body[:200])
        assert r.status_code in (202, 400, 413), (r.status_code, r.text)
        answer = r.json()
        assert ("accepted" in answer) if r.status_code == 202 else ("error" in answer)

    try:
        hostile_request()
    finally:
        stop.set()
        for t in clients:
            t.join()
        hostile.close()

    assert len(statuses) >= 30, "the valid clients hardly ran"
    assert set(statuses) == {202}
    ids = [e["event_id"] for events in sent for e in events]
    rows = db.execute(
        "SELECT event_id, count(*) FROM raw.events WHERE event_id = ANY(%s::uuid[]) "
        "GROUP BY event_id", (ids,)).fetchall()
    assert len(rows) == len(ids) and {n for _, n in rows} == {1}
