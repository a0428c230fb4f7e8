"""Every knob of the simulation in one frozen dataclass, so a run is described by its config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

# Identifiers broken trackers really send (PostHog and Segment keep lists of them).
JUNK_CLIENT_IDS: tuple[str, ...] = ("undefined", "null", "0", "")
# People simulated at a time by the streaming path (simulator.stream): bounds memory, never
# the output.
DEFAULT_CHUNK_VISITORS = 2_000


@dataclass(frozen=True)
class SimConfig:
    visitors: int = 1000
    days: int = 30
    seed: int = 1
    # Fixed default so the same seed gives the same bytes on any day.
    start: date = date(2026, 9, 1)

    # Population
    device_mix: dict[str, float] = field(
        default_factory=lambda: {"web": 0.55, "ios": 0.2, "android": 0.25}
    )
    devices_per_person: tuple[float, float, float] = (0.6, 0.3, 0.1)  # P(1), P(2), P(3)
    register_rate: float = 0.55  # share of people who have (or open) an account
    long_standing_rate: float = 0.4  # of the registered: account older than the period
    history_import_rate: float = 0.5  # of the long-standing: purchase/visit history imported
    sessions_per_week: float = 1.2  # mean for a regular visitor (lognormal across people)
    one_time_visitor_rate: float = 0.35

    # Journeys
    checkout_start_rate: float = 0.4  # sessions with a non-empty cart that start checkout
    checkout_completion_rate: float = 0.68  # checkout_start -> order_complete
    payment_failure_rate: float = 0.12  # completed orders that had a failed attempt first
    remove_from_cart_rate: float = 0.15  # adds later removed
    push_campaigns_per_week: float = 2.0
    push_enabled_rate: float = 0.7  # app devices that accept notifications
    web_push_rate: float = 0.1  # web devices that accept web push
    recommendations_per_week: float = 0.5  # user_recommendation records per registered person

    # Hazards (each on by default at a realistic level)
    family_device_rate: float = 0.03  # registered people in a household pair sharing a device
    kiosk_user_rate: float = 0.01  # people who also use an in-store kiosk
    people_per_kiosk: int = 40
    junk_client_id_rate: float = 0.003  # events whose client_id is a junk value
    broken_tracker_rate: float = 0.01  # web devices whose client_id is always "undefined"
    retry_rate: float = 0.01  # events sent twice with the same event_id
    late_rate: float = 0.01  # app events that arrive days after their timestamp
    late_max_days: float = 5.0
    skewed_clock_rate: float = 0.03  # devices whose clock is off by minutes to days
    invalid_rate: float = 0.005  # events broken so that the collector must reject them

    def describe(self) -> dict:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        return d
