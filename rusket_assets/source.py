"""Reading and validating the configured source of order lines into the standard column set."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from rusket_assets.resources import TransactionSource, Warehouse, quote

ID_ROLES = ("basket_id", "customer_id", "product_id")
NON_NEGATIVE_ROLES = ("quantity", "revenue")
# Standard columns of ingest.raw_transactions and the type used when a role is not mapped.
STANDARD_COLUMNS = {
    "basket_id": None,
    "customer_id": None,
    "product_id": None,
    "quantity": "INTEGER",
    "revenue": "DOUBLE",
    "price": "DOUBLE",
    "category": "VARCHAR",
    "product_name": "VARCHAR",
    "ordered_at": "TIMESTAMP",
}


class SourceError(ValueError):
    """The source data cannot be ingested (missing column, null ids, negative quantities...)."""


@contextmanager
def open_source(source: TransactionSource, warehouse: Warehouse) -> Iterator[tuple[Any, str, str]]:
    """Yield (connection, FROM clause, description) for the configured source."""
    import duckdb

    kind = source.kind.lower()
    if kind == "duckdb":
        if not source.table:
            raise SourceError("source kind 'duckdb' needs `table` (optionally schema-qualified)")
        relation = ".".join(quote(part) for part in source.table.split("."))
        if not source.database or source.database == warehouse.path:
            with warehouse.connect() as con:
                yield con, relation, f"DuckDB table {source.table} in {warehouse.path}"
            return
        con = duckdb.connect(source.database, read_only=True)
        try:
            yield con, relation, f"DuckDB table {source.table} in {source.database}"
        finally:
            con.close()
        return
    con = duckdb.connect()
    try:
        if kind == "synthetic":
            from rusket_assets.sample_data import StoreSpec, generate_store

            spec = StoreSpec(
                n_customers=source.n_customers,
                n_products=source.n_products,
                n_categories=source.n_categories,
                n_days=source.n_days,
                n_lines=source.n_lines,
                seed=source.seed,
            )
            con.register("synthetic_store", generate_store(spec))
            yield con, "synthetic_store", f"synthetic store (seed {source.seed})"
        elif kind in ("parquet", "csv"):
            if not source.path:
                raise SourceError(f"source kind {kind!r} needs `path` (a file or glob)")
            reader = "read_parquet" if kind == "parquet" else "read_csv"
            literal = "'" + source.path.replace("'", "''") + "'"
            yield con, f"{reader}({literal}, union_by_name = true)", f"{kind} {source.path}"
        else:
            raise SourceError(f"unknown source kind {source.kind!r}: use synthetic, parquet, csv or duckdb")
    finally:
        con.close()


def read_transactions(source: TransactionSource, warehouse: Warehouse) -> pa.Table:
    """Read the source into the standard columns, or raise SourceError naming each problem."""
    roles = source.roles()
    with open_source(source, warehouse) as (con, from_clause, description):
        available = con.sql(f"select * from {from_clause} limit 0").columns
        for role, col in roles.items():
            if col not in available:
                raise SourceError(
                    f"source column {col!r} (mapped to {role}) not found in {description}; "
                    f"available columns: {available}"
                )
        for role in ID_ROLES:
            if role not in roles:
                raise SourceError(f"the {role} role must be mapped to a source column")
        where = f" where {source.where}" if source.where else ""
        base = f"(select * from {from_clause}{where})"
        checks = [f"count(*) filter (where {quote(roles[r])} is null)" for r in ID_ROLES]
        negative = [r for r in NON_NEGATIVE_ROLES if r in roles]
        checks += [f"count(*) filter (where {quote(roles[r])} < 0)" for r in negative]
        n_rows, *counts = con.sql(f"select count(*), {', '.join(checks)} from {base}").fetchall()[0]
        if n_rows == 0:
            raise SourceError(f"{description} has no rows{' matching ' + source.where if source.where else ''}")
        problems = [
            f"column {roles[r]!r} ({r}) has {n} null values in {n_rows} rows"
            for r, n in zip(ID_ROLES, counts[: len(ID_ROLES)], strict=True)
            if n
        ]
        problems += [
            f"column {roles[r]!r} ({r}) has {n} negative values in {n_rows} rows"
            for r, n in zip(negative, counts[len(ID_ROLES) :], strict=True)
            if n
        ]
        if problems:
            raise SourceError(f"bad source data in {description}: " + "; ".join(problems))
        select = []
        for role, fallback in STANDARD_COLUMNS.items():
            if role in roles:
                expr = quote(roles[role])
                if role == "ordered_at":
                    expr = f"cast({expr} as TIMESTAMP)"
            elif role == "quantity":
                expr = "1::INTEGER"
            elif role == "revenue" and "price" in roles:
                expr = f"{quote(roles['price'])} * " + (quote(roles["quantity"]) if "quantity" in roles else "1")
            else:
                expr = f"NULL::{fallback}"
            select.append(f"{expr} as {quote(role)}")
        return con.sql(f"select {', '.join(select)} from {base}").to_arrow_table()
