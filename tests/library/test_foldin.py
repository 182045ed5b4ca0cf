"""Fold-in and warm start: exact rows against numpy, model updates, planted agreement with full fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusket_core.evaluation import planted_interactions
from rusket_core.factorization import ALS, BPR

ALPHA, REG = 5.0, 0.3


def _frame(rng, n_users, n_items, n, user0=0):
    return pd.DataFrame(
        {
            "user": rng.integers(user0, user0 + n_users, n),
            "item": rng.integers(0, n_items, n),
            "rating": rng.integers(0, 4, n).astype(np.float64),
        }
    )


def _model(df, rating="rating", **params):
    params = {"factors": 5, "iterations": 4, "alpha": ALPHA, "regularization": REG, **params}
    return ALS.from_transactions(df, "user", "item", rating, **params).fit()


def _numpy_row(Y, ratings: dict[int, float], alpha=ALPHA, reg=REG):
    """Reference: (Y^T C Y + reg I) x = Y^T C p with c = 1 + alpha * r on observed entries."""
    Y = Y.astype(np.float64)
    c = np.ones(len(Y))
    p = np.zeros(len(Y))
    for i, r in ratings.items():
        c[i] = 1 + alpha * r
        p[i] = 1
    A = Y.T @ (Y * c[:, None]) + reg * np.eye(Y.shape[1])
    return np.linalg.solve(A, Y.T @ (c * p))


def _summed(df, key, other):
    """{key label: {other index-label: summed rating}} of a long frame."""
    out: dict = {}
    for k, o, r in df[[key, other, "rating"]].itertuples(index=False):
        out.setdefault(k, {}).setdefault(o, 0.0)
        out[k][o] += r
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), solver=st.sampled_from(["cg", "cholesky"]))
def test_recalculate_users_is_the_exact_least_squares_row(seed, solver):
    rng = np.random.default_rng(seed)
    model = _model(_frame(rng, 15, 9, 60), solver=solver)
    before = model.user_factors.copy(), len(model.users), model.user_items.nnz
    # known users (0..14) and new ones (100..104), repeated pairs, zero ratings
    fold = pd.concat([_frame(rng, 15, 9, 30), _frame(rng, 5, 9, 15, user0=100)])
    fold = fold[fold["item"].isin(model.items.values)]
    labels, X = model.recalculate_users(fold)
    item_index = {label: i for i, label in enumerate(model.items.values)}
    expected = _summed(fold, "user", "item")
    assert sorted(labels.tolist()) == sorted(expected)
    for label, x in zip(labels, X, strict=True):
        ratings = {item_index[i]: r for i, r in expected[label].items()}
        np.testing.assert_allclose(x, _numpy_row(model.item_factors, ratings), rtol=2e-4, atol=2e-5)
    # the model is unchanged
    assert np.array_equal(model.user_factors, before[0])
    assert (len(model.users), model.user_items.nnz) == before[1:]


@pytest.mark.parametrize("seed", [0, 1])
def test_recalculate_items_is_the_exact_least_squares_row(seed):
    rng = np.random.default_rng(seed)
    model = _model(_frame(rng, 12, 10, 70))
    fold = _frame(rng, 12, 10, 25)
    fold["item"] += 8  # items 8, 9 known, the rest new
    fold = fold[fold["user"].isin(model.users.values)]
    labels, X = model.recalculate_items(pl.from_pandas(fold))
    user_index = {label: u for u, label in enumerate(model.users.values)}
    expected = _summed(fold, "item", "user")
    for label, x in zip(labels, X, strict=True):
        ratings = {user_index[u]: r for u, r in expected[label].items()}
        np.testing.assert_allclose(x, _numpy_row(model.user_factors, ratings), rtol=2e-4, atol=2e-5)
    one = model.recalculate_item(int(labels[0]), {int(u): r for u, r in expected[labels[0]].items()})
    np.testing.assert_allclose(one, X[0], rtol=1e-6)


def test_recalculate_user_input_forms_agree_and_ratings_follow_fit():
    rng = np.random.default_rng(3)
    model = _model(_frame(rng, 10, 8, 50))
    items = [int(model.items.values[i]) for i in (0, 2, 5)]
    by_mapping = model.recalculate_user(77, {items[0]: 2.0, items[1]: 0.0, items[2]: 1.5})
    frame = pd.DataFrame({"item": [items[0], items[0], items[1], items[2]], "rating": [1.5, 0.5, 0.0, 1.5]})
    np.testing.assert_allclose(model.recalculate_user(77, frame), by_mapping, rtol=1e-6)
    ref = _numpy_row(model.item_factors, {0: 2.0, 2: 0.0, 5: 1.5})
    np.testing.assert_allclose(by_mapping, ref, rtol=2e-4, atol=2e-5)
    # without a rating column each interaction counts once: confidence 1 + alpha
    plain = _model(_frame(rng, 10, 8, 50), rating=None)
    x = plain.recalculate_user(3, [int(plain.items.values[1]), int(plain.items.values[4])])
    np.testing.assert_allclose(x, _numpy_row(plain.item_factors, {1: 1.0, 4: 1.0}), rtol=2e-4, atol=2e-5)


def test_partial_fit_users_updates_only_those_rows_and_the_training_matrix():
    rng = np.random.default_rng(5)
    train = _frame(rng, 20, 12, 120)
    model = _model(train)
    users0, items0 = model.user_factors.copy(), model.item_factors.copy()
    labels0 = model.users.values.copy()
    day = pd.concat([_frame(rng, 3, 12, 10, user0=2), _frame(rng, 2, 12, 6, user0=500)])
    day = day[day["item"].isin(model.items.values)]
    model.partial_fit_users(day)
    # labels extended at the end; untouched users and all items keep their factors bit for bit
    new = sorted(set(day["user"]) - set(labels0))
    assert model.users.values[: len(labels0)].tolist() == labels0.tolist()
    assert model.users.values[len(labels0) :].tolist() == new
    changed = model.users.indices_of(sorted(set(day["user"])))
    untouched = np.setdiff1d(np.arange(len(labels0)), changed)
    assert np.array_equal(model.user_factors[untouched], users0[untouched])
    assert np.array_equal(model.item_factors, items0)
    # the training matrix is what from_transactions builds on the concatenated history
    both = ALS.from_transactions(pd.concat([train, day]), "user", "item", "rating")
    order = model.users.indices_of(both.users.values)
    mine = model.user_items.to_scipy()[order][:, model.items.indices_of(both.items.values)]
    np.testing.assert_allclose(mine.toarray(), both.user_items.to_scipy().toarray(), rtol=1e-6)
    # each changed row is the exact solution for its whole (old + new) history
    item_index = {label: i for i, label in enumerate(model.items.values)}
    history = _summed(pd.concat([train, day]), "user", "item")
    for u in changed:
        ratings = {item_index[i]: r for i, r in history[model.users.values[u]].items()}
        np.testing.assert_allclose(
            model.user_factors[u], _numpy_row(model.item_factors, ratings), rtol=2e-4, atol=2e-5
        )
    # a folded-in customer is served like any other: seen items excluded
    recs, _ = model.recommend_items(new[0], n=20)
    assert not set(recs) & set(day.loc[day["user"] == new[0], "item"])
    assert new[0] in set(model.batch_recommend(n=3)["user_id"])


def test_partial_fit_replace_solves_from_the_given_rows_only():
    rng = np.random.default_rng(6)
    model = _model(_frame(rng, 10, 8, 60))
    u = int(model.users.values[4])
    item = int(model.items.values[3])
    model.partial_fit_users({u: {item: 2.0}}, replace=True)
    row = model.user_items.to_scipy()[[model.users.index_of(u)]].toarray()[0]
    assert row.nonzero()[0].tolist() == [3] and row[3] == 2.0
    np.testing.assert_allclose(
        model.user_factors[model.users.index_of(u)], _numpy_row(model.item_factors, {3: 2.0}), rtol=2e-4
    )


def test_partial_fit_items_adds_items_that_can_be_recommended():
    rng = np.random.default_rng(7)
    model = _model(_frame(rng, 15, 8, 80))
    users0 = model.user_factors.copy()
    fans = [int(v) for v in model.users.values[:5]]
    model.partial_fit_items({900: {u: 3.0 for u in fans}})
    assert model.items.values[-1] == 900 and model.item_factors.shape[0] == len(model.items)
    assert np.array_equal(model.user_factors, users0)
    np.testing.assert_allclose(
        model.item_factors[-1], _numpy_row(model.user_factors, {u: 3.0 for u in range(5)}), rtol=2e-4, atol=2e-5
    )
    who, _ = model.recommend_users(900, n=20)
    assert not set(who) & set(fans)
    assert 900 not in model.recommend_items(fans[0], n=len(model.items))[0]


def test_fold_in_agrees_with_the_full_fit_on_planted_data():
    df = planted_interactions(n_users=600, n_items=200, n_interactions=12_000, n_clusters=6, random_state=3)
    held = df["user_id"].isin(range(0, 600, 30))
    params = {"factors": 16, "iterations": 15, "solver": "cholesky", "regularization": 0.1, "alpha": 10.0}
    full = ALS.from_transactions(df, "user_id", "item_id", **params).fit()
    # against the full model's converged items, fold-in reproduces its rows and recommendations
    labels, X = full.recalculate_users(df[held])
    rows = full.users.indices_of(labels)
    assert np.abs(X - full.user_factors[rows]).max() < 0.1 * np.abs(full.user_factors[rows]).max()
    copy = ALS.from_transactions(df, "user_id", "item_id", **params).fit()
    copy.user_factors[rows] = X
    overlap = [
        len(set(copy.recommend_items(u)[0]) & set(full.recommend_items(u)[0])) / 10 for u in labels
    ]
    assert np.mean(overlap) >= 0.9
    # users held out of training and folded in find their planted cluster as well as a full refit
    part = ALS.from_transactions(df[~held], "user_id", "item_id", **params).fit()
    part.partial_fit_users(df[held])
    users = sorted(set(df.loc[held, "user_id"]))

    def cluster_share(model):
        rec = model.batch_recommend(n=10, users=users)
        return float(((rec["item_id"] % 6) == (rec["user_id"] % 6)).mean())

    assert cluster_share(part) >= cluster_share(full) - 0.05
    assert cluster_share(part) > 0.7


def test_save_load_round_trips_after_partial_fit(tmp_path):
    rng = np.random.default_rng(8)
    model = _model(_frame(rng, 10, 8, 60))
    model.partial_fit_users({1000: {int(model.items.values[0]): 1.0}, 3: {int(model.items.values[1]): 2.0}})
    loaded = ALS.load(model.save(tmp_path / "m.npz"))
    assert loaded.users == model.users and loaded.items == model.items
    assert np.array_equal(loaded.user_factors, model.user_factors)
    assert (loaded.user_items.to_scipy() != model.user_items.to_scipy()).nnz == 0
    assert loaded.recommend_items(1000)[0].tolist() == model.recommend_items(1000)[0].tolist()


def test_string_labels_and_bad_input_are_named():
    df = pd.DataFrame({"user": ["a", "a", "b", "c"], "item": ["x", "y", "y", "z"]})
    model = ALS.from_transactions(df, "user", "item", factors=3, iterations=2).fit()
    model.partial_fit_users(pd.DataFrame({"user": ["d", "a"], "item": ["z", "z"]}))
    assert model.users.values.tolist() == ["a", "b", "c", "d"]
    with pytest.raises(KeyError, match="'nope'"):
        model.recalculate_user("e", ["nope"])
    with pytest.raises(KeyError, match="id type"):
        model.partial_fit_users(pd.DataFrame({"user": [1], "item": ["x"]}))
    with pytest.raises(ValueError, match="no ratings"):
        model.recalculate_user("e", {"x": 1.0})
    rated = _model(_frame(np.random.default_rng(0), 5, 4, 20))
    with pytest.raises(ValueError, match="'rating'"):
        rated.partial_fit_users(pd.DataFrame({"user": [1], "item": [0], "rating": [-1.0]}))
    with pytest.raises(ValueError, match="rating"):
        rated.partial_fit_users(pd.DataFrame({"user": [1], "item": [0]}))
    with pytest.raises(ValueError, match="uses ratings"):
        rated.recalculate_user(1, [0])
    n = rated.user_items.nnz
    with pytest.raises(KeyError, match="partial_fit_items"):
        rated.partial_fit_users(pd.DataFrame({"user": [1], "item": [99], "rating": [1.0]}))
    assert rated.user_items.nnz == n


def test_warm_start_copies_rows_by_label_and_reaches_the_cold_loss_faster():
    df = planted_interactions(n_users=600, n_items=200, n_interactions=12_000, n_clusters=6, random_state=3)
    params = {"factors": 16, "solver": "cholesky", "regularization": 0.1, "alpha": 10.0}
    old = ALS.from_transactions(df[df["user_id"] >= 30], "user_id", "item_id", iterations=15, **params).fit()
    # iterations=0: known labels get the old rows, new labels the cold fit's initial rows
    warm0 = ALS.from_transactions(df, "user_id", "item_id", iterations=0, **params).fit(init=old)
    cold0 = ALS.from_transactions(df, "user_id", "item_id", iterations=0, **params).fit()
    known = warm0.users.values >= 30
    assert np.array_equal(warm0.user_factors[known], old.user_factors[old.users.indices_of(warm0.users.values[known])])
    assert np.array_equal(warm0.user_factors[~known], cold0.user_factors[~known])
    assert np.array_equal(warm0.item_factors, old.item_factors[old.items.indices_of(warm0.items.values)])
    # two warm iterations land within 1 % of a 15-iteration cold fit's loss; two cold ones do not
    cold = ALS.from_transactions(df, "user_id", "item_id", iterations=15, **params).fit().training_loss()
    warm = ALS.from_transactions(df, "user_id", "item_id", iterations=2, **params).fit(init=old)
    short = ALS.from_transactions(df, "user_id", "item_id", iterations=2, **params).fit()
    assert warm.training_loss() <= 1.01 * cold
    assert short.training_loss() > 1.05 * cold
    # init may be the model itself: zero iterations keep every row
    rows = old.user_factors.copy(), old.item_factors.copy()
    old.iterations = 0
    old.fit(init=old)
    assert np.array_equal(old.user_factors, rows[0]) and np.array_equal(old.item_factors, rows[1])
    with pytest.raises(ValueError, match="factors"):
        ALS.from_transactions(df, "user_id", "item_id", factors=8).fit(init=old)
    with pytest.raises(TypeError, match="ALS"):
        ALS.from_transactions(df, "user_id", "item_id", factors=16).fit(init=BPR(factors=16))


def _bpr_setup():
    df = planted_interactions(n_users=600, n_items=200, n_interactions=12_000, n_clusters=6, random_state=3)
    held = df["user_id"].isin(range(0, 600, 30))
    params = {"factors": 16, "iterations": 60, "random_state": 1}
    return df, held, params


@pytest.mark.parametrize("threads", [1, 2])
def test_bpr_partial_fit_users_is_seeded_and_keeps_items_fixed(threads, tmp_path):
    df, held, params = _bpr_setup()
    base = BPR.from_transactions(df[~held], "user_id", "item_id", num_threads=1, **params).fit()
    saved = base.save(tmp_path / "bpr.npz")

    def fold(num_threads, **options):
        model = BPR.load(saved)
        model.num_threads = num_threads
        model.partial_fit_users(df[held], epochs=20, **options)
        assert np.array_equal(model.item_factors, base.item_factors)
        assert np.array_equal(model.user_factors[: len(base.users)], base.user_factors)
        return model.user_factors

    first = fold(threads)
    assert np.array_equal(fold(threads), first)
    assert np.array_equal(fold(1), first)  # rows share no state: the thread count does not matter
    assert not np.array_equal(fold(threads, random_state=9), first)


def test_bpr_fold_in_finds_the_planted_cluster_of_new_users():
    df, held, params = _bpr_setup()
    model = BPR.from_transactions(df[~held], "user_id", "item_id", **params).fit()
    users = sorted(set(df.loc[held, "user_id"]))
    model.partial_fit_users(df[held])
    rec = model.batch_recommend(n=10, users=users)
    assert ((rec["item_id"] % 6) == (rec["user_id"] % 6)).mean() > 0.7
    assert len(model.items) == 200


def _bpr_item_setup():
    df = planted_interactions(n_users=600, n_items=200, n_interactions=12_000, n_clusters=6, random_state=3)
    held = df["item_id"].isin(range(0, 200, 25))  # 8 new products, several clusters
    params = {"factors": 16, "iterations": 60, "random_state": 1}
    return df, held, params


def test_bpr_item_fold_in_places_new_items_among_their_planted_cluster():
    df, held, params = _bpr_item_setup()
    model = BPR.from_transactions(df[~held], "user_id", "item_id", **params).fit()
    users0, items0 = model.user_factors.copy(), model.item_factors.copy()
    model.partial_fit_items(df[held])
    new = sorted(set(df.loc[held, "item_id"]))
    assert list(model.items.values[-len(new):]) == new
    assert np.array_equal(model.user_factors, users0) and np.array_equal(model.item_factors[:200 - len(new)], items0)
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    old = unit[: -len(new)]
    same = []
    for row, item in zip(unit[-len(new):], new, strict=True):
        top = model.items.values[np.argsort(-(old @ row))[:10]]
        same.append(np.mean(top % 6 == item % 6))
    assert np.mean(same) > 0.6  # chance: 1/6
    # the new products are ranked for their cluster's customers like the old ones
    users = list(range(0, 600, 7))
    rec = model.batch_recommend(n=10, users=users)
    assert ((rec["item_id"] % 6) == (rec["user_id"] % 6)).mean() > 0.7


@pytest.mark.parametrize("threads", [1, 2])
def test_bpr_partial_fit_items_is_seeded(threads, tmp_path):
    df, held, params = _bpr_item_setup()
    saved = BPR.from_transactions(df[~held], "user_id", "item_id", num_threads=1, **params).fit().save(tmp_path / "b.npz")

    def fold(num_threads, **options):
        model = BPR.load(saved)
        model.num_threads = num_threads
        model.partial_fit_items(df[held], epochs=20, **options)
        return model.item_factors

    first = fold(threads)
    assert np.array_equal(fold(threads), first)
    assert np.array_equal(fold(1), first)  # rows share no state: the thread count does not matter
    assert not np.array_equal(fold(threads, random_state=9), first)


def test_bpr_warm_start_copies_rows_by_label():
    df, held, params = _bpr_setup()
    old = BPR.from_transactions(df[~held], "user_id", "item_id", **params).fit()
    zero = {**params, "iterations": 0}
    warm = BPR.from_transactions(df, "user_id", "item_id", **zero).fit(init=old)
    cold = BPR.from_transactions(df, "user_id", "item_id", **zero).fit()
    known = ~np.isin(warm.users.values, df.loc[held, "user_id"].unique())
    rows = old.users.indices_of(warm.users.values[known])
    assert np.array_equal(warm.user_factors[known], old.user_factors[rows])
    assert np.array_equal(warm.user_factors[~known], cold.user_factors[~known])
    assert np.array_equal(warm.item_factors, old.item_factors[old.items.indices_of(warm.items.values)])


def test_partial_fit_adds_new_items_and_leaves_every_batch_user_exact():
    rng = np.random.default_rng(11)
    train = _frame(rng, 20, 10, 120)
    model = _model(train)
    users0, n_items0 = model.user_factors.copy(), len(model.items)
    batch = pd.DataFrame(
        {
            "user": [1, 1, 2, 500, 500, 501, 3],
            "item": [0, 70, 4, 70, 71, 2, 71],  # 70, 71 new; 500, 501 new customers
            "rating": [1.0, 2.0, 1.0, 3.0, 1.0, 2.0, 0.5],
        }
    )
    model.partial_fit(batch)
    assert model.items.values[n_items0:].tolist() == [70, 71]
    assert sorted(model.users.values[-2:].tolist()) == [500, 501]  # 500 bought only new items
    untouched = np.setdiff1d(np.arange(len(users0)), model.users.indices_of([1, 2, 3]))
    assert np.array_equal(model.user_factors[untouched], users0[untouched])
    item_index = {label: i for i, label in enumerate(model.items.values)}
    history = _summed(pd.concat([train, batch]), "user", "item")
    for label in (1, 2, 3, 500, 501):
        ratings = {item_index[i]: r for i, r in history[label].items()}
        np.testing.assert_allclose(
            model.user_factors[model.users.index_of(label)],
            _numpy_row(model.item_factors, ratings),
            rtol=2e-4,
            atol=2e-5,
        )
    # the new items are in their buyers' training rows, so never recommended back to them
    assert not {70, 71} & set(model.recommend_items(500, n=len(model.items))[0].tolist())
    bpr = BPR.from_transactions(train, "user", "item", factors=4, iterations=2).fit()
    bpr.partial_fit(batch[["user", "item"]])  # BPR takes in new products too
    assert {70, 71} <= set(bpr.items.values.tolist()) and 500 in set(bpr.users.values.tolist())
    assert np.isfinite(bpr.item_factors).all() and len(bpr.item_factors) == len(bpr.items)


def test_partial_fit_with_only_new_items_and_a_failure_leaves_the_model_as_it_was():
    rng = np.random.default_rng(12)
    model = _model(_frame(rng, 10, 6, 50))
    state = model.user_factors.copy(), model.item_factors.copy(), model.user_items.nnz, len(model.users)
    bad = pd.DataFrame({"user": [1, 600, 2], "item": [0, 80, 81], "rating": [1.0, 1.0, np.nan]})
    with pytest.raises(ValueError, match="'rating'"):
        model.partial_fit(bad)
    assert np.array_equal(model.user_factors, state[0]) and np.array_equal(model.item_factors, state[1])
    assert (model.user_items.nnz, len(model.users), len(model.items)) == (state[2], state[3], 6)
    model.partial_fit(pd.DataFrame({"user": [600, 1], "item": [80, 80], "rating": [1.0, 2.0]}))
    assert model.items.values[-1] == 80 and model.users.values[-1] == 600
    np.testing.assert_allclose(
        model.user_factors[-1], _numpy_row(model.item_factors, {6: 1.0}), rtol=2e-4, atol=2e-5
    )
