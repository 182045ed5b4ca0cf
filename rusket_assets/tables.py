"""DuckDB tables replaced atomically: identifier quoting, the staging-table name, the one swap of a whole table.

Chunked outputs use the same staging table and swap (:func:`rusket_assets.streaming.replace_table_stream`).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pyarrow as pa

STAGING_SUFFIX = "__staging"


def quote(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def replace_table(con: Any, schema: str, table: str, data: pa.Table) -> None:
    """Replace ``schema.table`` with ``data`` in one transaction.

    The new rows go to a staging table, then the old table is dropped and the staging table renamed,
    all before COMMIT: readers see the old table or the new one, never an empty or partial one; a
    failure rolls back and leaves the old table; the column set may change between writes.
    """
    if not isinstance(data, pa.Table):
        raise TypeError(f"expected a pyarrow Table for {schema}.{table}, got {type(data).__name__}")
    target = f"{quote(schema)}.{quote(table)}"
    staging = f"{quote(schema)}.{quote(table + STAGING_SUFFIX)}"
    view = f"__rusket_new_{uuid.uuid4().hex}"
    con.execute(f"create schema if not exists {quote(schema)}")
    con.register(view, data)
    con.begin()
    try:
        con.execute(f"create or replace table {staging} as select * from {quote(view)}")
        con.execute(f"drop table if exists {target}")
        con.execute(f"alter table {staging} rename to {quote(table)}")
        con.commit()
    except BaseException:
        # A failed COMMIT (e.g. disk full) has already ended the transaction: the rollback's own
        # "no transaction is active" must not hide the real cause.
        with contextlib.suppress(Exception):
            con.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            con.unregister(view)
