"""Analytics: substitutes from rules, customer saturation, cross-sell potential."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_core.analytics import customer_saturation, find_substitutes


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
