"""The code blocks of the issues, run as written, on a small store with planted structure."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from rusket_core import (
    ALS,
    BPR,
    FPGrowth,
    Recommender,
    customer_saturation,
    find_substitutes,
    score_potential,
)
from rusket_core.viz import to_networkx

COFFEE = ["grinder", "espresso_beans", "milk_jug", "B22", "tamper"]
TEA = ["kettle", "tea_leaves", "D33", "teapot", "infuser"]


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    """120 customers: two in three buy coffee things, the rest tea things; ids are ints 1000+."""
    rng = np.random.default_rng(7)
    rows = []
    receipt = 0
    for c in range(120):
        customer = 1000 + c
        taste = COFFEE if c % 3 else TEA
        for _ in range(3):
            receipt += 1
            basket = set(rng.choice(taste, size=3, replace=False).tolist())
            if taste is COFFEE and "grinder" in basket:
                basket.add("espresso_beans")
            for sku in sorted(basket):
                rows.append((receipt, customer, sku, float(rng.integers(1, 5)), "coffee" if sku in COFFEE else "tea"))
    return pd.DataFrame(rows, columns=["receipt_id", "customer_id", "sku", "revenue", "category_id"])


def test_issue2_frequently_bought_together(purchases):
    checkouts = purchases.rename(columns={"sku": "product"})
    model = FPGrowth.from_transactions(checkouts, transaction_col="receipt_id", item_col="product", min_support=0.3)
    add_ons = model.recommend_items(["grinder"], n=3)
    assert add_ons[0] == "espresso_beans"
    rules = model.association_rules(metric="lift", min_threshold=1.0)
    assert isinstance(rules, pd.DataFrame) and (rules["lift"] >= 1.0).all()
    basket_ohe = pd.crosstab(checkouts["receipt_id"], checkouts["product"]).astype(bool)
    freq = FPGrowth(basket_ohe, min_support=0.3).mine()
    assert sorted(map(sorted, freq["itemsets"])) == sorted(map(sorted, model.mine()["itemsets"]))


def test_issue3_and_issue4_calls(purchases, tmp_path):
    als = ALS.from_transactions(purchases, user_col="customer_id", item_col="sku", rating_col="revenue",
                                factors=2, iterations=15, alpha=40.0).fit()  # fmt: skip  # two tastes, two factors
    items, scores = als.recommend_items(user_id=1001, n=5, exclude_seen=True)
    seen = set(purchases.loc[purchases.customer_id == 1001, "sku"])
    assert len(items) == len(set(COFFEE + TEA) - seen) or len(items) == 5
    assert not seen & set(items)
    assert np.all(np.diff(scores) <= 0)
    top_customers, _ = als.recommend_users(item_id="D33", n=100)
    buyers = set(purchases.loc[purchases.sku == "D33", "customer_id"])
    assert len(top_customers) == min(100, 120 - len(buyers)) and not buyers & set(top_customers)
    similar_skus, _ = als.similar_items(item_id="B22", n=4)
    assert "B22" not in similar_skus and set(similar_skus) <= set(COFFEE), "similar items share the taste"
    recs = als.batch_recommend(n=10, format="polars")
    assert recs.columns[:3] == ["user_id", "item_id", "score"]
    user_df = als.export_user_factors(normalize=True, format="polars")
    assert np.allclose(np.linalg.norm(np.stack(user_df["vector"].to_list()), axis=1), 1.0, atol=1e-5)
    item_df = als.export_item_factors(include_labels=True)
    assert set(item_df["label"]) == set(COFFEE + TEA)
    matrix = als.user_items.to_scipy()
    bpr = BPR(factors=16, learning_rate=0.05, iterations=150).fit(matrix)
    assert bpr.item_factors.shape == (len(COFFEE + TEA), 16)

    checkouts = purchases.rename(columns={"sku": "product"})
    rules = FPGrowth.from_transactions(checkouts, transaction_col="receipt_id", item_col="product",
                                       min_support=0.02).association_rules(metric="lift", min_threshold=0.0)  # fmt: skip
    rec = Recommender(model=als, rules_df=rules)
    items, scores = rec.recommend_for_user(user_id=1001, n=5)
    assert not seen & set(items) and np.all(np.isfinite(scores))
    product_vectors = item_df
    rec = Recommender(model=als, rules_df=rules, item_embeddings=product_vectors)
    items, scores = rec.recommend_for_user(user_id=1001, n=5, alpha=0.7, target_item_for_semantic="B22")
    assert not seen & set(items) and np.all(np.diff(scores) <= 0)
    add_ons = rec.recommend_for_cart(["espresso_beans", "grinder"], n=3)
    assert len(add_ons) == 3 and not {"espresso_beans", "grinder"} & set(add_ons["item_id"])

    purchase_histories = purchases[["customer_id", "sku"]]
    accessory_skus = ["tamper", "infuser"]
    potential = score_potential(user_history=purchase_histories, model=als, target_categories=accessory_skus)
    assert set(potential.columns) >= {"score"} and len(potential) > 0
    subs = find_substitutes(rules, max_lift=0.8)
    assert (subs["lift"] < 0.8).all()
    saturation = customer_saturation(purchases, user_col="customer_id", category_col="category_id")
    assert len(saturation) == purchases["customer_id"].nunique()
    G = to_networkx(rules, edge_attr="lift")
    pr = nx.pagerank(G, weight="lift")
    assert pr and abs(sum(pr.values()) - 1.0) < 1e-6

    path = tmp_path / "als"
    als.save(path)
    again = ALS.load(path)
    assert list(again.recommend_items(user_id=1001, n=5)[0]) == list(als.recommend_items(user_id=1001, n=5)[0])
