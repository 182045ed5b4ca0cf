"""The day-only diff: a model's update compares only the customers of the days appended since it was trained."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from rusket_assets.incremental import added_days, customers_of_days, day_marks, diff_lines
from tests.pipeline.test_holdout_fit import assert_diff, reference_diff


def _lines(rng, n: int, days: range, customers: int = 50, products: int = 30) -> pa.Table:
    day = rng.choice(np.array(list(days)), n)
    stamps = np.datetime64("2025-10-01T08:00") + day.astype("timedelta64[D]") + rng.integers(0, 600, n).astype("timedelta64[m]")
    return pa.table({"customer_id": rng.integers(0, customers, n), "product_id": rng.integers(0, products, n) + 1000,
                     "quantity": rng.integers(1, 4, n).astype(np.float64), "ordered_at": pa.array(stamps.astype("datetime64[us]"))})  # fmt: skip


def test_day_marks_see_a_changed_day_and_list_the_added_ones():
    """Marks per day: the same lines give the same marks whatever their order; a changed quantity, a
    removed or an added line changes that day's mark only; added_days lists new days, or None when a
    recorded day changed or vanished (or nothing was recorded)."""
    rng = np.random.default_rng(0)
    lines = _lines(rng, 300, range(5))
    con = duckdb.connect()
    columns = ["customer_id", "product_id", "quantity"]

    def marks(t: pa.Table) -> dict:
        con.register("t", t)
        return day_marks(con, "t", "true", columns)

    base = marks(lines)
    assert sorted(base) == ["2025-10-01", "2025-10-02", "2025-10-03", "2025-10-04", "2025-10-05"]
    assert marks(lines.take(rng.permutation(lines.num_rows))) == base
    quantity = lines["quantity"].to_numpy().copy()
    quantity[0] += 1
    day0 = str(lines["ordered_at"][0].as_py().date())
    edited = marks(lines.set_column(2, "quantity", pa.array(quantity)))
    assert {d for d in base if edited[d] != base[d]} == {day0}
    assert {d for d in base if marks(lines.slice(1))[d] != base[d]} == {day0}
    more = pa.concat_tables([lines, _lines(rng, 20, range(5, 7))])
    assert added_days(base, marks(more)) == ["2025-10-06", "2025-10-07"]
    assert added_days(base, marks(lines)) == []
    assert added_days(base, edited) is None and added_days(None, base) is None
    other_days = lines["ordered_at"].to_numpy().astype("datetime64[D]") != np.datetime64(day0)
    assert added_days(base, marks(lines.filter(pa.array(other_days)))) is None  # a day vanished
    # lines without a timestamp are a day of their own ("")
    undated = lines.set_column(3, "ordered_at", pa.nulls(lines.num_rows, pa.timestamp("us")))
    assert list(marks(undated)) == [""]


@pytest.mark.parametrize("rating", ["quantity", None])
@pytest.mark.parametrize("seed", range(4))
def test_diff_of_the_added_days_customers_equals_the_full_diff(seed, rating):
    """Days appended to the lines a model was trained on (new customers and products among them): the
    diff restricted to those days' customers equals the brute-force diff over every line."""
    from rusket_core import ALS

    rng = np.random.default_rng(seed)
    old = _lines(rng, 400, range(10))
    previous = ALS.from_transactions(old, "customer_id", "product_id", rating, factors=4, iterations=1).fit()
    today = pa.concat_tables([old, _lines(rng, 40, range(10, 12), customers=60, products=34)])
    con = duckdb.connect()
    con.register("old", old)
    con.register("today", today)
    columns = ["customer_id", "product_id", *([rating] if rating else [])]
    added = added_days(day_marks(con, "old", "true", columns), day_marks(con, "today", "true", columns))
    assert added == ["2025-10-11", "2025-10-12"]
    source = f"select {', '.join(columns)} from today"
    got = diff_lines(con, source, previous, customers_of_days("today", "true", "customer_id", added))
    want = reference_diff(previous, today, rating)
    assert_diff(got, want, rating)
    assert want["counts"][0] > 0 and want["grown"]
    # no day added: nothing differs
    none = diff_lines(con, f"select {', '.join(columns)} from old", previous, customers_of_days("old", "true", "customer_id", []))
    assert none.grown.num_rows == none.shrunk.num_rows == len(none.changed) == 0
