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

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: another checkout can be measured

import dagster as dg  # noqa: E402

from rusket_assets.assets.daily import HISTORY_SOURCE, DailyFiles  # noqa: E402
from rusket_assets.definitions import build_definitions  # noqa: E402
from rusket_assets.instance import step_seconds  # noqa: E402
from rusket_assets.resources import TransactionSource, Warehouse  # noqa: E402
from rusket_assets.sample_data import START  # noqa: E402
from rusket_assets.source import read_transactions  # noqa: E402

# hits in each customer's top 10 among the products it bought in the evaluation window (customers
# with recommendations and purchases in the window only)
HITS = """
with test as (select distinct customer_id, product_id from store
              where ordered_at::DATE between ?::DATE and ?::DATE),
     users as (select distinct customer_id from test where customer_id in (select customer_id from recs))
select cast(r.customer_id as VARCHAR) as customer_id, count(t.product_id) as hits
from recs r left join test t using (customer_id, product_id)
where r.customer_id in (select customer_id from users) and r.rank <= 10
group by 1
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


def refreshed(instance) -> dict:
    """What the last materialisation of the merged outputs says it recomputed (empty after a rewrite)."""
    out = {}
    for path in (["personalization", "user_recommendations"], ["analytics", "customer_saturation"],
                 ["analytics", "cross_sell_potential"]):  # fmt: skip
        event = instance.get_latest_materialization_event(dg.AssetKey(path))
        meta = {} if event is None else event.asset_materialization.metadata
        out[path[1]] = {k: v.value for k, v in meta.items() if k.startswith(("customers_", "rules_changed", "rows_replaced", "new_products"))}
    return out


def hits(root: Path, store_lines, first: str, last: str) -> dict[str, int]:
    """Each evaluated customer's hits in its published top 10 among its purchases from ``first`` to ``last``."""
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        con.register("store", store_lines)
        con.execute("create temp view recs as select * from personalization.user_recommendations")
        return dict(con.execute(HITS, [first, last]).fetchall())


def precision(found: dict[str, int]) -> tuple[float, int]:
    """precision@10 over the customers of ``found`` (their hits) and how many they are."""
    return round(sum(found.values()) / (10 * max(len(found), 1)), 4), len(found)


def paired(a: dict[str, int], b: dict[str, int]) -> dict:
    """precision@10 of table a relative to table b on the customers both score: the ratio of the
    means and its standard error from the per-customer paired differences (delta method, b's mean fixed)."""
    common = sorted(a.keys() & b.keys())
    x = np.array([a[c] for c in common], dtype=np.float64) / 10
    y = np.array([b[c] for c in common], dtype=np.float64) / 10
    d = x - y
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"customers": len(common), "p@10": round(float(x.mean()), 5), "reference_p@10": round(float(y.mean()), 5),
            "ratio": round(float(x.mean() / y.mean()), 4), "ratio_se": round(float(se / y.mean()), 4)}  # fmt: skip


def _merge(a: dict, b: dict) -> dict:
    """Two run configs' op configs merged (b's values win)."""
    ops = {k: {"config": dict(v["config"])} for k, v in a.get("ops", {}).items()}
    for k, v in b.get("ops", {}).items():
        ops.setdefault(k, {"config": {}})["config"].update(v["config"])
    return {"ops": ops} if ops else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000, help="order lines over days 1..N (approx.)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--out", default="/tmp/bench_incremental_graph.json")
    parser.add_argument("--profile", help="write a cProfile of the incremental run to this file (pstats)")
    parser.add_argument("--sample-customers", type=int, help="model_evaluation's sample_customers (default: its own)")
    parser.add_argument("--eval-days", type=int, default=1,
                        help="precision@10 on the purchases of days N+1..N+K (more days, more customers scored)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="full rebuilds of day N with ALS/BPR seeds 42, 43, ... (the spread between full fits)")
    parser.add_argument("--warm-iterations", type=int, help="ALS and BPR warm_iterations of the incremental run")
    args = parser.parse_args()
    evaluation = {} if args.sample_customers is None else {
        "ops": {"personalization__model_evaluation": {"config": {"sample_customers": args.sample_customers}}}}  # fmt: skip
    store = {"n_customers": args.customers, "n_products": args.products, "n_days": args.days + args.eval_days,
             "n_lines": int(args.lines * (args.days + args.eval_days) / args.days), "seed": 7}  # fmt: skip
    day_n = str((START + np.timedelta64(args.days - 1, "D")).astype("datetime64[D]"))
    next_day = str((START + np.timedelta64(args.days, "D")).astype("datetime64[D]"))
    last_day = str((START + np.timedelta64(args.days + args.eval_days - 1, "D")).astype("datetime64[D]"))
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
            fulls = [base / f"full_seed{i}" for i in range(1, args.seeds)]
            for copy in (b, *fulls):
                shutil.copytree(a, copy)
            # yesterday's published table, before either refresh: what no update at all would score
            found = {"stale": hits(a, everything, next_day, last_day)}
            out["stale_precision@10_day_N+1"], _ = precision(found["stale"])
            warm = {} if args.warm_iterations is None else {"ops": {
                f"personalization__{m}": {"config": {"warm_iterations": args.warm_iterations}} for m in ("als_model", "bpr_model")}}  # fmt: skip
            runs = [("incremental", a, "refresh_incremental", _merge(evaluation, warm)), ("full", b, "refresh_all", evaluation)]
            runs += [(f"full_seed{42 + i}", root, "refresh_all", _merge(evaluation, {"ops": {
                f"personalization__{m}": {"config": {"random_state": 42 + i}} for m in ("als_model", "bpr_model")}}))
                for i, root in enumerate(fulls, start=1)]  # fmt: skip
            for name, root, job, run_config in runs:
                if args.profile and name == "incremental":
                    import cProfile

                    with cProfile.Profile() as profile:
                        seconds, steps = timed_run(definitions(root), job, instance, run_config=run_config)
                    profile.dump_stats(args.profile)
                else:
                    seconds, steps = timed_run(definitions(root), job, instance, run_config=run_config)
                found[name] = hits(root, everything, next_day, last_day)
                p, n = precision(found[name])
                out[name] = {"seconds": round(seconds, 1), "precision@10_day_N+1": p, "customers_scored": n,
                             "steps": steps, "refreshed": refreshed(instance)}  # fmt: skip
                print(name, json.dumps(out[name], indent=1), flush=True)
        out["eval_days"] = [next_day, last_day]
        out["time_ratio"] = round(out["incremental"]["seconds"] / out["full"]["seconds"], 3)
        # paired on the same customers: the incremental and yesterday's tables, and the other seeds' full
        # rebuilds, each relative to the seed-42 full rebuild
        out["vs_full"] = {name: paired(found[name], found["full"]) for name in found if name != "full"}
        Path(args.out).write_text(json.dumps(out, indent=1))
        print(json.dumps({k: v for k, v in out.items() if k not in ("incremental", "full")}, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
