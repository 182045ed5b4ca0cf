"""Daily partitions of order lines: idempotent day replacement, daily files and the folder sensor."""

import os
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rusket_assets.assets.daily import DailyFiles
from rusket_assets.definitions import build_definitions
from rusket_assets.resources import TransactionSource
from rusket_assets.sample_data import generate_store
from rusket_assets.sensors import daily_files_sensor

SMALL = {"n_customers": 300, "n_products": 100, "n_categories": 10, "n_days": 10, "n_lines": 3_000, "seed": 5}


def build(tmp: Path, folder: Path | None = None) -> dg.Definitions:
    return build_definitions(
        warehouse_path=str(tmp / "warehouse.duckdb"), lancedb_uri=str(tmp / "lancedb"),
        models_path=str(tmp / "models"), source=TransactionSource(store=SMALL),
        daily_files=DailyFiles(path=str(folder or tmp / "daily")),
    )  # fmt: skip


def ingest(defs: dg.Definitions, day: str, instance=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("daily_ingest")
    return job.execute_in_process(partition_key=day, instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False)


def rows(tmp: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
        return con.sql(query).fetchall()


def day_lines(store: pa.Table, day: str) -> pa.Table:
    dates = pc.strftime(store["ordered_at"], format="%Y-%m-%d")
    return store.filter(pc.equal(dates, day))


LINES_OF_DAY = "select count(*), count(distinct (basket_id, product_id)) from ingest.daily_orders where ordered_at::DATE = ?::DATE"


def test_rematerialising_a_day_replaces_it(tmp_path):
    store = generate_store(**SMALL)
    defs = build(tmp_path)
    first, second = "2025-10-02", "2025-10-03"
    n1, n2 = day_lines(store, first).num_rows, day_lines(store, second).num_rows
    assert n1 > 0 and n2 > 0
    result = ingest(defs, first)
    assert result.success
    meta = result.asset_materializations_for_node("load_days")[0].metadata
    assert meta["lines"].value == n1 and meta["rows_replaced"].value == 0
    assert meta["new_customers"].value == len(pc.unique(day_lines(store, first)["customer_id"]))
    assert ingest(defs, second).success
    again = ingest(defs, first)  # re-run: the day is replaced, not appended
    assert again.success
    meta = again.asset_materializations_for_node("load_days")[0].metadata
    assert meta["rows_replaced"].value == n1 and meta["dagster/row_count"].value == n1 + n2
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        assert con.execute(LINES_OF_DAY, [first]).fetchall() == [(n1, n1)]
        assert con.execute(LINES_OF_DAY, [second]).fetchall() == [(n2, n2)]
        assert con.sql("select count(*) from ingest.daily_orders").fetchall() == [(n1 + n2,)]
        # the lines are the source's, in the standard columns
        got = con.execute(
            "select basket_id, product_id, quantity from ingest.daily_orders where ordered_at::DATE = ?::DATE "
            "order by basket_id, product_id", [first]
        ).fetchall()
    want = day_lines(store, first).sort_by([("order_id", "ascending"), ("product_id", "ascending")])
    assert got == list(zip(want["order_id"].to_pylist(), want["product_id"].to_pylist(), want["quantity"].to_pylist(), strict=True))


def test_a_range_runs_in_one_run_and_reruns_idempotently(tmp_path):
    store = generate_store(**SMALL)
    defs = build(tmp_path)
    days = ["2025-10-02", "2025-10-03", "2025-10-04"]
    n = sum(day_lines(store, d).num_rows for d in days)
    tags = {"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]}
    for _ in range(2):
        result = defs.resolve_job_def("daily_ingest").execute_in_process(instance=dg.DagsterInstance.ephemeral(), tags=tags)
        assert result.success
        assert rows(tmp_path, "select count(*), count(distinct (basket_id, product_id)) from ingest.daily_orders") == [(n, n)]
    meta = result.asset_materializations_for_node("load_days")
    assert sorted(m.partition for m in meta) == days
    assert sum(m.metadata["rows_replaced"].value for m in meta) == n  # the second run replaced every line


def test_a_day_file_is_read_and_must_hold_only_its_day(tmp_path):
    store = generate_store(**SMALL)
    folder = tmp_path / "daily"
    folder.mkdir()
    day = "2025-10-04"
    pq.write_table(day_lines(store, day), folder / f"orders-{day}.parquet")
    defs = build(tmp_path, folder)
    result = ingest(defs, day)
    assert result.success
    meta = result.asset_materializations_for_node("load_days")[0].metadata
    assert meta["from"].value.endswith(f"orders-{day}.parquet")
    n = day_lines(store, day).num_rows
    assert rows(tmp_path, "select count(*) from ingest.daily_orders") == [(n,)]
    # a file holding another day's lines fails, naming the day; the table keeps what it had
    pq.write_table(pa.concat_tables([day_lines(store, day), day_lines(store, "2025-10-05").slice(0, 3)]),
                   folder / f"orders-{day}.parquet")  # fmt: skip
    failed = ingest(defs, day)
    assert not failed.success
    assert "3 of" in str(failed.all_events) and f"not ordered on {day}" in str(failed.all_events)
    assert rows(tmp_path, "select count(*) from ingest.daily_orders") == [(n,)]


def test_sensor_requests_exactly_the_new_files_days(tmp_path):
    folder = tmp_path / "daily"
    folder.mkdir()
    for day in ("2025-10-02", "2025-10-05"):
        (folder / f"orders-{day}.csv").write_text("x\n1\n")
    (folder / "notes.txt").write_text("not a day file")
    (folder / "orders-1999-01-01.csv").write_text("x\n1\n")  # before the partitions start
    resources = {"daily_files": DailyFiles(path=str(folder))}
    defs = build(tmp_path, folder)
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        result = daily_files_sensor.evaluate_tick(context)
        assert sorted(r.partition_key for r in result.run_requests) == ["2025-10-02", "2025-10-05"]
        cursor = result.cursor
        # nothing new: no request
        result = daily_files_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs))
        assert result.run_requests == [] and result.skip_message
        # one new day and one rewritten day
        (folder / "orders-2025-10-07.parquet").write_bytes(b"new")
        rewritten = folder / "orders-2025-10-02.csv"
        rewritten.write_text("x\n1\n2\n")
        os.utime(rewritten, ns=(1, 2))
        result = daily_files_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs))
        assert sorted(r.partition_key for r in result.run_requests) == ["2025-10-02", "2025-10-07"]
        assert len({r.run_key for r in result.run_requests}) == 2
