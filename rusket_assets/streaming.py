"""Large outputs written chunk by chunk: Arrow batches appended to a staging table, then swapped in.

An asset returns a :class:`TableStream` (a lazy iterable of tables or record batches) or a
``pyarrow.RecordBatchReader``; the table IO manager appends each chunk to the staging table as it is
produced, so memory holds one chunk, and replaces the target in one short transaction at the end.
Readers see the old table or the new one; a failure while streaming drops the staging table and
leaves the old table as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from rusket_assets.tables import (
    STAGING_SUFFIX,
    drop_relation,
    quote,
    replace_changed_days,
    replace_table_query,
    transaction,
)


class TableStream:
    """Chunks of one output table, produced lazily (tables or record batches with one schema).

    ``schema`` is needed only when the stream may yield no chunk at all; otherwise the first chunk
    sets it and later chunks must match its column names (types are cast to it). ``metadata``
    (optional) is called once every chunk is written: figures gathered while streaming, added to
    the output's Dagster metadata.
    """

    def __init__(
        self,
        chunks: Iterable[pa.Table | pa.RecordBatch],
        schema: pa.Schema | None = None,
        metadata: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.chunks, self.schema, self.metadata = chunks, schema, metadata

    def __iter__(self) -> Iterator[pa.Table]:
        for chunk in self.chunks:
            table = pa.Table.from_batches([chunk]) if isinstance(chunk, pa.RecordBatch) else chunk
            if not isinstance(table, pa.Table):
                raise TypeError(f"a stream chunk must be a pyarrow Table or RecordBatch, got {type(chunk).__name__}")
            if self.schema is None:
                self.schema = table.schema
            elif table.schema.names != self.schema.names:
                raise ValueError(f"chunk columns {table.schema.names} differ from the first chunk's {self.schema.names}")
            elif not table.schema.equals(self.schema):
                table = table.cast(self.schema)
            yield table


class QueryOutput:
    """An output that is a query on an open connection to the warehouse itself: the IO manager
    writes it with ``create table ... as <query>`` on that connection (the rows never reach Python),
    then calls ``close``. With ``by_day`` (a date or timestamp column) only the days whose rows
    changed are replaced when that is cheaper (:func:`rusket_assets.tables.replace_changed_days`);
    ``written`` then says what was replaced. ``metadata`` as for :class:`TableStream`."""

    def __init__(
        self,
        con: Any,
        query: str,
        close: Callable[[], None],
        metadata: Callable[[], dict[str, Any]] | None = None,
        by_day: str | None = None,
    ) -> None:
        self.con, self.query, self.close, self.metadata, self.by_day = con, query, close, metadata, by_day
        self.written: dict[str, Any] = {}

    def write(self, schema: str, table: str) -> None:
        """Replace ``schema.table`` with the query's rows (one transaction), then close the query's connection."""
        try:
            days = None
            if self.by_day is not None:
                days = replace_changed_days(self.con, schema, table, self.query, self.by_day)
            if days is None:
                replace_table_query(self.con, schema, table, self.query)
                self.written = {"write": "whole table"}
            else:
                self.written = {"write": "changed days", **days}
        finally:
            self.close()


def is_stream(obj: Any) -> bool:
    """Whether an asset output is written chunk by chunk."""
    return isinstance(obj, TableStream | pa.RecordBatchReader)


def replace_table_stream(con: Any, schema: str, table: str, chunks: TableStream | pa.RecordBatchReader) -> int:
    """Append every chunk to ``schema.table__staging``, then swap it in for ``schema.table``; rows written."""
    if isinstance(chunks, pa.RecordBatchReader):
        chunks = TableStream(chunks, chunks.schema)
    staging = f"{quote(schema)}.{quote(table + STAGING_SUFFIX)}"
    con.execute(f"create schema if not exists {quote(schema)}")
    con.execute(f"drop table if exists {staging}")
    rows, created = 0, False
    try:
        for chunk in chunks:
            created = _append(con, staging, chunk, created)
            rows += chunk.num_rows
        if not created:
            if chunks.schema is None:
                raise ValueError(f"no chunks for {schema}.{table} and no schema to create it from")
            created = _append(con, staging, chunks.schema.empty_table(), created)
        with transaction(con):
            drop_relation(con, schema, table)  # a table, or the parquet view a Spark run left
            con.execute(f"alter table {staging} rename to {quote(table)}")
    except BaseException:
        con.execute(f"drop table if exists {staging}")
        raise
    return rows


def _append(con: Any, staging: str, chunk: pa.Table, created: bool) -> bool:
    """Create the staging table from the first chunk, append the later ones (by position)."""
    view = "__rusket_chunk"
    con.register(view, chunk)
    try:
        if created:
            con.execute(f"insert into {staging} select * from {view}")
        else:
            con.execute(f"create table {staging} as select * from {view}")
    finally:
        con.unregister(view)
    return True
