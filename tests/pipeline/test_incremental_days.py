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
        return day_marks(con, "t", "true", columns)[0]

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
    # only the lines matching the condition are marked; the count is of every line
    con.register("t", lines)
    big, total = day_marks(con, "t", "quantity > 1", columns)
    assert total == lines.num_rows
    assert sum(int(n) for n, _ in big.values()) == int((lines["quantity"].to_numpy() > 1).sum())
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
    added = added_days(day_marks(con, "old", "true", columns)[0], day_marks(con, "today", "true", columns)[0])
    assert added == ["2025-10-11", "2025-10-12"]
    source = f"select {', '.join(columns)} from today"
    got = diff_lines(con, source, previous, customers_of_days("today", "true", "customer_id", added))
    want = reference_diff(previous, today, rating)
    assert_diff(got, want, rating)
    assert want["counts"][0] > 0 and want["grown"]
    # no day added: nothing differs
    none = diff_lines(con, f"select {', '.join(columns)} from old", previous, customers_of_days("old", "true", "customer_id", []))
    assert none.grown.num_rows == none.shrunk.num_rows == len(none.changed) == 0


def test_graph_updates_compare_the_added_days_and_every_line_after_an_older_day_changed(tmp_path):
    """In the graph: an incremental run after one day landed compares only that day's customers, and
    the holdout ALS then holds exactly today's train pairs and weights; after an older day is
    edited in place, the next run compares every line and is exact again."""
    import dagster as dg

    from rusket_assets.holdout_fit import held_out, holdout_model_name
    from rusket_assets.incremental import REFRESH_TAG
    from rusket_assets.io import load_model
    from tests.pipeline.test_incremental import LAST_DAY, _split, _train_lines, metadata, run, setup

    def exact() -> None:
        model = load_model(tmp_path / "models", holdout_model_name("als"))
        enc = model.user_items
        rows = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
        got = sorted(zip(enc.rows.values[rows].tolist(), enc.items.values[enc.indices].tolist(), np.round(enc.data, 4).tolist(),
                         strict=True))  # fmt: skip
        lines = _train_lines(tmp_path)
        want: dict = {}
        for c, p, q in zip(*(lines[k].to_pylist() for k in ("customer_id", "product_id", "quantity")), strict=True):
            want[(c, p)] = want.get((c, p), 0.0) + q
        assert got == sorted((c, p, round(q, 4)) for (c, p), q in want.items())

    defs = setup(tmp_path)
    incremental = {REFRESH_TAG: "incremental"}
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance).success
        assert run(defs, instance, partition=LAST_DAY).success
        result = run(defs, instance, tags=incremental)
        assert result.success
        als = metadata(result, "personalization__als_model")
        assert als["holdout refresh"] == "incremental"
        assert als["holdout diff_scope"].startswith("the lines of") and als["holdout diff_scope"].endswith("days appended")
        assert als["holdout customers_with_new_lines"] > 0
        exact()
        # an older day edited in place: one more unit on one of its train lines
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
            con.execute("update ingest.daily_orders set quantity = quantity + 1 where rowid = (select min(rowid) from "
                        f"ingest.daily_orders where ordered_at::DATE = '2025-10-05' and not {held_out(_split(tmp_path))})")  # fmt: skip
        result = run(defs, instance, tags=incremental)
        assert result.success
        als = metadata(result, "personalization__als_model")
        assert (als["holdout refresh"], als["holdout diff_scope"], als["holdout customers_with_new_lines"]) == (
            "incremental", "every line", 1)  # fmt: skip
        exact()
