"""The incremental update's diff: a saved model's pairs against today's lines, in DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest


def _model_lines(rng, n: int, customers: int, products: int) -> pa.Table:
    return pa.table({"customer_id": rng.integers(0, customers, n), "product_id": rng.integers(0, products, n) + 1000,
                     "quantity": rng.integers(1, 4, n).astype(np.float64)})  # fmt: skip


def reference_diff(previous, today: pa.Table, rating: str | None) -> dict:
    """The diff by brute force: dictionaries of (customer, product) -> weight on both sides."""
    enc = previous.user_items
    old = {}
    for r in range(enc.n_rows):
        for k in range(enc.indptr[r], enc.indptr[r + 1]):
            w = 1.0 if enc.data is None else float(enc.data[k])
            old[(enc.rows.values[r].item(), enc.items.values[enc.indices[k]].item())] = w
    new: dict = {}
    for line in today.to_pylist():
        pair = (line["customer_id"], line["product_id"])
        new[pair] = new.get(pair, 0.0) + float(line[rating]) if rating else 1.0
    gap = {p: new.get(p, 0.0) - old.get(p, 0.0) for p in old.keys() | new.keys()}
    differs = {p: g for p, g in gap.items() if abs(g) > 1e-5 * max(1.0, abs(new.get(p, 0.0)))}
    shrunk_users = {p[0] for p, g in differs.items() if g < 0}
    old_users, old_items = {p[0] for p in old}, {p[1] for p in old}
    new_users = {p[0] for p in new}
    return {
        "grown": sorted((u, i, *([round(g, 6)] if rating else [])) for (u, i), g in differs.items() if g > 0),
        "shrunk": sorted((u, i, *([round(w, 6)] if rating else [])) for (u, i), w in new.items() if u in shrunk_users),
        "changed": sorted({p[0] for p in differs}),
        "counts": (len({p[0] for p in differs} - old_users), len({p[1] for p in differs} - old_items),
                   len(shrunk_users - new_users)),
    }  # fmt: skip


def _rows(t: pa.Table) -> list:
    return sorted(zip(*(np.round(t[c].to_numpy(), 6).tolist() for c in t.column_names), strict=True))


def assert_diff(got, want: dict, rating: str | None) -> None:
    assert got.grown.column_names == got.shrunk.column_names == ["customer_id", "product_id", *([rating] if rating else [])]
    assert _rows(got.grown) == want["grown"] and _rows(got.shrunk) == want["shrunk"]
    assert got.changed.to_pylist() == want["changed"]
    assert (got.new_customers, got.new_products, got.vanished_customers) == want["counts"]


@pytest.mark.parametrize("rating", ["quantity", None])
@pytest.mark.parametrize("seed", range(3))
def test_diff_in_sql_equals_the_brute_force_diff(seed, rating):
    """diff_lines (today's lines against the saved model's pairs, in DuckDB) gives the brute-force
    diff: grown pairs with the added weight, the whole rows of customers who lost a pair, the changed
    customers, new customers and products, vanished ones."""
    from rusket_assets.incremental import diff_lines
    from rusket_core import ALS

    rng = np.random.default_rng(seed)
    old = _model_lines(rng, 400, 40, 30)
    previous = ALS.from_transactions(old, "customer_id", "product_id", rating, factors=4, iterations=1).fit()
    keep = rng.random(old.num_rows) > 0.03  # a few lines removed (rows shrink; a customer may vanish)
    today = pa.concat_tables([old.filter(pa.array(keep)), _model_lines(rng, 60, 45, 33)])
    con = duckdb.connect()
    con.register("today", today)
    columns = "customer_id, product_id" + (f", {rating}" if rating else "")
    got = diff_lines(con, f"select {columns} from today", previous)
    want = reference_diff(previous, today, rating)
    assert_diff(got, want, rating)
    assert len(want["changed"]) > 0 and want["counts"][0] > 0 and want["shrunk"]
