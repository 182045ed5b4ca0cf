"""Run-level overhead of the asset graph, component by component, old way vs new way, alternating.

- ``connect``: a step's warehouse traffic (has_table, a query, a small table replaced, its row count)
  done ``--ops`` times with a connection opened and closed per operation (each close checkpoints) vs
  while the run keeps the database open (``Warehouse._keep_open``, as a run does).
- ``raw_transactions``: the history table ``ingest.daily_orders`` (kind duckdb inside the warehouse)
  validated and written to ``ingest.raw_transactions``, which lacks the last day (yesterday's table),
  by streaming Arrow batches through Python (``raw_stream``, the old way) vs one ``CREATE TABLE AS``
  query (``raw_sql_whole``) vs replacing the changed days only (``raw_sql_days``,
  :func:`rusket_assets.source.query_transactions`); the three tables are checked equal.
- ``publish``: the read-only snapshot copy (checkpoint + file copy + swap), for the record.

The warehouse is a copy of ``--warehouse`` (e.g. a 3M-line graph state) or, without it, a new file
holding ``--lines`` synthetic order lines as ``ingest.daily_orders``. Best and median of ``--repeats``.

    .venv/bin/python benchmarks/bench_run_overhead.py --lines 3000000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rusket_assets.resources import TransactionSource, Warehouse  # noqa: E402
from rusket_assets.source import query_transactions, read_transactions, stream_transactions  # noqa: E402
from rusket_assets.streaming import TableStream, replace_table_stream  # noqa: E402

HISTORY = {"location": {"kind": "duckdb", "table": "ingest.daily_orders"}, "columns": {"basket_col": "basket_id"}}


def step_traffic(warehouse: Warehouse, ops: int) -> None:
    """What the IO manager and a small step do per step, ``ops`` times."""
    small = pa.table({"x": list(range(100))})
    for _ in range(ops):
        warehouse.has_table("ingest", "daily_orders")
        warehouse.scalar("select count(*) from ingest.daily_orders where customer_id is null")
        warehouse.replace_table("bench", "small", small)
        warehouse.scalar("select count(*) from bench.small")


def connect_once(warehouse: Warehouse, ops: int, keep_open: bool) -> float:
    start = time.perf_counter()
    if keep_open:
        warehouse._keep_open(True)
    try:
        step_traffic(warehouse, ops)
    finally:
        if keep_open:
            warehouse._keep_open(False)
    return time.perf_counter() - start


def yesterday(warehouse: Warehouse) -> None:
    """raw_transactions as the previous run left it: every line but the last day's (not timed)."""
    with warehouse.connect() as con:
        con.execute("create schema if not exists ingest")
        con.execute("create or replace table ingest.raw_transactions as select * from ingest.daily_orders "
                    "where ordered_at::DATE < (select max(ordered_at::DATE) from ingest.daily_orders)")  # fmt: skip
        con.execute("checkpoint")


def raw_once(warehouse: Warehouse, how: str) -> float:
    yesterday(warehouse)
    source = TransactionSource(**HISTORY)
    start = time.perf_counter()
    warehouse._keep_open(True)  # as in a run
    try:
        if how != "stream":
            output, _ = query_transactions(source, warehouse)
            if how == "whole":
                output.by_day = None
            output.write("ingest", "raw_transactions")
        else:
            reader, _ = stream_transactions(source, warehouse)
            with warehouse.connect() as con:
                replace_table_stream(con, "ingest", "raw_transactions", TableStream(reader, reader.schema))
    finally:
        warehouse._keep_open(False)
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    return {"best": round(min(times), 3), "median": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", help="copy this DuckDB warehouse (must hold ingest.daily_orders)")
    parser.add_argument("--lines", type=int, default=300_000, help="synthetic lines when no --warehouse")
    parser.add_argument("--ops", type=int, default=60, help="step-like operation groups per connect timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="/tmp/bench_run_overhead.json")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_run_overhead_"))
    try:
        path = base / "warehouse.duckdb"
        warehouse = Warehouse(path=str(path))
        if args.warehouse:
            shutil.copyfile(args.warehouse, path)
        else:
            store = {"n_lines": args.lines, "n_customers": max(args.lines // 15, 100), "n_products": max(args.lines // 150, 50)}
            lines, _ = read_transactions(TransactionSource(store=store), warehouse)
            warehouse.replace_table("ingest", "daily_orders", lines)
        out: dict = {"warehouse_mib": round(os.path.getsize(path) / 2**20, 1), "ops": args.ops,
                     "lines": warehouse.scalar("select count(*) from ingest.daily_orders")}  # fmt: skip
        names = ("connect_per_op", "connect_kept_open", "raw_stream", "raw_sql_whole", "raw_sql_days", "publish")
        timings: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(args.repeats):
            timings["connect_per_op"].append(connect_once(warehouse, args.ops, keep_open=False))
            timings["connect_kept_open"].append(connect_once(warehouse, args.ops, keep_open=True))
            timings["raw_stream"].append(raw_once(warehouse, "stream"))
            stream = warehouse.query("select * from ingest.raw_transactions")
            for how in ("whole", "days"):
                timings[f"raw_sql_{how}"].append(raw_once(warehouse, how))
                assert warehouse.query("select * from ingest.raw_transactions").equals(stream), f"{how} differs from the stream"
            start = time.perf_counter()
            warehouse.publish()
            timings["publish"].append(time.perf_counter() - start)
        out |= {k: summary(v) for k, v in timings.items()}
        out["load_average"] = os.getloadavg()
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
