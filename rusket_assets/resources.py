"""Dagster resources: the DuckDB warehouse, the LanceDB directory, the model store and the source."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pyarrow as pa
from pydantic import ConfigDict, Field

from rusket_assets.sample_data import StoreSpec
from rusket_assets.tables import replace_table

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("RUSKET_DATA_DIR", PROJECT_ROOT / "data"))
DEFAULT_WAREHOUSE = str(DATA_DIR / "warehouse.duckdb")
DEFAULT_LANCEDB = str(DATA_DIR / "lancedb")
DEFAULT_MODELS = str(DATA_DIR / "models")


# Warehouse path -> [its open connection or None, holds]: during a run the database stays open in the
# run's process, so each connect() is a new connection to the open database, not a file open and a
# checkpoint on close (Warehouse.setup_for_execution / teardown_after_execution).
_run_connections: dict[str, list[Any]] = {}
#: between a held run's connections DuckDB's cache is trimmed to this (Warehouse._trim)
TRIM_LIMIT = "256MB"
_run_guard = threading.Lock()


def lock_holder(message: str) -> str:
    """The process named in DuckDB's lock error ("... (PID 123) ..."), with its command line when visible."""
    import re

    found = re.search(r"PID (\d+)", message)
    if not found:
        return "another process"
    pid = found.group(1)
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    return f"process {pid}" + (f" ({command[:120]})" if command else "")


class Warehouse(dg.ConfigurableResource):
    """One DuckDB database file (DuckDB's file lock keeps other processes out while it is open).

    A run using it holds the warehouse's run lock from start to end (see :mod:`rusket_assets.runs`):
    runs writing the same warehouse never interleave, and a run whose process died is failed and its
    pool slots freed when the next run starts. From its first use in a run to the run's end the
    database stays open in the run's process (:meth:`connect` opens connections to it); outside runs
    each :meth:`connect` opens the file briefly. ``lock_timeout_seconds`` bounds the wait for a reader's
    DuckDB file lock, ``run_wait_seconds`` the wait for another run to finish. With
    ``publish_snapshot`` each run ends by publishing a read-only copy (:attr:`snapshot_path`) that
    readers can keep open without ever blocking a run. ``memory_limit``, ``threads`` and
    ``temp_directory`` bound every DuckDB instance the pipeline opens (:meth:`settings`): past the
    memory limit DuckDB spills sorts, joins and aggregations to the temp directory.
    """

    path: str = DEFAULT_WAREHOUSE
    lock_timeout_seconds: float = 300.0
    run_wait_seconds: float = 6 * 3600.0
    publish_snapshot: bool = True
    memory_limit: str = Field(
        default="30%", description="DuckDB memory_limit: a size ('6GB') or a share of the machine's memory ('30%')."
    )
    threads: int = Field(default=0, ge=0, description="DuckDB threads; 0: the processors this process may use.")
    temp_directory: str = Field(
        default="", description="Where DuckDB spills past memory_limit; empty: '<warehouse file>.tmp' beside it."
    )

    def settings(self) -> dict[str, Any]:
        """The DuckDB configuration of every connection: memory_limit, threads, temp_directory."""
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return {
            "memory_limit": self.memory_limit,
            "threads": int(self.threads or usable or 1),
            "temp_directory": self.temp_directory or f"{self.path}.tmp",
        }

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Take the warehouse's run lock for this run, then fail runs left behind by dead processes."""
        from rusket_assets import runs

        run = context.run
        if run is None or context.instance is None:
            return
        context.instance.add_run_tags(run.run_id, runs.process_tags())
        runs.wait_for_lock(self.path, run.run_id, context.log.warning, self.run_wait_seconds)
        self._keep_open(True)
        context.instance.add_run_tags(run.run_id, {runs.WAREHOUSE_TAG: str(Path(self.path).resolve())})
        for run_id in runs.release_dead_runs(context.instance, self.path, run.run_id):
            context.log.warning(f"marked run {run_id} failed: its process ended without finishing it; pool slots freed")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Publish the read-only snapshot, then release the run lock taken in :meth:`setup_for_execution`."""
        from rusket_assets import runs

        if context.run is None or context.instance is None:
            return
        try:
            self._keep_open(False)  # the last hold closes the database: checkpointed, then copied
            if self.publish_snapshot and runs.holds(self.path) == 1:
                self.publish()
        except Exception as exc:  # the run's tables are written; only the readers' copy is stale
            context.log.warning(f"read-only snapshot {self.snapshot_path} not updated: {exc}")
        finally:
            runs.unlock(self.path)

    @property
    def snapshot_path(self) -> str:
        """The read-only copy beside the warehouse: ``warehouse.snapshot.duckdb``."""
        path = Path(self.path)
        return str(path.with_name(f"{path.stem}.snapshot{path.suffix}"))

    def publish(self) -> None:
        """Copy the warehouse to :attr:`snapshot_path` and swap it in atomically.

        Readers of the snapshot never block the pipeline: the file is replaced, not written, so an
        open reader keeps the copy it opened and the next connection sees the new one.
        """
        import shutil
        import uuid

        if not Path(self.path).exists():
            return
        with self.connect() as con:
            con.execute("checkpoint")  # everything in the main file, nothing left in the WAL
        tmp = f"{self.snapshot_path}.{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(self.path, tmp)
            os.replace(tmp, self.snapshot_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _keep_open(self, hold: bool) -> None:
        """Take (``hold``) or release one run's hold on keeping the database open; the database is
        opened by the first :meth:`connect` while held and closed when the last hold is released."""
        key = str(Path(self.path).resolve())
        with _run_guard:
            entry = _run_connections.setdefault(key, [None, 0])
            entry[1] += 1 if hold else -1
            if entry[1] > 0:
                return
            del _run_connections[key]
        if entry[0] is not None:
            entry[0].close()

    def _run_connection(self) -> None:
        """Open the database for the run when a run holds it open and it is not open yet."""
        key = str(Path(self.path).resolve())
        with _run_guard:
            entry = _run_connections.get(key)
            if entry is None or entry[0] is not None:
                return
            entry[0] = self._open()

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """Open a read-write connection, waiting (with backoff, at most ``lock_timeout_seconds``) while
        another process holds the file lock; the wait is logged at WARNING naming that process."""
        if _run_connections:
            self._run_connection()
        con = self._open()
        try:
            yield con
        finally:
            con.close()
            if _run_connections:
                self._trim()

    def _trim(self) -> None:
        """Hand the memory the closed connection's queries used back to the OS while a run holds the
        database open: a memory limit set again makes DuckDB evict unpinned blocks down to it and
        release its allocator's free memory, which a database closed after each step used to do
        (without it the 50M-line run peaked at 7,899 MiB instead of 6,330; benchmarks/RESULTS.md)."""
        import duckdb

        entry = _run_connections.get(str(Path(self.path).resolve()))
        held = entry[0] if entry else None
        if held is None:
            return
        try:
            held.execute("SET memory_limit = ?", [TRIM_LIMIT])
        except duckdb.Error:
            pass  # another connection still pins more than that: its blocks stay, the limit is restored
        finally:
            held.execute("SET memory_limit = ?", [self.settings()["memory_limit"]])

    def _open(self) -> Any:
        """A new DuckDB connection to the warehouse (see :meth:`connect`)."""
        import duckdb

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        delay, next_warning = 0.05, 0.0
        while True:
            try:
                con = duckdb.connect(self.path, config=self.settings())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                waited = time.monotonic() - start
                holder = lock_holder(str(exc))
                if waited > self.lock_timeout_seconds:
                    raise TimeoutError(
                        f"warehouse {self.path} stayed locked by {holder} for {waited:.0f} s "
                        f"(Warehouse.lock_timeout_seconds); close that connection and run again"
                    ) from exc
                if waited >= next_warning:
                    dg.get_dagster_logger().warning(
                        f"warehouse {self.path} is locked by {holder}; retrying for up to "
                        f"{self.lock_timeout_seconds:.0f} s (readers should use the snapshot or short-lived connections between runs)"
                    )
                    next_warning = waited + 30.0
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return con

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep one connection open during the block: DuckDB then serves the block's :meth:`connect`
        calls from the open database instead of opening the file (and checkpointing it on close)
        each time (an asset step's dozens of small queries). Nothing when the file does not exist yet."""
        if not Path(self.path).exists():
            yield
            return
        with self.connect():
            yield

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
        """Replace ``schema.table`` with ``data`` atomically (see :func:`rusket_assets.tables.replace_table`)."""
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


class SourceLocation(dg.Config):
    """Where order lines come from and which of them are read.

    kind: "synthetic" (the bundled generated store, default), "parquet" or "csv" (path may be a
    glob), "duckdb" (table in the DuckDB file database; the warehouse when empty) or "catalog" (a
    table of the Spark catalog; engine spark only, which also reads parquet and CSV itself). where is an
    optional filter: one SQL expression over the source's columns (no subqueries or statements).
    date_from/date_to (ISO dates, date_to exclusive) and min_quantity are structured filters.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt or un-nested field is an error, not ignored

    kind: Literal["synthetic", "parquet", "csv", "duckdb", "catalog"] = Field(default="synthetic", description="Where order lines come from: synthetic (bundled generated store), parquet, csv, duckdb or catalog (a Spark table, engine spark).")
    path: str = Field(default="", description="Parquet or CSV file, or a glob (kinds parquet and csv).")
    database: str = Field(default="", description="DuckDB file holding the source table (kind duckdb); empty means the warehouse.")
    table: str = Field(default="", description="Source table, optionally schema-qualified (kind duckdb or catalog).")
    where: str = Field(default="", description="Optional filter: one SQL expression over the source's columns, e.g. country = 'France'.")
    date_from: str = Field(default="", description="Keep lines ordered on or after this ISO date; empty for no limit.")
    date_to: str = Field(default="", description="Keep lines ordered before this ISO date (exclusive); empty for no limit.")
    min_quantity: float | None = Field(default=None, description="Drop lines with a smaller quantity; empty for no limit.")


class ColumnMapping(dg.Config):
    """Which source column plays which role; optional roles may be left empty."""

    model_config = ConfigDict(extra="forbid")  # a misspelt or un-nested field is an error, not ignored

    basket_col: str = Field(default="order_id", description="Source column with the basket (order or invoice) id.")
    customer_col: str = Field(default="customer_id", description="Source column with the customer id.")
    product_col: str = Field(default="product_id", description="Source column with the product id.")
    quantity_col: str = Field(default="quantity", description="Source column with units bought per line; empty if absent.")
    revenue_col: str = Field(default="revenue", description="Source column with the line revenue (price times quantity); empty if absent.")
    category_col: str = Field(default="category", description="Source column with the product category; empty if absent.")
    timestamp_col: str = Field(default="ordered_at", description="Source column with the order time; empty if absent.")
    product_name_col: str = Field(default="product_name", description="Source column with the product name; empty if absent.")
    price_col: str = Field(default="price", description="Source column with the unit price; empty if absent.")

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


class SyntheticStore(dg.Config):
    """Size and seed of the generated store (kind synthetic); defaults are the bundled store's."""

    model_config = ConfigDict(extra="forbid")  # a misspelt or un-nested field is an error, not ignored

    n_customers: int = Field(default=StoreSpec.n_customers, description="Customers in the synthetic store.")
    n_products: int = Field(default=StoreSpec.n_products, description="Products in the synthetic store.")
    n_categories: int = Field(default=StoreSpec.n_categories, description="Product categories in the synthetic store.")
    n_days: int = Field(default=StoreSpec.n_days, description="Days of orders in the synthetic store.")
    n_lines: int = Field(default=StoreSpec.n_lines, description="Order lines in the synthetic store.")
    seed: int = Field(default=StoreSpec.seed, description="Seed of the synthetic store (same seed, same data).")

    def spec(self) -> StoreSpec:
        """The sample_data specification of this store."""
        return StoreSpec(**self.model_dump())


#: the part of the source configuration each field belongs to (config path ``source.<part>.<field>``)
SOURCE_PARTS = {
    name: part
    for part, config in (("location", SourceLocation), ("columns", ColumnMapping), ("store", SyntheticStore))
    for name in config.model_fields
}


class TransactionSource(dg.ConfigurableResource):
    """Where order lines come from (location), which source column plays which role (columns), the
    generated store's size (store, kind synthetic) and the returns policy.

    returns says what to do with return lines (negative quantity or revenue, e.g. 'C' invoices):
    "fail", "drop" them, or "net" (default) them against the same customer's purchases of the same
    product, most recent purchase first.
    """

    model_config = ConfigDict(extra="forbid")  # a misspelt or un-nested field is an error, not ignored

    location: SourceLocation = Field(default_factory=SourceLocation, description="Where order lines come from and which are read.")
    columns: ColumnMapping = Field(default_factory=ColumnMapping, description="Source column of each role.")
    store: SyntheticStore = Field(default_factory=SyntheticStore, description="Size and seed of the synthetic store (kind synthetic).")
    returns: Literal["net", "drop", "fail"] = Field(default="net", description="Return lines: net them against earlier purchases, drop them, or fail the ingest.")

    def roles(self) -> dict[str, str]:
        """Role -> source column for every mapped role (empty mappings left out)."""
        return self.columns.roles()


class ModelStore(dg.ConfigurableResource):
    """Directory of saved rusket_core models (``model.save``/``Model.load``, no pickles)."""

    path: str = DEFAULT_MODELS
