"""Spark engine (local[2], one session for the test run: tests/conftest.py): results equal the local engine's and brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusket_core import ALS, FPGrowth
from rusket_core.encoding import encode_baskets
from rusket_core.mining import mine_csr
from rusket_core.spark.fpgrowth import project_for_groups, rank_groups
from tests.library.conftest import brute_force, mined

pyspark = pytest.importorskip("pyspark")

from rusket_core.spark import (  # noqa: E402
    batch_recommend,
    batch_similar_items,
    fit_als,
    frequent_itemsets,
)


def _baskets(seed: int, n: int, n_items: int, max_size: int) -> list[set[str]]:
    """Random baskets with skewed item popularity (labels are strings)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    return [
        {f"p{i:02d}" for i in rng.choice(n_items, size=rng.integers(1, max_size + 1), replace=False, p=p)}
        for _ in range(n)
    ]


def _long(baskets: list[set[str]]) -> pd.DataFrame:
    rows = [(b, item) for b, items in enumerate(baskets) for item in sorted(items)]
    return pd.DataFrame(rows, columns=["basket", "item"])


# ---- the PFP split itself (no Spark): the groups' union is the local result -------------------


@settings(max_examples=60, deadline=None)
@given(
    baskets=st.lists(st.sets(st.integers(0, 9), max_size=8), min_size=1, max_size=40).filter(any),
    min_count=st.integers(1, 5),
    max_len=st.sampled_from([0, 2, 3]),
    n_groups=st.integers(1, 6),
)
def test_group_split_union_equals_local_mining(baskets, min_count, max_len, n_groups):
    enc = encode_baskets([sorted(b) for b in baskets])
    counts = np.bincount(enc.indices, minlength=enc.n_items).astype(np.int64)
    frequent = np.flatnonzero(counts >= min_count)
    by_rank = frequent[np.lexsort((frequent, counts[frequent]))]
    rank_of = np.full(enc.n_items, -1)
    rank_of[by_rank] = np.arange(len(by_rank))
    ranks = rank_of[enc.indices]
    keep = ranks >= 0
    row = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
    offsets = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=enc.n_rows))])
    bounds = rank_groups(counts[by_rank], enc.n_rows, n_groups)
    groups, g_off, g_ranks = project_for_groups(offsets, ranks[keep], bounds)
    found: dict[frozenset, int] = {frozenset([int(by_rank[r])]): int(counts[by_rank[r]]) for r in range(len(by_rank))}
    for g in range(len(bounds) - 1):
        rows = np.flatnonzero(groups == g)
        lens = g_off[rows + 1] - g_off[rows]
        ptr = np.concatenate([[0], np.cumsum(lens)])
        idx = np.concatenate([g_ranks[g_off[r] : g_off[r + 1]] for r in rows]) if len(rows) else np.zeros(0, np.int32)
        off, ids, cnt = mine_csr(ptr, idx.astype(np.int32), len(by_rank), min_count, max_len,
                                 counts[by_rank], np.arange(bounds[g], bounds[g + 1]))  # fmt: skip
        for i in range(len(cnt)):
            itemset = frozenset(int(by_rank[r]) for r in ids[off[i] : off[i + 1]])
            if len(itemset) >= 2:
                assert itemset not in found  # each itemset belongs to exactly one group
                found[itemset] = int(cnt[i])
    local = mine_csr(enc.indptr, enc.indices, enc.n_items, min_count, max_len)
    expected = {frozenset(local[1][local[0][i] : local[0][i + 1]].tolist()): int(c) for i, c in enumerate(local[2])}
    assert found == expected


# ---- Spark ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("min_support", "max_len", "n_groups"), [(0.04, None, 4), (5, 3, 1)])
def test_parallel_fpgrowth_equals_local_and_brute_force(spark, min_support, max_len, n_groups):
    baskets = _baskets(1, 200, 12, 6)
    pdf = _long(baskets)
    result = frequent_itemsets(spark.createDataFrame(pdf), "basket", "item", min_support, max_len, n_groups)
    got = mined(result.mine())
    local = FPGrowth.from_transactions(pdf, "basket", "item", min_support, max_len)
    assert got == mined(local.mine())
    min_count = local.min_count
    assert got == brute_force(baskets, min_count, max_len)
    ours = result.association_rules("confidence", 0.3)
    theirs = local.association_rules("confidence", 0.3)
    key = ["antecedents", "consequents"]
    for frame in (ours, theirs):
        frame[key] = frame[key].map(lambda s: tuple(sorted(s)))
    pd.testing.assert_frame_equal(
        ours.sort_values(key).reset_index(drop=True), theirs.sort_values(key).reset_index(drop=True)
    )


def test_relay_all_gather_returns_every_task_bytes_in_partition_order():
    """The driver relay used by the one-job ALS: each round every peer gets every peer's payload."""
    import threading

    from rusket_core.spark.relay import Peer, Relay

    n, rounds = 3, 4
    got: dict[int, list] = {}
    with Relay("127.0.0.1") as relay:
        with pytest.raises(ConnectionError):  # a wrong secret is turned away
            Peer(relay.address, "not-the-secret", 0, n).all_gather(b"x")

        def task(p: int) -> None:
            peer = Peer(relay.address, relay.secret, p, n)
            got[p] = [peer.all_gather(bytes([p, r]) * (p + 1)) for r in range(rounds)]
            peer.close()

        threads = [threading.Thread(target=task, args=(p,)) for p in reversed(range(n))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    expected = [[bytes([p, r]) * (p + 1) for p in range(n)] for r in range(rounds)]
    assert got == {p: expected for p in range(n)}


def test_relay_all_to_all_routes_each_message_to_its_task():
    """The relay's shuffle used by the one-job ALS: task q receives message q of every task, in partition
    order, and all-gather rounds still work after it."""
    import threading

    from rusket_core.spark.relay import Peer, Relay

    n = 3
    got: dict[int, list] = {}
    with Relay("127.0.0.1") as relay:

        def task(p: int) -> None:
            peer = Peer(relay.address, relay.secret, p, n)
            got[p] = [peer.all_to_all([bytes([p, q]) * (q + 1) for q in range(n)]), peer.all_gather(bytes([p]))]
            peer.close()

        threads = [threading.Thread(target=task, args=(p,)) for p in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert got == {q: [[bytes([p, q]) * (q + 1) for p in range(n)], [bytes([p]) for p in range(n)]] for q in range(n)}


def test_spark_als_with_an_empty_task_and_repartitioned_input_equals_local(spark):
    """The one-job fit over raw lines: a task holding no line, an input with more partitions than task
    slots (repartitioned), repeated unweighted lines counted once: the local labels, lists and factors."""
    pdf = pd.DataFrame({"user": ["b", "b", "b", "a", "a"], "item": [3.5, 1.0, 3.5, 1.0, 2.0]})
    params = {"factors": 3, "iterations": 4, "regularization": 0.1, "random_state": 2}
    local = ALS.from_transactions(pdf, "user", "item", **params).fit()
    one_user = pdf[pdf.user == "b"]
    for frame, want in (
        (spark.createDataFrame(one_user).repartition(2, "user"), ALS.from_transactions(one_user, "user", "item", **params).fit()),
        (spark.createDataFrame(pdf).repartition(5), local),
    ):  # fmt: skip
        remote = fit_als(frame, "user", "item", num_partitions=2, **params)
        assert remote.users == want.users and remote.items == want.items
        np.testing.assert_array_equal(remote.user_items.indptr, want.user_items.indptr)
        np.testing.assert_array_equal(remote.user_items.indices, want.user_items.indices)
        np.testing.assert_allclose(remote.user_factors, want.user_factors, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(remote.item_factors, want.item_factors, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="input is empty"):
        fit_als(spark.createDataFrame(pdf).limit(0), "user", "item")


def test_spark_validation_uses_the_local_messages(spark):
    pdf = pd.DataFrame({"basket": [1, 1, 2, 3], "item": ["a", None, "b", None]})
    with pytest.raises(ValueError) as local:
        FPGrowth.from_transactions(pdf, "basket", "item", 0.5)
    with pytest.raises(ValueError) as remote:
        frequent_itemsets(spark.createDataFrame(pdf), "basket", "item", 0.5)
    assert str(remote.value) == str(local.value) and "'item' has 2 null values" in str(local.value)
    rated = pd.DataFrame({"u": [1, 2], "i": [1, 2], "r": [1.0, -2.0]})
    with pytest.raises(ValueError, match="'r' has 1 negative values") as remote:
        fit_als(spark.createDataFrame(rated), "u", "i", "r")
    with pytest.raises(ValueError, match="transaction column 'nope' not found"):
        frequent_itemsets(spark.createDataFrame(pdf), "nope", "item")
    # without a weight column the ALS encoder checks ids inside its one dictionary job
    with pytest.raises(ValueError) as local:
        ALS.from_transactions(pdf, "item", "basket")
    with pytest.raises(ValueError) as remote:
        fit_als(spark.createDataFrame(pdf), "item", "basket")
    assert str(remote.value) == str(local.value) and "'item' has 2 null values" in str(local.value)


def _interactions(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 900
    return pd.DataFrame(
        {
            "user": [f"u{u:03d}" for u in rng.integers(0, 120, n)],
            "item": rng.integers(0, 40, n) * 7 + 100,
            "rating": rng.integers(1, 4, n).astype(float),
        }
    )


@pytest.fixture(scope="module")
def als_pair(spark):
    """The same ALS fitted locally and on Spark (same seed)."""
    pdf = _interactions()
    params = {"factors": 8, "iterations": 3, "regularization": 0.1, "random_state": 5}
    remote = fit_als(spark.createDataFrame(pdf), "user", "item", "rating", num_partitions=3, **params)
    local = ALS.from_transactions(pdf, "user", "item", "rating", **params).fit()
    return local, remote


def test_spark_als_factors_equal_local(als_pair):
    local, remote = als_pair
    assert remote.users == local.users and remote.items == local.items
    np.testing.assert_array_equal(remote.user_items.indptr, local.user_items.indptr)
    np.testing.assert_array_equal(remote.user_items.indices, local.user_items.indices)
    np.testing.assert_allclose(remote.user_items.data, local.user_items.data)
    np.testing.assert_allclose(remote.user_factors, local.user_factors, atol=2e-3)
    np.testing.assert_allclose(remote.item_factors, local.item_factors, atol=2e-3)
    assert not np.allclose(remote.item_factors, 0)


def test_spark_cholesky_als_equals_local(spark):
    """The job-per-half-iteration path (``barrier=False``) gives the local factors too."""
    pdf = _interactions(4)
    params = {"factors": 6, "iterations": 2, "solver": "cholesky", "random_state": 1}
    remote = fit_als(spark.createDataFrame(pdf), "user", "item", num_partitions=3, barrier=False, **params)
    local = ALS.from_transactions(pdf, "user", "item", **params).fit()
    np.testing.assert_allclose(remote.item_factors, local.item_factors, atol=1e-4)


def _rows(frame: pd.DataFrame, key: str, other: str) -> dict:
    """{key: [(other, score), ...] best first} with scores rounded for the float compare."""
    frame = frame.sort_values([key, "score", other], ascending=[True, False, True])
    return {k: [(o, round(float(s), 4)) for o, s in zip(g[other], g["score"], strict=True)] for k, g in frame.groupby(key)}


def test_spark_batch_scoring_rows_equal_local(spark, als_pair):
    local, _ = als_pair
    remote = batch_recommend(local, n=5, spark=spark, num_partitions=3).toPandas()
    assert _rows(remote, "user_id", "item_id") == _rows(local.batch_recommend(n=5), "user_id", "item_id")
    seen = set(zip(*_interactions()[["user", "item"]].T.values, strict=True))
    assert not any((u, i) in seen for u, i in zip(remote["user_id"], remote["item_id"], strict=True))
    similar = batch_similar_items(local, n=3, spark=spark).toPandas()
    expected = local.batch_similar_items(n=3)
    assert _rows(similar, "item_id", "similar_item_id") == _rows(expected, "item_id", "similar_item_id")


def test_factor_exports_as_spark_frames(spark, als_pair):
    local, _ = als_pair
    users = local.export_user_factors(format="spark")
    assert users.count() == len(local.users)
    first = users.orderBy("id").first()
    assert first["label"] == local.users.take([0])[0]
    np.testing.assert_allclose(first["vector"], local.user_factors[0], rtol=1e-6)
    recs = local.batch_recommend(n=2, format="spark")
    assert recs.count() == 2 * len(local.users)


def test_spark_hybrid_recommendations_equal_local(spark, random_model):
    """The hybrid (ALS + embedding blend + cart rules) per Spark partition: the local rows, whatever the partitioning."""
    from rusket_core.hybrid import Recommender
    from rusket_core.spark import recommend_for_users
    from tests.library.test_chunked_recommend import _assert_same, _rules

    rng = np.random.default_rng(11)
    model = random_model(rng, np.arange(100, 160), 24, density=0.25)
    universe = np.r_[model.items.values, np.arange(1, 9, 2)]
    carts = {int(u): sorted(rng.choice(universe, rng.integers(0, 4), replace=False).tolist()) for u in range(110, 160)}
    labels = model.items.values[rng.permutation(24)[:20]]  # four items without an embedding
    embeddings = pd.DataFrame({"label": labels, "vector": list(rng.normal(size=(20, 5)).astype(np.float32))})
    rec = Recommender(model, rules_df=_rules(rng, universe, 60), item_embeddings=embeddings, carts=carts,
                      alpha=0.6, rules_weight=0.35)  # fmt: skip
    want = rec.recommend_for_users(n=5, format="arrow")
    assert {"model", "model+rules"} <= set(want["source"].to_pylist()) and rec.missing_embeddings == 4
    got = recommend_for_users(rec, n=5, spark=spark, num_partitions=3, chunk_size=7).toArrow()
    order = pc.sort_indices(got, [("user_id", "ascending"), ("rank", "ascending")])
    _assert_same(got.take(order).cast(want.schema), want)


@pytest.mark.parametrize("weight_col", [None, "rating"])
def test_spark_encoding_equals_local_encoding(spark, weight_col):
    """Dense codes computed on Spark: the local encoder's labels and CSR (repeats collapse, weights add up)."""
    from scipy import sparse

    from rusket_core.encoding import encode_transactions
    from rusket_core.spark import encode

    pdf = _interactions(seed=9)  # string users, int items, repeated pairs
    local = encode_transactions(pdf, "user", "item", weight_col)
    remote = encode(spark.createDataFrame(pdf), "user", "item", weight_col)
    assert list(remote.rows.values) == list(local.rows.values) and list(remote.items.values) == list(local.items.values)
    pairs = remote.pairs.toPandas()
    assert remote.n_rows == local.n_rows and len(pairs) == local.nnz and remote.has_weights == (weight_col is not None)
    got = sparse.csr_array((pairs["weight"], (pairs["row"], pairs["item"])), shape=(local.n_rows, local.n_items))
    np.testing.assert_allclose(got.toarray(), local.to_scipy().toarray(), rtol=1e-6)
