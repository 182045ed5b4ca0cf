"""Empty rule sets and tiny data sets through the whole library chain; score_potential's list form."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_core import (
    ALS,
    FPGrowth,
    Recommender,
    customer_saturation,
    find_substitutes,
    score_potential,
)
from rusket_core.viz import product_communities, to_networkx


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    """30 customers, 2 baskets each, 8 products; no pair of products is in more than a few baskets."""
    rng = np.random.default_rng(5)
    rows = [
        (10 * c + b, 100 + c, f"p{j}")
        for c in range(30)
        for b in range(2)
        for j in sorted(set(rng.choice(8, size=2, replace=False).tolist()))
    ]
    return pd.DataFrame(rows, columns=["receipt_id", "customer_id", "product"])


@pytest.fixture(scope="module")
def als(lines):
    return ALS.from_transactions(lines, "customer_id", "product", factors=3, iterations=3).fit()


def _as(frame: pd.DataFrame, fmt: str):
    return {"pandas": frame, "polars": pl.from_pandas(frame), "arrow": pa.Table.from_pandas(frame)}[fmt]


@pytest.mark.parametrize("fmt", ["pandas", "polars", "arrow"])
def test_no_rule_passes_the_threshold_in_every_library(lines, als, fmt):
    basket_ohe = pd.crosstab(lines["receipt_id"], lines["product"]).astype(bool)
    rules = FPGrowth(_as(basket_ohe.reset_index(drop=True), fmt), min_support=0.5).association_rules()
    assert len(rules) == 0
    table = rules if fmt == "arrow" else (rules.to_arrow() if fmt == "polars" else None)
    if table is not None:
        typ = table.schema.field("antecedents").type
        assert pa.types.is_list(typ) or pa.types.is_large_list(typ)
    else:
        assert rules["antecedents"].dtype == object and rules["consequents"].dtype == object

    plain, with_rules = Recommender(model=als), Recommender(model=als, rules_df=rules)
    assert with_rules.recommend_for_user(101, n=3)[0].tolist() == plain.recommend_for_user(101, n=3)[0].tolist()
    cart = with_rules.recommend_for_cart(["p1", "p2"], n=4, format="pandas")
    assert len(cart) == 4 and set(cart["source"]) <= {"similar", "popular"}  # the documented fallback
    pd.testing.assert_frame_equal(cart, plain.recommend_for_cart(["p1", "p2"], n=4, format="pandas"))
    carts = {100: ["p0"], 101: ["p3", "p4"]}
    users = with_rules.recommend_for_users(n=3, carts=carts, format="pandas")
    pd.testing.assert_frame_equal(users, plain.recommend_for_users(n=3, carts=carts, format="pandas"))
    assert (users["source"] == "model").all() and users["rule_score"].isna().all()
    subs = find_substitutes(rules, format="pandas")
    assert len(subs) == 0 and {"item_a", "item_b", "lift"} <= set(subs.columns)
    graph = to_networkx(rules)
    assert graph.number_of_edges() == 0 and graph.graph["skipped_rules"] == 0
    assert len(product_communities(rules, format="pandas")) == 0


def test_an_empty_pandas_rules_frame_with_untyped_columns_is_read_as_no_rules(als):
    rules = pd.DataFrame({name: pd.Series([], dtype=float) for name in
                          ["antecedents", "consequents", "antecedent support", "consequent support", "support",
                           "confidence", "lift"]})  # fmt: skip
    assert len(Recommender(model=als, rules_df=rules).recommend_for_cart(["p1"], n=2)) == 2
    assert len(find_substitutes(rules)) == 0
    bad = rules.iloc[:0].assign(antecedents=pd.Series([], dtype=float))
    bad.loc[0] = [1.0, 2.0, 0.1, 0.1, 0.1, 0.5, 1.0]  # one row with a number where lists belong
    with pytest.raises(ValueError, match="'antecedents' must hold lists"):
        Recommender(model=als, rules_df=bad)


def test_nothing_frequent_through_the_whole_chain(lines, als):
    model = FPGrowth.from_transactions(lines, transaction_col="receipt_id", item_col="product", min_support=0.9)
    assert len(model.mine()) == 0
    rules = model.association_rules(metric="lift", min_threshold=1.0)
    rec = Recommender(model=als, rules_df=rules, item_embeddings=als.export_item_factors())
    recs = rec.recommend_for_users(n=2, carts=lines[["customer_id", "product"]], cart_col="customer_id",
                                   item_col="product", format="polars")  # fmt: skip
    assert recs["user_id"].n_unique() == len(als.users) and (recs["source"] == "model").all()
    assert len(rec.batch_recommend(n=2)) == 2 * len(als.users)
    assert model.recommend_items(["p1"], n=3) == []


def test_single_customer_through_the_whole_chain():
    one = pd.DataFrame({"receipt_id": [1, 1, 2, 2, 3], "customer_id": [7] * 5, "product": ["a", "b", "a", "c", "a"]})
    model = FPGrowth.from_transactions(one, transaction_col="receipt_id", item_col="product", min_support=0.3)
    rules = model.association_rules(metric="confidence", min_threshold=0.5)
    # baskets {a, b}, {a, c}, {a}: b -> a and c -> a (confidence 1); a -> b, a -> c have 1/3
    assert sorted(map(tuple, rules["antecedents"])) == [("b",), ("c",)]
    als = ALS.from_transactions(one, "customer_id", "product", factors=2, iterations=2).fit()
    rec = Recommender(model=als, rules_df=rules)
    # the one customer bought every product: nothing left to recommend, from any part
    assert len(rec.recommend_for_users(n=3, carts={7: ["a"]}, format="pandas")) == 0
    cart = rec.recommend_for_cart(["b"], n=3, format="pandas")
    assert cart["item_id"].tolist()[0] == "a" and cart["source"].tolist()[0] == "rules"
    assert len(score_potential(user_history=[["a", "b", "c"]], model=als, target_categories=["a", "b"])) == 0
    assert customer_saturation(one, user_col="customer_id", item_col="product")["share"].tolist() == [1.0]


def test_score_potential_takes_a_list_of_histories_in_model_order(lines, als):
    frame = score_potential(user_history=lines[["customer_id", "product"]], model=als, target_categories=["p0", "p5"])
    histories = [lines.loc[lines.customer_id == u, "product"].tolist() for u in als.users.values]
    listed = score_potential(user_history=histories, model=als, target_categories=["p0", "p5"], format="pandas")
    pd.testing.assert_frame_equal(listed, frame)
    # a customer whose list is empty has bought nothing: every target is scored for them
    histories[0] = []
    first = score_potential(user_history=histories, model=als, target_categories=["p0", "p5"], format="pandas")
    assert sorted(first.loc[first.user_id == als.users.values[0], "target"]) == ["p0", "p5"]
    with pytest.raises(ValueError, match="one item list per model customer"):
        score_potential(user_history=histories[:3], model=als, target_categories=["p0"])


def test_old_keyword_names_still_work_with_a_warning(lines, als):
    hist = lines[["customer_id", "product"]]
    new = score_potential(hist, als, ["p0", "p5"], n=1, format="pandas")
    with pytest.warns(DeprecationWarning, match="top_n= is deprecated; use n="):
        old = score_potential(hist, als, ["p0", "p5"], top_n=1, format="pandas")
    pd.testing.assert_frame_equal(old, new)
    assert list(new.columns) == ["user_id", "target", "score"] and new.groupby("user_id").size().max() == 1
    with pytest.raises(TypeError, match="give n= only"):
        score_potential(hist, als, ["p0"], n=1, top_n=1)
    rules = FPGrowth.from_transactions(lines, transaction_col="receipt_id", item_col="product",
                                       min_support=0.05).association_rules(min_threshold=0.1)  # fmt: skip
    with pytest.warns(DeprecationWarning, match="seed= is deprecated"):
        old = product_communities(rules, seed=3, format="pandas")
    assert old.equals(product_communities(rules, random_state=3, format="pandas"))
