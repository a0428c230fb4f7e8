"""Campaign files (YAML or TOML) loaded into validated models.

A bad file raises CampaignFileError naming the file and every bad field, so an
operator sees "audience.segments: ..." rather than a traceback.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CAMPAIGN_DIRS = (REPO_ROOT / "campaigns", Path(__file__).resolve().parent / "campaigns")
EXTRA_DIRS_VARIABLE = "CRM_CAMPAIGNS_DIR"


class CampaignFileError(ValueError):
    """A campaign file that cannot be read or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Audience(_Strict):
    segments: list[str] = Field(default_factory=list)
    lifecycle: list[str] = Field(default_factory=list)
    # crm.user_features column -> {"min": x, "max": y}
    features: dict[str, dict[Literal["min", "max"], float]] = Field(default_factory=dict)
    trigger: Literal["abandoned_cart"] | None = None


class Message(_Strict):
    title: str
    body: str
    # per-language overrides, e.g. {"de": {"title": ..., "body": ...}}
    translations: dict[str, dict[Literal["title", "body"], str]] = Field(default_factory=dict)


class Guardrails(_Strict):
    per_day: int = Field(1, ge=0)
    per_week: int = Field(3, ge=0)
    quiet_start: int = Field(22, ge=0, le=23)
    quiet_end: int = Field(8, ge=0, le=23)
    all_devices: bool = False


class Campaign(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    audience: Audience
    message: Message
    channel: Literal["best", "fcm", "apns"] = "best"
    schedule: str | None = None  # cron, for scheduled campaigns
    send_time: Literal["now", "best_window"] = "now"
    expiry_hours: float = Field(24, gt=0)
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @field_validator("schedule")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError("schedule must be a five-field cron expression")
        return value

    @property
    def expiry(self) -> timedelta:
        return timedelta(hours=self.expiry_hours)


def load_campaign(path: Path) -> Campaign:
    """Read one campaign file; the error names the file and each bad field."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise CampaignFileError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise CampaignFileError(f"{path}: expected a mapping at the top level")
    try:
        return Campaign.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CampaignFileError(f"{path}: {problems}") from exc


def extra_campaign_dirs() -> tuple[Path, ...]:
    """The shop's own campaign folders outside the checkout: `CRM_CAMPAIGNS_DIR`, several
    separated by the path separator (`:`). A folder that does not exist is an error: a typo
    would otherwise silently drop its campaigns from the nightly run."""
    raw = os.environ.get(EXTRA_DIRS_VARIABLE, "")
    dirs = tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())
    for d in dirs:
        if not d.is_dir():
            raise CampaignFileError(f"{EXTRA_DIRS_VARIABLE}: {d} is not a directory")
    return dirs


def campaign_files(dirs: tuple[Path, ...] | None = None) -> list[Path]:
    """The campaign files of `dirs`, else of the repository's campaigns/ and CRM_CAMPAIGNS_DIR."""
    if dirs is None:
        dirs = CAMPAIGN_DIRS + extra_campaign_dirs()
    return sorted(
        p for d in dirs if d.is_dir() for p in d.iterdir() if p.suffix in {".yaml", ".yml", ".toml"}
    )


def load_campaigns(dirs: tuple[Path, ...] | None = None) -> dict[str, Campaign]:
    campaigns: dict[str, Campaign] = {}
    for path in campaign_files(dirs):
        campaign = load_campaign(path)
        if campaign.name in campaigns:
            raise CampaignFileError(f"{path}: campaign name {campaign.name!r} already used")
        campaigns[campaign.name] = campaign
    return campaigns
