"""The shared fit's row bookkeeping: which sampled customers' histories are unchanged between two models."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from rusket_assets.holdout_fit import _same_rows
from rusket_core.encoding import Encoded, Labels, _build_csr


def _encoded(rng, users: np.ndarray, items: np.ndarray, weighted: bool) -> Encoded:
    """Random interactions of ``users`` × ``items`` (labels in the given order, some rows empty)."""
    n = 60
    r, c = rng.integers(0, len(users), n), rng.integers(0, len(items), n)
    w = rng.integers(1, 3, n).astype(np.float64) if weighted else None
    indptr, indices, data = _build_csr(r, c, w, len(users))
    return Encoded(indptr, indices, data if weighted else None, Labels(users), Labels(items))


def _history(enc: Encoded, row: int) -> dict:
    lo, hi = enc.indptr[row], enc.indptr[row + 1]
    w = np.ones(hi - lo) if enc.data is None else enc.data[lo:hi]
    return dict(zip(enc.items.values[enc.indices[lo:hi]].tolist(), np.asarray(w, np.float64).tolist(), strict=True))


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_same_rows_equals_comparing_each_history(seed, weighted):
    """Rows compared by product label and weight, whatever the two models' product order (new products
    appended in one, the order shuffled), equal the per-customer dictionary comparison."""
    rng = np.random.default_rng(seed)
    users = np.array([f"c{i}" for i in range(30)])
    old_items = np.arange(100, 112)
    new_items = np.concatenate([rng.permutation(old_items), [200, 201]])  # two products the old model lacks
    old = _encoded(rng, users, old_items, weighted)
    # the new model: the old rows (as labels) with a few customers changed
    rows = np.repeat(np.arange(len(users)), np.diff(old.indptr))
    labels = old_items[old.indices]
    keep = rng.random(len(rows)) > 0.05
    extra = rng.integers(0, len(users), 6)
    r = np.concatenate([rows[keep], extra])
    lab = np.concatenate([labels[keep], rng.choice(new_items, 6)])
    w = None if old.data is None else np.concatenate([old.data[keep], rng.integers(0, 2, 6)])
    col = np.searchsorted(np.sort(new_items), lab)
    order = np.argsort(new_items)
    indptr, indices, data = _build_csr(r, order[col], w, len(users))
    new = Encoded(indptr, indices, data if weighted else None, Labels(users), Labels(new_items))
    lines = rng.permutation(len(users))
    old_lines = lines.copy()
    old_lines[:3] = old_lines[[1, 2, 0]]  # three customers compared with someone else's row
    item_map = np.array([np.flatnonzero(old_items == x)[0] if x in old_items else -1 for x in new_items])
    got = _same_rows(new, old, item_map, lines, old_lines)
    expected = np.array([_history(new, a) == _history(old, b) for a, b in zip(lines, old_lines, strict=True)])
    np.testing.assert_array_equal(got, expected)
    assert expected.any() and not expected.all()


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


def test_held_out_products_with_the_same_buyers_keep_their_rows():
    """Of the products bought only in held-out lines, the one whose buyers and weights are as in the
    saved published model gets its saved row back; the one with a new buyer keeps its new solution."""
    import copy

    from rusket_assets.holdout_fit import _keep_unchanged_products
    from rusket_core import ALS

    rng = np.random.default_rng(0)
    train = _model_lines(rng, 300, 30, 10)
    held = pa.table({"customer_id": [1, 2, 3, 4], "product_id": [2000, 2000, 2001, 2001], "quantity": [1.0, 2.0, 1.0, 1.0]})
    holdout = ALS.from_transactions(train, "customer_id", "product_id", "quantity", factors=4, iterations=3).fit()
    n_trained = len(holdout.items)
    previous = copy.deepcopy(holdout).partial_fit(held)
    # the next day: one more train line (every solve moves a little), and a new buyer of product 2001
    today = copy.deepcopy(holdout).partial_fit(pa.table({"customer_id": [7], "product_id": [1003], "quantity": [2.0]}))
    today.partial_fit(pa.concat_tables([held, pa.table({"customer_id": [5], "product_id": [2001], "quantity": [1.0]})]))
    at, was = today.items.indices_of(pa.array([2000, 2001])), previous.items.indices_of(pa.array([2000, 2001]))
    assert not np.array_equal(today.item_factors[at[0]], previous.item_factors[was[0]])  # moved by the re-solve
    before_2001 = today.item_factors[at[1]].copy()
    assert _keep_unchanged_products(previous, today, n_trained) == 1
    np.testing.assert_array_equal(today.item_factors[at[0]], previous.item_factors[was[0]])
    np.testing.assert_array_equal(today.item_factors[at[1]], before_2001)
