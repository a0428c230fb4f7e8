"""The hidden ground truth: who is behind every identifier and event. Never in the stream.

Built in parts as the stream is: sessions and identifiers per chunk of people, event truth
per batch of lines in arrival order, and the people / devices tables once at the end of the
generation pass. The writers take the parts in any batching and write the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from simulator.config import JUNK_CLIENT_IDS, SimConfig
from simulator.journeys import NEVER, Sessions
from simulator.population import Population

TRUTH_TABLES = ("people", "devices", "device_users", "sessions", "identifiers", "event_truth")
# Fixed row-group size: a parquet file's layout then depends on its rows, not on how they
# were handed to the writer (one frame or a thousand chunks).
ROW_GROUP_ROWS = 262_144
IDENTIFIER_TYPES = ("client_id", "user_id", "push_token", "email", "phone")


def _ms(col: str | pl.Expr) -> pl.Expr:
    c = pl.col(col) if isinstance(col, str) else col
    return c.cast(pl.Datetime("ms")).dt.replace_time_zone("UTC")


def people_truth(pop: Population, categories: tuple[str, ...],
                 registered_at: np.ndarray) -> pl.DataFrame:
    return pop.people.with_columns(
        preferred_hour_utc=(pl.col("preferred_hour") - pl.col("utc_offset_hours")) % 24,
        tastes=pl.Series(pop.tastes.round(6).tolist(), dtype=pl.List(pl.Float64)),
        top_category=pl.Series(list(categories)).gather(pop.tastes.argmax(axis=1)),
        registered_at=pl.when(pl.Series(registered_at != NEVER))
        .then(_ms(pl.Series(np.where(registered_at == NEVER, 0, registered_at)))),
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


def device_truth(pop: Population) -> dict[str, pl.DataFrame]:
    devices = pop.devices.select(
        "device_id", "kind", "device_type", "shared", "client_id", "sent_client_id",
        "push_token", "clock_skew_ms", "broken_tracker", "geo_enabled", "time_zone",
        "timezone",
    )
    device_users = pop.usage.select(
        device_id=pop.devices["device_id"].gather(pop.usage["device_idx"]),
        person_id=pop.people["person_id"].gather(pop.usage["person_idx"]),
        weight="weight",
    ).sort("device_id", "person_id")
    return {"devices": devices, "device_users": device_users}


def sessions_part(pop: Population, sessions: Sessions, first_id: int) -> pl.DataFrame:
    return pl.DataFrame({
        "session_id": first_id + np.arange(len(sessions), dtype=np.int64),
        "person_id": pop.people["person_id"].gather(sessions.person),
        "device_id": pop.devices["device_id"].gather(sessions.device),
        "started_at": sessions.start,
        "from_push": sessions.from_push,
    }).with_columns(started_at=_ms("started_at"))


def event_truth_part(pop: Population, stream: pl.DataFrame) -> pl.DataFrame:
    """Truth of each line of a chunk (all but its line number, known after the merge)."""
    pid, dev_id = pop.people["person_id"], pop.devices["device_id"]
    dev = stream["_device"].to_numpy()
    return stream.select(
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


def identifiers_part(pop: Population, stream: pl.DataFrame) -> pl.DataFrame:
    """(type, value, person) of a chunk's valid events, as the collector stores them
    (e-mail lower-case, phone E.164 digits)."""
    valid = stream.filter(pl.col("_invalid_kind").is_null())
    valid = valid.with_columns(
        person_id=pop.people["person_id"].gather(valid["_person"]),
        phone=pl.col("phone").str.replace(r"^\+", "").str.replace(r"^8", "7"),
        email=pl.col("email").str.to_lowercase(),
    )
    parts = [
        valid.select(identifier_type=pl.lit(t), value=pl.col(t), person_id="person_id")
        .drop_nulls("value")
        for t in IDENTIFIER_TYPES
    ]
    return pl.concat(parts).unique()


def identifiers_table(parts: list[pl.DataFrame]) -> pl.DataFrame:
    schema = {"identifier_type": pl.String, "value": pl.String, "person_id": pl.String}
    return (
        pl.concat([pl.DataFrame(schema=schema), *parts]).unique()
        .with_columns(
            is_junk=(pl.col("identifier_type") == "client_id")
            & pl.col("value").is_in(list(JUNK_CLIENT_IDS)),
            n_people=pl.col("person_id").n_unique().over("identifier_type", "value"),
        )
        .sort("identifier_type", "value", "person_id")
    )


def truth_dir_for(out: Path) -> Path:
    """`events.jsonl` -> `events.truth/` beside it."""
    return out.with_name(out.name.split(".")[0] + ".truth")


class TruthSink(Protocol):
    def add(self, name: str, df: pl.DataFrame) -> None: ...
    def close(self) -> None: ...


class TruthFiles:
    """Parquet files, one per table, written as parts arrive, in fixed-size row groups."""

    def __init__(self, folder: Path, cfg: SimConfig) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(
            json.dumps(cfg.describe(), indent=2, sort_keys=True) + "\n")
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._schemas: dict[str, pl.Schema] = {}
        self._pending: dict[str, list[pl.DataFrame]] = {}
        self._rows: dict[str, int] = {}

    def add(self, name: str, df: pl.DataFrame) -> None:
        if name not in self._schemas:
            self._schemas[name] = df.schema
            self._pending[name], self._rows[name] = [], 0
        self._pending[name].append(df.cast(dict(self._schemas[name])))
        self._rows[name] += df.height
        if self._rows[name] >= ROW_GROUP_ROWS:
            self._flush(name, final=False)

    def _flush(self, name: str, *, final: bool) -> None:
        df = pl.concat(self._pending[name]) if self._pending[name] else \
            pl.DataFrame(schema=self._schemas[name])
        n_full = df.height // ROW_GROUP_ROWS * ROW_GROUP_ROWS
        cut = df.height if final else n_full
        if cut or (final and name not in self._writers):
            table = df.head(cut).to_arrow(compat_level=pl.CompatLevel.oldest())
            if name not in self._writers:
                # No statistics: byte-identical files for the same seed are easier to check.
                # No dictionaries: ids and times barely repeat, and building them took four
                # fifths of the writing; zstd alone makes the files smaller anyway.
                self._writers[name] = pq.ParquetWriter(
                    self.folder / f"{name}.parquet", table.schema, compression="zstd",
                    write_statistics=False, use_dictionary=False)
            self._writers[name].write_table(table, row_group_size=ROW_GROUP_ROWS)
        rest = df.slice(cut)
        self._pending[name] = [rest] if rest.height else []
        self._rows[name] = rest.height

    def close(self) -> None:
        for name in self._schemas:
            self._flush(name, final=True)
        for w in self._writers.values():
            w.close()


def write_truth_files(tables: dict[str, pl.DataFrame], folder: Path, cfg: SimConfig) -> None:
    sink = TruthFiles(folder, cfg)
    for name, df in tables.items():
        sink.add(name, df)
    sink.close()


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


class TruthTables:
    """Tables in schema `sim`, keyed by run_id, filled part by part in one transaction;
    re-posting the same run replaces its rows."""

    def __init__(self, database_url: str, run_id: str, cfg: SimConfig) -> None:
        import psycopg

        self.run_id = run_id
        self.conn = psycopg.connect(database_url)
        self.conn.execute("CREATE SCHEMA IF NOT EXISTS sim")
        self.conn.execute("CREATE TABLE IF NOT EXISTS sim.runs (run_id text PRIMARY KEY, "
                          "config jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        self.conn.execute("DELETE FROM sim.runs WHERE run_id = %s", (run_id,))
        self.conn.execute("INSERT INTO sim.runs (run_id, config) VALUES (%s, %s)",
                          (run_id, json.dumps(cfg.describe())))
        self._started: set[str] = set()

    def add(self, name: str, df: pl.DataFrame) -> None:
        if name not in self._started:
            cols = ", ".join(f"{c} {_pg_type(t)}" for c, t in df.schema.items())
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS sim.{name} (run_id text NOT NULL, {cols})")
            self.conn.execute(f"DELETE FROM sim.{name} WHERE run_id = %s", (self.run_id,))
            self._started.add(name)
        if not df.height:
            return
        data = _for_copy(df).with_columns(pl.lit(self.run_id).alias("run_id"))
        data = data.select("run_id", *df.columns)
        with self.conn.cursor().copy(
            f"COPY sim.{name} ({', '.join(data.columns)}) FROM STDIN (FORMAT csv)"
        ) as copy:
            copy.write(data.write_csv(include_header=False))

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()

    def discard(self) -> None:
        """The run failed half-way: leave what an earlier post of the run stored."""
        self.conn.rollback()
        self.conn.close()


def write_truth_tables(tables: dict[str, pl.DataFrame], database_url: str, run_id: str,
                       cfg: SimConfig) -> None:
    sink = TruthTables(database_url, run_id, cfg)
    for name, df in tables.items():
        sink.add(name, df)
    sink.close()
