"""`crm campaign opt-out` / `opt-in` on a real PostgreSQL: a person named by id, e-mail, phone,
client id or a merged-away id goes on push.opt_outs with its source; a campaign run then
skips them as `opted_out`, and after opt-in they are planned again. Unknown people are a
clear error naming what was looked for."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from crm.cli import app
from push.run import run_campaign
from tests.push_shop import Shop, campaign, shop_fixture  # noqa: F401  (the `shop` fixture)
from tests.warehouse import person_id

NOW = datetime(2026, 6, 10, 12, 0, tzinfo=UTC)


def _cli(shop: Shop, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.setenv("CRM_DATABASE_URL", shop.url)
    return CliRunner().invoke(app, ["campaign", *args])


def _statuses(shop: Shop, run_id: str) -> dict[str, str]:
    return dict(shop.execute(
        """SELECT person_id, status || coalesce(':' || reason, '') FROM push.deliveries
           WHERE run_id = %s""", run_id))


def test_opt_out_then_in_through_every_kind_of_name(shop: Shop,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ann = shop.person("ann", tokens=(("tok-ann", "android"),))
    bob = shop.person("bob", tokens=(("tok-bob", "android"),))
    shop.execute("UPDATE crm.users SET email = 'Ann@Example.com', phone = '+49 30 1234567' "
                 "WHERE user_id = %s", ann)
    shop.execute("INSERT INTO crm.client_ids VALUES (%s, 'cid-bob')", bob)
    old_bob = person_id("bob-before-login")
    shop.execute("INSERT INTO crm.user_id_history VALUES (%s, %s)", old_bob, bob)

    result = _cli(shop, monkeypatch, "opt-out", "ann@example.com", "--source", "support ticket")
    assert result.exit_code == 0 and f"opted out: {ann}" in result.output, result.output
    result = _cli(shop, monkeypatch, "opt-out", "cid-bob", "--source", "app settings")
    assert result.exit_code == 0 and f"opted out: {bob}" in result.output, result.output
    result = _cli(shop, monkeypatch, "opt-out", "+49 (30) 123-4567")  # the same phone
    assert result.exit_code == 0 and "already on the list" in result.output, result.output
    assert dict(shop.execute("SELECT person_id, source FROM push.opt_outs")) == {
        ann: "support ticket", bob: "app settings"}

    camp = campaign(guardrails={"quiet_start": 0, "quiet_end": 0})
    run_campaign(shop.url, camp, now=NOW, senders={}, run_id="r1")
    assert _statuses(shop, "r1") == {ann: "skipped:opted_out", bob: "skipped:opted_out"}

    result = _cli(shop, monkeypatch, "opt-in", old_bob)  # a merged-away id finds bob
    assert result.exit_code == 0 and f"opted in: {bob}" in result.output, result.output
    result = _cli(shop, monkeypatch, "opt-in", ann)
    assert result.exit_code == 0 and f"opted in: {ann}" in result.output, result.output
    assert shop.execute("SELECT count(*) FROM push.opt_outs") == [(0,)]
    run_campaign(shop.url, camp, now=NOW + timedelta(days=2), senders={}, run_id="r2")
    # eligible again: planned and sent for (no FCM sender here, so the send fails)
    assert Counter(_statuses(shop, "r2").values()) == {"failed:no_sender:fcm": 2}


def test_unknown_person_is_a_named_error(shop: Shop, monkeypatch: pytest.MonkeyPatch) -> None:
    shop.person("ann", tokens=(("tok-ann", "android"),))
    for who, says in [("nobody@example.com", "no person with e-mail 'nobody@example.com'"),
                      ("+1 555 0000000", "no person with phone '+1 555 0000000'"),
                      ("cid-unknown", "no person with client id 'cid-unknown'"),
                      (person_id("ghost"), f"no person with id {person_id('ghost')}")]:
        result = _cli(shop, monkeypatch, "opt-out", who)
        assert result.exit_code == 1, result.output
        assert says in result.output.replace("\n", " "), result.output
    assert shop.execute("SELECT count(*) FROM push.opt_outs") == [(0,)]
