"""Paired A/B of the incremental refresh: one saved state, each side's code run on fresh copies of it.

``build STATE``: the synthetic store's days 1..N-1 built (``refresh_all``) and day N ingested, with
a Dagster instance (sqlite) inside STATE, by the code on ``PYTHONPATH``. ``run STATE``: STATE copied
to a temporary directory and refreshed there (``--job``, default ``refresh_incremental``) by the code
on ``PYTHONPATH``; prints wall and CPU seconds, the load average, the slowest steps and what the
model steps did; ``--hits F`` writes each customer's hits on days N+1..N+K for ``--paired``.
``ab STATE --a DIR --b DIR --pairs K``: K alternating runs of checkout A and checkout B (each in its
own process, ``PYTHONPATH`` set to it). ``paired REF F...``: precision@10 of each hits file relative
to REF's (the paired ratio of ``bench_incremental_graph.py``).

    python benchmarks/bench_incremental_ab.py build /tmp/state --lines 3000000 --customers 200000 --products 20000
    python benchmarks/bench_incremental_ab.py ab /tmp/state --a /tmp/main --b . --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the code measured is the one on PYTHONPATH: this checkout only comes after it
sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parent.parent))

MODEL_STEPS = ("als_model", "bpr_model", "model_evaluation", "user_recommendations")
SHOWN = ("refresh", "diff_scope", "customers_refreshed", "published_from", "full_refresh_reason", "evaluation_scope")


def _store(args) -> dict:
    return {"n_customers": args.customers, "n_products": args.products, "n_days": args.days + args.eval_days,
            "n_lines": int(args.lines * (args.days + args.eval_days) / args.days), "seed": 7}  # fmt: skip


def _day(k: int) -> str:
    import numpy as np

    from rusket_assets.sample_data import START

    return str((START + np.timedelta64(k, "D")).astype("datetime64[D]"))


def build(args) -> None:
    import dagster as dg
    from bench_incremental_graph import definitions, timed_run

    from rusket_assets.resources import TransactionSource, Warehouse
    from rusket_assets.source import read_transactions
    from rusket_core.warmup import warm_up

    warm_up()
    state, store = Path(args.state), _store(args)
    (state / "dagster").mkdir(parents=True)
    warehouse = Warehouse(path=str(state / "warehouse.duckdb"), publish_snapshot=False)
    history, _ = read_transactions(TransactionSource(store=store, location={"date_to": _day(args.days - 1)}), warehouse)
    warehouse.replace_table("ingest", "daily_orders", history)
    with dg.DagsterInstance.local_temp(str(state / "dagster")) as instance:
        timed_run(definitions(state), "refresh_all", instance)
        ingest = {"resources": {"source": {"config": {"store": store}}}}
        timed_run(definitions(state), "daily_ingest", instance, partition_key=_day(args.days - 1), run_config=ingest)


def run(args) -> None:
    import dagster as dg
    from bench_incremental_graph import definitions, hits

    from rusket_assets.instance import step_seconds
    from rusket_assets.resources import TransactionSource, Warehouse
    from rusket_assets.source import read_transactions
    from rusket_core.warmup import warm_up

    warm_up()
    root = Path(tempfile.mkdtemp(prefix="bench_incremental_ab_")) / "state"
    try:
        shutil.copytree(args.state, root)
        with dg.DagsterInstance.local_temp(str(root / "dagster")) as instance:
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            result = definitions(root).resolve_job_def(args.job).execute_in_process(instance=instance)
            seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
            assert result.success, args.job
            steps = step_seconds(instance, result.run_id)
        did = {}
        for step in MODEL_STEPS:
            events = result.asset_materializations_for_node(f"personalization__{step}")
            meta = {k: v.value for k, v in events[0].metadata.items()} if events else {}
            did[step] = {k: meta[k] for k in SHOWN if k in meta}
        if args.hits:
            everything, _ = read_transactions(TransactionSource(store=_store(args)),
                                              Warehouse(path=str(root / "scratch.duckdb"), publish_snapshot=False))  # fmt: skip
            Path(args.hits).write_text(json.dumps(hits(root, everything, _day(args.days), _day(args.days + args.eval_days - 1))))
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        slowest = sorted(steps.items(), key=lambda kv: -kv[1])[:12]
        print(json.dumps({"label": args.label, "job": args.job, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                          "load_average": round(os.getloadavg()[0], 1), "slowest_steps": [(k, round(v, 2)) for k, v in slowest],
                          "model_steps": did}))  # fmt: skip
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


def ab(args) -> None:
    script = str(Path(__file__).resolve())
    sizes = ["--lines", str(args.lines), "--customers", str(args.customers), "--products", str(args.products),
             "--days", str(args.days), "--eval-days", str(args.eval_days)]  # fmt: skip
    for i in range(1, args.pairs + 1):
        for side, code in (("A", args.a), ("B", args.b)):
            env = dict(os.environ, PYTHONPATH=str(Path(code).resolve()), DAGSTER_HOME=tempfile.mkdtemp())
            extra = ["--hits", f"{args.hits_prefix}_{side}.json"] if args.hits_prefix else []
            out = subprocess.run([sys.executable, script, "run", args.state, "--job", args.job, "--label", f"{side}{i}", *sizes, *extra],
                                 env=env, capture_output=True, text=True, check=True)  # fmt: skip
            print(out.stdout.strip().splitlines()[-1], flush=True)


def paired_main(args) -> None:
    from bench_incremental_graph import paired

    reference = json.loads(Path(args.state).read_text())
    for name in args.files:
        print(name, json.dumps(paired(json.loads(Path(name).read_text()), reference)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "run", "ab", "paired"])
    parser.add_argument("state", help="the state directory (paired: the reference hits file)")
    parser.add_argument("files", nargs="*", help="paired: hits files to compare with the reference")
    parser.add_argument("--lines", type=int, default=3_000_000)
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--eval-days", type=int, default=7)
    parser.add_argument("--job", default="refresh_incremental")
    parser.add_argument("--label", default="")
    parser.add_argument("--hits", help="run: write each evaluated customer's hits here (json)")
    parser.add_argument("--hits-prefix", help="ab: write each side's hits to PREFIX_A.json / PREFIX_B.json")
    parser.add_argument("--a", help="ab: checkout A (e.g. a `git archive` of main)")
    parser.add_argument("--b", help="ab: checkout B")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    {"build": build, "run": run, "ab": ab, "paired": paired_main}[args.command](args)


if __name__ == "__main__":
    main()
