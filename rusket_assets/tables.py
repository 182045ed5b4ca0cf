"""DuckDB tables replaced atomically: identifier quoting, the staging-table name, the one swap of a whole table.

Chunked outputs use the same staging table and swap (:func:`rusket_assets.streaming.replace_table_stream`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
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
