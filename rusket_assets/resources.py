"""Dagster resources: the DuckDB warehouse, the LanceDB directory, the model store and the source."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
from pydantic import Field

from rusket_assets.sample_data import StoreSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RUSKET_DATA_DIR", PROJECT_ROOT / "data"))
DEFAULT_WAREHOUSE = str(DATA_DIR / "warehouse.duckdb")
DEFAULT_LANCEDB = str(DATA_DIR / "lancedb")
DEFAULT_MODELS = str(DATA_DIR / "models")


def quote(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


class Warehouse(dg.ConfigurableResource):
    """One DuckDB database file, opened briefly per operation (the file lock blocks other processes)."""

    path: str = DEFAULT_WAREHOUSE
    lock_timeout_seconds: float = 300.0

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """Open a read-write connection, retrying while another process holds the file lock."""
        import duckdb

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            yield con
        finally:
            con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a query and return its result as a pyarrow Table."""
        with self.connect() as con:
            return con.sql(sql, params=params).to_arrow_table()

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run a query returning one value."""
        with self.connect() as con:
            rows = con.sql(sql, params=params).fetchall()
        return rows[0][0] if rows else None

    def replace_table(self, schema: str, table: str, data: pa.Table) -> None:
        """Replace ``schema.table`` with ``data`` atomically (see :func:`rusket_assets.io.replace_table`)."""
        from rusket_assets.io import replace_table

        with self.connect() as con:
            replace_table(con, schema, table, data)

    def has_table(self, schema: str, table: str) -> bool:
        """Whether ``schema.table`` exists."""
        if not Path(self.path).exists():
            return False
        return bool(
            self.scalar(
                "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                [schema, table],
            )
        )


class VectorStore(dg.ConfigurableResource):
    """The LanceDB directory holding item and customer vectors."""

    uri: str = DEFAULT_LANCEDB

    def connect(self) -> Any:
        """Open the LanceDB database."""
        import lancedb

        Path(self.uri).mkdir(parents=True, exist_ok=True)
        return lancedb.connect(self.uri)


class TransactionSource(dg.ConfigurableResource):
    """Where order lines come from, and which source column plays which role.

    kind: "synthetic" (the bundled generated store, default), "parquet" or "csv" (path may be a
    glob), or "duckdb" (table in the DuckDB file database; the warehouse when empty). The *_col
    fields map source columns to roles; optional roles may be left empty. where is an optional SQL
    filter applied to the source (e.g. to drop cancelled invoices).
    """

    kind: Literal["synthetic", "parquet", "csv", "duckdb"] = Field(default="synthetic", description="Where order lines come from: synthetic (bundled generated store), parquet, csv or duckdb.")
    path: str = Field(default="", description="Parquet or CSV file, or a glob (kinds parquet and csv).")
    database: str = Field(default="", description="DuckDB file holding the source table (kind duckdb); empty means the warehouse.")
    table: str = Field(default="", description="Source table, optionally schema-qualified (kind duckdb).")
    where: str = Field(default="", description="Optional SQL filter on the source, e.g. quantity > 0 to drop returns.")
    basket_col: str = Field(default="order_id", description="Source column with the basket (order or invoice) id.")
    customer_col: str = Field(default="customer_id", description="Source column with the customer id.")
    product_col: str = Field(default="product_id", description="Source column with the product id.")
    quantity_col: str = Field(default="quantity", description="Source column with units bought per line; empty if absent.")
    revenue_col: str = Field(default="revenue", description="Source column with the line revenue (price times quantity); empty if absent.")
    category_col: str = Field(default="category", description="Source column with the product category; empty if absent.")
    timestamp_col: str = Field(default="ordered_at", description="Source column with the order time; empty if absent.")
    product_name_col: str = Field(default="product_name", description="Source column with the product name; empty if absent.")
    price_col: str = Field(default="price", description="Source column with the unit price; empty if absent.")
    # Synthetic store size (kind="synthetic"); defaults are the bundled store's (sample_data.StoreSpec).
    n_customers: int = Field(default=StoreSpec.n_customers, description="Customers in the synthetic store (kind synthetic).")
    n_products: int = Field(default=StoreSpec.n_products, description="Products in the synthetic store.")
    n_categories: int = Field(default=StoreSpec.n_categories, description="Product categories in the synthetic store.")
    n_days: int = Field(default=StoreSpec.n_days, description="Days of orders in the synthetic store.")
    n_lines: int = Field(default=StoreSpec.n_lines, description="Order lines in the synthetic store.")
    seed: int = Field(default=StoreSpec.seed, description="Seed of the synthetic store (same seed, same data).")

    def roles(self) -> dict[str, str]:
        """Role -> source column for every mapped role (empty mappings left out)."""
        mapping = {
            "basket_id": self.basket_col,
            "customer_id": self.customer_col,
            "product_id": self.product_col,
            "quantity": self.quantity_col,
            "revenue": self.revenue_col,
            "category": self.category_col,
            "ordered_at": self.timestamp_col,
            "product_name": self.product_name_col,
            "price": self.price_col,
        }
        return {role: col for role, col in mapping.items() if col}


class ModelStore(dg.ConfigurableResource):
    """Directory of saved rusket_core models (``model.save``/``Model.load``, no pickles)."""

    path: str = DEFAULT_MODELS
