"""Association rules: exact metric values, brute-force rule sets, frames in and out, errors."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusket_core.mining import METRICS, RULE_COLUMNS, FPGrowth, association_rules

# a: 4/5, b: 4/5, c: 3/5, ab: 3/5, ac: 3/5, bc: 2/5, abc: 2/5
BASKETS = [["a", "b"], ["a", "b", "c"], ["a", "c"], ["b"], ["a", "b", "c"]]


def by_rule(frame: pd.DataFrame) -> dict[tuple[frozenset, frozenset], pd.Series]:
    return {
        (frozenset(r["antecedents"]), frozenset(r["consequents"])): r for _, r in frame.iterrows()
    }


def test_columns_and_hand_computed_values():
    rules = FPGrowth(BASKETS, min_support=1).association_rules(min_threshold=0.0)
    assert tuple(rules.columns) == RULE_COLUMNS
    assert len(rules) == 12  # 3 pairs x 2 directions + 6 splits of {a, b, c}
    r = by_rule(rules)
    ab_c = r[(frozenset("ab"), frozenset("c"))]  # sA = 0.6, sC = 0.6, sAC = 0.4
    expected = {
        "antecedent support": 0.6, "consequent support": 0.6, "support": 0.4,
        "confidence": 2 / 3, "lift": 10 / 9, "leverage": 0.04, "conviction": 1.2,
        "zhangs_metric": 0.25,  # 0.04 / max(0.4 * 0.4, 0.6 * 0.2)
        "jaccard": 0.5, "certainty": 1 / 6, "kulczynski": 2 / 3,
    }
    for name, value in expected.items():
        assert ab_c[name] == pytest.approx(value, rel=1e-12), name
    a_c = r[(frozenset("a"), frozenset("c"))]  # sA = 0.8, sC = 0.6, sAC = 0.6
    expected = {
        "confidence": 0.75, "lift": 1.25, "leverage": 0.12, "conviction": 1.6,
        "zhangs_metric": 1.0, "jaccard": 0.75, "certainty": 0.375, "kulczynski": 0.875,
    }
    for name, value in expected.items():
        assert a_c[name] == pytest.approx(value, rel=1e-12), name
    c_ab = r[(frozenset("c"), frozenset("ab"))]  # multi-item consequent
    assert c_ab["confidence"] == pytest.approx(2 / 3) and c_ab["consequent support"] == pytest.approx(0.6)
    c_a = r[(frozenset("c"), frozenset("a"))]  # confidence 1
    assert c_a["confidence"] == 1.0 and c_a["conviction"] == np.inf and c_a["certainty"] == pytest.approx(1.0)


def test_degenerate_denominators_follow_mlxtend():
    # x and y are in every basket: confidence 1, consequent support 1, zhang's denominator 0
    rules = FPGrowth([["x", "y"], ["x", "y", "z"], ["x", "y"]], min_support=1).association_rules(
        min_threshold=0.0
    )
    x_y = by_rule(rules)[(frozenset("x"), frozenset("y"))]
    assert x_y["conviction"] == np.inf
    assert x_y["certainty"] == 0.0
    assert x_y["zhangs_metric"] == 0.0
    assert x_y["lift"] == 1.0 and x_y["leverage"] == 0.0
    z_x = by_rule(rules)[(frozenset("z"), frozenset("x"))]  # consequent support 1
    assert z_x["certainty"] == 0.0 and z_x["conviction"] == np.inf


def brute_rules(baskets: list[set], min_count: int):
    """All rules A -> C over the frequent itemsets, with supports counted from the baskets."""
    n = len(baskets)

    @functools.cache
    def supp(s):
        return sum(1 for b in baskets if b >= set(s)) / n

    universe = sorted(set().union(*baskets))
    out = {}
    for k in range(2, len(universe) + 1):
        for combo in itertools.combinations(universe, k):
            s_ac = supp(combo)
            if s_ac * n < min_count:
                continue
            for r in range(1, k):
                for ant in itertools.combinations(combo, r):
                    con = tuple(x for x in combo if x not in ant)
                    out[(frozenset(ant), frozenset(con))] = (supp(ant), supp(con), s_ac)
    return out


@settings(max_examples=40, deadline=None)
@given(
    baskets=st.lists(st.sets(st.integers(0, 6), max_size=7), min_size=1, max_size=25).filter(any),
    min_count=st.integers(1, 4),
    metric=st.sampled_from(METRICS),
    threshold=st.floats(-1.0, 2.0),
)
def test_rules_equal_brute_force(baskets, min_count, metric, threshold):
    frame = FPGrowth([sorted(b) for b in baskets], min_support=min_count).association_rules(
        metric=metric, min_threshold=threshold
    )
    expected = {}
    for key, (s_a, s_c, s_ac) in brute_rules(baskets, min_count).items():
        conf = s_ac / s_a
        values = {
            "antecedent support": s_a, "consequent support": s_c, "support": s_ac,
            "confidence": conf, "lift": conf / s_c, "leverage": s_ac - s_a * s_c,
            "conviction": (1 - s_c) / (1 - conf) if conf < 1 else np.inf,
            "zhangs_metric": (s_ac - s_a * s_c) / d if (d := max(s_ac * (1 - s_a), s_a * (s_c - s_ac))) else 0.0,
            "jaccard": s_ac / (s_a + s_c - s_ac),
            "certainty": (conf - s_c) / (1 - s_c) if s_c != 1 else 0.0,
            "kulczynski": (conf + s_ac / s_c) / 2,
        }
        if values[metric] >= threshold - 1e-12:
            expected[key] = values
    keys = [(frozenset(a), frozenset(c)) for a, c in zip(frame["antecedents"], frame["consequents"], strict=True)]
    borderline = {k for k, v in expected.items() if abs(v[metric] - threshold) <= 1e-12}
    assert len(keys) == len(set(keys))
    assert set(keys) - borderline == set(expected) - borderline
    for name in METRICS:
        want = np.array([expected[k][name] for k in keys], dtype=float)
        np.testing.assert_allclose(frame[name].to_numpy(), want, rtol=1e-9, atol=1e-12, err_msg=name)


def test_unknown_metric_lists_the_valid_ones():
    model = FPGrowth(BASKETS, min_support=1)
    with pytest.raises(ValueError, match="zhangs_metric") as err:
        model.association_rules(metric="interest")
    assert "'interest'" in str(err.value)
    with pytest.raises(ValueError, match="unknown metric"):
        association_rules(model.mine(), metric="score")


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_function_over_itemset_frames(kind):
    model = FPGrowth(BASKETS, min_support=1)
    frame = model.mine(format=kind)
    rules = association_rules(frame, metric="lift", min_threshold=1.0)
    assert isinstance(rules, {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}[kind])
    as_pandas = association_rules(frame, metric="lift", min_threshold=1.0, format="pandas")
    reference = model.association_rules(metric="lift", min_threshold=1.0)
    assert set(by_rule(as_pandas)) == set(by_rule(reference))
    assert (as_pandas["lift"] >= 1.0).all()


def test_one_kernel_signature_whatever_the_frame_library():
    # arrow-backed supports reach numpy read-only, supports computed from counts do not; the
    # kernel must not compile a second variant for either
    from rusket_core.mining.kernels import rules_kernel

    model = FPGrowth(BASKETS, min_support=1)
    association_rules(model.mine(format="arrow"), metric="lift", min_threshold=1.0)
    compiled = set(rules_kernel.signatures)
    counts_only = model.mine(format="pandas").drop(columns="support")
    association_rules(counts_only, num_transactions=5, metric="lift", min_threshold=1.0)
    association_rules(model.mine(format="polars"), metric="lift", min_threshold=1.0)
    assert set(rules_kernel.signatures) == compiled


def test_function_accepts_mlxtend_style_frozensets_and_counts():
    frame = FPGrowth(BASKETS, min_support=1).mine()
    mlx = frame.assign(itemsets=[frozenset(s) for s in frame["itemsets"]])
    got = association_rules(mlx, min_threshold=0.5)
    assert set(by_rule(got)) == set(by_rule(FPGrowth(BASKETS, min_support=1).association_rules(min_threshold=0.5)))
    counts_only = frame.drop(columns="support")
    again = association_rules(counts_only, num_transactions=5, min_threshold=0.5)
    assert np.allclose(np.sort(again["confidence"]), np.sort(got["confidence"]))


def test_an_empty_itemsets_frame_gives_an_empty_rules_frame():
    empty = FPGrowth([["a"], ["b"]], min_support=1.0).mine()
    rules = association_rules(empty, min_threshold=0.0)
    assert len(rules) == 0 and tuple(rules.columns) == RULE_COLUMNS
    assert association_rules(pa.table({"support": pa.array([], pa.float64()), "itemsets": pa.array([], pa.list_(pa.string()))})).num_rows == 0


def test_integer_labels_stay_integers_in_rules():
    rules = FPGrowth([[1, 2], [1, 2], [2, 3]], min_support=2).association_rules(min_threshold=0.5)
    assert {(tuple(a), tuple(c)) for a, c in zip(rules["antecedents"], rules["consequents"], strict=True)} == {
        ((1,), (2,)),
        ((2,), (1,)),
    }
    assert all(type(x) is int for s in rules["antecedents"] for x in s)


def test_incomplete_or_bad_itemset_frames_are_refused():
    full = pd.DataFrame({"support": [0.5, 0.5, 0.4], "itemsets": [["a"], ["b"], ["a", "b"]]})
    assert len(association_rules(full, min_threshold=0.0)) == 2
    with pytest.raises(ValueError, match="subset"):
        association_rules(full.iloc[1:], min_threshold=0.0)
    with pytest.raises(ValueError, match="more than once"):
        association_rules(pd.concat([full, full.iloc[:1]]), min_threshold=0.0)
    with pytest.raises(ValueError, match="support"):
        association_rules(full.drop(columns="support"))
    with pytest.raises(ValueError, match="itemsets"):
        association_rules(full.rename(columns={"itemsets": "items"}))
    with pytest.raises(ValueError, match="fractions"):
        association_rules(full.assign(support=[0.5, 2.0, 0.4]))
    with pytest.raises(ValueError, match="min_threshold"):
        association_rules(full, min_threshold=float("nan"))


def test_many_itemsets_rule_generation_matches_a_direct_count():
    """Rules for thousands of itemsets: every listed itemset of size k yields 2**k - 2 rules at threshold -inf."""
    rng = np.random.default_rng(3)
    baskets = [np.flatnonzero(rng.random(14) < 0.45).tolist() for _ in range(400)]
    model = FPGrowth([b for b in baskets if b] or [[0]], min_support=4)
    freq = model.mine()
    sizes = freq["itemsets"].map(len).to_numpy()
    rules = model.association_rules(metric="support", min_threshold=0.0)
    assert len(rules) == int(((2.0**sizes) - 2).sum())
    assert (rules["antecedents"].map(len) + rules["consequents"].map(len) >= 2).all()
