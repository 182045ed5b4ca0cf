"""Adding one day to the Dagster graph: the incremental refresh vs a full rebuild (whole graph).

The synthetic store over ``--days`` + 1 days goes into ``ingest.daily_orders`` up to day N-1 and the
graph is built on it (``refresh_all``, the graph reading the history table). Day N is then loaded
through the ``daily_ingest`` partition and the warehouse and model store are copied: one copy is
refreshed by ``refresh_incremental`` (fold-in of day N's customers, merged recommendations), the
other by ``refresh_all`` (everything refitted). Reported: wall clock of each run and of its steps,
and precision@10 of the published ``user_recommendations`` on day N+1's purchases (customers with
recommendations in both). The in-process executor runs one step at a time; the numba kernels are
compiled (``rusket_core.warmup``, fold-in included) and used by the first build before anything is timed. Writes ``/tmp/bench_incremental_graph.json``.

    .venv/bin/python benchmarks/bench_incremental_graph.py                  # bundled store size
    .venv/bin/python benchmarks/bench_incremental_graph.py --lines 100000 --customers 8000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from rusket_assets.assets.daily import HISTORY_SOURCE, DailyFiles  # noqa: E402
from rusket_assets.definitions import build_definitions  # noqa: E402
from rusket_assets.instance import step_seconds  # noqa: E402
from rusket_assets.resources import TransactionSource, Warehouse  # noqa: E402
from rusket_assets.sample_data import START  # noqa: E402
from rusket_assets.source import read_transactions  # noqa: E402

PRECISION = """
with test as (select distinct customer_id, product_id from store where ordered_at::DATE = ?::DATE),
     users as (select distinct customer_id from test where customer_id in (select customer_id from recs))
select count(*) filter (where t.product_id is not null)::DOUBLE / (10 * (select count(*) from users)),
       (select count(*) from users)
from recs r left join test t using (customer_id, product_id)
where r.customer_id in (select customer_id from users) and r.rank <= 10
"""


def definitions(root: Path) -> dg.Definitions:
    return build_definitions(
        warehouse_path=str(root / "warehouse.duckdb"), lancedb_uri=str(root / "lancedb"),
        models_path=str(root / "models"), source=TransactionSource(**HISTORY_SOURCE),
        daily_files=DailyFiles(path=str(root / "daily")),
    )  # fmt: skip


def timed_run(defs: dg.Definitions, job: str, instance, **kwargs) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)
    seconds = time.perf_counter() - start
    assert result.success, job
    return seconds, {k: round(v, 2) for k, v in step_seconds(instance, result.run_id).items()}


def precision(root: Path, store_lines, day: str) -> tuple[float, int]:
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        con.register("store", store_lines)
        con.execute("create temp view recs as select * from personalization.user_recommendations")
        p, n = con.execute(PRECISION, [day]).fetchall()[0]
    return round(float(p), 4), int(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000, help="order lines over days 1..N (approx.)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--out", default="/tmp/bench_incremental_graph.json")
    parser.add_argument("--profile", help="write a cProfile of the incremental run to this file (pstats)")
    parser.add_argument("--sample-customers", type=int, help="model_evaluation's sample_customers (default: its own)")
    args = parser.parse_args()
    evaluation = {} if args.sample_customers is None else {
        "ops": {"personalization__model_evaluation": {"config": {"sample_customers": args.sample_customers}}}}  # fmt: skip
    store = {"n_customers": args.customers, "n_products": args.products, "n_days": args.days + 1,
             "n_lines": int(args.lines * (args.days + 1) / args.days), "seed": 7}  # fmt: skip
    day_n = str((START + np.timedelta64(args.days - 1, "D")).astype("datetime64[D]"))
    next_day = str((START + np.timedelta64(args.days, "D")).astype("datetime64[D]"))
    base = Path(tempfile.mkdtemp(prefix="bench_incremental_graph_"))
    a, b = base / "incremental", base / "full"
    a.mkdir()
    os.environ.setdefault("DAGSTER_HOME", str(base))
    out: dict = {"store": store, "day_N": day_n, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    try:
        from rusket_core.warmup import warm_up

        out["warm_up_s"] = round(sum(warm_up().values()), 1)
        warehouse = Warehouse(path=str(a / "warehouse.duckdb"), publish_snapshot=False)
        everything, _ = read_transactions(TransactionSource(store=store), warehouse)
        history, _ = read_transactions(TransactionSource(store=store, location={"date_to": day_n}), warehouse)
        warehouse.replace_table("ingest", "daily_orders", history)
        out["lines_days_1_to_N-1"] = history.num_rows
        with dg.DagsterInstance.ephemeral() as instance:
            out["build_days_1_to_N-1_s"] = round(timed_run(definitions(a), "refresh_all", instance, run_config=evaluation)[0], 1)
            ingest = {"resources": {"source": {"config": {"store": store}}}}
            out["ingest_day_N_s"] = round(
                timed_run(definitions(a), "daily_ingest", instance, partition_key=day_n, run_config=ingest)[0], 2
            )
            shutil.copytree(a, b)
            for name, root, job in (("incremental", a, "refresh_incremental"), ("full", b, "refresh_all")):
                if args.profile and name == "incremental":
                    import cProfile

                    with cProfile.Profile() as profile:
                        seconds, steps = timed_run(definitions(root), job, instance, run_config=evaluation)
                    profile.dump_stats(args.profile)
                else:
                    seconds, steps = timed_run(definitions(root), job, instance, run_config=evaluation)
                p, n = precision(root, everything, next_day)
                out[name] = {"seconds": round(seconds, 1), "precision@10_day_N+1": p, "customers_scored": n,
                             "steps": steps}  # fmt: skip
                print(name, json.dumps(out[name], indent=1), flush=True)
        out["time_ratio"] = round(out["incremental"]["seconds"] / out["full"]["seconds"], 3)
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps({k: v for k, v in out.items() if k not in ("incremental", "full")}, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
