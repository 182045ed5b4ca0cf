"""Adding one day to the models: full refit vs fold-in of that day's customers (+ a short warm pass).

Library level (no Dagster). The bundled synthetic store (``rusket_assets.sample_data``) is generated
over ``--days`` + 1 days; models are fitted on days 1..N-1 (the "yesterday" models), then day N
arrives and is taken in two ways:

- **full refit**: encode days 1..N and fit from scratch (what the daily schedule does today);
- **fold-in**: ``partial_fit(day N lines)`` on yesterday's model (the day's customers' rows
  re-solved with the items fixed, new customers and products added), then optionally ``fit(init=model)`` with
  ``--warm-iterations`` over the updated interactions.

Quality: precision@10 / ndcg@10 on day N+1's purchases (training items of days 1..N excluded),
customers unknown to a model skipped; for all of day N+1's customers and for those also active on
day N (the ones fold-in changes). A second full refit with another ``random_state`` shows how much
precision moves by the seed alone, and yesterday's model (no update) is scored too. Times are wall clock of the update only (the data is
in memory, models fitted on days 1..N-1 are given); a warm-up fit on a small sample compiles every
kernel first. Writes ``/tmp/bench_incremental.json`` (or ``--out``).

    .venv/bin/python benchmarks/bench_incremental.py                      # ~1M lines, 90 days
    .venv/bin/python benchmarks/bench_incremental.py --lines 300000 --customers 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rusket_assets.sample_data import START, StoreSpec, generate_store  # noqa: E402
from rusket_core.evaluation import evaluate  # noqa: E402
from rusket_core.factorization import ALS, BPR  # noqa: E402

# the pipeline's defaults (ALSConfig / BPRConfig in rusket_assets/assets/personalization.py), quantity as the weight
MODELS = {
    "als": (ALS, {"factors": 64, "iterations": 15, "alpha": 40.0, "regularization": 0.01}),
    "bpr": (BPR, {"factors": 64, "iterations": 100, "learning_rate": 0.05, "regularization": 0.01,
                  "loss": "logistic"}),
}  # fmt: skip
COLS = {"user_col": "customer_id", "item_col": "product_id"}


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _split(table: pa.Table, n_days: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(days 1..N-1, day N, day N+1) by the day index of ``ordered_at``."""
    seconds = pc.cast(table.column("ordered_at"), pa.int64()).to_numpy() - START.astype(np.int64)
    day = seconds // 86_400
    pick = lambda mask: table.filter(pa.array(mask))  # noqa: E731
    return pick(day < n_days - 1), pick(day == n_days - 1), pick(day == n_days)


def _build(name: str, data: pa.Table, **overrides):
    cls, params = MODELS[name]
    return cls.from_transactions(data, rating_col="quantity", **COLS, **{**params, **overrides})


def _quality(model, tests: dict[str, pa.Table]) -> dict:
    out = {}
    for label, test in tests.items():
        m = evaluate(model, test=test, k=10)
        out[label] = {key: m[key] for key in ("precision", "ndcg", "n_users", "n_users_skipped")}
    return out


def _run_model(name, warm_iters, sample, history, day_n, full, tests, base_path) -> dict:
    """Yesterday's model, then day N taken in by a full refit and by fold-in (+ warm pass)."""
    warm_up = _build(name, sample, iterations=2).fit()  # compiles every kernel, untimed
    warm_up.partial_fit(sample.slice(0, 500))
    warm_up.iterations = 1
    warm_up.fit(init=warm_up)
    _quality(warm_up, {"sample": sample.slice(0, 100)})
    yesterday, t_base = _timed(lambda: _build(name, history).fit())
    yesterday.save(base_path)
    row = {"fit_days_1_to_N-1_s": round(t_base, 2), "stale_model": _quality(yesterday, tests)}
    refit, t_full = _timed(lambda: _build(name, full).fit())
    row["full_refit"] = {"seconds": round(t_full, 2), **_quality(refit, tests)}
    # the same refit from another random_state: how far precision moves by the seed alone
    other = _build(name, full, random_state=MODELS[name][1].get("random_state", 0) + 1).fit()
    row["full_refit_other_seed"] = _quality(other, tests)
    folded = type(yesterday).load(base_path)
    base_path.unlink()
    _, t_fold = _timed(lambda: folded.partial_fit(day_n))
    row["fold_in"] = {"seconds": round(t_fold, 2), **_quality(folded, tests)}
    if warm_iters:
        folded.iterations = warm_iters
        _, t_warm = _timed(lambda: folded.fit(init=folded))
        row["fold_in_plus_warm"] = {
            "warm_iterations": warm_iters, "seconds": round(t_fold + t_warm, 2), **_quality(folded, tests)
        }  # fmt: skip
    for key in ("fold_in", "fold_in_plus_warm", "full_refit_other_seed"):
        if key in row:
            if "seconds" in row[key]:
                row[key]["time_ratio_vs_full"] = round(row[key]["seconds"] / t_full, 3)
            for label in tests:
                full_p = max(row["full_refit"][label]["precision"], 1e-12)
                row[key][label]["precision_ratio_vs_full"] = round(row[key][label]["precision"] / full_p, 3)
    return row


def run(args) -> dict:
    spec = StoreSpec(
        n_customers=args.customers, n_products=args.products, n_days=args.days + 1,
        n_lines=int(args.lines * (args.days + 1) / args.days), seed=args.seed,
    )  # fmt: skip
    store, t_gen = _timed(lambda: generate_store(spec))
    table = store.select(["customer_id", "product_id", "quantity", "ordered_at"])
    history, day_n, next_day = _split(table, args.days)
    full = pa.concat_tables([history, day_n])
    new_customers = len(set(pc.unique(day_n.column("customer_id")).to_pylist())
                        - set(pc.unique(history.column("customer_id")).to_pylist()))  # fmt: skip
    info = {
        "spec": spec.__dict__, "lines_days_1_to_N": full.num_rows, "lines_day_N": day_n.num_rows,
        "lines_day_N+1": next_day.num_rows, "customers_day_N": len(pc.unique(day_n.column("customer_id"))),
        "new_customers_day_N": new_customers, "generate_s": round(t_gen, 1),
        "threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count() or 1)),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
    }  # fmt: skip
    print(json.dumps(info, indent=1), flush=True)
    active = pc.is_in(next_day.column("customer_id"), value_set=pc.unique(day_n.column("customer_id")))
    tests = {"day_N+1": next_day, "day_N+1_customers_of_day_N": next_day.filter(active)}
    results = {}
    for name in args.models:
        results[name] = _run_model(name, args.warm_iterations[name], full.slice(0, 20_000), history, day_n,
                                   full, tests, Path(args.out).with_suffix(f".{name}.npz"))  # fmt: skip
        print(name, json.dumps(results[name], indent=1), flush=True)
    out = {"info": info, "results": results}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


def _print_table(out: dict) -> None:
    """Markdown: per model and update, time and precision@10 on day N+1 (all its customers / those
    also active on day N), with ratios to the full refit."""
    labels = ("day_N+1", "day_N+1_customers_of_day_N")
    print("\n| model | update | seconds | × full | p@10 day N+1 | × full | p@10 day-N customers | × full |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, row in out["results"].items():
        for key in ("full_refit", "full_refit_other_seed", "fold_in", "fold_in_plus_warm", "stale_model"):
            if key not in row:
                continue
            r = row[key]
            what = key + (f" ({r['warm_iterations']} it.)" if "warm_iterations" in r else "")
            base = key == "full_refit"
            cells = [f"{r['seconds']:.2f}" if "seconds" in r else "–", "1" if base else f"{r.get('time_ratio_vs_full', '–')}"]
            for label in labels:
                q = r[label]
                ratio = "1" if base else f"{q.get('precision_ratio_vs_full', '–')}"
                cells += [f"{q['precision']:.4f} (n={q['n_users']})", ratio]
            print(f"| {name} | {what} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="order lines over days 1..N (approx.)")
    parser.add_argument("--days", type=int, default=90, help="N: days up to the one being added")
    parser.add_argument("--customers", type=int, default=60_000)
    parser.add_argument("--products", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--als-warm", type=int, default=2, help="ALS warm iterations after fold-in (0: none)")
    parser.add_argument("--bpr-warm", type=int, default=0, help="BPR warm epochs after fold-in (0: none)")
    parser.add_argument("--out", default="/tmp/bench_incremental.json")
    args = parser.parse_args()
    args.warm_iterations = {"als": args.als_warm, "bpr": args.bpr_warm}
    _print_table(run(args))


if __name__ == "__main__":
    main()
