"""DuckDB table IO: typed columns, atomic replacement, loading back as the annotated frame type."""

import subprocess
import sys
import threading
import time

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_assets.io import DuckDBTableIOManager, markdown_table
from rusket_assets.resources import Warehouse
from rusket_assets.tables import replace_table


def vectors(n: int, k: int) -> pa.FixedSizeListArray:
    values = np.arange(n * k, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), k)


def test_replace_table_keeps_types(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    data = pa.table(
        {
            "customer_id": pa.array([7, 8], pa.int64()),
            "product_id": pa.array(["a", "b"]),
            "itemset": pa.array([["a", "b"], ["c"]]),
            "vector": vectors(2, 4),
        }
    )
    replace_table(con, "recs", "t", data)
    types = dict(con.sql("select column_name, data_type from information_schema.columns where table_name = 't'").fetchall())
    assert types == {"customer_id": "BIGINT", "product_id": "VARCHAR", "itemset": "VARCHAR[]", "vector": "FLOAT[4]"}
    assert con.sql("select itemset from recs.t order by customer_id").fetchall() == [(["a", "b"],), (["c"],)]


def test_replace_table_changes_columns_and_leaves_no_staging(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    replace_table(con, "s", "t", pa.table({"a": [1, 2, 3]}))
    replace_table(con, "s", "t", pa.table({"b": ["x"], "vector": vectors(1, 16)}))
    assert con.sql("describe s.t").fetchall()[1][1] == "FLOAT[16]"
    assert con.sql("select b from s.t").fetchall() == [("x",)]
    tables = con.sql("select table_name from information_schema.tables where table_schema = 's'").fetchall()
    assert tables == [("t",)]


class FailingSwap:
    """A connection that fails at the rename step, after the old table was dropped."""

    def __init__(self, con):
        self.con = con

    def execute(self, sql, *args):
        if sql.startswith("alter table"):
            raise RuntimeError("disk full (simulated)")
        return self.con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.con, name)


def test_failed_replace_keeps_old_table(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    replace_table(con, "s", "t", pa.table({"a": [1, 2, 3]}))
    with pytest.raises(RuntimeError, match="disk full"):
        replace_table(FailingSwap(con), "s", "t", pa.table({"b": [9.0]}))
    assert con.sql("select a from s.t order by a").fetchall() == [(1,), (2,), (3,)]
    tables = con.sql("select table_name from information_schema.tables where table_schema = 's'").fetchall()
    assert tables == [("t",)]


def test_reader_never_sees_empty_or_partial_table(tmp_path):
    path = str(tmp_path / "w.duckdb")
    writer = duckdb.connect(path)
    small, large = pa.table({"a": np.arange(10)}), pa.table({"a": np.arange(50_000)})
    replace_table(writer, "s", "t", small)
    seen: set[int] = set()
    stop = threading.Event()

    def read():
        reader = duckdb.connect(path)
        while not stop.is_set():
            seen.add(reader.sql("select count(*) from s.t").fetchall()[0][0])
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    for i in range(20):
        replace_table(writer, "s", "t", large if i % 2 == 0 else small)
    stop.set()
    thread.join()
    assert seen <= {10, 50_000}
    assert seen


def hold_lock(path: str, seconds: float) -> subprocess.Popen:
    """Start a process that keeps the DuckDB file open for writing for ``seconds``."""
    code = (
        f"import duckdb, time; c = duckdb.connect({path!r}); print('locked', flush=True); "
        f"time.sleep({seconds}); print(time.time(), flush=True); c.close()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_warehouse_waits_for_another_process_lock(tmp_path):
    path = str(tmp_path / "w.duckdb")
    holder = hold_lock(path, 1.0)
    with Warehouse(path=path, lock_timeout_seconds=30).connect() as con:
        entered = time.time()
        con.execute("create table t as select 1 as x")
    released = float(holder.stdout.readline())
    assert entered >= released  # got in only after the other process let go
    holder = hold_lock(path, 1.0)
    with pytest.raises(TimeoutError, match="stayed locked by process"), Warehouse(path=path, lock_timeout_seconds=0).connect():
        pass
    holder.wait()


def test_io_manager_round_trip_by_annotation(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    got = {}

    @dg.asset(key_prefix="g", io_manager_key="io")
    def source() -> pl.DataFrame:
        return pl.DataFrame({"customer_id": [3, 1, 2], "items": [["x"], ["y", "z"], []]})

    @dg.asset(key_prefix="g", io_manager_key="io", ins={"source": dg.AssetIn(key=["g", "source"])})
    def as_polars(source: pl.DataFrame) -> pd.DataFrame:
        got["polars"] = source
        return source.to_pandas()

    @dg.asset(key_prefix="g", ins={"as_polars": dg.AssetIn(key=["g", "as_polars"])}, io_manager_key="io")
    def as_arrow(as_polars) -> None:
        got["arrow"] = as_polars

    result = dg.materialize(
        [source, as_polars, as_arrow],
        resources={"io": DuckDBTableIOManager(warehouse=warehouse)},
    )
    assert result.success
    assert isinstance(got["polars"], pl.DataFrame)
    assert got["polars"]["items"].to_list() == [["x"], ["y", "z"], []]
    assert isinstance(got["arrow"], pa.Table)
    metadata = result.asset_materializations_for_node("g__source")[0].metadata
    assert metadata["dagster/row_count"].value == 3
    types = {c.name: c.type for c in metadata["dagster/column_schema"].schema.columns}
    assert types == {"customer_id": "BIGINT", "items": "VARCHAR[]"}
    assert warehouse.scalar("select count(*) from g.as_polars") == 3


def test_markdown_table_escapes_and_truncates():
    text = markdown_table(pa.table({"a": ["x|y", "z" * 100], "v": [[0.5] * 8, [1.0]]}), max_rows=5)
    lines = text.splitlines()
    assert lines[0] == "| a | v |"
    assert "x\\|y" in lines[2]
    assert "(8)" in lines[2]
    assert len(lines) == 4


def test_model_store_publishes_versions_atomically(tmp_path):
    from rusket_assets.io import load_model, save_model
    from rusket_core import ALS

    lines = pa.table({"u": [1, 1, 2, 3, 3], "i": ["a", "b", "b", "a", "c"]})
    first = ALS.from_transactions(lines, user_col="u", item_col="i", factors=4, iterations=2).fit()
    v1 = save_model(first, tmp_path, "m")
    second = ALS.from_transactions(lines, user_col="u", item_col="i", factors=3, iterations=2).fit()
    v2 = save_model(second, tmp_path, "m")
    loaded = load_model(tmp_path, "m")
    assert isinstance(loaded, ALS)
    assert loaded.item_factors.shape == (3, 3)
    np.testing.assert_array_equal(loaded.item_factors, second.item_factors)
    assert list(loaded.items.values) == ["a", "b", "c"]
    assert v1.exists() and v2.exists()  # the previous version survives one more round
    save_model(first, tmp_path, "m")
    assert not v1.exists() and v2.exists()
    with pytest.raises(TypeError, match="rusket_core"):
        save_model(object(), tmp_path, "m")
    with pytest.raises(FileNotFoundError, match="materialise"):
        load_model(tmp_path, "missing")


def test_warehouse_connections_bound_duckdb_memory_threads_and_spill(tmp_path):
    import os

    path = str(tmp_path / "w.duckdb")
    setting = "select current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')"
    wh = Warehouse(path=path, memory_limit="100MB", threads=1, temp_directory=str(tmp_path / "spill"))
    with wh.connect() as con:
        limit, threads, temp = con.execute(setting).fetchone()
    assert (limit, threads, temp) == ("95.3 MiB", 1, str(tmp_path / "spill"))
    # defaults: a share of the machine's memory, every usable processor, a temp directory beside the file
    with Warehouse(path=path).connect() as con:
        limit, threads, temp = con.execute(setting).fetchone()
    with duckdb.connect(config={"memory_limit": "30%"}) as ref:
        assert limit == ref.execute("select current_setting('memory_limit')").fetchone()[0]
    assert threads == len(os.sched_getaffinity(0)) and temp == path + ".tmp"
    # the limit holds: a sort larger than it spills instead of growing past it
    small = Warehouse(path=path, memory_limit="64MB", threads=1)
    with small.connect() as con:
        n = con.execute("select count(*) from (select range % 7919 as a, md5(range::varchar) as b from range(3000000) order by b)").fetchone()[0]
    assert n == 3_000_000
    with pytest.raises(ValueError, match="threads"):  # pydantic's ValidationError
        Warehouse(path=path, threads=-1)
