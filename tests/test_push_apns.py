"""APNs sender against the local fake APNs over real HTTP/2 + TLS: provider-token auth,
dead tokens through deliver() into push.token_invalidations, retries, JWT refresh, bad keys."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from push.apns import ApnsConfigError, ApnsSender, load_key
from push.fake_apns import FakeApns, FakeApnsState, write_self_signed, write_test_key

TOPIC = "com.example.shop"


@pytest.fixture
def fake_apns(tmp_path: Path) -> Iterator[tuple[FakeApnsState, str, Path, Path]]:
    p8, cert, cert_key = tmp_path / "AuthKey_K1.p8", tmp_path / "ca.pem", tmp_path / "tls.key"
    key = write_test_key(p8)
    write_self_signed(cert, cert_key)
    state = FakeApnsState(key.public_key(), "K1", "TEAM1", TOPIC)
    server = FakeApns(state, cert, cert_key)
    url = server.start()
    yield state, url, p8, cert
    server.stop()


def _sender(p8: Path, url: str, ca: Path, **kwargs) -> ApnsSender:
    return ApnsSender(load_key(p8), "K1", "TEAM1", TOPIC, url, str(ca), **kwargs)


def test_sends_dead_tokens_and_retries(fake_apns) -> None:
    state, url, p8, ca = fake_apns
    state.failures.update(
        {"dead": "unregistered", "junk": "bad_token", "slow": "429:1", "flaky": "500"}
    )

    async def run() -> dict:
        sender = _sender(p8, url, ca, retry_cap=5)
        try:
            tokens = ["ok", "dead", "junk", "slow", "flaky"]
            results = await asyncio.gather(
                *(sender.send(t, "hi", "there", {"delivery_id": f"d-{t}"}) for t in tokens)
            )
            return dict(zip(tokens, results, strict=True))
        finally:
            await sender.aclose()

    started = time.monotonic()
    results = asyncio.run(run())
    elapsed = time.monotonic() - started
    assert results["ok"].status == "sent"
    assert (results["dead"].reason, results["dead"].dead_token) == ("unregistered", True)
    assert (results["junk"].reason, results["junk"].dead_token) == ("bad_token", True)
    assert results["slow"].status == "sent" and state.attempts["slow"] == 2
    assert results["flaky"].status == "sent" and state.attempts["flaky"] == 2
    assert elapsed >= 1.0  # the 429's Retry-After: 1 was honoured
    assert state.attempts["dead"] == 1 and state.attempts["junk"] == 1  # not retried
    got = {m["token"]: m for m in state.received}
    assert set(got) == {"ok", "slow", "flaky"}
    ok = got["ok"]
    assert ok["payload"] == {"aps": {"alert": {"title": "hi", "body": "there"}},
                             "delivery_id": "d-ok"}
    assert ok["headers"]["apns-push-type"] == "alert"
    assert ok["headers"]["apns-topic"] == TOPIC
    assert ok["headers"]["apns-collapse-id"] == "d-ok"
    assert int(ok["headers"]["apns-expiration"]) > time.time()


def test_retries_are_bounded_and_retry_after_capped(fake_apns) -> None:
    state, url, p8, ca = fake_apns
    state.failures["busy"] = "429:60"

    async def run():
        sender = _sender(p8, url, ca, retry_cap=0.5)
        try:
            return await sender.send("busy", "t", "b", {})
        finally:
            await sender.aclose()

    started = time.monotonic()
    result = asyncio.run(run())
    assert result.status == "sent" and time.monotonic() - started < 5  # 60 s capped at 0.5


def test_wrong_key_is_rejected_by_the_fake(fake_apns, tmp_path: Path) -> None:
    state, url, _p8, ca = fake_apns
    other = tmp_path / "other.p8"
    write_test_key(other)

    async def run():
        sender = _sender(other, url, ca)
        try:
            return await sender.send("ok", "t", "b", {})
        finally:
            await sender.aclose()

    result = asyncio.run(run())
    assert result == result.__class__("failed", "http_403:InvalidProviderToken")
    assert state.received == []


def test_provider_token_refreshed_within_the_hour(fake_apns) -> None:
    state, url, p8, ca = fake_apns
    now = [time.time() - 45 * 60]  # the fake checks iat against the real clock

    async def run() -> None:
        sender = _sender(p8, url, ca, clock=lambda: now[0])
        try:
            for _ in range(3):
                assert (await sender.send("ok", "t", "b", {})).status == "sent"
            now[0] += 39 * 60
            assert (await sender.send("ok", "t", "b", {})).status == "sent"
            assert len(state.provider_tokens) == 1  # reused, not signed per request
            now[0] += 2 * 60  # 41 minutes after it was signed
            assert (await sender.send("ok", "t", "b", {})).status == "sent"
        finally:
            await sender.aclose()

    asyncio.run(run())
    assert len(state.provider_tokens) == 2


def test_bad_key_file_is_a_named_error(tmp_path: Path, monkeypatch) -> None:
    junk = tmp_path / "AuthKey_bad.p8"
    junk.write_text("not a key")
    with pytest.raises(ApnsConfigError, match=r"CRM_APNS_KEY .*AuthKey_bad\.p8.*PEM"):
        load_key(junk)
    with pytest.raises(ApnsConfigError, match=r"CRM_APNS_KEY .*missing\.p8.*cannot read"):
        load_key(tmp_path / "missing.p8")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = tmp_path / "rsa.p8"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048)
                        .private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(ApnsConfigError, match="P-256"):
        load_key(rsa_key)
    good = tmp_path / "good.p8"
    write_test_key(good)
    monkeypatch.setenv("CRM_APNS_KEY", str(good))
    monkeypatch.delenv("CRM_APNS_TEAM_ID", raising=False)
    monkeypatch.setenv("CRM_APNS_KEY_ID", "K1")
    monkeypatch.setenv("CRM_APNS_TOPIC", TOPIC)
    with pytest.raises(ApnsConfigError, match="CRM_APNS_TEAM_ID is not set"):
        ApnsSender.from_env()


def test_delivery_from_ledger_records_dead_tokens(fake_apns, db) -> None:
    from datetime import UTC, datetime, timedelta
    from uuid import uuid4

    from push.deliver import deliver
    from push.ledger import PlannedPush, counts, plan

    state, url, p8, ca = fake_apns
    now = datetime.now(UTC)
    run = str(uuid4())
    gone, junk = f"gone-{run}", f"junk-{run}"
    state.failures.update({gone: "unregistered", junk: "bad_token"})
    rows = [
        PlannedPush(f"u{i}", "apns", f"tok{i}-{run}", now, now + timedelta(hours=1), "t", "b")
        for i in range(20)
    ]
    rows += [PlannedPush(f"u-{t}", "apns", t, now, now + timedelta(hours=1), "t", "b")
             for t in (gone, junk)]
    plan(db, "apns_ledger", run, rows)

    async def run_once() -> dict:
        sender = _sender(p8, url, ca)
        try:
            return await deliver(db, "apns_ledger", run, now, {"apns": sender}, window=7)
        finally:
            await sender.aclose()

    assert asyncio.run(run_once()) == {"sent": 20, "failed": 2}
    assert asyncio.run(run_once()) == {"sent": 0, "failed": 0}  # a re-run sends nothing
    assert counts(db, "apns_ledger", run) == {"sent": 20, "failed": 2}
    assert len({m["payload"]["delivery_id"] for m in state.received}) == 20
    dead = dict(db.execute(
        "SELECT push_token, reason FROM push.token_invalidations WHERE push_token = ANY(%s)",
        ([gone, junk],),
    ).fetchall())
    assert dead == {gone: "unregistered", junk: "bad_token"}


def test_fake_servers_settings_drive_both_real_senders(tmp_path: Path, monkeypatch) -> None:
    from push.fake_servers import FakePush
    from push.run import default_senders

    fakes = FakePush(tmp_path / "fake-push")
    env = fakes.start()
    try:
        for name, value in env.items():
            monkeypatch.setenv(name, value)

        async def run() -> dict:
            senders = default_senders()
            try:
                return {ch: await s.send(f"{ch}-tok", "t", "b", {"delivery_id": "d1"})
                        for ch, s in senders.items()}
            finally:
                for s in senders.values():
                    await s.aclose()  # type: ignore[attr-defined]

        results = asyncio.run(run())
        assert {ch: r.status for ch, r in results.items()} == {"fcm": "sent", "apns": "sent"}
        assert [m["token"] for m in fakes.fcm.received] == ["fcm-tok"]
        assert fakes.apns is not None and [m["token"] for m in fakes.apns.received] == ["apns-tok"]
    finally:
        fakes.stop()


def test_more_sends_than_one_connection_has_streams(fake_apns) -> None:
    """300 sends at once over one HTTP/2 connection whose server allows 100 streams: the pool
    waits for free streams instead of overrunning the server's limit, and all go out."""
    state, url, p8, ca = fake_apns

    async def run() -> list:
        sender = _sender(p8, url, ca, concurrency=300, connections=1)
        try:
            return await asyncio.gather(*(sender.send(f"{i:064x}", "t", "b", {})
                                          for i in range(300)))
        finally:
            await sender.aclose()

    results = asyncio.run(run())
    assert [r.status for r in results] == ["sent"] * 300
    assert len({m["token"] for m in state.received}) == 300


def test_apns_url_must_be_https(tmp_path: Path) -> None:
    p8 = tmp_path / "k.p8"
    write_test_key(p8)
    with pytest.raises(ApnsConfigError, match=r"CRM_APNS_URL 'http://127.0.0.1:1'.*https"):
        ApnsSender(load_key(p8), "K1", "TEAM1", TOPIC, "http://127.0.0.1:1")


@pytest.mark.parametrize("end_how", ["goaway", "drop"])
def test_connection_ended_mid_run_loses_nothing_and_repeats_nothing_answered(
        fake_apns, db, end_how: str) -> None:
    """The fake ends every connection after 40 requests while more are in flight: with a
    GOAWAY naming the 40th stream (those up to it are still answered, those above it were not
    processed and go again on a new connection), or by closing it (the unanswered ones go
    again). Every ledger row ends sent, each device token reached the service once."""
    from datetime import UTC, datetime, timedelta
    from uuid import uuid4

    from push.deliver import deliver
    from push.ledger import PlannedPush, counts, plan

    state, url, p8, ca = fake_apns
    state.end_after, state.end_how, state.delay = 40, end_how, 0.05
    now, run = datetime.now(UTC), str(uuid4())
    rows = [PlannedPush(f"u{i}", "apns", f"{end_how}-{i:04d}-{run}", now,
                        now + timedelta(hours=1), "t", "b") for i in range(300)]
    plan(db, "apns_goaway", run, rows)

    async def send_all() -> dict:
        sender = _sender(p8, url, ca, connections=1, concurrency=100)
        try:
            return await deliver(db, "apns_goaway", run, now, {"apns": sender})
        finally:
            await sender.aclose()

    assert asyncio.run(send_all()) == {"sent": 300, "failed": 0}
    assert counts(db, "apns_goaway", run) == {"sent": 300}
    assert state.connections >= 300 // 40  # each connection ended, a new one took over
    if end_how == "goaway":
        assert state.refused > 0  # streams above last_stream_id were sent again
    # nothing that got an answer was sent twice, nothing lost
    assert sorted(m["token"] for m in state.received) == sorted(r.push_token for r in rows)
    assert set(state.attempts.values()) == {1}
