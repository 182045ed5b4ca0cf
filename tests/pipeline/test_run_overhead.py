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


def day_lines(rng, days: list[int], per_day: int = 6) -> pa.Table:
    """Random lines on the given days (2026-01-01 + d), with a null-timestamp line when -1 is a day."""
    import datetime

    stamps = [None if d < 0 else datetime.datetime(2026, 1, 1) + datetime.timedelta(days=d, minutes=int(m))
              for d in days for m in rng.integers(0, 1440, per_day)]  # fmt: skip
    n = len(stamps)
    return pa.table({"ordered_at": pa.array(stamps, pa.timestamp("us")), "customer_id": rng.integers(0, 5, n),
                     "quantity": rng.integers(1, 4, n).astype("int32"), "revenue": rng.random(n)})  # fmt: skip


def test_only_changed_days_are_replaced_and_the_table_ends_equal_to_the_query(tmp_path):
    """Brute-force check: after appending, editing, removing days (null days too) the table holds
    exactly the query's rows, rows of untouched days keep their order, and a repeat changes nothing."""
    import numpy as np

    from rusket_assets.tables import replace_changed_days

    rng = np.random.default_rng(3)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create schema s")
    source = day_lines(rng, [-1, 0, 1, 2, 3])
    con.register("source_view", source)
    con.execute("create table s.src as select * from source_view")
    con.execute("create table s.t as select * from s.src")
    query = "select * from s.src"

    def rows(sql):
        return con.sql(sql).fetchall()

    assert replace_changed_days(con, "s", "t", query, "ordered_at") == {"days_replaced": 0, "rows_deleted": 0, "rows_inserted": 0}
    con.register("extra", day_lines(rng, [4]))
    con.execute("insert into s.src select * from extra")  # a new day
    con.execute("update s.src set revenue = revenue + 1 where rowid = (select min(rowid) from s.src where ordered_at::DATE = DATE '2026-01-02')")
    con.execute("delete from s.src where ordered_at::DATE = DATE '2026-01-03'")  # a day gone
    con.execute("update s.src set quantity = 9 where ordered_at is null and rowid = (select min(rowid) from s.src)")
    kept = rows("select * from s.t where ordered_at::DATE in (DATE '2026-01-01', DATE '2026-01-04')")
    stats = replace_changed_days(con, "s", "t", query, "ordered_at", max_share=1.0)
    assert stats == {"days_replaced": 4, "rows_deleted": 18, "rows_inserted": 18}  # null day, 2nd, 3rd, 5th
    assert sorted(rows("select * from s.t"), key=repr) == sorted(rows(query), key=repr)
    assert rows("select * from s.t where ordered_at::DATE in (DATE '2026-01-01', DATE '2026-01-04')") == kept
    assert rows("select * from s.t")[: len(kept)] == kept  # untouched days first, in their order
    assert replace_changed_days(con, "s", "t", query, "ordered_at")["days_replaced"] == 0  # idempotent
    # a full replace is needed or cheaper: nothing done
    assert replace_changed_days(con, "s", "t", "select * exclude (revenue) from s.src", "ordered_at") is None
    assert replace_changed_days(con, "s", "t", "select * replace (quantity::BIGINT as quantity) from s.src", "ordered_at") is None
    assert replace_changed_days(con, "s", "t", "select * replace (revenue + 1 as revenue) from s.src", "ordered_at") is None
    assert replace_changed_days(con, "s", "missing", query, "ordered_at") is None
    assert sorted(rows("select * from s.t"), key=repr) == sorted(rows(query), key=repr)


def test_raw_transactions_replaces_only_the_new_day_and_a_rerun_is_idempotent(tmp_path):
    """A history table in the warehouse gains a day: raw_transactions takes only that day's lines
    (metadata says so), ends equal to a whole read, and running again changes nothing."""
    import datetime

    import pyarrow.compute as pc

    history = LINES.append_column("day", pc.cast(LINES["at"], pa.date32()))
    clean = history.filter(pc.greater(history["qty"], 0)).drop_columns(["day"])  # no returns: lines map one to one
    warehouse = warehouse_with_source(tmp_path, clean)

    def materialise() -> dict:
        result = run(tmp_path, [raw_transactions], **IN_WAREHOUSE)
        assert result.success
        [event] = result.get_asset_materialization_events()
        stored = warehouse.query("select * from ingest.raw_transactions")
        expected, _ = read_transactions(TransactionSource(**IN_WAREHOUSE), warehouse)
        assert stored.equals(expected)
        return {k: v.value for k, v in event.materialization.metadata.items()}

    assert materialise()["write"] == "whole table"
    new_day = pa.table({"basket": ["o9", "o9"], "customer": [3, 1], "product": ["y", "z"], "qty": [1, 2],
                        "rev": [3.0, 4.0], "at": pa.array([datetime.datetime(1970, 1, 2)] * 2, pa.timestamp("s"))})  # fmt: skip
    with warehouse.connect() as con:
        con.register("new_day", new_day)
        con.execute("insert into ingest.source_lines select * from new_day")
    meta = materialise()
    assert {k: meta[k] for k in ("write", "days_replaced", "rows_deleted", "rows_inserted")} == {
        "write": "changed days", "days_replaced": 1, "rows_deleted": 0, "rows_inserted": 2}  # fmt: skip
    assert meta["dagster/row_count"] == 6 and meta["customers"] == 3
    meta = materialise()
    assert (meta["days_replaced"], meta["dagster/row_count"]) == (0, 6)


def test_a_held_warehouse_gives_back_a_closed_connections_memory_and_keeps_its_limit(tmp_path):
    """While a run holds the database open, a step's big query must not leave its memory with DuckDB
    until the run ends (what closing the database after each step used to release)."""

    def rss_mib() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"), memory_limit="2GB")
    with warehouse.connect() as con:
        con.execute("create table big as select i, 'customer-' || i as name from range(4000000) t(i)")
    warehouse._keep_open(True)
    try:
        with warehouse.connect() as con:
            con.execute("create temp table sorted as select * from big order by name desc").fetchall()
            during = rss_mib()
        after = rss_mib()
        with warehouse.connect() as con:
            limit = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
        assert during - after > 100  # the sort's memory went back to the OS when its connection closed
        assert limit in ("1.8 GiB", "1.9 GiB")  # 2GB, restored after the trim
    finally:
        warehouse._keep_open(False)
