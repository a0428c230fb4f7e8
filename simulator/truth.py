"""The hidden ground truth: who is behind every identifier and event. Never in the stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from simulator.config import JUNK_CLIENT_IDS, SimConfig
from simulator.journeys import Sessions
from simulator.population import Population

TRUTH_TABLES = ("people", "devices", "device_users", "sessions", "identifiers", "event_truth")


def _ms(col: str | pl.Expr) -> pl.Expr:
    c = pl.col(col) if isinstance(col, str) else col
    return c.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def build_truth(cfg: SimConfig, pop: Population, sessions: Sessions, stream: pl.DataFrame,
                categories: tuple[str, ...], registered_at: np.ndarray) -> dict[str, pl.DataFrame]:
    never = np.iinfo(np.int64).max
    people = pop.people.with_columns(
        preferred_hour_utc=(pl.col("preferred_hour") - pl.col("utc_offset_hours")) % 24,
        tastes=pl.Series(pop.tastes.round(6).tolist(), dtype=pl.List(pl.Float64)),
        top_category=pl.Series(list(categories)).gather(pop.tastes.argmax(axis=1)),
        registered_at=pl.when(pl.Series(registered_at != never))
        .then(_ms(pl.Series(np.where(registered_at == never, 0, registered_at)))),
        uses_kiosk=pl.col("person_idx").is_in(
            pop.usage.join(pop.devices.filter(pl.col("shared") == "kiosk"), on="device_idx")
            ["person_idx"].implode()
        ),
    ).select(
        "person_id", "registered", "user_id", "email", "phone", "city", "time_zone",
        "utc_offset_hours", "preferred_hour", "preferred_hour_utc", "sessions_per_week",
        "purchase_propensity", "push_responsiveness", "tastes", "top_category", "one_time",
        "long_standing", "with_history", "registered_at", "family_group", "uses_kiosk",
        "shipping_address",
    )
    pid = pop.people["person_id"]
    dev_id = pop.devices["device_id"]
    devices = pop.devices.select(
        "device_id", "kind", "device_type", "shared", "client_id", "sent_client_id",
        "push_token", "clock_skew_ms", "broken_tracker", "geo_enabled", "time_zone",
        "timezone",
    )
    device_users = pop.usage.select(
        device_id=dev_id.gather(pop.usage["device_idx"]),
        person_id=pid.gather(pop.usage["person_idx"]),
        weight="weight",
    ).sort("device_id", "person_id")
    sess = pl.DataFrame({
        "session_id": np.arange(len(sessions), dtype=np.int64),
        "person_id": pid.gather(sessions.person),
        "device_id": dev_id.gather(sessions.device),
        "started_at": sessions.start,
        "from_push": sessions.from_push,
    }).with_columns(started_at=_ms("started_at"))

    dev = stream["_device"].to_numpy()
    event_truth = stream.select(
        line=pl.int_range(pl.len(), dtype=pl.Int64),
        event_id="event_id",
        event_sent="event",
        event_type="_true_event",
        person_id=pid.gather(stream["_person"]),
        device_id=pl.when(pl.Series(dev >= 0)).then(dev_id.gather(np.where(dev >= 0, dev, 0))),
        session_id=pl.when(pl.col("_session") >= 0).then("_session"),
        true_ts=_ms("_ts"),
        client_ts=_ms("_client_ts"),
        arrival_ts=_ms("_arrival"),
        clock_skew_ms="_skew_ms",
        is_valid=pl.col("_invalid_kind").is_null(),
        invalid_kind="_invalid_kind",
        invalid_field="_invalid_field",
        is_retry="_retry",
        is_late="_late",
        junk_client_id="_junk",
    )

    # Identifiers as the collector stores them (e-mail lower-case, phone E.164 digits).
    valid = stream.filter(pl.col("_invalid_kind").is_null()).with_columns(
        person_id=pid.gather(stream.filter(pl.col("_invalid_kind").is_null())["_person"]),
        phone=pl.col("phone").str.replace(r"^\+", "").str.replace(r"^8", "7"),
        email=pl.col("email").str.to_lowercase(),
    )
    parts = [
        valid.select(identifier_type=pl.lit(t), value=pl.col(t), person_id="person_id")
        .drop_nulls("value")
        for t in ("client_id", "user_id", "push_token", "email", "phone")
    ]
    identifiers = (
        pl.concat(parts).unique(maintain_order=True)
        .with_columns(
            is_junk=(pl.col("identifier_type") == "client_id")
            & pl.col("value").is_in(list(JUNK_CLIENT_IDS)),
            n_people=pl.col("person_id").n_unique().over("identifier_type", "value"),
        )
        .sort("identifier_type", "value", "person_id")
    )
    return {"people": people, "devices": devices, "device_users": device_users,
            "sessions": sess, "identifiers": identifiers, "event_truth": event_truth}


def truth_dir_for(out: Path) -> Path:
    """`events.jsonl` -> `events.truth/` beside it."""
    return out.with_name(out.name.split(".")[0] + ".truth")


def write_truth_files(tables: dict[str, pl.DataFrame], folder: Path, cfg: SimConfig) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        # No statistics: byte-identical files for the same seed are easier to check.
        df.write_parquet(folder / f"{name}.parquet", statistics=False, compression="zstd")
    (folder / "run.json").write_text(json.dumps(cfg.describe(), indent=2, sort_keys=True) + "\n")


_PG_TYPES = {pl.Int64: "bigint", pl.Int32: "integer", pl.Float64: "double precision",
             pl.Boolean: "boolean", pl.String: "text"}


def _pg_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "timestamptz"
    if isinstance(dtype, pl.List):
        return _pg_type(dtype.inner) + "[]"
    return _PG_TYPES.get(dtype.base_type(), "text")


def _for_copy(df: pl.DataFrame) -> pl.DataFrame:
    out = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            c = c.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        elif isinstance(dtype, pl.List):
            c = pl.lit("{") + c.cast(pl.List(pl.String)).list.join(",") + pl.lit("}")
        out.append(c.alias(name))
    return df.select(out)


def write_truth_tables(tables: dict[str, pl.DataFrame], database_url: str, run_id: str,
                       cfg: SimConfig) -> None:
    """Tables in schema `sim`, keyed by run_id; re-posting the same run replaces its rows."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS sim")
        conn.execute("CREATE TABLE IF NOT EXISTS sim.runs (run_id text PRIMARY KEY, "
                     "config jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("DELETE FROM sim.runs WHERE run_id = %s", (run_id,))
        conn.execute("INSERT INTO sim.runs (run_id, config) VALUES (%s, %s)",
                     (run_id, json.dumps(cfg.describe())))
        for name, df in tables.items():
            cols = ", ".join(f"{c} {_pg_type(t)}" for c, t in df.schema.items())
            conn.execute(f"CREATE TABLE IF NOT EXISTS sim.{name} (run_id text NOT NULL, {cols})")
            conn.execute(f"DELETE FROM sim.{name} WHERE run_id = %s", (run_id,))
            data = _for_copy(df).with_columns(pl.lit(run_id).alias("run_id"))
            data = data.select("run_id", *df.columns)
            with conn.cursor().copy(
                f"COPY sim.{name} ({', '.join(data.columns)}) FROM STDIN (FORMAT csv)"
            ) as copy:
                copy.write(data.write_csv(include_header=False))
        conn.commit()
