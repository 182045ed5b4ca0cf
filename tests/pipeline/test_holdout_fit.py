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


@pytest.mark.parametrize("rating", ["quantity", None])
@pytest.mark.parametrize("seed", range(3))
def test_diff_in_sql_equals_the_diff_of_the_encodings(seed, rating):
    """diff_lines (today's lines against the saved model's pairs, in DuckDB) gives what
    diff_interactions gives from today's full encoding: grown pairs with the added weight, the whole
    rows of customers who lost a pair, the changed customers, new customers and products, vanished ones."""
    from rusket_assets.incremental import diff_interactions, diff_lines
    from rusket_core import ALS

    rng = np.random.default_rng(seed)
    old = _model_lines(rng, 400, 40, 30)
    previous = ALS.from_transactions(old, "customer_id", "product_id", rating, factors=4, iterations=1).fit()
    keep = rng.random(old.num_rows) > 0.03  # a few lines removed (rows shrink; a customer may vanish)
    today = pa.concat_tables([old.filter(pa.array(keep)), _model_lines(rng, 60, 45, 33)])
    con = duckdb.connect()
    con.register("today", today)
    current = ALS.from_transactions(today, "customer_id", "product_id", rating, factors=4, iterations=1)
    columns = "customer_id, product_id" + (f", {rating}" if rating else "")
    got = diff_lines(con, f"select {columns} from today", previous)
    want = diff_interactions(previous, current)

    def rows(t: pa.Table) -> list:
        return sorted(zip(*(np.round(t[c].to_numpy(), 6).tolist() for c in t.column_names), strict=True))

    assert got.grown.column_names == want.grown.column_names and got.shrunk.column_names == want.shrunk.column_names
    assert rows(got.grown) == rows(want.grown) and rows(got.shrunk) == rows(want.shrunk)
    assert got.changed.to_pylist() == want.changed.to_pylist() and len(got.changed) > 0
    assert (got.new_customers, got.new_products, got.vanished_customers) == (
        want.new_customers, want.new_products, want.vanished_customers)  # fmt: skip
    assert want.new_customers > 0 and want.shrunk.num_rows > 0


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
