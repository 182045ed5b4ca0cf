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
def test_evaluate_factor_models_matches_brute_force(split, fitted, name):
    _, test = split
    model = fitted[name]
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


def _hybrid(models: dict, **settings) -> Recommender:
    rules = pd.DataFrame(
        {"antecedents": [["p0"], ["p1", "p2"], ["p3"]], "consequents": [["p4"], ["p5"], ["new_item"]],
         "confidence": [0.9, 0.6, 0.8], "lift": [2.0, 1.5, 3.0]}
    )  # fmt: skip
    emb = models["bpr"].export_item_factors(format="arrow").select(["label", "vector"])
    return Recommender(models["als"], rules_df=rules, item_embeddings=emb, **settings)


def test_evaluate_hybrid_with_carts_matches_its_single_user_answers(split, fitted):
    train, test = split
    carts = train.groupby("user_id")["item_id"].apply(lambda s: list(s)[-2:]).to_dict()
    rec = _hybrid(fitted, alpha=0.6, rules_weight=0.4, carts=carts)
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


def test_evaluate_hybrid_without_carts_matches_recommend_for_user(split, fitted):
    _, test = split
    rec = fitted["hybrid"]
    relevant = _relevant(test)
    recs = {u: rec.recommend_for_user(u, n=K)[0].tolist() for u in relevant}
    result = evaluate(rec, test=test, k=K)
    for metric, value in _naive_metrics(recs, relevant, K).items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric


# ----------------------------------------------------------------------------------------------
# the RecommenderBase contract, run against every implementation (after implicit's
# RecommenderBaseTestMixin): one fixture, parametrised over the implementations

IMPLEMENTATIONS = ["als", "bpr", "popularity", "from_factors", "hybrid", "hybrid_with_carts"]
FACTOR_MODELS = ["als", "bpr", "popularity", "from_factors"]


@pytest.fixture(scope="module")
def fitted(split) -> dict[str, RecommenderBase]:
    """Every implementation, fitted once on the training split."""
    train, _ = split
    models: dict[str, RecommenderBase] = _factor_models(train)
    models["hybrid"] = _hybrid(models, alpha=0.5)
    models["hybrid_with_carts"] = _hybrid(models, carts={1000: ["p0"], 1003: ["p1", "p2"]}, rules_weight=0.5)
    return models


@pytest.fixture(params=IMPLEMENTATIONS)
def recommender(request, fitted) -> RecommenderBase:
    return fitted[request.param]


def _owned(rec: RecommenderBase, user) -> set:
    """Labels of the items ``rec`` treats as seen by ``user``."""
    seen = rec.user_items
    row = rec.users.index_of(user)
    return set(rec.items.take(seen.indices[seen.indptr[row] : seen.indptr[row + 1]]).tolist())


def test_is_a_recommender_over_the_callers_labels(recommender):
    assert isinstance(recommender, RecommenderBase)
    assert recommender.users.values.min() >= 1000  # the caller's ids, not row positions
    assert {"p0", "p29"} <= set(recommender.items.values.tolist())
    seen = recommender.user_items
    assert (seen.n_rows, seen.n_items) == (len(recommender.users), len(recommender.items))


def test_batch_recommend_shape_order_and_labels(recommender):
    users = [recommender.users.values[5], recommender.users.values[0], recommender.users.values[2]]
    frame = recommender.batch_recommend(n=4, users=users, format="pandas")
    assert tuple(frame.columns) == BATCH_COLUMNS
    assert list(dict.fromkeys(frame["user_id"])) == users  # grouped by user, in request order
    assert frame["user_id"].map(type).eq(int).all() and frame["item_id"].str.startswith("p").all()
    for _, group in frame.groupby("user_id", sort=False):
        assert len(group) == 4  # n respected: every user has more than 4 candidates
        assert group["item_id"].is_unique
        assert (np.diff(group["score"].to_numpy()) <= 1e-6).all()  # best first


def test_every_user_by_default_in_the_recommenders_order(recommender):
    frame = recommender.batch_recommend(n=2, format="pandas")
    assert list(dict.fromkeys(frame["user_id"])) == recommender.users.values.tolist()
    assert (frame.groupby("user_id").size() == 2).all()


def test_seen_items_are_excluded_unless_asked(recommender):
    users = recommender.users.values[:5].tolist()
    everything = recommender.batch_recommend(n=len(recommender.items), users=users, format="pandas")
    with_seen = recommender.batch_recommend(n=len(recommender.items), users=users, exclude_seen=False, format="pandas")
    for user in users:
        owned = _owned(recommender, user)
        got = everything.loc[everything["user_id"] == user, "item_id"]
        assert owned and got.is_unique and not owned & set(got)
        assert owned <= set(with_seen.loc[with_seen["user_id"] == user, "item_id"])
        if isinstance(recommender, FactorModel):  # every unseen item is a candidate
            assert set(got) == set(recommender.items.values.tolist()) - owned


def test_formats_hold_the_same_rows(recommender):
    users = recommender.users.values[:4].tolist()
    pandas = recommender.batch_recommend(n=3, users=users, format="pandas")
    polars = recommender.batch_recommend(n=3, users=users, format="polars")
    arrow = recommender.batch_recommend(n=3, users=users, format="arrow")
    assert polars.to_pandas().equals(pandas) and arrow.to_pandas().equals(pandas)


def test_n_zero_and_unknown_users(recommender):
    assert len(recommender.batch_recommend(n=0, users=[1000], format="pandas")) == 0
    with pytest.raises(KeyError, match="unknown"):
        recommender.batch_recommend(n=2, users=[1000, -5])


@pytest.mark.parametrize("name", [*FACTOR_MODELS, "hybrid"])
def test_single_user_answer_is_the_batch_row(fitted, name):
    rec = fitted[name]
    user = rec.users.values[7]
    single = rec.recommend_items(user, n=5) if isinstance(rec, FactorModel) else rec.recommend_for_user(user, n=5)
    frame = rec.batch_recommend(n=5, users=[user], format="pandas")
    assert single[0].tolist() == frame["item_id"].tolist()
    np.testing.assert_allclose(single[1], frame["score"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("name", FACTOR_MODELS)
def test_from_factors_and_save_load_round_trips(fitted, name, tmp_path):
    model = fitted[name]
    want = model.batch_recommend(n=5, format="pandas")
    rebuilt = type(model).from_factors(
        model.user_factors, model.item_factors, model.users.values, model.items.values, model.user_items
    )
    assert type(rebuilt) is type(model)
    assert rebuilt.batch_recommend(n=5, format="pandas").equals(want)
    loaded = FactorModel.load(model.save(tmp_path / f"{name}.npz"))
    assert type(loaded) is type(model)
    assert loaded.batch_recommend(n=5, format="pandas").equals(want)


def test_evaluate_excludes_extra_train_items(split, fitted):
    _, test = split
    model = fitted["als"]
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
