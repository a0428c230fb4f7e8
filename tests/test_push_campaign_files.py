"""Campaign files: the shipped ones load, bad ones fail naming the field."""

from pathlib import Path

import pytest

from push.campaign import CampaignFileError, load_campaign, load_campaigns


def test_shipped_campaigns_load() -> None:
    campaigns = load_campaigns()
    assert set(campaigns) >= {"nightly_recommendations", "abandoned_cart"}
    assert campaigns["nightly_recommendations"].send_time == "best_window"
    assert campaigns["abandoned_cart"].audience.trigger == "abandoned_cart"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("name: Bad Name\naudience: {}\nmessage: {title: a, body: b}\n", "name"),
        ("name: x\naudience: {segmentz: [a]}\nmessage: {title: a, body: b}\n", "audience.segmentz"),
        ("name: x\naudience: {}\nmessage: {title: a}\n", "message.body"),
        ("name: x\naudience: {}\nmessage: {title: a, body: b}\nschedule: '1 2'\n", "schedule"),
        (
            "name: x\naudience: {}\nmessage: {title: a, body: b}\nguardrails: {per_day: -1}\n",
            "guardrails.per_day",
        ),
        ("- not a mapping\n", "mapping"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_bad_campaign_file_names_the_problem(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CampaignFileError, match=r"bad\.yaml") as info:
        load_campaign(path)
    assert named in str(info.value)


def test_toml_campaign(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        'name = "t"\n[audience]\nsegments = ["s1"]\n[message]\ntitle = "a"\nbody = "b"\n'
    )
    assert load_campaign(path).audience.segments == ["s1"]


def test_the_terminal_shows_a_bad_file_error_as_written(
        tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error's text reaches the terminal verbatim: brackets in a pattern are not markup."""
    from typer.testing import CliRunner

    from crm.cli import app

    monkeypatch.setenv("CRM_DATABASE_URL", database_url)
    path = tmp_path / "bad.yaml"
    path.write_text("name: Bad Name\naudience: {}\nmessage: {title: a, body: b}\n")
    result = CliRunner().invoke(app, ["campaign", "run", str(path), "--dry-run"])
    assert result.exit_code == 1
    assert "^[a-z0-9_]+$" in result.output.replace("\n", "")


def test_the_shops_own_campaign_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CRM_CAMPAIGNS_DIR adds folders outside the checkout; one that does not exist is an
    error naming it, in Python and from `crm campaign`."""
    import subprocess
    import sys

    first, second = tmp_path / "spring", tmp_path / "summer"
    for folder, name in ((first, "spring_sale"), (second, "summer_sale")):
        folder.mkdir()
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\naudience: {{}}\nmessage: {{title: a, body: b}}\n")
    monkeypatch.setenv("CRM_CAMPAIGNS_DIR", f"{first}:{second}")
    assert {"nightly_recommendations", "spring_sale", "summer_sale"} <= set(load_campaigns())
    missing = tmp_path / "autumn"
    monkeypatch.setenv("CRM_CAMPAIGNS_DIR", f"{first}:{missing}")
    with pytest.raises(CampaignFileError, match=f"CRM_CAMPAIGNS_DIR: {missing} is not a"):
        load_campaigns()
    cli = subprocess.run([sys.executable, "-m", "crm", "campaign", "list"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1
    # rich wraps the message at 80 columns, at a space or inside the path: compare the words
    # without any whitespace
    expected = f"CRM_CAMPAIGNS_DIR: {missing} is not a directory"
    assert "".join(expected.split()) in "".join(cli.stderr.split()), cli.stderr
