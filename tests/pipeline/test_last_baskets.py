"""Each customer's last basket, found in SQL, matches the sorted polars definition."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from rusket_assets.assets.personalization import last_baskets


def _last_baskets_reference(lines: pa.Table) -> set:
    """The polars definition: sort by customer, ordered_at, basket_id (nulls first), take the last basket."""
    frame = pl.from_arrow(lines)
    last = (
        frame.sort(["customer_id", "ordered_at", "basket_id"], nulls_last=False)
        .group_by("customer_id")
        .agg(pl.col("basket_id").last())
    )
    return set(frame.join(last, on=["customer_id", "basket_id"]).select("customer_id", "product_id").rows())


def test_last_baskets_in_sql_match_the_sorted_definition():
    rng = np.random.default_rng(4)
    n = 400
    days = np.datetime64("2026-01-01", "us") + rng.integers(0, 6, n).astype("timedelta64[D]")
    times = pa.array(days, mask=rng.random(n) < 0.1)  # nulls count as the oldest
    lines = pa.table(
        {
            "basket_id": pa.array([f"b{int(b)}" for b in rng.integers(0, 15, n)]),  # ties on time -> basket order
            "customer_id": pa.array(rng.integers(0, 12, n)),
            "product_id": pa.array([f"p{int(p)}" for p in rng.integers(0, 9, n)]),
            "ordered_at": times,
        }
    )
    got = last_baskets(lines)
    assert got.column_names == ["customer_id", "product_id"]
    assert {tuple(r.values()) for r in got.to_pylist()} == _last_baskets_reference(lines)
    one = lines.filter(pa.compute.equal(lines["customer_id"], 3))
    assert {tuple(r.values()) for r in last_baskets(one).to_pylist()} == _last_baskets_reference(one)
