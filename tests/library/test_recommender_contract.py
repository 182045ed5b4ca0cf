"""One contract, every recommender: batch_recommend semantics and evaluate() against brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rusket_core.evaluation import evaluate, planted_interactions, train_test_split
from rusket_core.factorization import ALS, BPR, FactorModel
from rusket_core.hybrid import Recommender
from rusket_core.popularity import PopularityRecommender
from rusket_core.recommender import BATCH_COLUMNS, RecommenderBase

K = 5


def _naive_metrics(recs: dict, relevant: dict, k: int) -> dict[str, float]:
    """precision / recall / ndcg / MAP at k by the textbook formulas, one user at a time."""
    out = {"precision": [], "recall": [], "ndcg": [], "map": []}
    for user, rel in relevant.items():
        top = list(recs.get(user, []))[:k]
        gains = [1.0 if item in rel else 0.0 for item in top]
        out["precision"].append(sum(gains) / k)
        out["recall"].append(sum(gains) / len(rel))
        dcg = sum(g / np.log2(i + 2) for i, g in enumerate(gains))
        ideal = sum(1 / np.log2(i + 2) for i in range(min(len(rel), k)))
        out["ndcg"].append(dcg / ideal)
        hits, ap = 0, 0.0
        for i, g in enumerate(gains):
            if g:
                hits += 1
                ap += hits / (i + 1)
        out["map"].append(ap / min(len(rel), k))
    return {name: float(np.mean(v)) for name, v in out.items()}


def _brute_top(user_factors, item_factors, seen: set, k: int) -> list[int]:
    """Item indices by descending dot product (ties: lower index), seen items skipped."""
    scores = item_factors @ user_factors
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return [j for j in order if j not in seen][:k]


@pytest.fixture(scope="module")
def split():
    df = planted_interactions(n_users=60, n_items=30, n_interactions=900, n_clusters=3, random_state=4)
    df["user_id"] = df["user_id"] + 1000  # labels that are not positions
    df["item_id"] = "p" + df["item_id"].astype(str)
    return train_test_split(df, "user_id", "item_id", random_state=1)


def _relevant(test) -> dict:
    return {u: set(g) for u, g in test.groupby("user_id")["item_id"]}


def _seen(model: FactorModel) -> dict:
    enc = model.user_items
    return {model.users.values[u]: set(enc.indices[enc.indptr[u] : enc.indptr[u + 1]].tolist()) for u in range(enc.n_rows)}


def _factor_models(train):
    rng = np.random.default_rng(0)
    als = ALS.from_transactions(train, "user_id", "item_id", factors=4, iterations=3).fit()
    bpr = BPR.from_transactions(train, "user_id", "item_id", factors=4, iterations=5).fit()
    pop = PopularityRecommender.from_transactions(train, "user_id", "item_id").fit()
    # another library's factors, built through the public constructor
    given = FactorModel.from_factors(
        rng.normal(size=(len(als.users), 3)), rng.normal(size=(len(als.items), 3)),
        users=als.users.values, items=als.items.values, user_items=als.user_items.to_scipy(),
    )  # fmt: skip
    given.user_col, given.item_col = "user_id", "item_id"
    return {"als": als, "bpr": bpr, "popularity": pop, "from_factors": given}


@pytest.mark.parametrize("name", ["als", "bpr", "popularity", "from_factors"])
def test_evaluate_factor_models_matches_brute_force(split, name):
    train, test = split
    model = _factor_models(train)[name]
    assert isinstance(model, RecommenderBase)
    seen = _seen(model)
    relevant = _relevant(test)
    recs = {
        u: model.items.take(_brute_top(model.user_factors[model.users.index_of(u)], model.item_factors, seen[u], K))
        for u in relevant
    }
    result = evaluate(model, test=test, k=K)
    reference = _naive_metrics(recs, relevant, K)
    for metric, value in reference.items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric
    assert result["n_users"] == len(relevant)
    distinct = {i for r in recs.values() for i in r}
    assert result["coverage"] == pytest.approx(len(distinct) / len(model.items))


def _hybrid(train, **settings) -> Recommender:
    models = _factor_models(train)
    rules = pd.DataFrame(
        {"antecedents": [["p0"], ["p1", "p2"], ["p3"]], "consequents": [["p4"], ["p5"], ["new_item"]],
         "confidence": [0.9, 0.6, 0.8], "lift": [2.0, 1.5, 3.0]}
    )  # fmt: skip
    emb = models["bpr"].export_item_factors(format="arrow").select(["label", "vector"])
    return Recommender(models["als"], rules_df=rules, item_embeddings=emb, **settings)


def test_evaluate_hybrid_with_carts_matches_its_single_user_answers(split):
    train, test = split
    carts = train.groupby("user_id")["item_id"].apply(lambda s: list(s)[-2:]).to_dict()
    rec = _hybrid(train, alpha=0.6, rules_weight=0.4, carts=carts)
    relevant = _relevant(test)
    # the published frame, user by user, through the wider recommend_for_users call
    full = rec.recommend_for_users(n=K, format="pandas")
    recs = {u: g.sort_values("rank")["item_id"].tolist() for u, g in full.groupby("user_id")}
    result = evaluate(rec, test=test, k=K)
    for metric, value in _naive_metrics(recs, relevant, K).items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric
    assert "new_item" in set(rec.items.values)  # a rule item unknown to the model is in the catalogue
    # the blend differs from plain ALS: scoring went through the hybrid, not the factors
    assert result != evaluate(rec.model, test=test, k=K)


def test_evaluate_hybrid_without_carts_matches_recommend_for_user(split):
    train, test = split
    rec = _hybrid(train, alpha=0.5)
    relevant = _relevant(test)
    recs = {u: rec.recommend_for_user(u, n=K)[0].tolist() for u in relevant}
    result = evaluate(rec, test=test, k=K)
    for metric, value in _naive_metrics(recs, relevant, K).items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric


@pytest.mark.parametrize("name", ["als", "popularity", "hybrid"])
def test_batch_recommend_contract(split, name):
    train, _ = split
    rec = _hybrid(train, carts={1000: ["p0"]}) if name == "hybrid" else _factor_models(train)[name]
    users = [rec.users.values[3], rec.users.values[0]]
    frame = rec.batch_recommend(n=4, users=users, format="pandas")
    assert tuple(frame.columns) == BATCH_COLUMNS
    assert list(dict.fromkeys(frame["user_id"])) == users  # grouped by user, request order
    seen = rec.user_items

    def owned(user) -> set:
        row = rec.users.index_of(user)
        return set(rec.items.take(seen.indices[seen.indptr[row] : seen.indptr[row + 1]]))

    for user, group in frame.groupby("user_id", sort=False):
        assert len(group) == 4
        assert (np.diff(group["score"].to_numpy()) <= 1e-6).all()  # best first
        assert owned(user) and not owned(user) & set(group["item_id"])
    with_seen = rec.batch_recommend(n=len(rec.items), users=users[:1], exclude_seen=False, format="pandas")
    assert owned(users[0]) <= set(with_seen["item_id"])
    with pytest.raises(KeyError):
        rec.batch_recommend(n=2, users=[-5])


def test_evaluate_excludes_extra_train_items(split):
    train, test = split
    model = _factor_models(train)["als"]
    extra = test.groupby("user_id").head(1)  # pretend one test item per user was seen too
    relevant = _relevant(test)
    seen = _seen(model)
    for _, row in extra.iterrows():
        seen[row.user_id].add(model.items.index_of(row.item_id))
    recs = {
        u: model.items.take(_brute_top(model.user_factors[model.users.index_of(u)], model.item_factors, seen[u], K))
        for u in relevant
    }
    result = evaluate(model, extra, test, k=K)
    for metric, value in _naive_metrics(recs, relevant, K).items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric


def test_from_factors_labels_shapes_and_seen_items():
    uf = np.array([[1.0, 0.0], [0.0, 1.0]])
    itf = np.array([[3.0, 0.0], [2.0, 1.0], [0.0, 5.0]])
    seen = sp.csr_array(np.array([[1, 0, 0], [0, 0, 0]]))
    model = FactorModel.from_factors(uf, itf, users=["a", "b"], items=[10, 20, 30], user_items=seen)
    assert model.batch_recommend(n=2, format="pandas").values.tolist() == [
        ["a", 20, 2.0], ["a", 30, 0.0], ["b", 30, 5.0], ["b", 20, 1.0],
    ]  # fmt: skip
    assert model.recommend_items("a", n=1, exclude_seen=False)[0].tolist() == [10]
    plain = ALS.from_factors(uf, itf)
    assert isinstance(plain, ALS) and plain.users.values.tolist() == [0, 1]
    with pytest.raises(ValueError, match="item_factors"):
        FactorModel.from_factors(uf, np.ones((3, 5)))
    with pytest.raises(ValueError, match="items has 2 labels for 3"):
        FactorModel.from_factors(uf, itf, items=[1, 2])
    with pytest.raises(ValueError, match="user_items is 2 × 2"):
        FactorModel.from_factors(uf, itf, user_items=sp.csr_array(np.eye(2)))


def test_evaluate_rejects_what_is_not_a_recommender():
    with pytest.raises(TypeError, match="RecommenderBase"):
        evaluate(object(), test=pd.DataFrame({"u": [1], "i": [2]}))
