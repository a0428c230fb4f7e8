"""Simulated people and their devices, with the hidden traits the pipeline should later recover."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from simulator.config import SimConfig
from simulator.ids import hex_tokens, pick, uuids

# Russian cities in zones without daylight saving since 2014, so local hour = UTC + fixed offset.
# (city, IANA zone, UTC offset in hours, latitude, longitude, weight)
CITIES: tuple[tuple[str, str, int, float, float, float], ...] = (
    ("Moscow", "Europe/Moscow", 3, 55.7558, 37.6173, 0.42),
    ("Saint Petersburg", "Europe/Moscow", 3, 59.9311, 30.3609, 0.16),
    ("Kaliningrad", "Europe/Kaliningrad", 2, 54.7104, 20.4522, 0.03),
    ("Samara", "Europe/Samara", 4, 53.1959, 50.1002, 0.06),
    ("Yekaterinburg", "Asia/Yekaterinburg", 5, 56.8389, 60.6057, 0.1),
    ("Omsk", "Asia/Omsk", 6, 54.9885, 73.3242, 0.04),
    ("Novosibirsk", "Asia/Novosibirsk", 7, 55.0084, 82.9357, 0.09),
    ("Krasnoyarsk", "Asia/Krasnoyarsk", 7, 56.0153, 92.8932, 0.04),
    ("Irkutsk", "Asia/Irkutsk", 8, 52.2870, 104.3050, 0.02),
    ("Vladivostok", "Asia/Vladivostok", 10, 43.1198, 131.8869, 0.04),
)
FIRST = ("anna", "maria", "elena", "olga", "irina", "ivan", "sergey", "dmitry", "alexey", "pavel",
         "natalia", "tatiana", "andrey", "mikhail", "yulia", "nikita", "ekaterina", "artem")
LAST = ("ivanov", "smirnov", "kuznetsov", "popov", "vasiliev", "petrov", "sokolov", "mikhailov",
        "novikov", "fedorov", "morozov", "volkov", "alekseev", "lebedev", "semenov", "egorov")
DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "rambler.ru")
STREETS = ("Lenina", "Mira", "Sadovaya", "Gagarina", "Pushkina", "Sovetskaya", "Lesnaya",
           "Tsvetochnaya")
MOBILE_PREFIXES = np.array([903, 905, 915, 916, 925, 926, 977, 985, 999], dtype=np.int64)
DEVICE_KINDS = ("web", "ios", "android")
# Share of devices whose events carry `timezone` (the browser's Intl zone, the app's device
# zone); the rest send none: old app versions, trackers installed without it.
TIMEZONE_SEND_RATE = 0.85


@dataclass(frozen=True)
class Population:
    people: pl.DataFrame
    tastes: np.ndarray  # people x categories, rows sum to 1
    devices: pl.DataFrame
    usage: pl.DataFrame  # person_idx, device_idx, weight: who uses which device how often
    usage_keys: np.ndarray  # person_idx + cumulative weight share, for vectorised sampling


def _preferred_hours(rng: np.random.Generator, n: int) -> np.ndarray:
    # Most shoppers are evening people; some lunch-break and morning people.
    peak = rng.choice([8, 13, 20, 22], size=n, p=[0.15, 0.2, 0.45, 0.2])
    return (peak + np.round(rng.normal(0, 1.2, n))).astype(np.int64) % 24


def build_population(cfg: SimConfig, rng: np.random.Generator, n_categories: int) -> Population:
    n = cfg.visitors
    idx = np.arange(n, dtype=np.int64)
    city_w = np.array([c[5] for c in CITIES])
    city = rng.choice(len(CITIES), size=n, p=city_w / city_w.sum())
    registered = rng.random(n) < cfg.register_rate
    long_standing = registered & (rng.random(n) < cfg.long_standing_rate)
    with_history = long_standing & (rng.random(n) < cfg.history_import_rate)
    one_time = (rng.random(n) < cfg.one_time_visitor_rate) & ~long_standing
    activity = cfg.sessions_per_week * rng.lognormal(-0.3, 0.8, n)  # sessions a week
    tastes = rng.dirichlet(np.full(n_categories, 0.35), size=n)
    propensity = rng.beta(1.2, 12.0, n)  # chance that a product view leads to add_to_cart
    push_resp = rng.beta(2.0, 5.0, n)  # open probability at the preferred hour
    user_no = 10_000_000 + rng.choice(89_999_999, size=n, replace=False)
    phone_national = MOBILE_PREFIXES[rng.integers(0, len(MOBILE_PREFIXES), n)] * 10_000_000 + (
        (idx * 7_919_993 + rng.integers(0, 10_000_000)) % 10_000_000
    )
    first, last = rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n)

    people = pl.DataFrame(
        {
            "person_idx": idx,
            "registered": registered,
            "long_standing": long_standing,
            "with_history": with_history,
            "one_time": one_time,
            "city_idx": city,
            "preferred_hour": _preferred_hours(rng, n),
            "sessions_per_week": activity,
            "purchase_propensity": propensity,
            "push_responsiveness": push_resp,
            "first": pick(FIRST, first),
            "last": pick(LAST, last),
            "domain": pick(DOMAINS, rng.integers(0, len(DOMAINS), n)),
            "street": pick(STREETS, rng.integers(0, len(STREETS), n)),
            "house": rng.integers(1, 120, n),
            "apt": rng.integers(1, 300, n),
            "user_no": user_no,
            "phone_national": phone_national,
            "account_age_days": rng.uniform(30, 1500, n),
        }
    )
    # A household shares a city: the second of each family pair moves in with the first.
    reg_idx = idx[registered]
    n_family = round(cfg.family_device_rate * len(reg_idx) / 2) * 2
    family = rng.choice(reg_idx, size=n_family, replace=False).reshape(-1, 2)
    city_arr = people["city_idx"].to_numpy().copy()
    city_arr[family[:, 1]] = city_arr[family[:, 0]]
    family_group = np.full(n, -1, dtype=np.int64)
    family_group[family.ravel()] = np.repeat(np.arange(len(family)), 2)

    cities = pl.DataFrame(
        {
            "city_idx": np.arange(len(CITIES)),
            "city": [c[0] for c in CITIES],
            "time_zone": [c[1] for c in CITIES],
            "utc_offset_hours": [c[2] for c in CITIES],
            "home_lat": [c[3] for c in CITIES],
            "home_lon": [c[4] for c in CITIES],
        }
    )
    people = (
        people.with_columns(city_idx=pl.Series(city_arr), family_group=pl.Series(family_group))
        .join(cities, on="city_idx", how="left", maintain_order="left")
        .with_columns(
            person_id=pl.format("P{}", pl.col("person_idx").cast(pl.String).str.zfill(7)),
            user_id=pl.when("registered").then(pl.col("user_no").cast(pl.String)),
            email=pl.concat_str(
                "first", pl.lit("."), "last", pl.col("person_idx").cast(pl.String),
                pl.lit("@"), "domain",
            ),
            phone=pl.format("+7{}", pl.col("phone_national")),
            shipping_address=pl.format(
                "{}, {} st. {}, apt {}", "city", "street", "house", "apt"
            ),
        )
        .drop("first", "last", "domain", "street", "house", "apt", "user_no", "phone_national")
    )

    devices, usage = _build_devices(cfg, rng, n, family, one_time)
    devices = _with_time_zones(rng, devices, usage, people)
    usage = usage.sort("person_idx", "device_idx")
    pu = usage["person_idx"].to_numpy()
    w = usage["weight"].to_numpy()
    tot = np.bincount(pu, weights=w, minlength=n)
    cum = np.cumsum(w)
    start = np.concatenate([[0.0], np.cumsum(tot)])[pu]
    keys = pu + (cum - start) / tot[pu]
    last = np.r_[pu[1:] != pu[:-1], True]
    keys[last] = pu[last] + 1.0  # exact upper edge, immune to rounding
    return Population(people, tastes, devices, usage, keys)


def _with_time_zones(
    rng: np.random.Generator, devices: pl.DataFrame, usage: pl.DataFrame, people: pl.DataFrame
) -> pl.DataFrame:
    """`time_zone`: the true zone of a device, its first user's city (a family shares a city, a
    kiosk stands in its first shopper's); `timezone`: what it sends, null on the others.
    Drawn after every other draw of `rng`, so the rest of the population stays as it was."""
    first_user = usage.group_by("device_idx").agg(pl.col("person_idx").min())
    zone = (
        devices.select("device_idx")
        .join(first_user, on="device_idx", how="left", maintain_order="left")
        .join(people.select("person_idx", "time_zone"), on="person_idx", how="left",
              maintain_order="left")["time_zone"]
    )
    sends = pl.Series(rng.random(devices.height) < TIMEZONE_SEND_RATE)
    return devices.with_columns(
        time_zone=zone, timezone=pl.when(sends).then(zone)
    )


def _build_devices(
    cfg: SimConfig, rng: np.random.Generator, n: int, family: np.ndarray, one_time: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame]:
    p = np.array(cfg.devices_per_person)
    n_dev = rng.choice([1, 2, 3], size=n, p=p / p.sum())
    n_dev[one_time] = 1  # someone who comes once uses one device
    owner = np.repeat(np.arange(n), n_dev)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(n_dev) - n_dev, n_dev)
    mix = np.array([cfg.device_mix[k] for k in DEVICE_KINDS])
    kind = rng.choice(3, size=len(owner), p=mix / mix.sum())
    weight = np.array([1.0, 0.5, 0.3])[rank]
    shared = np.zeros(len(owner), dtype=np.int64)  # 0 personal, 1 family, 2 kiosk

    # Family: one extra device per household pair, used by both.
    n_fam = len(family)
    fam_kind = rng.choice(3, size=n_fam, p=[0.5, 0.3, 0.2])
    # Kiosks: in-store web terminals used by many shoppers.
    n_kiosk_users = round(cfg.kiosk_user_rate * n)
    n_kiosks = -(-n_kiosk_users // max(cfg.people_per_kiosk, 1)) if n_kiosk_users else 0
    kiosk_users = rng.choice(n, size=n_kiosk_users, replace=False)

    n_personal = len(owner)
    fam_dev = n_personal + np.arange(n_fam)
    kiosk_dev = n_personal + n_fam + np.arange(n_kiosks)
    kind = np.concatenate([kind, fam_kind, np.zeros(n_kiosks, dtype=np.int64)])
    shared = np.concatenate([shared, np.ones(n_fam, np.int64), np.full(n_kiosks, 2, np.int64)])
    n_all = len(kind)

    usage = pl.DataFrame(
        {
            "person_idx": np.concatenate(
                [owner, family[:, 0], family[:, 1], kiosk_users]
            ).astype(np.int64),
            "device_idx": np.concatenate(
                [np.arange(n_personal), fam_dev, fam_dev,
                 kiosk_dev[np.arange(n_kiosk_users) % max(n_kiosks, 1)]]
            ).astype(np.int64),
            "weight": np.concatenate(
                [weight, np.full(2 * n_fam, 0.6), np.full(n_kiosk_users, 0.15)]
            ),
        }
    )

    is_app = kind > 0
    push = np.where(is_app, rng.random(n_all) < cfg.push_enabled_rate,
                    rng.random(n_all) < cfg.web_push_rate) & (shared != 2)
    fcm = hex_tokens(rng, n_all, 11) + ":APA91b" + hex_tokens(rng, n_all, 24)
    apns = hex_tokens(rng, n_all, 32)
    webpush = "wp:" + hex_tokens(rng, n_all, 16)
    broken = (kind == 0) & (shared == 0) & (rng.random(n_all) < cfg.broken_tracker_rate)
    skewed = rng.random(n_all) < cfg.skewed_clock_rate
    skew_ms = np.where(
        skewed,
        rng.choice([-1, 1], n_all)
        * np.exp(rng.uniform(np.log(5 * 60e3), np.log(2 * 86400e3), n_all)),
        0,
    ).astype(np.int64)
    # Older app versions report the original spec's generic "mobile".
    sent = np.where(is_app & (rng.random(n_all) < 0.2), 3, kind)
    devices = pl.DataFrame(
        {
            "device_idx": np.arange(n_all, dtype=np.int64),
            "kind": pick(DEVICE_KINDS, kind),
            "kind_idx": kind,
            "device_type": pick((*DEVICE_KINDS, "mobile"), sent),
            "shared": pick(("personal", "family", "kiosk"), shared),
            "client_id": uuids(rng, n_all),
            "push_enabled": push,
            "broken_tracker": broken,
            "clock_skew_ms": skew_ms,
            "geo_enabled": is_app & (rng.random(n_all) < 0.8),
        }
    ).with_columns(
        device_id=pl.format("D{}", pl.col("device_idx").cast(pl.String).str.zfill(7)),
        push_token=pl.when("push_enabled").then(
            pl.when(pl.col("kind") == "android").then(fcm)
            .when(pl.col("kind") == "ios").then(apns)
            .otherwise(webpush)
        ),
        sent_client_id=pl.when("broken_tracker").then(pl.lit("undefined")).otherwise("client_id"),
    )
    return devices, usage
