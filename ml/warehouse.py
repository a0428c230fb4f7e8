"""Reading the marts into polars and writing model outputs to schema `ml`.

Outputs are written atomically: each table is built under a temporary name and swapped in with
a rename in the same transaction, so analysts, dbt and the campaign code see either the
previous complete table or the new complete one, never a half-written one.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import psycopg
from psycopg import sql

SCHEMA = "ml"

_PG_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "text",
    pl.Int8: "smallint",
    pl.Int16: "smallint",
    pl.Int32: "integer",
    pl.Int64: "bigint",
    pl.UInt8: "smallint",
    pl.UInt16: "integer",
    pl.UInt32: "bigint",
    pl.Float32: "real",
    pl.Float64: "double precision",
    pl.Boolean: "boolean",
    pl.Date: "date",
    pl.Datetime: "timestamptz",
}


# PostgreSQL type OIDs of the result columns the marts use, for empty results.
_OID_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(), 20: pl.Int64(), 21: pl.Int64(), 23: pl.Int64(), 700: pl.Float64(),
    701: pl.Float64(), 1700: pl.Float64(), 1082: pl.Date(),
    1114: pl.Datetime("us"), 1184: pl.Datetime("us", "UTC"),
}


def read(database_url: str, query: str, params: tuple[Any, ...] | None = None) -> pl.DataFrame:
    """Run `query` and return its rows as a polars frame (numeric columns as floats)."""
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(query, params)
        names = [c.name for c in cur.description or []]
        rows = cur.fetchall()
    if not rows:  # no values to infer types from: take them from the result's description
        return pl.DataFrame(schema={c.name: _OID_TYPES.get(c.type_code, pl.String)
                                    for c in cur.description or []})
    return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


def table_exists(database_url: str, name: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def _pg_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.List):
        return _pg_type(dtype.inner) + "[]"
    for kind, name in _PG_TYPES.items():
        if isinstance(dtype, kind):
            return name
    raise TypeError(f"no PostgreSQL type for polars {dtype}")


def write_table(database_url: str, table: str, frame: pl.DataFrame, model_version: str) -> int:
    """Replace `ml.<table>` with `frame` plus a `model_version` column, atomically."""
    frame = frame.with_columns(model_version=pl.lit(model_version, pl.String))
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_pg_type(dtype)))
        for name, dtype in frame.schema.items()
    )
    target = sql.Identifier(SCHEMA, table)
    building = sql.Identifier(SCHEMA, f"{table}__building")
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(building))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(building, columns))
        names = sql.SQL(", ").join(sql.Identifier(n) for n in frame.columns)
        with conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(building, names)
        ) as copy:
            for row in frame.iter_rows():
                copy.write_row(row)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(target))
        conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            building, sql.Identifier(table)))
    return frame.height
