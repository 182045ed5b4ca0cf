"""DuckDB tables replaced atomically: identifier quoting, the staging-table name, the one swap of a whole table.

Chunked outputs use the same staging table and swap (:func:`rusket_assets.streaming.replace_table_stream`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

import pyarrow as pa

STAGING_SUFFIX = "__staging"


def quote(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def transaction(con: Any) -> Iterator[None]:
    """BEGIN ... COMMIT around the block; on any error ROLLBACK and re-raise. A failed COMMIT (e.g. disk
    full) has already ended the transaction, so the rollback's own error must not hide the real cause."""
    con.begin()
    try:
        yield
        con.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            con.rollback()
        raise


def relation_type(con: Any, schema: str, table: str) -> str | None:
    """``'BASE TABLE'``, ``'VIEW'`` or None for ``schema.table`` in the open warehouse."""
    rows = con.execute(
        "select table_type from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchall()
    return rows[0][0] if rows else None


def drop_relation(con: Any, schema: str, table: str) -> None:
    """Drop ``schema.table`` whether it is a table or a view (a Spark run leaves a parquet view:
    :mod:`rusket_assets.lakehouse`)."""
    kind = relation_type(con, schema, table)
    if kind is not None:
        con.execute(f"drop {'view' if kind == 'VIEW' else 'table'} {quote(schema)}.{quote(table)}")


def replace_table(con: Any, schema: str, table: str, data: pa.Table) -> None:
    """Replace ``schema.table`` with ``data`` in one transaction (see :func:`replace_table_query`)."""
    if not isinstance(data, pa.Table):
        raise TypeError(f"expected a pyarrow Table for {schema}.{table}, got {type(data).__name__}")
    view = f"__rusket_new_{uuid.uuid4().hex}"
    con.register(view, data)
    try:
        replace_table_query(con, schema, table, f"select * from {quote(view)}")
    finally:
        with contextlib.suppress(Exception):
            con.unregister(view)


def replace_table_query(con: Any, schema: str, table: str, query: str) -> None:
    """Replace ``schema.table`` with the rows of ``query`` (run on ``con``) in one transaction.

    The new rows go to a staging table, then the old table is dropped and the staging table renamed,
    all before COMMIT: readers see the old table or the new one, never an empty or partial one; a
    failure rolls back and leaves the old table; the column set may change between writes.
    """
    staging = f"{quote(schema)}.{quote(table + STAGING_SUFFIX)}"
    con.execute(f"create schema if not exists {quote(schema)}")
    with transaction(con):
        con.execute(f"create or replace table {staging} as {query}")
        drop_relation(con, schema, table)  # a table, or the parquet view a Spark run left
        con.execute(f"alter table {staging} rename to {quote(table)}")


def replace_changed_days(con: Any, schema: str, table: str, query: str, day_col: str, max_share: float = 0.5) -> dict[str, int] | None:
    """Make ``schema.table`` hold the rows of ``query`` by replacing only the days (of ``day_col``) whose
    rows differ, in one transaction; None (nothing done) when a full replace is needed or cheaper.

    Each day's rows are compared by their count and the sum of their row hashes, on both sides, so any
    change is found (an appended, edited or removed day, or null days); rows of unchanged days keep
    their place, a replaced day's rows go to the end. None when the table is missing or a view, its
    columns or types differ from the query's, or the changed days hold more than ``max_share`` of its rows.
    """
    target = f"{quote(schema)}.{quote(table)}"
    if relation_type(con, schema, table) != "BASE TABLE":
        return None
    new = con.sql(query)
    old = con.sql(f"select * from {target}")
    types = [str(t) for t in new.types]
    if new.columns != old.columns or types != [str(t) for t in old.types]:
        return None
    if day_col not in new.columns or types[new.columns.index(day_col)] not in ("TIMESTAMP", "DATE"):
        return None
    columns = ", ".join(quote(c) for c in new.columns)
    day = f"cast({quote(day_col)} as DATE)"
    marks = f"select {day} as day, count(*) as n, sum(hash({columns})) as h from {{}} group by all"
    changed = f"__rusket_changed_days_{uuid.uuid4().hex}"
    con.execute(
        f"""create temp table {changed} as
        with new as ({marks.format(f"({query}) as q")}), old as ({marks.format(target)})
        select coalesce(new.day, old.day) as day, coalesce(new.n, 0) as new_rows, coalesce(old.n, 0) as old_rows
        from new full join old on new.day is not distinct from old.day
        where new.n is distinct from old.n or new.h is distinct from old.h"""
    )
    try:
        days, new_rows, old_rows, total = con.sql(
            f"select count(*), coalesce(sum(new_rows), 0), coalesce(sum(old_rows), 0), (select count(*) from {target}) from {changed}"
        ).fetchall()[0]
        if max(new_rows, old_rows) > max_share * max(total, 1):
            return None
        if days:
            # ranges on the column itself, so DuckDB skips the row groups of other days (zone maps)
            ranges, params = [], []
            for (first,) in con.sql(f"select day from {changed} order by day").fetchall():
                if first is None:
                    ranges.append(f"{quote(day_col)} is null")
                else:
                    ranges.append(f"({quote(day_col)} >= ? and {quote(day_col)} < ?)")
                    params += [datetime.combine(first, time()), datetime.combine(first + timedelta(days=1), time())]
            in_changed = " or ".join(ranges)
            with transaction(con):
                con.execute(f"delete from {target} where {in_changed}", params)
                con.execute(f"insert into {target} select * from ({query}) as q where {in_changed}", params)
        return {"days_replaced": int(days), "rows_deleted": int(old_rows), "rows_inserted": int(new_rows)}
    finally:
        con.execute(f"drop table if exists {changed}")
