"""Evaluation: hand-computed metrics, seeded splits, evaluate() consistency, popularity baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from rusket_core.evaluation import (
    PopularityRecommender,
    coverage,
    evaluate,
    leave_last_out,
    map_at_k,
    ndcg_at_k,
    planted_interactions,
    precision_at_k,
    recall_at_k,
    train_test_split,
)
from rusket_core.factorization import ALS

RECS = [["a", "b", "c"], ["d", "e", "f"], ["a", "x", "y"]]
REL = [{"a", "c"}, {"g"}, set()]  # the third user has nothing relevant: left out of the means


def test_metrics_match_hand_computed_values():
    assert precision_at_k(RECS, REL, k=3) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k(RECS, REL, k=3) == pytest.approx((1 + 0) / 2)
    ndcg_user0 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k(RECS, REL, k=3) == pytest.approx(ndcg_user0 / 2)
    assert map_at_k(RECS, REL, k=3) == pytest.approx(((1 + 2 / 3) / 2) / 2)
    assert precision_at_k(RECS, REL, k=1) == pytest.approx(0.5)
    assert precision_at_k([["a"]], [{"a", "b"}], k=2) == pytest.approx(0.5)  # hits / k
    assert coverage(RECS, n_items=10) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="users"):
        precision_at_k(RECS, REL[:2])


def test_random_split_is_seeded_per_user_and_pair_consistent():
    df = planted_interactions(n_users=200, n_items=80, n_interactions=4000, random_state=1)
    df = pd.concat([df, df.iloc[:300]], ignore_index=True)  # repeated pairs
    train, test = train_test_split(df, "user_id", "item_id", test_fraction=0.25, random_state=5)
    again, _ = train_test_split(df, "user_id", "item_id", test_fraction=0.25, random_state=5)
    other, _ = train_test_split(df, "user_id", "item_id", test_fraction=0.25, random_state=6)
    assert train.index.equals(again.index) and not train.index.equals(other.index)
    assert len(train) + len(test) == len(df)
    train_pairs = set(zip(train.user_id, train.item_id, strict=True))
    test_pairs = set(zip(test.user_id, test.item_id, strict=True))
    assert not train_pairs & test_pairs
    assert set(train.user_id) == set(df.user_id)  # everyone keeps a training item
    distinct = df.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
    held = test.drop_duplicates(["user_id", "item_id"]).groupby("user_id").size()
    expected = np.minimum(np.floor(0.25 * distinct + 0.5), distinct - 1)
    assert held.reindex(distinct.index, fill_value=0).equals(expected.astype(held.dtype))


def test_split_keeps_the_input_library():
    df = pl.from_pandas(planted_interactions(n_users=50, n_items=20, n_interactions=400))
    train, test = train_test_split(df, "user_id", "item_id")
    assert isinstance(train, pl.DataFrame) and train.schema == df.schema
    tr, te = leave_last_out(df.to_arrow(), "user_id", "item_id", "timestamp")
    assert tr.num_rows + te.num_rows == len(df)


def test_leave_last_out_holds_out_the_latest_item():
    df = pd.DataFrame(
        {
            "u": [1, 1, 1, 1, 2, 2, 3],
            "i": ["a", "b", "a", "c", "x", "x", "z"],
            "t": [1, 5, 2, 3, 1, 9, 4],
        }
    )
    train, test = leave_last_out(df, "u", "i", "t")
    assert sorted(zip(test.u, test.i, strict=True)) == [(1, "b")]  # user 2 and 3: one item only
    assert len(train) == 6
    df2 = pd.DataFrame({"u": [1, 1, 1], "i": ["a", "b", "a"], "t": [1, 2, 3]})
    train2, test2 = leave_last_out(df2, "u", "i", "t")
    assert test2.i.tolist() == ["a", "a"] and train2.i.tolist() == ["b"]  # all rows of the pair
    with pytest.raises(ValueError, match="'t'"):
        leave_last_out(df.assign(t=[1, None, 2, 3, 4, 5, 6]), "u", "i", "t")
    with pytest.raises(ValueError, match="'nope'"):
        train_test_split(df, "nope", "i")
    with pytest.raises(ValueError, match="empty"):
        train_test_split(df.iloc[:0], "u", "i")
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(df, "u", "i", test_fraction=1.0)


def test_evaluate_agrees_with_the_list_metrics():
    df = planted_interactions(n_users=150, n_items=60, n_interactions=2500, random_state=2)
    train, test = train_test_split(df, "user_id", "item_id", random_state=0)
    model = ALS.from_transactions(train, "user_id", "item_id", factors=8, iterations=5).fit()
    result = evaluate(model, train, test, k=5)
    users = sorted(set(test.user_id))
    recs = [model.recommend_items(u, n=5)[0].tolist() for u in users]
    rel = [set(test.item_id[test.user_id == u]) for u in users]
    assert result["precision"] == pytest.approx(precision_at_k(recs, rel, 5))
    assert result["recall"] == pytest.approx(recall_at_k(recs, rel, 5))
    assert result["ndcg"] == pytest.approx(ndcg_at_k(recs, rel, 5))
    assert result["map"] == pytest.approx(map_at_k(recs, rel, 5))
    assert result["coverage"] == pytest.approx(coverage(recs, len(model.items)))
    assert result["n_users"] == len(users) and result["k"] == 5
    assert evaluate(model, None, test, k=5) == result  # default train = the model's own


def test_evaluate_counts_unknown_users_and_items():
    train = pd.DataFrame({"u": [1, 1, 2, 2, 3], "i": [10, 11, 10, 12, 11]})
    pop = PopularityRecommender.from_transactions(train, "u", "i").fit()
    test = pd.DataFrame({"u": [1, 1, 9, 9, 8], "i": [12, 99, 10, 11, 10]})
    result = evaluate(pop, None, test, k=2)
    assert result["n_users"] == 1 and result["n_users_skipped"] == 2
    # user 1 saw 10, 11: the only candidate is 12, a hit; item 99 is unknown but relevant
    assert result["precision"] == pytest.approx(0.5) and result["recall"] == pytest.approx(0.5)
    with pytest.raises(KeyError, match="77"):
        evaluate(pop, pd.DataFrame({"u": [77], "i": [10]}), test, k=2)


def test_popularity_ranks_by_user_count_and_works_on_matrices():
    m = sp.csr_array(np.array([[1, 0, 1, 0], [0, 0, 1, 1], [5, 0, 1, 0]], dtype=np.float32))
    pop = PopularityRecommender().fit(m)
    items, scores = pop.recommend_items(1, n=4)
    assert items.tolist() == [0, 1] and scores.tolist() == [2.0, 0.0]
    items, _ = pop.recommend_items(1, n=4, exclude_seen=False)
    assert items.tolist() == [2, 0, 3, 1]
    test = sp.csr_array(np.array([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    # top-2 unseen: user 0 -> [3, 1] (2 hits), user 1 -> [0, 1] (1 hit), user 2 -> [3, 1] (1 hit)
    result = evaluate(pop, None, test, k=2)
    assert result["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert result["recall"] == pytest.approx(1.0)
    assert result["coverage"] == pytest.approx(3 / 4)


def test_planted_interactions_is_seeded_and_structured():
    a = planted_interactions(n_users=100, n_items=50, n_interactions=1000, random_state=4)
    b = planted_interactions(n_users=100, n_items=50, n_interactions=1000, random_state=4)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 1000 and a.groupby("user_id").size().min() >= 2
    same_cluster = np.mean(a.user_id % 10 == a.item_id % 10)
    assert 0.75 < same_cluster < 0.9  # 0.8 planted + 0.2 * 1/10 by chance
