"""Hybrid recommender: CF/embedding blend for users, rules → similar → popular fallback for carts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from rusket_core.encoding import Encoded, Labels
from rusket_core.factorization import ALS
from rusket_core.hybrid import Recommender, strongest_items


def _model(user_factors, item_factors, users, items, indptr, indices, data=None) -> ALS:
    """A 'fitted' model with hand-set factors and training interactions."""
    model = ALS(factors=np.shape(user_factors)[1])
    model.users, model.items = Labels(users), Labels(items)
    model.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
    model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    data = None if data is None else np.asarray(data, dtype=np.float32)
    model.user_items = Encoded(
        np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int32), data, model.users, model.items
    )
    return model


def _toy() -> ALS:
    # users 1001 (bought A) and 1002 (bought B ×2, C ×5); items A..D in 2-D
    return _model(
        [[1, 0], [0, 1]],
        [[1, 0], [0.5, 0.5], [0.2, 0.9], [0.9, 0.1]],
        np.array([1001, 1002]),
        np.array(["A", "B", "C", "D"], dtype=object),
        [0, 1, 3],
        [0, 1, 2],
        [1, 2, 5],
    )


EMB = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)


def test_without_embeddings_is_the_models_ranking():
    model = _toy()
    items, scores = Recommender(model).recommend_for_user(1001, n=5)
    ref_items, ref_scores = model.recommend_items(1001, n=5)
    assert items.tolist() == ref_items.tolist() == ["D", "B", "C"]
    np.testing.assert_array_equal(scores, ref_scores)
    with pytest.raises(ValueError, match="item_embeddings"):
        Recommender(model).recommend_for_user(1001, n=5, target_item_for_semantic="B")


def test_blend_hand_computed():
    rec = Recommender(_toy(), item_embeddings=EMB)
    # user 1001, candidates B, C, D. CF 0.5, 0.2, 0.9 -> minmax 3/7, 0, 1.
    # default target = strongest (only) interaction A: cosines 0, 1/√2, -1 -> minmax 1/(1+1/√2), 1, 0
    items, scores = rec.recommend_for_user(user_id=1001, n=5, alpha=0.7)
    s = 1 / np.sqrt(2)
    assert items.tolist() == ["D", "B", "C"]
    np.testing.assert_allclose(scores, [0.7, 0.7 * 3 / 7 + 0.3 / (1 + s), 0.3], rtol=1e-6)
    # explicit target B: cosines 1, 1/√2, 0 -> already in [0, 1]
    items, scores = rec.recommend_for_user(user_id=1001, n=5, alpha=0.7, target_item_for_semantic="B")
    assert items.tolist() == ["D", "B", "C"]
    np.testing.assert_allclose(scores, [0.7, 0.3 + 0.3, 0.3 * s], rtol=1e-6)
    # alpha 0: semantic order alone; alpha 1: CF order, normalised
    items, scores = rec.recommend_for_user(1001, n=2, alpha=0.0, target_item_for_semantic="B")
    assert items.tolist() == ["B", "C"] and scores.tolist() == pytest.approx([1.0, s])
    items, scores = rec.recommend_for_user(1001, n=5, alpha=1.0)
    assert items.tolist() == ["D", "B", "C"] and scores.tolist() == pytest.approx([1.0, 3 / 7, 0.0])
    with pytest.raises(ValueError, match="alpha"):
        rec.recommend_for_user(1001, alpha=1.5)
    with pytest.raises(KeyError, match="4242"):
        rec.recommend_for_user(4242)


def test_default_target_is_strongest_interaction():
    model = _toy()
    assert strongest_items(model.user_items).tolist() == [0, 2]  # 1002: C (5) beats B (2)
    rec = Recommender(model, item_embeddings=EMB)
    # candidates A, D: CF 0, 0.1 -> 0, 1; cosine to C: 1/√2, -1/√2 -> 1, 0; to B: 0, 0 -> constant, 0
    default = rec.recommend_for_user(1002, n=2, alpha=0.4)
    explicit = rec.recommend_for_user(1002, n=2, alpha=0.4, target_item_for_semantic="C")
    assert default[0].tolist() == explicit[0].tolist() == ["A", "D"]
    np.testing.assert_array_equal(default[1], explicit[1])
    np.testing.assert_allclose(default[1], [0.6, 0.4], rtol=1e-6)
    weaker = rec.recommend_for_user(1002, n=2, alpha=0.4, target_item_for_semantic="B")
    assert weaker[0].tolist() == ["D", "A"] and weaker[1].tolist() == pytest.approx([0.4, 0.0])


def test_embeddings_as_frame_or_mapping_match_the_array():
    model = _toy()
    by_array = Recommender(model, item_embeddings=EMB).recommend_for_user(1001, n=3, alpha=0.4)
    frame = pl.DataFrame({"item": ["D", "C", "B", "A", "Z"], "vector": [v.tolist() for v in [*EMB[::-1], EMB[0]]]})
    by_frame = Recommender(model, item_embeddings=frame).recommend_for_user(1001, n=3, alpha=0.4)
    mapping = dict(zip("ABCD", EMB, strict=True))
    by_map = Recommender(model, item_embeddings=mapping).recommend_for_user(1001, n=3, alpha=0.4)
    for got in (by_frame, by_map):
        assert got[0].tolist() == by_array[0].tolist()
        np.testing.assert_allclose(got[1], by_array[1], rtol=1e-6)
    # a target known only to the embeddings ("Z" = A's vector) works like A
    z = Recommender(model, item_embeddings=frame).recommend_for_user(1001, 3, 0.4, target_item_for_semantic="Z")
    np.testing.assert_allclose(z[1], by_array[1], rtol=1e-6)
    partial = Recommender(model, item_embeddings={"A": EMB[0], "B": EMB[1]})
    assert partial.missing_embeddings == 2
    with pytest.raises(ValueError, match="aligned to model.items"):
        Recommender(model, item_embeddings=EMB[:3])


def _blend_reference(model, emb, alpha):
    """Plain-numpy blend for every user: CF and cosine to the strongest item, min-max over unseen items."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    seen = model.user_items.to_scipy().toarray() > 0
    weights = model.user_items.to_scipy().toarray()
    out = np.full(seen.shape, -np.inf)
    for u in range(seen.shape[0]):
        cand = ~seen[u]
        if not cand.any():
            continue
        cf = model.user_factors[u] @ model.item_factors.T
        c = cf[cand]
        x = (cf - c.min()) / (c.max() - c.min()) if c.max() > c.min() else np.zeros_like(cf)
        if seen[u].any():
            target = np.flatnonzero(weights[u] == weights[u].max())[0]
            sem = unit @ unit[target]
            s = sem[cand]
            y = (sem - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(sem)
            blend = alpha * x + (1 - alpha) * y
        else:
            blend = x
        out[u, cand] = blend[cand]
    return out


def test_batch_matches_reference_and_single_calls():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 25
    dense = (rng.random((n_users, n_items)) < 0.2) * rng.integers(1, 4, (n_users, n_items))
    dense[5] = 0  # a user with no history: CF alone
    dense[6] = 1  # a user who has seen everything: no rows
    indptr = np.r_[0, np.cumsum((dense > 0).sum(axis=1))]
    indices = np.nonzero(dense)[1]
    model = _model(
        rng.normal(size=(n_users, 4)),
        rng.normal(size=(n_items, 4)),
        np.arange(100, 100 + n_users),
        np.array([f"i{j:02d}" for j in range(n_items)], dtype=object),
        indptr,
        indices,
        dense[dense > 0],
    )
    emb = rng.normal(size=(n_items, 3)).astype(np.float32)
    rec = Recommender(model, item_embeddings=emb)
    ref = _blend_reference(model, emb, 0.6)
    batch = rec.recommend_for_users(n=5, alpha=0.6, format="pandas")
    assert set(batch.columns) == {"user_id", "item_id", "score"}
    assert 106 not in set(batch["user_id"])
    for u, user in enumerate(model.users.values):
        items, scores = rec.recommend_for_user(int(user), n=5, alpha=0.6)
        assert np.isfinite(scores).all() and (np.diff(scores) <= 0).all()
        expected = np.sort(ref[u][np.isfinite(ref[u])])[::-1][:5]
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        idx = model.items.indices_of(items)
        assert not (dense[u, idx] > 0).any()
        rows = batch[batch["user_id"] == user]
        assert rows["item_id"].tolist() == items.tolist()
        np.testing.assert_allclose(rows["score"].to_numpy(), scores, rtol=1e-6)
    # without embeddings the batch is the model's batch_recommend
    plain = Recommender(model).recommend_for_users(n=4, format="pandas")
    pd.testing.assert_frame_equal(plain, model.batch_recommend(n=4, format="pandas"))


def _cart_model() -> ALS:
    # items in 2-D: A (1,0), B (0,1), C (-1,0), D (.8,.6), E (0,-1); popularity C > B > E > A = D
    return _model(
        [[1, 0], [0, 1], [1, 1]],
        [[1, 0], [0, 1], [-1, 0], [0.8, 0.6], [0, -1]],
        np.array([1, 2, 3]),
        np.array(list("ABCDE"), dtype=object),
        [0, 2, 5, 6],
        [1, 2, 1, 2, 4, 2],
    )


CART_RULES = pd.DataFrame(
    {
        "antecedents": [["A"], ["A"], ["A", "X"], ["A"], ["Y"], ["A", "B"]],
        "consequents": [["B"], ["E"], ["C"], ["A"], ["D"], ["F", "C"]],
        "confidence": [0.5, 0.5, 0.99, 1.0, 0.9, 0.7],
        "lift": [2.0, 3.0, 5.0, 9.0, 9.0, 1.5],
    }
)


def test_cart_fallback_order_rules_then_similar_then_popular():
    rec = Recommender(_cart_model(), rules_df=CART_RULES)
    out = rec.recommend_for_cart(["A"], n=4)
    assert isinstance(out, pd.DataFrame)
    # rules: E and B tie on confidence, E has the higher lift; (A, X) -> C needs X; A -> A is in the cart
    # similar: only D has positive cosine to A; popular: C (3 users) is the only item left
    assert out["item_id"].tolist() == ["E", "B", "D", "C"]
    assert out["source"].tolist() == ["rules", "rules", "similar", "popular"]
    assert out["score"].tolist() == pytest.approx([0.5, 0.5, 0.8, 1.0])
    # a two-item antecedent fires when both are in the cart (F is known only to the rules; C and F
    # tie on confidence and lift, label order decides)
    both = rec.recommend_for_cart(["B", "A"], n=3)
    assert both["item_id"].tolist() == ["C", "F", "E"]
    assert both["score"].tolist() == pytest.approx([0.7, 0.7, 0.5])
    assert both["source"].tolist() == ["rules", "rules", "rules"]
    # no rules match an unknown item: popularity, most popular first
    new = rec.recommend_for_cart(["Q"], n=3, format="polars")
    assert isinstance(new, pl.DataFrame)
    assert new["item_id"].to_list() == ["C", "B", "E"]
    assert new["source"].to_list() == ["popular"] * 3
    assert new["score"].to_list() == pytest.approx([1.0, 2 / 3, 1 / 3])
    # the catalogue runs out: everything but the cart, never a cart item
    everything = rec.recommend_for_cart(["A", "C"], n=10)
    assert sorted(everything["item_id"]) == ["B", "D", "E"] and "A" not in set(everything["item_id"])
    with pytest.raises(KeyError, match="type"):
        rec.recommend_for_cart([1, 2], n=3)


def test_batch_carts_match_single_carts():
    rec = Recommender(_cart_model(), rules_df=pl.from_pandas(CART_RULES))
    carts = {"c1": ["A"], "c2": ["B", "A"], "c3": ["Q"], "c4": []}
    batch = rec.recommend_for_carts(carts, n=4, format="pandas")
    assert list(batch.columns) == ["cart_id", "rank", "item_id", "score", "source"]
    for cart_id, cart in carts.items():
        rows = batch[batch["cart_id"] == cart_id]
        single = rec.recommend_for_cart(cart, n=4, format="pandas")
        assert rows["rank"].tolist() == list(range(1, len(single) + 1))
        assert rows["item_id"].tolist() == single["item_id"].tolist()
        assert rows["source"].tolist() == single["source"].tolist()
    long = pl.DataFrame({"cart": [7, 7, 8], "sku": ["B", "A", "Q"]})
    by_frame = rec.recommend_for_carts(long, n=4, cart_col="cart", item_col="sku")
    assert isinstance(by_frame, pl.DataFrame)
    assert by_frame.filter(pl.col("cart_id") == 7)["item_id"].to_list() == batch[batch["cart_id"] == "c2"]["item_id"].tolist()
    assert by_frame.filter(pl.col("cart_id") == 8)["item_id"].to_list() == batch[batch["cart_id"] == "c3"]["item_id"].tolist()
    with pytest.raises(ValueError, match="cart_col"):
        rec.recommend_for_carts(long, n=2)


def _carts_reference(model, rules, cart, n):
    """Plain-Python cart add-ons: best matching rule per item, then positive mean cosine, then popularity."""
    best = {}
    for ant, con, conf, lift in rules.itertuples(index=False):
        if set(ant) <= set(cart):
            for item in con:
                if item not in cart and (conf, lift) > best.get(item, (-1.0, -1.0)):
                    best[item] = (conf, lift)
    out = [(item, "rules") for item in sorted(best, key=lambda i: (-best[i][0], -best[i][1], i))]
    taken = set(cart) | {item for item, _ in out}
    labels = model.items.values.tolist()
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    known = [labels.index(x) for x in cart if x in labels]
    if known:
        sim = unit @ unit[known].mean(axis=0)
        for j in np.argsort(-sim, kind="stable"):
            if sim[j] > 0 and labels[j] not in taken:
                out.append((labels[j], "similar"))
                taken.add(labels[j])
    counts = model.user_items.item_counts()
    for j in np.lexsort((np.arange(len(counts)), -counts)):
        if labels[j] not in taken:
            out.append((labels[j], "popular"))
            taken.add(labels[j])
    return out[:n]


def test_carts_match_brute_force_reference(random_model):
    rng = np.random.default_rng(11)
    model = random_model(rng, np.arange(30), 20, density=0.25)
    universe = np.r_[model.items.values, np.arange(1, 10, 2)]
    ants = [sorted(rng.choice(universe, rng.integers(1, 3), replace=False).tolist()) for _ in range(60)]
    cons = [rng.choice(universe, rng.integers(1, 3), replace=False).tolist() for _ in range(60)]
    rules = pd.DataFrame(
        {
            "antecedents": ants,
            "consequents": cons,
            "confidence": rng.choice([0.2, 0.5, 0.8], 60),
            "lift": rng.choice([1.0, 2.0], 60),
        }
    )
    rec = Recommender(model, rules_df=rules)
    carts = [sorted(rng.choice(universe, rng.integers(0, 4), replace=False).tolist()) for _ in range(25)]
    batch = rec.recommend_for_carts(carts, n=8, format="pandas")
    for q, cart in enumerate(carts):
        rows = batch[batch["cart_id"] == q]
        got = list(zip(rows["item_id"].tolist(), rows["source"].tolist(), strict=True))
        assert got == _carts_reference(model, rules, cart, 8), f"cart {cart}"


# ---------------------------------------------------------------------------------------------------------
# users with carts: model part blended with rule add-ons


def test_users_with_carts_hand_computed():
    rec = Recommender(_cart_model(), rules_df=CART_RULES)
    out = rec.recommend_for_users(n=3, carts={1: ["A"], 3: ["A", "B"]}, rules_weight=0.4, format="pandas")
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "model_score", "rule_score", "source"]
    got = {u: rows for u, rows in out.groupby("user_id")}
    # user 1 (1,0) has B, C: unseen A, D, E score 1, .8, 0 (already min-max). Rules for cart [A]:
    # B (seen, dropped) and E at confidence .5. A is in the cart, so it is not recommended.
    u1 = got[1]
    assert u1["item_id"].tolist() == ["D", "E"]
    assert u1["score"].tolist() == pytest.approx([0.6 * 0.8, 0.6 * 0.0 + 0.4 * 0.5])
    assert u1["source"].tolist() == ["model", "model+rules"]
    assert u1["rank"].tolist() == [1, 2]
    # user 2 (0,1), no cart, has B, C, E: unseen A 0, D .6 -> min-max 0, 1
    u2 = got[2]
    assert u2["item_id"].tolist() == ["D", "A"] and u2["source"].tolist() == ["model", "model"]
    assert u2["score"].tolist() == pytest.approx([0.6, 0.0]) and u2["rule_score"].isna().all()
    # user 3 (1,1) has C: unseen A 1, B 1, D 1.4, E -1 -> min-max over them; A, B are in the cart.
    # Rules for [A, B]: C (seen), F (known only to the rules) .7, E .5
    u3 = got[3]
    assert u3["item_id"].tolist() == ["D", "F", "E"]
    assert u3["source"].tolist() == ["model", "rules", "model+rules"]
    assert u3["score"].tolist() == pytest.approx([0.6, 0.4 * 0.7, 0.4 * 0.5])
    assert np.isnan(u3["model_score"].tolist()[1]) and u3["rule_score"].tolist()[1] == pytest.approx(0.7)


def _blended_reference(model, rules, cart, user_row, n, w):
    """Plain Python: min-max CF over unseen items, best rule confidence per add-on, 2n of each, merged."""
    labels = model.items.values.tolist()
    seen = set(model.user_items.indices[model.user_items.indptr[user_row] : model.user_items.indptr[user_row + 1]])
    unseen = [j for j in range(len(labels)) if j not in seen]
    cf = model.item_factors @ model.user_factors[user_row]
    lo, hi = min(cf[unseen]), max(cf[unseen])
    scaled = {labels[j]: (cf[j] - lo) / (hi - lo) for j in unseen}
    model_part = dict(sorted(scaled.items(), key=lambda kv: -kv[1])[: 2 * n])
    rule_items = [item for item, source in _carts_reference(model, rules, cart, 2 * n) if source == "rules"]
    best = {}
    for ant, con, conf, _ in rules.itertuples(index=False):
        if set(ant) <= set(cart):
            for item in con:
                best[item] = max(best.get(item, 0.0), conf)
    seen_labels = {labels[j] for j in seen}
    rule_part = {i: best[i] for i in rule_items if i not in seen_labels}
    merged = {}
    for item in set(model_part) | set(rule_part):
        if item in cart:
            continue
        merged[item] = (1 - w) * model_part.get(item, 0.0) + w * rule_part.get(item, 0.0)
    return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def test_users_with_carts_match_brute_force_reference(random_model):
    rng = np.random.default_rng(5)
    model = random_model(rng, np.arange(100, 125), 18, density=0.3)
    universe = np.r_[model.items.values, np.arange(1, 9, 2)]
    rules = pd.DataFrame(
        {
            "antecedents": [sorted(rng.choice(universe, rng.integers(1, 3), replace=False).tolist()) for _ in range(80)],
            "consequents": [rng.choice(universe, rng.integers(1, 3), replace=False).tolist() for _ in range(80)],
            "confidence": rng.random(80).round(3),
            "lift": rng.choice([1.0, 2.0], 80),
        }
    )
    rec = Recommender(model, rules_df=rules)
    carts = {int(u): sorted(rng.choice(universe, rng.integers(0, 4), replace=False).tolist()) for u in range(100, 125)}
    long = pl.DataFrame(
        {"customer": [u for u, c in carts.items() for _ in c], "sku": [x for c in carts.values() for x in c]}
    )
    out = rec.recommend_for_users(n=6, carts=long, cart_col="customer", item_col="sku", rules_weight=0.35)
    assert isinstance(out, pl.DataFrame)
    for row, user in enumerate(model.users.values.tolist()):
        rows = out.filter(pl.col("user_id") == user)
        expected = _blended_reference(model, rules, carts[user], row, 6, 0.35)
        assert rows["item_id"].to_list() == [item for item, _ in expected], f"user {user}"
        np.testing.assert_allclose(rows["score"].to_numpy(), [s for _, s in expected], rtol=1e-5, atol=1e-6)


def test_users_with_carts_rules_weight_zero_keeps_the_model_order_and_errors():
    model = _toy()
    rec = Recommender(model, rules_df=pd.DataFrame({"antecedents": [["A"]], "consequents": [["C"]],
                                                    "confidence": [0.9], "lift": [2.0]}))  # fmt: skip
    out = rec.recommend_for_users(n=3, carts={1001: []}, rules_weight=0.0, format="arrow")
    assert out.column_names[:3] == ["user_id", "rank", "item_id"]
    for user in (1001, 1002):
        items = [r["item_id"] for r in out.to_pylist() if r["user_id"] == user]
        assert items == model.recommend_items(user, n=3)[0].tolist()
    twice = rec.recommend_for_users(users=[1002, 1001, 1002], n=3, carts={1001: []}, format="arrow")
    assert twice["user_id"].to_pylist() == [1002] * 2 + [1001] * 3  # 1002 has two unseen items
    assert twice["item_id"].to_pylist()[:2] == model.recommend_items(1002, n=3)[0].tolist()
    with pytest.raises(KeyError, match="4242"):
        rec.recommend_for_users(n=3, carts={4242: ["A"]})
    with pytest.raises(ValueError, match="rules_weight"):
        rec.recommend_for_users(n=3, carts={1001: ["A"]}, rules_weight=1.5)


def test_in_rows_matches_a_set_reference_on_random_csr():
    from rusket_core.hybrid.merge import in_rows

    rng = np.random.default_rng(5)
    n_rows, n_cols = 40, 30
    stored = {(r, c) for r in range(n_rows) for c in range(n_cols) if rng.random() < 0.2}
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r, _ in stored:
        indptr[r + 1] += 1
    indptr = np.cumsum(indptr)
    indices = np.array([c for _, c in sorted(stored)], dtype=np.int32)  # sorted within each row
    rows = rng.integers(0, n_rows, 500)
    items = rng.integers(0, n_cols, 500)
    expected = [(int(r), int(c)) in stored for r, c in zip(rows, items, strict=True)]
    assert in_rows(indptr, indices, n_cols, rows, items).tolist() == expected
    assert any(expected) and not all(expected)
    assert in_rows(indptr, indices, n_cols, rows[:0], items[:0]).tolist() == []


def test_strongest_items_of_given_rows_equal_brute_force():
    """Per requested row: the largest weight, ties to the lowest item index, -1 for an empty row."""
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(40, 12)).astype(np.float32)  # many ties, some empty rows
    dense[[5, 17]] = 0
    indptr = np.concatenate([[0], np.cumsum((dense > 0).sum(axis=1))]).astype(np.int64)
    rows_, cols = np.nonzero(dense)
    enc = Encoded(indptr, cols.astype(np.int32), dense[rows_, cols], Labels(np.arange(40)), Labels(np.arange(12)))
    expected = np.where(dense.max(axis=1) > 0, dense.argmax(axis=1), -1)  # argmax: first (lowest) maximum
    assert strongest_items(enc).tolist() == expected.tolist()
    rows = np.array([17, 3, 3, 39, 5, 0])
    assert strongest_items(enc, rows).tolist() == expected[rows].tolist()


def _blend_brute(uf, itf, emb, seen, keys, alpha, n):
    """Per user, in float64: alpha * minmax(CF) + (1 - alpha) * minmax(cosine to emb[key]) over the
    unseen items (key -1: CF alone, weight 1), ranked by score then lowest index; (idx, scores)."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    idx = np.full((len(uf), n), -1)
    val = np.full((len(uf), n), -np.inf)
    for u in range(len(uf)):
        cand = np.flatnonzero(~seen[u])
        if not len(cand):
            continue
        cf = (itf.astype(np.float64) @ uf[u])[cand]
        x = (cf - cf.min()) / (cf.max() - cf.min()) if cf.max() > cf.min() else np.zeros(len(cand))
        score = x
        if keys[u] >= 0:
            sem = (unit.astype(np.float64) @ unit[keys[u]])[cand]
            y = (sem - sem.min()) / (sem.max() - sem.min()) if sem.max() > sem.min() else np.zeros(len(cand))
            score = alpha * x + (1 - alpha) * y
        order = np.lexsort((cand, -score))[:n]
        idx[u, : len(order)], val[u, : len(order)] = cand[order], score[order]
    return idx, val


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
@pytest.mark.parametrize("small_scores", [0, 1 << 40])  # many blocks on every thread, or one thread
def test_blend_matches_brute_force_with_ties_exclusions_and_constant_rows(monkeypatch, alpha, small_scores):
    from rusket_core.factorization import topk as topk_module
    from rusket_core.hybrid.blend import UserBlend
    from rusket_core.hybrid.embeddings import ItemEmbeddings

    monkeypatch.setattr(topk_module, "BLOCK_SCORES", 7 * 30)  # 7 users per block
    monkeypatch.setattr(topk_module, "SMALL_SCORES", small_scores)
    rng = np.random.default_rng(11)
    n_users, n_items = 61, 30
    uf = rng.integers(-2, 3, (n_users, 3)).astype(np.float32)  # small integers: exact ties in CF
    itf = rng.integers(-2, 3, (n_items, 3)).astype(np.float32)
    itf[7] = itf[3]  # duplicate items: equal CF and cosine, the lower index ranks first
    uf[4] = 0  # constant CF row
    emb = rng.normal(size=(n_items, 4)).astype(np.float32)
    emb[:, 3] = 0
    emb[7] = emb[3]
    emb[9] = [0, 0, 0, 1]  # orthogonal to every other item: a constant cosine row
    dense = (rng.random((n_users, n_items)) < 0.15) * rng.integers(1, 5, (n_users, n_items))
    dense[:25, 9] = 9  # many users share the strongest item (one cosine row per block)
    dense[10:20, 2] = 20
    dense[30] = 0  # no history: CF alone
    dense[31] = 1  # has seen everything: -1 padded
    dense[32] = 1
    dense[32, [5, 6]] = 0  # two candidates only: padded after them
    model = _model(uf, itf, np.arange(n_users), np.arange(n_items), np.r_[0, np.cumsum((dense > 0).sum(axis=1))],
                   np.nonzero(dense)[1], dense[dense > 0])  # fmt: skip
    seen = dense > 0
    blend = UserBlend(model, ItemEmbeddings(emb, model.items))
    rows = rng.permutation(n_users)  # any row order
    strongest = strongest_items(model.user_items)
    for n in (1, 5, n_items + 2):
        idx, val = blend.topk(rows, n, alpha, None)
        ref_idx, ref_val = _blend_brute(uf[rows], itf, emb, seen[rows], strongest[rows], alpha, min(n, n_items))
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-6)
    # explicit targets (any labels of the embeddings), seen items allowed
    targets = rng.integers(0, n_items, len(rows))
    idx, val = blend.topk(rows, 6, alpha, list(targets), exclude_seen=False)
    ref_idx, ref_val = _blend_brute(uf[rows], itf, emb, np.zeros_like(seen[rows]), targets, alpha, 6)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-6)
    # no embeddings, scaled: CF min-max alone
    idx, val = UserBlend(model, None).topk(rows, 5, alpha, None, scaled=True)
    ref_idx, ref_val = _blend_brute(uf[rows], itf, emb, seen[rows], np.full(len(rows), -1), alpha, 5)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(val, ref_val, rtol=1e-5, atol=1e-6)
