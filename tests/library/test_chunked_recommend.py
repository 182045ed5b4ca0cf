"""Hybrid recommendations in chunks of customers equal the unchunked call."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_core.chunks import iter_recommend_for_users
from rusket_core.hybrid import Recommender


def _rules(rng, universe, n):
    return pd.DataFrame(
        {
            "antecedents": [sorted(rng.choice(universe, rng.integers(1, 3), replace=False).tolist()) for _ in range(n)],
            "consequents": [rng.choice(universe, rng.integers(1, 3), replace=False).tolist() for _ in range(n)],
            "confidence": rng.random(n).round(3),
            "lift": rng.choice([1.0, 2.0], n),
        }
    )


def _assert_same(got: pa.Table, want: pa.Table) -> None:
    """Same rows, ids, ranks and sources; scores equal up to float rounding (BLAS blocks differ in size)."""
    assert got.schema == want.schema
    for name in ("user_id", "rank", "item_id", "source"):
        assert got[name].equals(want[name]), name
    for name in ("score", "model_score", "rule_score"):
        assert got[name].is_null().equals(want[name].is_null()), name
        np.testing.assert_allclose(got[name].to_numpy(zero_copy_only=False), want[name].to_numpy(zero_copy_only=False),
                                   rtol=1e-6, atol=1e-7)  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 25, 1000])
def test_chunks_equal_the_unchunked_hybrid(chunk_size, random_model):
    rng = np.random.default_rng(3)
    model = random_model(rng, np.arange(100, 125), 18, density=0.3)
    universe = np.r_[model.items.values, np.arange(1, 9, 2)]
    # carts for most users (some empty); users 100-104 and 120 have none
    carts = {int(u): sorted(rng.choice(universe, rng.integers(0, 4), replace=False).tolist()) for u in range(105, 125)}
    del carts[120]
    rec = Recommender(model, rules_df=_rules(rng, universe, 80), carts=carts, rules_weight=0.35)
    whole = rec.recommend_for_users(n=6, format="arrow")
    chunks = list(iter_recommend_for_users(rec, n=6, chunk_size=chunk_size))
    assert len(chunks) == -(-25 // chunk_size)
    _assert_same(pa.concat_tables(chunks), whole)
    assert {"model", "model+rules"} <= set(whole["source"].to_pylist())


def test_chunks_with_no_carts_at_all_equal_the_unchunked_hybrid(random_model):
    rng = np.random.default_rng(8)
    model = random_model(rng, np.arange(10), 12, density=0.3)
    empty = pl.DataFrame({"customer": pl.Series([], dtype=pl.Int64), "sku": pl.Series([], dtype=pl.Int64)})
    rec = Recommender(model, rules_df=_rules(rng, model.items.values, 20), carts=empty,
                      cart_col="customer", cart_item_col="sku")  # fmt: skip
    whole = rec.recommend_for_users(n=4, format="arrow")
    assert set(whole["source"].to_pylist()) == {"model"} and whole.num_rows == 10 * 4
    _assert_same(pa.concat_tables(list(iter_recommend_for_users(rec, n=4, chunk_size=3))), whole)
