"""Per-run overhead: the warehouse stays open for a run and closes with it, a warehouse source table is
copied by one query, and the snapshot published at the end equals the warehouse."""

import os

import dagster as dg
import duckdb
import pyarrow as pa
import pytest

from rusket_assets import runs
from rusket_assets.assets.ingest import raw_transactions
from rusket_assets.definitions import build_resources
from rusket_assets.resources import TransactionSource, Warehouse
from rusket_assets.source import SourceError, query_transactions, read_transactions
from rusket_assets.streaming import QueryOutput
from tests.pipeline.test_source import LINES, MAPPING


def open_here(path: str) -> bool:
    """Whether this process has ``path`` open (a file descriptor on it)."""
    target = os.path.realpath(path)
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def tables(path: str) -> dict[str, list[tuple]]:
    """Every table of a DuckDB file and its rows (in stored order)."""
    with duckdb.connect(path, read_only=True) as con:
        names = con.sql("select schema_name, table_name from duckdb_tables() order by all").fetchall()
        return {f"{s}.{t}": con.sql(f'select * from "{s}"."{t}"').fetchall() for s, t in names}


def warehouse_with_source(tmp_path, lines: pa.Table = LINES) -> Warehouse:
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with warehouse.connect() as con:
        con.execute("create schema if not exists ingest")
        con.register("lines", lines)
        con.execute("create or replace table ingest.source_lines as select * from lines")
    return warehouse


def run(tmp_path, assets, **source) -> dg.ExecuteInProcessResult:
    resources = build_resources(str(tmp_path / "warehouse.duckdb"), str(tmp_path / "lancedb"), str(tmp_path / "models"),
                                TransactionSource(**source))  # fmt: skip
    job = dg.define_asset_job("job", assets)
    defs = dg.Definitions(assets=assets, jobs=[job], resources=resources, executor=dg.in_process_executor)
    return defs.resolve_job_def("job").execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


IN_WAREHOUSE = {"location": {"kind": "duckdb", "table": "ingest.source_lines"}, "columns": MAPPING}


@pytest.mark.parametrize("policy", ["net", "drop"])
def test_a_warehouse_source_is_copied_in_sql_equal_to_the_read(tmp_path, policy):
    """raw_transactions from a table of the warehouse itself: the same rows, order, types and returns
    counts as the reader gives (returns netted across baskets), and the snapshot equals the warehouse."""
    warehouse = warehouse_with_source(tmp_path)
    expected, counts = read_transactions(TransactionSource(**IN_WAREHOUSE, returns=policy), warehouse)
    result = run(tmp_path, [raw_transactions], **IN_WAREHOUSE, returns=policy)
    assert result.success
    stored = warehouse.query("select * from ingest.raw_transactions")
    assert stored.equals(expected)
    assert stored.num_rows == (3 if policy == "net" else 4)
    [event] = result.get_asset_materialization_events()
    metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    assert {k: metadata[k] for k in counts} == counts
    assert metadata["dagster/row_count"] == stored.num_rows and metadata["customers"] == 2
    snapshot = str(tmp_path / "warehouse.snapshot.duckdb")
    assert tables(snapshot) == tables(warehouse.path)


def test_a_failed_warehouse_copy_keeps_the_old_table_and_closes_its_connection(tmp_path):
    warehouse = warehouse_with_source(tmp_path)
    with warehouse.connect() as con:
        con.execute("create table ingest.raw_transactions as select 'old' as basket_id")
    source = TransactionSource(**IN_WAREHOUSE)
    output, _ = query_transactions(source, warehouse)
    closed = []
    failing_query = f"select * from ({output.query}) where customer_id < 2 or error('disk full') is null"
    failing = QueryOutput(output.con, failing_query, lambda: (closed.append(1), output.close()))
    with pytest.raises(duckdb.Error, match="disk full"):
        failing.write("ingest", "raw_transactions")
    assert closed == [1]
    assert warehouse.query("select * from ingest.raw_transactions").to_pylist() == [{"basket_id": "old"}]
    assert warehouse.scalar("select count(*) from duckdb_tables() where table_name like '%staging%'") == 0
    # bad lines fail before any output exists: the run fails, the old table stays
    bad = LINES.set_column(1, "customer", pa.array([1, None, 1, 1, 2, 2]))
    warehouse_with_source(tmp_path, bad)
    with pytest.raises(SourceError, match=r"column 'customer' \(customer_id\) has 1 null values in 6 rows"):
        query_transactions(source, warehouse)
    result = run(tmp_path, [raw_transactions], **IN_WAREHOUSE)
    assert not result.success
    assert warehouse.query("select * from ingest.raw_transactions").to_pylist() == [{"basket_id": "old"}]
    assert not open_here(warehouse.path)


def test_a_run_keeps_the_warehouse_open_between_steps_and_closes_it_at_the_end(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    seen = {}

    @dg.asset(key_prefix="s", io_manager_key="warehouse_io")
    def first() -> pa.Table:
        return pa.table({"x": [1, 2, 3]})

    @dg.asset(key_prefix="s", io_manager_key="warehouse_io")
    def second(warehouse: Warehouse, first: pa.Table) -> pa.Table:
        seen["open_at_start"] = open_here(path)  # still open from the first step's write
        seen["rows"] = warehouse.scalar("select count(*) from s.first")
        return pa.table({"y": [first["x"].to_pylist()[-1]]})

    assert not os.path.exists(path)
    result = run(tmp_path, [first, second])
    assert result.success
    assert seen == {"open_at_start": True, "rows": 3}
    assert not open_here(path)  # closed (and checkpointed) at the end of the run
    assert runs.holds(path) == 0 and runs.try_lock(path)  # the run lock is released too
    runs.unlock(path)
    assert not os.path.exists(path + ".wal")
    assert tables(str(tmp_path / "warehouse.snapshot.duckdb")) == tables(path) == {"s.first": [(1,), (2,), (3,)], "s.second": [(3,)]}
    # outside a run each connection opens and closes the file
    with Warehouse(path=path).connect() as con:
        assert con.sql("select y from s.second").fetchall() == [(3,)]
    assert not open_here(path)
