"""Shared recommend API: single vs batch agreement, seen-item exclusion, labels, exports, save/load, top-k."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from rusket_core.evaluation import PopularityRecommender, planted_interactions
from rusket_core.factorization import ALS, BPR, FactorModel
from rusket_core.factorization.topk import csr_rows, select_topk, topk


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    """Planted interactions relabelled with int customers (1000..) and string SKUs, plus revenue."""
    df = planted_interactions(n_users=120, n_items=60, n_interactions=1500, n_clusters=4, random_state=3)
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "customer_id": df["user_id"] + 1000,
            "sku": "S" + df["item_id"].astype(str),
            "revenue": rng.gamma(2.0, 5.0, len(df)),
        }
    )


@pytest.fixture(scope="module")
def als(purchases) -> ALS:
    return ALS.from_transactions(
        purchases, user_col="customer_id", item_col="sku", rating_col="revenue",
        factors=8, iterations=8, alpha=1.0,
    ).fit()  # fmt: skip


def _seen(model: FactorModel, u: int) -> set[int]:
    enc = model.user_items
    return set(enc.indices[enc.indptr[u] : enc.indptr[u + 1]].tolist())


def test_issue_example_calls_work_as_written(purchases):
    als = ALS.from_transactions(purchases, user_col="customer_id", item_col="sku", rating_col="revenue",
                                factors=64, iterations=15, alpha=40.0).fit()  # fmt: skip
    items, scores = als.recommend_items(user_id=1001, n=5, exclude_seen=True)
    assert len(items) == 5 and scores.dtype == np.float32
    top_customers, scores = als.recommend_users(item_id="S33", n=100)
    assert len(top_customers) == len(scores) <= 100
    similar_skus, similarity_scores = als.similar_items(item_id="S22", n=4)
    assert len(similar_skus) == 4 and "S22" not in similar_skus
    recs = als.batch_recommend(n=10, format="polars")
    assert isinstance(recs, pl.DataFrame) and recs.columns == ["user_id", "item_id", "score"]
    user_df = als.export_user_factors(normalize=True, format="polars")
    assert user_df.columns == ["id", "label", "vector"]
    item_df = als.export_item_factors(include_labels=True)
    assert isinstance(item_df, pd.DataFrame) and list(item_df.columns) == ["id", "label", "vector"]
    user_item_csr = als.user_items.to_scipy()
    bpr = BPR(factors=64, learning_rate=0.05, iterations=150).fit(user_item_csr)
    assert bpr.user_factors.shape == (user_item_csr.shape[0], 64)


def test_recommend_items_is_the_exact_top_n_of_unseen_items(als):
    for u in range(0, len(als.users), 9):
        user = als.users.values[u]
        items, scores = als.recommend_items(user, n=7)
        idx = als.items.indices_of(items)
        assert not set(idx.tolist()) & _seen(als, u)
        all_scores = als.item_factors @ als.user_factors[u]
        np.testing.assert_allclose(scores, all_scores[idx], rtol=1e-5, atol=1e-6)
        candidates = np.setdiff1d(np.arange(len(als.items)), list(_seen(als, u)))
        best = np.sort(all_scores[candidates])[::-1][:7]
        np.testing.assert_allclose(scores, best, rtol=1e-5, atol=1e-6)
        # exclude_seen=False ranks over everything
        _, all_top = als.recommend_items(user, n=3, exclude_seen=False)
        np.testing.assert_allclose(all_top, np.sort(all_scores)[::-1][:3], rtol=1e-5, atol=1e-6)


def test_fewer_than_n_only_when_candidates_run_out(als):
    u = int(np.argmax(np.diff(als.user_items.indptr)))
    n_unseen = len(als.items) - len(_seen(als, u))
    items, _ = als.recommend_items(als.users.values[u], n=len(als.items) + 5)
    assert len(items) == n_unseen and len(set(items.tolist())) == n_unseen


def test_batch_recommend_agrees_with_recommend_items_and_hides_seen(als):
    recs = als.batch_recommend(n=6, format="pandas")
    assert len(recs) == 6 * len(als.users)
    for user, group in recs.groupby("user_id", sort=False):
        items, scores = als.recommend_items(user, n=6)
        np.testing.assert_allclose(group["score"].to_numpy(), scores, rtol=1e-5, atol=1e-6)
        close = np.isclose(group["score"].to_numpy(), scores, rtol=0, atol=1e-6)
        # same items, allowing swaps only between (near-)tied scores
        assert set(group["item_id"]) == set(items) or not close.all()
        u = als.users.index_of(user)
        assert not set(als.items.indices_of(group["item_id"]).tolist()) & _seen(als, u)
    subset = als.batch_recommend(n=3, users=[1005, 1001], format="arrow")
    assert subset.column("user_id").to_pylist() == [1005] * 3 + [1001] * 3
    assert subset.column("item_id").to_pylist()[:3] == als.recommend_items(1005, n=3)[0].tolist()


def test_recommend_users_and_similar_items_match_brute_force(als):
    i = als.items.index_of("S7")
    users, scores = als.recommend_users("S7", n=10)
    buyers = set(np.flatnonzero(als.user_items.to_scipy().toarray()[:, i] > 0).tolist())
    assert not set(als.users.indices_of(users).tolist()) & buyers
    expected = np.sort(np.delete(als.user_factors @ als.item_factors[i], list(buyers)))[::-1][:10]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)

    unit = als.item_factors / np.linalg.norm(als.item_factors, axis=1, keepdims=True)
    sims, sim_scores = als.similar_items("S7", n=5)
    assert "S7" not in sims
    cos = unit @ unit[i]
    cos[i] = -np.inf
    np.testing.assert_allclose(sim_scores, np.sort(cos)[::-1][:5], rtol=1e-5, atol=1e-5)
    batch = als.batch_similar_items(n=5, items=["S7"], format="polars")
    assert batch.columns == ["item_id", "similar_item_id", "score"]
    assert batch["similar_item_id"].to_list() == sims.tolist()


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_labels_keep_their_type_and_outputs_follow_the_input(purchases, kind):
    frame = {"pandas": purchases, "polars": pl.from_pandas(purchases), "arrow": pa.Table.from_pandas(purchases)}[kind]
    model = ALS.from_transactions(frame, "customer_id", "sku", factors=4, iterations=2).fit()
    items, _ = model.recommend_items(1001, n=3)
    users, _ = model.recommend_users("S1", n=3)
    assert all(isinstance(x, str) for x in items)
    assert all(isinstance(x, int | np.integer) for x in users)
    recs = model.batch_recommend(n=2)
    expected_type = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}[kind]
    assert isinstance(recs, expected_type)
    table = model.batch_recommend(n=2, format="arrow")
    assert pa.types.is_integer(table.schema.field("user_id").type)
    assert pa.types.is_string(table.schema.field("item_id").type) or pa.types.is_large_string(
        table.schema.field("item_id").type
    )


def test_unknown_ids_raise_key_error_naming_them(als):
    with pytest.raises(KeyError, match="424242"):
        als.recommend_items(424242)
    with pytest.raises(KeyError, match="1001"):
        als.recommend_items("1001")  # a string is not the integer id
    with pytest.raises(KeyError, match="nope"):
        als.similar_items("nope")
    with pytest.raises(KeyError, match="nope"):
        als.recommend_users("nope")
    with pytest.raises(KeyError, match="99"):
        als.batch_recommend(users=[1001, 99])
    with pytest.raises(RuntimeError, match="not fitted"):
        ALS().recommend_items(1)


def test_factor_exports_are_fixed_size_float32_vectors(als, tmp_path):
    table = als.export_user_factors(format="arrow")
    assert table.column_names == ["id", "label", "vector"]
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 8)
    assert table.column("label").to_pylist() == als.users.values.tolist()
    np.testing.assert_array_equal(
        np.stack(table.column("vector").to_pylist()).astype(np.float32), als.user_factors
    )
    unit = np.stack(als.export_item_factors(normalize=True, format="polars")["vector"].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    bare = als.export_item_factors(include_labels=False, format="pandas")
    assert list(bare.columns) == ["id", "vector"]
    assert als.export_factors(format="arrow").equals(als.export_item_factors(format="arrow"))

    import lancedb

    db = lancedb.connect(str(tmp_path / "lance"))
    tbl = db.create_table("items", data=als.export_item_factors(include_labels=True))
    hit = tbl.search(als.item_factors[3]).limit(1).to_list()[0]
    assert hit["label"] == als.items.values[3]


def test_spark_format_without_spark_is_a_clear_error(als):
    try:
        from pyspark.sql import SparkSession

        if SparkSession.getActiveSession() is not None:
            pytest.skip("a Spark session is active")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="(?i)spark"):
        als.batch_recommend(n=2, format="spark")


@pytest.mark.parametrize("cls", [ALS, BPR, PopularityRecommender])
def test_save_load_round_trip(purchases, cls, tmp_path):
    params = {} if cls is PopularityRecommender else {"factors": 4, "iterations": 3}
    model = cls.from_transactions(purchases, "customer_id", "sku", rating_col="revenue", **params).fit()
    path = model.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as npz:  # loadable without pickle
        assert "user_factors" in npz
    loaded = FactorModel.load(path)
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.users == model.users and loaded.items == model.items
    assert isinstance(loaded.items.values[0], str)
    for a, b in zip(loaded.recommend_items(1003, n=5), model.recommend_items(1003, n=5), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cls.load(path).user_col == "customer_id"
    if cls is not ALS:
        with pytest.raises(ValueError, match="not a ALS"):
            ALS.load(path)


# --- the top-k kernel -----------------------------------------------------------------------


@st.composite
def _topk_case(draw):
    m = draw(st.integers(1, 8))
    n_items = draw(st.integers(1, 25))
    n = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 10_000))
    tied = draw(st.booleans())
    return m, n_items, n, seed, tied


@settings(max_examples=60, deadline=None)
@given(_topk_case())
def test_select_topk_matches_a_sort(case):
    m, n_items, n, seed, tied = case
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, (m, n_items)).astype(np.float32) if tied else rng.normal(size=(m, n_items)).astype(np.float32)
    if n_items > 2:
        scores[0, 1] = np.nan
        scores[-1, 0] = -np.inf
    excluded = [np.sort(rng.choice(n_items, rng.integers(0, n_items + 1), replace=False)) for _ in range(m)]
    ptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    ind = np.concatenate(excluded).astype(np.int32) if m else np.zeros(0, np.int32)
    idx, val = select_topk(scores, n, ptr, ind)
    assert idx.shape == (m, min(n, n_items))
    for r in range(m):
        ok = [j for j in range(n_items) if j not in set(excluded[r].tolist()) and scores[r, j] > -np.inf]
        expected = sorted(ok, key=lambda j: (-scores[r, j], j))[:n]  # ties: lower index first
        got = idx[r][idx[r] >= 0].tolist()
        assert got == expected
        assert np.all(idx[r][len(expected) :] == -1) and np.all(val[r][len(expected) :] == -np.inf)


@pytest.mark.parametrize("small_scores", [0, 1 << 30])  # parallel chunks / the one-thread path
def test_topk_blocks_match_a_dense_product(monkeypatch, small_scores):
    import rusket_core.factorization.topk as topk_module

    monkeypatch.setattr(topk_module, "BLOCK_SCORES", 64)  # force many small blocks
    monkeypatch.setattr(topk_module, "SMALL_SCORES", small_scores)
    rng = np.random.default_rng(1)
    q = rng.normal(size=(37, 6)).astype(np.float32)
    Y = rng.normal(size=(20, 6)).astype(np.float32)
    seen = sp.csr_array(rng.random((37, 20)) < 0.3)
    idx, val = topk(q, Y, 5, seen.indptr, seen.indices)
    dense = q @ Y.T
    dense[seen.toarray()] = -np.inf
    np.testing.assert_allclose(val, -np.sort(-dense, axis=1)[:, :5], rtol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(dense, idx.astype(np.int64), 1), val, rtol=1e-5)
    rows = np.array([5, 0, 5, 36])
    ptr, ind = csr_rows(seen.indptr, seen.indices, rows)
    for r, row in enumerate(rows):
        assert ind[ptr[r] : ptr[r + 1]].tolist() == seen.indices[seen.indptr[row] : seen.indptr[row + 1]].tolist()


def test_duckdb_relation_input(purchases):
    import duckdb

    con = duckdb.connect()
    con.register("purchases", purchases)
    rel = con.sql("select customer_id, sku, revenue from purchases")
    model = ALS.from_transactions(rel, "customer_id", "sku", rating_col="revenue", factors=4, iterations=2).fit()
    assert isinstance(model.batch_recommend(n=2), pa.Table)  # a relation reads as arrow
    assert model.users.values.tolist() == sorted(purchases.customer_id.unique().tolist())
