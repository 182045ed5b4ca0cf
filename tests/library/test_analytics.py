"""Analytics: substitutes from rules, customer saturation, cross-sell potential."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_core.analytics import (
    _descending_order,
    customer_saturation,
    find_substitutes,
    score_potential,
)
from rusket_core.encoding import Encoded, Labels
from rusket_core.factorization import ALS


def _rules() -> pd.DataFrame:
    # supports: a .5, b .4, c .3, d .2 ; pairs ab .1 (lift .5), ac .15 (lift 1), cd .03 (lift .5)
    return pd.DataFrame(
        {
            "antecedents": [["a"], ["b"], ["a"], ["d"], ["a", "d"]],
            "consequents": [["b"], ["a"], ["c"], ["c"], ["b"]],
            "antecedent support": [0.5, 0.4, 0.5, 0.2, 0.05],
            "consequent support": [0.4, 0.5, 0.3, 0.3, 0.4],
            "support": [0.1, 0.1, 0.15, 0.03, 0.001],
            "lift": [0.5, 0.5, 1.0, 0.5, 0.05],
        }
    )


def test_find_substitutes_hand_computed():
    subs = find_substitutes(_rules(), max_lift=0.8)
    assert isinstance(subs, pd.DataFrame)
    # one row per unordered pair; the multi-item rule is skipped; ties on lift go by item_a
    assert subs[["item_a", "item_b"]].values.tolist() == [["a", "b"], ["c", "d"]]
    ab, cd = subs.iloc[0], subs.iloc[1]
    assert ab["support_a"] == 0.5 and ab["support_b"] == 0.4 and ab["support"] == 0.1
    assert ab["lift"] == pytest.approx(0.5)
    assert ab["leverage"] == pytest.approx(-0.1)
    assert ab["jaccard"] == pytest.approx(0.125)
    assert ab["kulczynski"] == pytest.approx(0.225)
    assert ab["confidence_a_to_b"] == pytest.approx(0.2)
    assert ab["confidence_b_to_a"] == pytest.approx(0.25)
    # only d -> c was in the frame; the pair is still ordered (c, d) with c's support first
    assert cd["support_a"] == 0.3 and cd["support_b"] == 0.2
    assert cd["confidence_a_to_b"] == pytest.approx(0.1)
    assert cd["confidence_b_to_a"] == pytest.approx(0.15)
    assert find_substitutes(_rules(), max_lift=0.5).empty  # strictly below
    assert len(find_substitutes(_rules(), max_lift=1.01)) == 3


def test_find_substitutes_sorted_and_formats():
    rules = _rules()
    rules.loc[3, ["support", "lift"]] = [0.012, 0.2]  # c-d lift 0.2 now comes first
    subs = find_substitutes(pl.from_pandas(rules))
    assert isinstance(subs, pl.DataFrame)
    assert subs["item_a"].to_list() == ["c", "a"]
    assert subs["lift"].to_list() == pytest.approx([0.2, 0.5])
    assert isinstance(find_substitutes(rules, format="arrow"), pa.Table)


def test_find_substitutes_int_labels_and_frozensets():
    rules = _rules()
    code = {"a": 10, "b": 2, "c": 3, "d": 4}
    rules["antecedents"] = [frozenset(code[x] for x in s) for s in rules["antecedents"]]
    rules["consequents"] = [frozenset(code[x] for x in s) for s in rules["consequents"]]
    subs = find_substitutes(rules)
    assert subs[["item_a", "item_b"]].values.tolist() == [[2, 10], [3, 4]]
    assert subs["item_a"].dtype == np.int64
    assert subs.loc[0, "support_a"] == 0.4  # b's support, now the smaller label


def test_find_substitutes_errors():
    with pytest.raises(ValueError, match="'consequent support'"):
        find_substitutes(_rules().drop(columns=["consequent support"]))
    with pytest.raises(ValueError, match="max_lift"):
        find_substitutes(_rules(), max_lift=0)


def _purchases() -> pd.DataFrame:
    # customer -> categories: 7: {x,y,z}, 5: {x,y}, 9: {x}, 8: {y}; category "x" repeated for 7
    return pd.DataFrame(
        {
            "customer_id": [7, 7, 7, 7, 5, 5, 9, 8],
            "category_id": ["x", "y", "z", "x", "x", "y", "x", "y"],
        }
    )


def test_customer_saturation_hand_computed_with_ties():
    sat = customer_saturation(_purchases(), user_col="customer_id", category_col="category_id")
    assert sat["customer_id"].tolist() == [7, 5, 8, 9]
    assert sat["n_distinct"].tolist() == [3, 2, 1, 1]
    assert sat["share"].tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 1 / 3])
    # decile = 1 + floor(10 * (#customers with more) / 4): 0 -> 1, 1 -> 3, 2 -> 6 (tied pair shares it)
    assert sat["decile"].tolist() == [1, 3, 6, 6]


def test_customer_saturation_one_customer_all_tied_and_ten():
    one = customer_saturation(_purchases().iloc[:3], "customer_id", item_col="category_id")
    assert one.to_dict("list") == {"customer_id": [7], "n_distinct": [3], "share": [1.0], "decile": [1]}
    tied = pd.DataFrame({"u": ["p", "q", "r"], "i": [1, 2, 3]})
    assert customer_saturation(tied, "u", item_col="i")["decile"].tolist() == [1, 1, 1]
    # ten customers with 10..1 distinct items fill deciles 1..10 in order
    users = np.repeat(np.arange(10), np.arange(10, 0, -1))
    items = np.concatenate([np.arange(k) for k in range(10, 0, -1)])
    ten = customer_saturation(pl.DataFrame({"u": users, "i": items}), "u", item_col="i")
    assert isinstance(ten, pl.DataFrame)
    assert ten["u"].to_list() == list(range(10))
    assert ten["decile"].to_list() == list(range(1, 11))


def test_customer_saturation_errors():
    df = _purchases()
    with pytest.raises(ValueError, match="exactly one"):
        customer_saturation(df, "customer_id")
    with pytest.raises(ValueError, match="exactly one"):
        customer_saturation(df, "customer_id", category_col="category_id", item_col="category_id")
    with pytest.raises(ValueError, match="'segment'"):
        customer_saturation(df, "customer_id", category_col="segment")
    df.loc[2, "category_id"] = None
    with pytest.raises(ValueError, match="'category_id' has 1 null"):
        customer_saturation(df, "customer_id", category_col="category_id")


def _model() -> ALS:
    """Users 1001 (bought A) and 1002 (bought B, C); 2-D factors so CF scores are easy to read off."""
    model = ALS(factors=2)
    model.users = Labels(np.array([1001, 1002]))
    model.items = Labels(np.array(["A", "B", "C", "D"], dtype=object))
    model.user_factors = np.array([[1, 0], [0, 1]], dtype=np.float32)
    model.item_factors = np.array([[1, 0], [0.5, 0.5], [0.2, 0.9], [0.9, 0.1]], dtype=np.float32)
    model.user_items = Encoded(
        np.array([0, 1, 3]), np.array([0, 1, 2], dtype=np.int32), None, model.users, model.items
    )
    return model


def test_score_potential_items_hand_computed():
    hist = pd.DataFrame({"customer_id": [1001, 1002, 1002], "sku": ["A", "B", "C"]})
    out = score_potential(user_history=hist, model=_model(), target_categories=["B", "C", "D"])
    assert isinstance(out, pd.DataFrame)
    # 1001: B .5, C .2, D .9; 1002 bought B and C: D .1
    assert out[["user_id", "target"]].values.tolist() == [[1001, "D"], [1001, "B"], [1001, "C"], [1002, "D"]]
    assert out["score"].tolist() == pytest.approx([0.9, 0.5, 0.2, 0.1])
    top = score_potential(hist, _model(), np.array(["B", "C", "D"]), n=1, format="polars")
    assert isinstance(top, pl.DataFrame)
    assert top.rows() == [(1001, "D", pytest.approx(0.9)), (1002, "D", pytest.approx(0.1))]


def test_score_potential_categories_hand_computed():
    # categories x {A, B}, y {C, Q}, z {D}; Q is unknown to the model (scored never, bought still counts)
    mapping = {"A": "x", "B": "x", "C": "y", "D": "z", "Q": "y"}
    out = score_potential(None, _model(), mapping)  # history = the model's training interactions
    assert out[["user_id", "target"]].values.tolist() == [[1001, "z"], [1001, "y"], [1002, "z"]]
    assert out["score"].tolist() == pytest.approx([0.9, 0.2, 0.1])
    hist = pl.DataFrame({"u": [1001, 1002], "i": ["Q", "D"]})
    frame = pl.DataFrame({"item": ["A", "B", "C", "D", "Q"], "category": ["x", "x", "y", "z", "y"]})
    out = score_potential(hist, _model(), frame)
    assert isinstance(out, pl.DataFrame)
    # 1001 bought y through Q; x = max(A 1, B .5); 1002 bought z: x = max(0, .5), y = C .9
    assert out.rows() == [
        (1001, "x", pytest.approx(1.0)),
        (1001, "z", pytest.approx(0.9)),  # ties on score: customer, then target label order
        (1002, "y", pytest.approx(0.9)),
        (1002, "x", pytest.approx(0.5)),
    ]


def test_score_potential_matches_brute_force():
    rng = np.random.default_rng(7)
    n_users, n_items = 30, 40
    model = ALS(factors=3)
    model.users = Labels(np.arange(n_users) * 10)
    model.items = Labels(np.arange(n_items))
    model.user_factors = rng.normal(size=(n_users, 3)).astype(np.float32)
    model.item_factors = rng.normal(size=(n_items, 3)).astype(np.float32)
    bought = rng.random((n_users, n_items)) < 0.15
    u, i = np.nonzero(bought)
    hist = pa.table({"user": model.users.values[u], "item": i})
    category = rng.integers(0, 6, n_items)
    mapping = pd.DataFrame({"item": np.arange(n_items), "category": category})
    out = score_potential(hist, model, mapping, user_col="user", item_col="item")
    assert isinstance(out, pa.Table)
    scores = model.user_factors @ model.item_factors.T
    expected = {}
    for user in np.unique(u):
        for c in range(6):
            members = category == c
            if not (bought[user] & members).any():
                expected[(user * 10, c)] = scores[user, members].max()
    got = dict(zip(zip(out["user_id"].to_pylist(), out["target"].to_pylist(), strict=True), out["score"].to_pylist(), strict=True))
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v, rel=1e-5) for k, v in expected.items())
    assert (np.diff(out["score"].to_numpy()) <= 0).all()
    # n keeps each customer's best two categories of the same scores
    top = score_potential(hist, model, mapping, user_col="user", item_col="item", n=2)
    best_two = {}
    for (user, c), v in sorted(expected.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        if sum(k[0] == user for k in best_two) < 2:
            best_two[(user, c)] = v
    got_top = zip(top["user_id"].to_pylist(), top["target"].to_pylist(), top["score"].to_pylist(), strict=True)
    got_top = {(u, t): v for u, t, v in got_top}
    assert got_top.keys() == best_two.keys()
    assert all(got_top[k] == pytest.approx(v, rel=1e-5) for k, v in best_two.items())


def test_score_potential_errors():
    hist = pd.DataFrame({"customer_id": [1001, 4242], "sku": ["A", "B"]})
    with pytest.raises(KeyError, match="4242"):
        score_potential(hist, _model(), ["B"])
    with pytest.raises(KeyError, match="'Z'"):
        score_potential(None, _model(), ["B", "Z"])
    with pytest.raises(ValueError, match="user_col"):
        score_potential(hist.assign(extra=1), _model(), ["B"])
    with pytest.raises(ValueError, match="two columns"):
        score_potential(None, _model(), pd.DataFrame({"a": ["A"], "b": ["x"], "c": [1]}))


def test_descending_order_is_a_stable_descending_sort():
    rng = np.random.default_rng(1)
    scores = rng.choice(np.array([-np.inf, -2.5, -0.0, 0.0, 1e-30, 0.5, 3.0, np.inf], dtype=np.float32), 500)
    np.testing.assert_array_equal(_descending_order(scores), np.argsort(-scores, kind="stable"))
    scores = rng.normal(size=1000).astype(np.float32)
    np.testing.assert_array_equal(_descending_order(scores), np.argsort(-scores, kind="stable"))


@pytest.mark.parametrize("n", [None, 2])
def test_score_potential_tiles_match_brute_force(monkeypatch, n):
    """Tiles of 8 items, 2 customers per product: categories straddle tiles, one category has no
    model item, one customer bought nothing, integer factors make exact ties (label order wins)."""
    import rusket_core.analytics as analytics

    monkeypatch.setattr(analytics, "POTENTIAL_TILE_SCORES", 16)
    rng = np.random.default_rng(3)
    n_users, n_items, n_cats = 25, 50, 7
    model = ALS(factors=3)
    model.users = Labels(np.arange(n_users))
    model.items = Labels(np.arange(n_items))
    model.user_factors = rng.integers(-3, 4, (n_users, 3)).astype(np.float32)
    model.item_factors = rng.integers(-3, 4, (n_items, 3)).astype(np.float32)
    category = rng.integers(0, n_cats - 1, n_items)  # category n_cats - 1: only an unknown item
    mapping = pd.DataFrame({"item": np.r_[np.arange(n_items), 999], "category": np.r_[category, n_cats - 1]})
    bought = rng.random((n_users, n_items)) < 0.1
    bought[4] = False
    history = [list(np.flatnonzero(row)) for row in bought]
    out = score_potential(history, model, mapping, n=n, format="pandas")
    scores = model.user_factors @ model.item_factors.T
    expected = []
    for user in range(n_users):
        rows = []
        for c in range(n_cats - 1):
            members = category == c
            if members.any() and not (bought[user] & members).any():
                rows.append((user, c, scores[user, members].max()))
        rows.sort(key=lambda r: (-r[2], r[1]))
        expected += rows[: len(rows) if n is None else n]
    expected.sort(key=lambda r: (-r[2], r[0], r[1]))  # score descending, ties by customer then target
    assert list(zip(out["user_id"], out["target"], out["score"], strict=True)) == expected
    assert (out["user_id"] == 4).sum() == (n_cats - 1 if n is None else n)
