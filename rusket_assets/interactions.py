"""Upstream warehouse tables handed to assets as references, so each asset queries only what it needs.

An input annotated :class:`WarehouseTable` is not loaded by the table IO manager: the asset gets the
table's location and opens a DuckDB relation over the columns (and rows) it uses. Encoders take the
relation as is (``encode_transactions`` works inside DuckDB), so Python holds the interaction
matrix, never the raw order lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rusket_assets.resources import Warehouse
from rusket_assets.tables import quote


@dataclass(frozen=True)
class WarehouseTable:
    """The stored table ``schema.table`` of an upstream asset (a location, not its rows)."""

    warehouse: Warehouse
    schema: str
    table: str

    @property
    def name(self) -> str:
        """Quoted ``schema.table`` for SQL."""
        return f"{quote(self.schema)}.{quote(self.table)}"

    @contextmanager
    def relation(self, columns: Sequence[str], where: str | None = None) -> Iterator[Any]:
        """A DuckDB relation over ``columns`` (and rows matching ``where``), valid inside the block."""
        if not columns:
            raise ValueError("name the columns to read")
        with self.warehouse.connect() as con:
            select = ", ".join(quote(c) for c in columns)
            yield con.sql(f"select {select} from {self.name}" + (f" where {where}" if where else ""))

    def parquet_files(self) -> str | None:
        """The parquet glob behind the table when Spark wrote it (a lakehouse view), else None."""
        from rusket_assets.lakehouse import current_files

        with self.warehouse.connect() as con:
            return current_files(con, self.schema, self.table)

    def scalar(self, expression: str, where: str | None = None) -> Any:
        """One aggregate over the table, e.g. ``count(distinct basket_id)``."""
        return self.warehouse.scalar(f"select {expression} from {self.name}" + (f" where {where}" if where else ""))


def engine_input(table: WarehouseTable, relation: Any, engine: Any) -> Any:
    """What an engine's fit takes: the relation itself locally (encoded inside DuckDB); on Spark the parquet
    files behind ``table`` when Spark wrote it (read by the executors, not the driver), else its arrow table."""
    if not getattr(engine, "is_spark", False):
        return relation
    return table.parquet_files() or relation.to_arrow_table()
