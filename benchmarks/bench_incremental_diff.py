"""The model update's diff: every line vs only the customers of the day appended (``diff_lines``).

The synthetic store over ``--days`` days goes into a DuckDB table; ALS (``--iterations`` sweeps: the
factors do not matter here, only the training pairs) is fitted on days 1..N-1, then day N's lines
are compared with it both ways: ``diff_lines`` over every line, and restricted to the customers of
the day (``day_marks`` + ``added_days`` + ``customers_of_days``, what an incremental run does when no
older day changed). Both results are checked equal; the best of ``--repeats`` timings of each is
reported (marks included in the restricted one). Writes ``/tmp/bench_incremental_diff.json``.

    .venv/bin/python benchmarks/bench_incremental_diff.py --lines 3000000 --customers 200000 --products 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rusket_assets.incremental import added_days, customers_of_days, day_marks, diff_lines  # noqa: E402
from rusket_assets.resources import TransactionSource, Warehouse  # noqa: E402
from rusket_assets.sample_data import START  # noqa: E402
from rusket_assets.source import read_transactions  # noqa: E402


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return round(min(times), 3), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="/tmp/bench_incremental_diff.json")
    args = parser.parse_args()
    from rusket_core import ALS

    store = {"n_customers": args.customers, "n_products": args.products, "n_days": args.days, "n_lines": args.lines, "seed": 7}
    day_n = str((START + np.timedelta64(args.days - 1, "D")).astype("datetime64[D]"))
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(path=str(Path(tmp) / "w.duckdb"), publish_snapshot=False)
        lines, _ = read_transactions(TransactionSource(store=store), warehouse)
        con = duckdb.connect()
        con.register("lines", lines)
        con.execute("create table today as select customer_id, product_id, quantity, ordered_at from lines")
        con.execute(f"create table before as select * from today where ordered_at < TIMESTAMP '{day_n}'")
        columns = ["customer_id", "product_id", "quantity"]
        model = ALS.from_transactions(con.sql("select * from before"), *columns, factors=16, iterations=args.iterations).fit()
        source = f"select {', '.join(columns)} from today"
        recorded = day_marks(con, "before", "true", columns)[0]

        def restricted():
            added = added_days(recorded, day_marks(con, "today", "true", columns)[0])
            return diff_lines(con, source, model, customers_of_days("today", "true", "customer_id", added))

        full_s, full = best(lambda: diff_lines(con, source, model), args.repeats)
        day_s, day = best(restricted, args.repeats)
        marks_s, _ = best(lambda: day_marks(con, "today", "true", columns), args.repeats)
        for name in ("grown", "shrunk"):
            a, b = getattr(full, name).sort_by([(c, "ascending") for c in columns[:2]]), getattr(day, name).sort_by(
                [(c, "ascending") for c in columns[:2]])  # fmt: skip
            assert a.equals(b), name
        assert full.changed.equals(day.changed) and full.new_customers == day.new_customers
        out = {"store": store, "lines": lines.num_rows, "training_pairs": int(model.user_items.indptr[-1]),
               "day_customers_changed": len(day.changed), "full_diff_s": full_s, "day_diff_s": day_s,
               "day_marks_s": marks_s, "repeats": args.repeats}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
