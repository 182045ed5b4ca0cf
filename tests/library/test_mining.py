"""Frequent-itemset mining: exact against brute force, real data, labels, formats and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from rusket_core.encoding import encode_baskets
from rusket_core.mining import FPGrowth, min_count_for, mine_csr
from tests.conftest import RETAIL
from tests.library.conftest import brute_force, mined

baskets_strategy = st.lists(
    st.sets(st.integers(0, 7), max_size=8), min_size=1, max_size=30
).filter(lambda bs: any(bs))


@settings(max_examples=60, deadline=None)
@given(
    baskets=baskets_strategy,
    min_count=st.integers(1, 6),
    max_len=st.one_of(st.none(), st.integers(1, 4)),
)
def test_itemsets_equal_brute_force(baskets, min_count, max_len):
    frame = FPGrowth([sorted(b) for b in baskets], min_support=min_count, max_len=max_len).mine()
    expected = brute_force(baskets, min_count, max_len)
    assert len(frame) == len(expected)  # no duplicates either
    assert mined(frame) == expected
    assert np.allclose(frame["support"], frame["count"] / len(baskets))


@settings(max_examples=25, deadline=None)
@given(
    density=st.floats(0.2, 0.9),
    n_rows=st.integers(1, 60),
    min_count=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_dense_random_csr_equals_brute_force(density, n_rows, min_count, seed):
    """Denser baskets (long itemsets, deep search) through the CSR entry point."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_rows, 9)) < density
    enc = encode_baskets([np.flatnonzero(r).tolist() for r in dense] + [[0]])
    offsets, ids, counts = mine_csr(enc.indptr, enc.indices, enc.n_items, min_count)
    got = {
        frozenset(enc.items.take(ids[offsets[i] : offsets[i + 1]]).tolist()): int(counts[i])
        for i in range(len(counts))
    }
    baskets = [set(np.flatnonzero(r).tolist()) for r in dense] + [{0}]
    assert got == brute_force(baskets, min_count, None)
    assert (np.diff(counts) <= 0).all()


def test_online_retail_sample_gives_1195_itemsets():
    df = pd.read_parquet(RETAIL)
    model = FPGrowth.from_transactions(df, transaction_col="Invoice", item_col="StockCode", min_support=0.01)
    frame = model.mine()
    assert len(frame) == 1195
    assert model.n_transactions == df["Invoice"].nunique()
    pairs = df[["Invoice", "StockCode"]].drop_duplicates()
    top = pairs["StockCode"].value_counts()
    singles = frame[frame["itemsets"].map(len) == 1]
    assert dict(zip(singles["itemsets"].map(lambda s: s[0]), singles["count"], strict=True)) == {
        k: v for k, v in top.items() if v >= 10
    }
    assert frame["support"].is_monotonic_decreasing


def test_seed_example_grinder_gets_espresso_beans():
    checkouts = pd.DataFrame(
        {
            "receipt_id": [1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9],
            "product": [
                "grinder", "espresso_beans", "grinder", "espresso_beans", "grinder",
                "espresso_beans", "milk", "grinder", "filter", "espresso_beans", "milk",
                "milk", "grinder", "espresso_beans", "filter", "milk", "filter",
            ],
        }
    )
    model = FPGrowth.from_transactions(
        checkouts, transaction_col="receipt_id", item_col="product", min_support=0.3
    )
    add_ons = model.recommend_items(["grinder"], n=3)
    assert add_ons[0] == "espresso_beans"
    assert "grinder" not in add_ons
    rules = model.association_rules(metric="lift", min_threshold=1.0)
    assert isinstance(rules, pd.DataFrame) and (rules["lift"] >= 1.0).all()


def test_recommend_items_ranks_by_confidence_then_lift_and_skips_basket_items():
    baskets = [["a", "b", "c"], ["a", "b"], ["a", "b", "d"], ["a", "c"], ["c", "d"], ["b", "d"], ["a", "d"]]
    model = FPGrowth(baskets, min_support=1)
    got = model.recommend_items(["a"], n=10)
    # given a: b 3/5, c 2/5, d 2/5; c and d tie on confidence, c wins on lift (supp c 3/7 < d 4/7)
    sets = [set(b) for b in baskets]
    n_a = sum("a" in s for s in sets)

    def key(item):
        both = sum({"a", item} <= s for s in sets)
        conf = both / n_a
        return (-conf, -conf / (sum(item in s for s in sets) / len(sets)), item)

    assert got == sorted(["b", "c", "d"], key=key)
    assert model.recommend_items(["a", "b"], n=10) == ["d", "c"]
    assert "a" not in model.recommend_items(["a", "b"], n=10)
    assert model.recommend_items(["a"], n=1) == got[:1]
    assert model.recommend_items(["unknown"], n=3) == []
    assert got == ["b", "c", "d"]
    # {b} -> d (1/2) beats {a} -> c (2/5) once b is in the basket; with a, b, c only d is left
    assert model.recommend_items(["a", "b", "c"], n=3) == ["d"]


def test_labels_keep_their_types():
    ints = pd.DataFrame({"basket": [1, 1, 2, 2, 3], "item": [10, 20, 10, 20, 30]})
    frame = FPGrowth.from_transactions(ints, transaction_col="basket", item_col="item", min_support=2).mine()
    assert frame["itemsets"].tolist() == [[10], [20], [10, 20]]
    assert all(type(x) is int for s in frame["itemsets"] for x in s)
    strs = ints.assign(item=ints["item"].astype(str))
    frame = FPGrowth.from_transactions(strs, transaction_col="basket", item_col="item", min_support=2).mine()
    assert frame["itemsets"].tolist() == [["10"], ["20"], ["10", "20"]]
    model = FPGrowth.from_transactions(ints, transaction_col="basket", item_col="item", min_support=2)
    assert model.recommend_items([10], n=2) == [20] and type(model.recommend_items([10])[0]) is int


@pytest.mark.parametrize("bad", [0, -1, 0.0, -0.2, 1.5, 2.0, True, False, float("nan"), "0.3", None])
def test_bad_min_support_is_a_value_error(bad):
    with pytest.raises(ValueError, match="min_support"):
        FPGrowth([["a", "b"], ["a"]], min_support=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_max_len_is_a_value_error(bad):
    with pytest.raises(ValueError, match="max_len"):
        FPGrowth([["a", "b"], ["a"]], min_support=1, max_len=bad)


def test_min_support_fraction_is_exact_at_the_boundary():
    # 0.3 * 10 is 3.0000000000000004 in floating point; an itemset in 3 of 10 baskets must count
    assert min_count_for(0.3, 10) == 3
    assert min_count_for(0.7, 10) == 7
    assert min_count_for(1.0, 7) == 7
    assert min_count_for(1e-9, 10) == 1
    assert min_count_for(1, 10) == 1 and min_count_for(4, 10) == 4
    assert all(min_count_for(k / n, n) == k for n in range(1, 60) for k in range(1, n + 1))


def test_max_len_limits_itemset_length():
    baskets = [["a", "b", "c", "d"]] * 3 + [["a", "b"]]
    assert FPGrowth(baskets, min_support=1).mine()["itemsets"].map(len).max() == 4
    frame = FPGrowth(baskets, min_support=1, max_len=2).mine()
    assert frame["itemsets"].map(len).max() == 2
    assert len(frame) == 4 + 6
    assert len(FPGrowth(baskets, min_support=1, max_len=1).mine()) == 4


def _long(kind: str):
    df = pd.DataFrame({"b": [1, 1, 2, 2, 3, 3, 3], "i": ["x", "y", "x", "y", "x", "y", "z"]})
    return {"pandas": df, "polars": pl.from_pandas(df), "arrow": pa.Table.from_pandas(df)}[kind]


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_output_follows_input_library_and_format_overrides(kind):
    model = FPGrowth.from_transactions(_long(kind), transaction_col="b", item_col="i", min_support=2)
    frame = model.mine()
    expected_type = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}[kind]
    assert isinstance(frame, expected_type)
    assert list(frame.columns if kind != "arrow" else frame.column_names) == ["support", "count", "itemsets"]
    as_pandas = model.mine(format="pandas")
    assert mined(as_pandas) == {frozenset({"x"}): 3, frozenset({"y"}): 3, frozenset({"x", "y"}): 3}
    assert isinstance(model.mine(format="polars"), pl.DataFrame)
    assert isinstance(model.association_rules(format="arrow"), pa.Table)
    assert isinstance(model.association_rules(), expected_type)


def test_onehot_scipy_and_basket_inputs_agree():
    baskets = [["a", "b"], ["a", "c"], ["a", "b", "c"], ["b"]]
    onehot = pd.DataFrame([{k: k in b for k in "abc"} for b in baskets])
    matrix = sparse.csr_array(onehot.to_numpy().astype(np.float32))
    results = [
        mined(FPGrowth(baskets, min_support=0.5).mine()),
        mined(FPGrowth(onehot, min_support=0.5).mine()),
        mined(FPGrowth(pl.from_pandas(onehot), min_support=0.5).mine(format="pandas")),
        mined(FPGrowth(matrix, min_support=0.5, item_names=["a", "b", "c"]).mine()),
    ]
    assert all(r == results[0] for r in results)
    assert results[0] == {frozenset("a"): 3, frozenset("b"): 3, frozenset("c"): 2, frozenset("ab"): 2, frozenset("ac"): 2}
    assert isinstance(FPGrowth(pl.from_pandas(onehot), min_support=0.5).mine(), pl.DataFrame)


def test_nothing_frequent_gives_an_empty_frame_with_the_columns():
    frame = FPGrowth([["a"], ["b"]], min_support=1.0).mine()
    assert len(frame) == 0 and list(frame.columns) == ["support", "count", "itemsets"]
    assert len(FPGrowth([["a"], ["b"]], min_support=1.0).association_rules(min_threshold=0.0)) == 0


def test_recommend_items_argument_errors_and_edge_cases():
    model = FPGrowth([["a", "b"], ["a", "b"], ["b", "c"]], min_support=1)
    assert model.recommend_items(["a"], n=0) == []
    assert model.recommend_items([], n=3) == []
    assert model.recommend_items({"a"}, n=5) == ["b"]
    with pytest.raises(ValueError, match="n must be"):
        model.recommend_items(["a"], n=-1)
    with pytest.raises(ValueError, match="single string"):
        model.recommend_items("a")
