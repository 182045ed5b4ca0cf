"""Reading and validating the configured source of order lines into the standard column set.

The source is read on its own in-memory DuckDB connection that holds nothing but the source (a
DuckDB source in another file is attached read-only), and the user's ``where`` filter must parse as
one expression over the source's columns: no statement, subquery or table reference can come in
through it. A source table inside the warehouse file itself is read over a connection of the
warehouse's own database instance (DuckDB attaches a file once per process), so its lines can
stream into the warehouse while they are read; the filter still only reaches that table.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa

from rusket_assets.resources import SOURCE_PARTS, TransactionSource, Warehouse
from rusket_assets.streaming import QueryOutput
from rusket_assets.tables import quote

ID_ROLES = ("basket_id", "customer_id", "product_id")
NUMERIC_ROLES = ("quantity", "revenue", "price")
RETURN_POLICIES = ("fail", "drop", "net")
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
# Where each configurable field comes from on the command line (named in error messages).
FLAGS = {"where": "--where", "path": "--source-path", "table": "--source-table", "database": "--source-path"}
# Keys a parsed `select * from src where <expr>` may carry; anything else (ORDER BY, LIMIT, GROUP BY,
# QUALIFY, a second statement, a set operation) means the filter was more than one expression.
_FILTER_NODE_KEYS = {"type", "cte_map", "select_list", "from_table", "where_clause", "aggregate_handling"}


class SourceError(ValueError):
    """The source data cannot be ingested (missing column, null ids, negative quantities...)."""


def field(name: str) -> str:
    """How a source field is named in messages, by its config path: ``source.location.where (--where)``."""
    flag = FLAGS.get(name)
    path = ".".join(filter(None, ("source", SOURCE_PARTS.get(name), name)))
    return path + (f" ({flag})" if flag else "")


def _has_subquery(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("class") == "SUBQUERY" or node.get("type") == "SUBQUERY" or "subquery" in node:
            return True
        return any(_has_subquery(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_subquery(v) for v in node)
    return False


def filter_statement(where: str) -> str:
    """The statement ``select * from src where <where>`` rebuilt from DuckDB's parse tree.

    Raises SourceError naming ``source.location.where (--where)`` unless ``where`` is exactly one
    expression without subqueries (so it cannot run other statements or read other tables).
    """
    import duckdb

    name = field("where")
    if not where.strip():
        raise SourceError(f"{name} is empty")
    with duckdb.connect() as con:
        raw = con.execute("select json_serialize_sql($1)", [f"select * from src where {where}"]).fetchall()[0][0]
        tree = json.loads(raw)
        if tree.get("error"):
            raise SourceError(f"{name} is not a valid SQL expression ({tree.get('error_message')}): {where!r}")
        statements = tree["statements"]
        node = statements[0]["node"] if len(statements) == 1 else {}
        extra = {k for k, v in node.items() if v not in (None, [], {}, False)} - _FILTER_NODE_KEYS
        source = node.get("from_table") or {}
        if (
            len(statements) != 1
            or node.get("type") != "SELECT_NODE"
            or extra
            or node.get("cte_map", {}).get("map")
            or source.get("type") != "BASE_TABLE"
            or source.get("table_name") != "src"
            or _has_subquery(node.get("where_clause"))
        ):
            raise SourceError(
                f"{name} must be one expression over the source's columns (no subqueries, other "
                f"statements or clauses such as ORDER BY/LIMIT): {where!r}"
            )
        return con.execute("select json_deserialize_sql($1)", [raw]).fetchall()[0][0]


def table_reference(table: str) -> str:
    """``table`` (``name`` or ``schema.name``) as a quoted DuckDB reference, or SourceError."""
    parts = table.split(".")
    if not table or len(parts) > 2 or not all(p.strip() for p in parts):
        raise SourceError(f"{field('table')} must be `table` or `schema.table`, got {table!r}")
    return ".".join(quote(p) for p in parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source_files(kind: str, path: str) -> list[str]:
    """Files matched by ``path`` (a file or glob), or SourceError naming the empty or missing ones."""
    if not path:
        raise SourceError(f"source kind {kind!r} needs {field('path')} (a file or glob)")
    files = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
    missing = [f for f in files if not os.path.isfile(f)]
    if not files or missing:
        raise SourceError(f"{field('path')}: no {kind} file at {(missing or [path])[0]!r}")
    empty = [f for f in files if os.path.getsize(f) == 0]
    if empty:
        raise SourceError(f"{field('path')}: {kind} file {empty[0]!r} is empty (0 bytes)")
    return files


@contextmanager
def open_source(source: TransactionSource, warehouse: Warehouse) -> Iterator[tuple[Any, str]]:
    """Yield (connection, description): a DuckDB connection where temp view ``src`` is the source.

    In-memory for every source except a table inside the warehouse file, which is read over a
    connection to the warehouse itself (see the module docstring)."""
    import duckdb

    location = source.location
    kind = location.kind.lower()
    own_file = reads_warehouse(source, warehouse)
    if own_file and not os.path.isfile(warehouse.path):
        raise SourceError(f"{field('database')}: no DuckDB file at {warehouse.path!r}")
    with ExitStack() as stack:
        # the warehouse's own instance (same path and settings as the table IO manager's connections)
        con = stack.enter_context(warehouse.connect() if own_file else duckdb.connect(config=warehouse.settings()))
        if kind == "duckdb":
            if not location.table:
                raise SourceError(f"source kind 'duckdb' needs {field('table')} (optionally schema-qualified)")
            reference = table_reference(location.table)
            database = location.database or warehouse.path
            if not os.path.isfile(database):
                raise SourceError(f"{field('database')}: no DuckDB file at {database!r}")
            if not own_file:
                con.execute(f"attach {_literal(database)} as source_db (read_only)")
                reference = f"source_db.{reference}"
            try:
                con.execute(f"create temp view src as select * from {reference}")
            except duckdb.CatalogException as exc:
                raise SourceError(f"{field('table')}: no table {location.table!r} in {database}") from exc
            description = f"DuckDB table {location.table} in {database}"
        elif kind == "synthetic":
            from rusket_assets.sample_data import generate_store

            con.register("synthetic_store", generate_store(source.store.spec()))
            con.execute("create temp view src as select * from synthetic_store")
            description = f"synthetic store (seed {source.store.seed})"
        elif kind in ("parquet", "csv"):
            files = _source_files(kind, location.path)
            reader = "read_parquet" if kind == "parquet" else "read_csv"
            listed = "[" + ", ".join(_literal(f) for f in files) + "]"
            con.execute(f"create temp view src as select * from {reader}({listed}, union_by_name = true)")
            description = f"{kind} {location.path}"
        elif kind == "catalog":
            raise SourceError(f"{field('kind')} 'catalog' (a Spark catalog table) needs the Spark engine (engine: spark)")
        else:
            raise SourceError(f"unknown {field('kind')} {location.kind!r}: use synthetic, parquet, csv, duckdb or catalog")
        if not own_file:  # settings of a private in-memory instance (the warehouse's are not ours to lock)
            if kind != "parquet" and kind != "csv":
                # the source is attached or in memory: nothing else on disk is reachable from here
                con.execute("set enable_external_access = false")
            con.execute("set lock_configuration = true")
        yield con, description


def _date(name: str, value: str) -> str:
    try:
        return datetime.fromisoformat(value).isoformat(sep=" ")
    except ValueError as exc:
        raise SourceError(f"{field(name)} must be an ISO date such as 2011-01-31, got {value!r}") from exc


def _filters(source: TransactionSource, roles: dict[str, str]) -> list[str]:
    """SQL conditions of the structured filters (typed values only, never the user's text)."""
    conditions = []
    for name, op in (("date_from", ">="), ("date_to", "<")):
        value = getattr(source.location, name)
        if value:
            if "ordered_at" not in roles:
                raise SourceError(f"{field(name)} needs the timestamp column mapped ({field('timestamp_col')})")
            conditions.append(f"cast({quote(roles['ordered_at'])} as TIMESTAMP) {op} TIMESTAMP '{_date(name, value)}'")
    min_quantity = source.location.min_quantity
    if min_quantity is not None:
        if "quantity" not in roles:
            raise SourceError(f"{field('min_quantity')} needs the quantity column mapped ({field('quantity_col')})")
        conditions.append(f"{quote(roles['quantity'])} >= {float(min_quantity)!r}")
    return conditions


def _check_numbers(con: Any, roles: dict[str, str], types: dict[str, str], n_rows: int, description: str) -> None:
    """SourceError naming each numeric/timestamp role whose column holds values that are not numbers/times."""
    problems = []
    for role in (*NUMERIC_ROLES, "ordered_at"):
        if role not in roles:
            continue
        col = roles[role]
        target = "TIMESTAMP" if role == "ordered_at" else "DOUBLE"
        if target == "DOUBLE" and types[col].split("(")[0] in (
            "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL",
        ):  # fmt: skip
            continue
        if target == "TIMESTAMP" and types[col].startswith(("TIMESTAMP", "DATE")):
            continue
        bad = con.sql(
            f"select count(*), any_value({quote(col)}::VARCHAR) from filtered "
            f"where {quote(col)} is not null and try_cast({quote(col)} as {target}) is null"
        ).fetchall()[0]
        if bad[0]:
            kind = "a timestamp" if target == "TIMESTAMP" else "a number"
            problems.append(
                f"column {col!r} ({role}) has {bad[0]} values in {n_rows} rows that are not {kind} (e.g. {bad[1]!r})"
            )
    if problems:
        raise SourceError(f"bad source data in {description}: " + "; ".join(problems))


def _standard_select(roles: dict[str, str], types: dict[str, str]) -> str:
    """SELECT list mapping source columns to the standard columns (casts only where the type needs it)."""
    select = []
    for role, fallback in STANDARD_COLUMNS.items():
        if role in roles:
            expr = quote(roles[role])
            if role == "ordered_at" and types[roles[role]] != "TIMESTAMP":
                expr = f"cast({expr} as TIMESTAMP)"
            elif role in NUMERIC_ROLES and types[roles[role]] == "VARCHAR":
                expr = f"cast({expr} as {'BIGINT' if role == 'quantity' else 'DOUBLE'})"
        elif role == "quantity":
            expr = "1::INTEGER"
        elif role == "revenue" and "price" in roles:
            quantity = quote(roles["quantity"]) if "quantity" in roles else "1"
            expr = f"cast({quote(roles['price'])} as DOUBLE) * cast({quantity} as DOUBLE)"
        else:
            expr = f"NULL::{fallback}"
        select.append(f"{expr} as {quote(role)}")
    return ", ".join(select)


# Returns netted against purchases: each (customer, product)'s returned units are taken off that
# customer's purchase lines of the product, most recent purchase first; revenue scales with the
# quantity kept; lines netted to zero disappear; returned units beyond the purchases are dropped.
_NET_RETURNS = """
with returned as (
    select customer_id, product_id, sum(abs(quantity)) as units from lines where is_return group by all
), purchases as (
    select l.*, coalesce(r.units, 0) as units,
           coalesce(sum(l.quantity) over (
               partition by l.customer_id, l.product_id
               order by l.ordered_at desc nulls last, l.basket_id desc, l.quantity desc, l.revenue desc
               rows between unbounded preceding and 1 preceding), 0) as later
    from lines l left join returned r on l.customer_id = r.customer_id and l.product_id = r.product_id
    where not l.is_return
), netted as (
    select *, quantity - least(quantity, greatest(units - later, 0)) as kept from purchases
)
"""


def check_mapping(roles: dict[str, str], available: list[str], description: str) -> None:
    """SourceError for a mapped column the source lacks, or an id role left unmapped (both engines)."""
    for role, col in roles.items():
        if col not in available:
            raise SourceError(
                f"source column {col!r} (mapped to {role}) not found in {description}; available columns: {list(available)}"
            )
    for role in ID_ROLES:
        if role not in roles:
            raise SourceError(f"the {role} role must be mapped to a source column")


def check_rows(source: TransactionSource, roles: dict[str, str], n_rows: int, nulls: list[int], description: str) -> None:
    """SourceError when the filters leave no rows or an id column holds nulls (both engines)."""
    if n_rows == 0:
        where = source.location.where
        applied = [f"{field('where')} {where!r}"] if where else []
        applied += [field(n) for n in ("date_from", "date_to", "min_quantity") if getattr(source.location, n) not in ("", None)]
        raise SourceError(f"{description} has no rows" + (" matching " + ", ".join(applied) if applied else ""))
    problems = [
        f"column {roles[r]!r} ({r}) has {n} null values in {n_rows} rows"
        for r, n in zip(ID_ROLES, nulls, strict=True)
        if n
    ]
    if problems:
        raise SourceError(f"bad source data in {description}: " + "; ".join(problems))


def returns_error(roles: dict[str, str], negative: dict[str, int], n_rows: int, description: str) -> SourceError:
    """The error of returns under policy 'fail': each column with negative values (``negative``: role -> count)."""
    columns = {"quantity": roles.get("quantity"), "revenue": roles.get("revenue", roles.get("price"))}
    problems = [f"column {columns[r]!r} ({r}) has {negative[r]} negative values in {n_rows} rows" for r in columns if negative[r]]
    return SourceError(
        f"bad source data in {description}: " + "; ".join(problems)
        + " (returns; set source.returns to 'drop' or 'net' to accept them)"
    )


def _apply_returns(con: Any, policy: str, roles: dict[str, str], n_rows: int, description: str) -> tuple[str, dict[str, int]]:
    """(query over view ``lines`` applying the returns policy, counts of the lines it touched)."""
    quantity_type = con.sql("select typeof(quantity) from lines limit 1").fetchall()[0][0]
    standard = ", ".join(quote(c) for c in STANDARD_COLUMNS)
    n_returns = con.sql("select count(*) from lines where is_return").fetchall()[0][0]
    if n_returns and policy == "fail":
        counts = con.sql(
            "select count(*) filter (where quantity < 0), count(*) filter (where revenue < 0) from lines"
        ).fetchall()[0]
        raise returns_error(roles, dict(zip(("quantity", "revenue"), counts, strict=True)), n_rows, description)
    if n_returns == 0:
        return f"select {standard} from lines", {"return_lines": 0}
    if policy == "drop":
        return f"select {standard} from lines where not is_return", {"return_lines": n_returns, "return_lines_dropped": n_returns}
    stats = con.sql(
        _NET_RETURNS
        + """select count(*) filter (where kept < quantity and kept > 0),
                    count(*) filter (where kept = 0 and quantity > 0),
                    (select coalesce(sum(units), 0) from returned)
                    - coalesce(sum(quantity - kept), 0)
             from netted"""
    ).fetchall()[0]
    query = (
        _NET_RETURNS
        + "select "
        + ", ".join(
            f"cast(kept as {quantity_type}) as quantity" if c == "quantity"
            else "case when quantity = 0 then revenue else revenue * kept / quantity end as revenue" if c == "revenue"
            else quote(c)
            for c in STANDARD_COLUMNS
        )
        + " from netted where kept > 0 or quantity = 0"
        + " order by ordered_at nulls last, basket_id, customer_id, product_id, quantity"  # deterministic
    )
    return query, {
        "return_lines": n_returns,
        "purchase_lines_reduced": int(stats[0]),
        "purchase_lines_removed": int(stats[1]),
        "returned_units_without_purchase": int(stats[2]),
    }


@contextmanager
def transaction_query(source: TransactionSource, warehouse: Warehouse) -> Iterator[tuple[Any, str, dict[str, int]]]:
    """Validate the source in SQL and yield (connection, query of the standard columns, returns counts).

    Null ids, text in numeric columns and the returns policy are checked and counted by DuckDB
    scans; no line reaches Python. Raises SourceError naming the field, file or column at fault.
    """
    import duckdb

    roles = source.roles()
    policy = source.returns.lower()
    if policy not in RETURN_POLICIES:
        raise SourceError(f"source.returns must be one of {', '.join(RETURN_POLICIES)}, got {source.returns!r}")
    where = source.location.where
    statement = filter_statement(where) if where else "select * from src"
    with open_source(source, warehouse) as (con, description):
        try:
            columns = con.sql("describe src").fetchall()
        except duckdb.Error as exc:
            raise SourceError(f"cannot read {description}: {exc}") from exc
        types = {name: str(kind) for name, kind, *_ in columns}
        check_mapping(roles, list(types), description)
        conditions = _filters(source, roles)
        try:
            con.execute(
                f"create temp view filtered as select * from ({statement}) as f"
                + (" where " + " and ".join(conditions) if conditions else "")
            )
            n_rows, *nulls = con.sql(
                "select count(*), "
                + ", ".join(f"count(*) filter (where {quote(roles[r])} is null)" for r in ID_ROLES)
                + " from filtered"
            ).fetchall()[0]
        except duckdb.Error as exc:
            if where:
                raise SourceError(f"{field('where')} {where!r} cannot be applied to {description}: {exc}") from exc
            raise
        check_rows(source, roles, n_rows, nulls, description)
        _check_numbers(con, roles, types, n_rows, description)
        con.execute(f"create temp view standard as select {_standard_select(roles, types)} from filtered")
        con.execute("create temp view lines as select *, quantity < 0 or revenue < 0 as is_return from standard")
        query, counts = _apply_returns(con, policy, roles, n_rows, description)
        yield con, query, counts


def read_transactions(source: TransactionSource, warehouse: Warehouse) -> tuple[pa.Table, dict[str, int]]:
    """Read the source into the standard columns (one arrow table) and count what the returns policy did.

    Raises SourceError naming the field, file or column at fault.
    """
    with transaction_query(source, warehouse) as (con, query, counts):
        return con.sql(query).to_arrow_table(), counts


def reads_warehouse(source: TransactionSource, warehouse: Warehouse) -> bool:
    """Whether the source is a table in the warehouse file itself (kind duckdb without another database)."""
    if source.location.kind.lower() != "duckdb":
        return False
    return os.path.realpath(source.location.database or warehouse.path) == os.path.realpath(warehouse.path)


def stream_transactions(
    source: TransactionSource, warehouse: Warehouse, batch_rows: int = 1_000_000
) -> tuple[pa.RecordBatchReader, dict[str, int]]:
    """The standard lines as a record-batch reader (``batch_rows`` per batch) and the returns counts.

    Validation runs before this returns (errors raise here, nothing is read); the source stays open
    until the reader is exhausted or closed, so a writer holds one batch at a time.
    """
    opened = transaction_query(source, warehouse)
    con, query, counts = opened.__enter__()
    try:
        reader = con.sql(query).to_arrow_reader(int(batch_rows))
    except BaseException:
        opened.__exit__(*sys.exc_info())
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            opened.__exit__(None, None, None)

    return pa.RecordBatchReader.from_batches(reader.schema, batches()), counts


def query_transactions(source: TransactionSource, warehouse: Warehouse) -> tuple[QueryOutput, dict[str, int]]:
    """For a source table inside the warehouse file: the standard lines as a query on a warehouse
    connection, which the table IO manager writes without the lines leaving DuckDB, and the returns counts.

    Validation runs before this returns (errors raise here); the connection closes once the output is written.
    """
    if not reads_warehouse(source, warehouse):
        raise ValueError("query_transactions needs a source table inside the warehouse (kind duckdb, no other database)")
    opened = transaction_query(source, warehouse)
    con, query, counts = opened.__enter__()
    # each line maps to one output line unless returns were netted (against other days' lines, in a set
    # order): then only the days that changed need replacing
    by_day = None if "purchase_lines_reduced" in counts else "ordered_at"
    return QueryOutput(con, query, lambda: opened.__exit__(None, None, None), by_day=by_day), counts
