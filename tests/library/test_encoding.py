"""Encoding: long format, one-hot, sparse and basket lists against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from rusket_core.encoding import (
    Encoded,
    Labels,
    encode,
    encode_baskets,
    encode_onehot,
    encode_sparse,
    encode_transactions,
)


def as_dict(enc: Encoded) -> dict:
    """{(row label, item label): weight} from an Encoded, for comparisons."""
    out = {}
    w = enc.weights()
    for r in range(enc.n_rows):
        for k in range(enc.indptr[r], enc.indptr[r + 1]):
            out[(enc.rows.values[r], enc.items.values[enc.indices[k]])] = float(w[k])
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 5)),
        min_size=1,
        max_size=40,
    )
)
def test_long_format_matches_reference(rows):
    df = pd.DataFrame(rows, columns=["basket", "item", "w"])
    enc = encode_transactions(df, "basket", "item", weight_col="w")
    expected: dict = {}
    for b, i, w in rows:
        expected[(b, i)] = expected.get((b, i), 0.0) + w
    assert as_dict(enc) == expected
    for r in range(enc.n_rows):
        row = enc.indices[enc.indptr[r] : enc.indptr[r + 1]]
        assert np.all(np.diff(row) > 0), "items sorted and unique within a row"
    presence = encode_transactions(pl.from_pandas(df), "basket", "item")
    assert presence.data is None
    assert set(as_dict(presence)) == set(expected)


@pytest.mark.parametrize("row_length", [1, 4, 5, 14, 41, 3000])
def test_long_rows_are_sorted_and_merged(row_length):
    # rows longer than a few items take the larger shell-sort gaps (4, 13, 40, 121, ...)
    rng = np.random.default_rng(row_length)
    items = rng.integers(0, max(2, row_length // 2), row_length)  # plenty of repeats
    weights = rng.integers(1, 5, row_length).astype(float)
    frame = pd.DataFrame({"basket": [7] * row_length + [8], "item": np.r_[items, 0], "w": np.r_[weights, 1.0]})
    enc = encode_transactions(frame, "basket", "item", weight_col="w")
    uniq, inverse = np.unique(items, return_inverse=True)
    summed = np.bincount(inverse, weights=weights)
    first = slice(enc.indptr[0], enc.indptr[1])
    assert enc.items.values[enc.indices[first]].tolist() == uniq.tolist()
    np.testing.assert_array_equal(enc.weights()[first], summed)


def test_labels_keep_their_types():
    df = pd.DataFrame({"receipt": [10, 10, 20], "sku": ["B22", "D33", "B22"]})
    enc = encode_transactions(df, "receipt", "sku")
    assert enc.rows.values.tolist() == [10, 20]
    assert isinstance(enc.rows.values[0], np.integer)
    assert enc.items.values.tolist() == ["B22", "D33"]
    assert isinstance(enc.items.values[0], str)
    assert enc.items.index_of("D33") == 1
    with pytest.raises(KeyError, match="'10'"):
        enc.rows.index_of("10")
    with pytest.raises(KeyError, match="Z99"):
        enc.items.indices_of(["B22", "Z99"])


def test_arrow_input_and_dictionary_columns():
    table = pa.table({"t": pa.array(["x", "y", "x"]).dictionary_encode(), "i": [1, 2, 2]})
    enc = encode_transactions(table, "t", "i")
    assert as_dict(enc) == {("x", 1): 1.0, ("x", 2): 1.0, ("y", 2): 1.0}


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"t": [1, None, None], "i": [1, 2, 3]}), "'t' has 2 null"),
        (pd.DataFrame({"t": [1, 2], "x": [1, 2]}), "'i' not found"),
        (pd.DataFrame({"t": pd.Series([], dtype="int64"), "i": pd.Series([], dtype="int64")}), "empty"),
        (pd.DataFrame({"t": [1, 2], "i": [1.0, float("nan")]}), "'i' has 1 null"),
        (pa.table({"t": [1, 2], "i": pa.array([1.0, float("nan")], from_pandas=False)}), "'i' has 1 NaN"),
    ],
)
def test_long_format_errors_name_the_column(frame, message):
    with pytest.raises(ValueError, match=message):
        encode_transactions(frame, "t", "i")


@pytest.mark.parametrize(("weights", "message"), [([1.0, -2.0], "negative"), ([1.0, np.inf], "non-finite")])
def test_bad_weights_are_rejected(weights, message):
    df = pd.DataFrame({"t": [1, 2], "i": [1, 2], "rev": weights})
    with pytest.raises(ValueError, match=f"'rev'.*{message}"):
        encode_transactions(df, "t", "i", weight_col="rev")


def test_onehot_frames():
    df = pd.DataFrame({"milk": [True, False, True], "bread": [1, 1, 0], "eggs": [0, 0, 0]})
    for frame in (df, pl.from_pandas(df), pa.Table.from_pandas(df)):
        enc = encode_onehot(frame)
        assert enc.items.values.tolist() == ["milk", "bread", "eggs"]
        assert as_dict(enc) == {(0, "milk"): 1.0, (0, "bread"): 1.0, (1, "bread"): 1.0, (2, "milk"): 1.0}
    with pytest.raises(ValueError, match="'bread'.*other than 0/1"):
        encode_onehot(pd.DataFrame({"milk": [1, 0], "bread": [3, 1]}))
    with pytest.raises(ValueError, match="'milk' has 1 null"):
        encode_onehot(pd.DataFrame({"milk": [1.0, None]}))


def test_sparse_and_baskets_and_dispatch():
    m = sparse.csr_matrix(np.array([[0, 2, 0], [1, 0, 0]], dtype=float))
    enc = encode_sparse(m, item_names=["a", "b", "c"])
    assert as_dict(enc) == {(0, "b"): 2.0, (1, "a"): 1.0}
    assert isinstance(encode(m), Encoded)
    with pytest.raises(ValueError, match="3 columns"):
        encode_sparse(m, item_names=["a"])
    baskets = encode([["tea", "milk", "tea"], [], ["milk"]])
    assert baskets.n_rows == 3
    assert as_dict(baskets) == {(0, "milk"): 1.0, (0, "tea"): 1.0, (2, "milk"): 1.0}
    with pytest.raises(ValueError, match="one type"):
        encode_baskets([["a", 1]])
    with pytest.raises(TypeError, match="from_transactions"):
        encode("not a dataset")


def test_labels_must_be_unique():
    with pytest.raises(ValueError, match="unique"):
        Labels(["a", "b", "a"])
    assert Labels.from_values([3, 1, 3]).values.tolist() == [1, 3]
