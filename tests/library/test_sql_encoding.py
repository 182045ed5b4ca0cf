"""Encoding inside DuckDB equals the in-memory encoder exactly: labels, order, CSR and sums."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rusket_core.encoding import Encoded, encode_transactions
from rusket_core.sql_encoding import count_bad_rows, encode_relation

IDS = {
    "strings": st.sampled_from(["a", "b", "B", "é", "ab", "a b", "10", "9"]),
    "integers": st.integers(-3, 2**40).filter(lambda v: v % 97 < 8) | st.integers(-3, 6),
}


def assert_same(got: Encoded, want: Encoded) -> None:
    assert got.rows.values.tolist() == want.rows.values.tolist()
    assert got.rows.values.dtype.kind == want.rows.values.dtype.kind
    assert got.items.values.tolist() == want.items.values.tolist()
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    if want.data is None:
        assert got.data is None
    else:
        assert got.data.dtype == want.data.dtype == np.float32
        np.testing.assert_array_equal(got.data, want.data)


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(sorted(IDS)),
    st.sampled_from(sorted(IDS)),
    st.data(),
    st.booleans(),
)
def test_relation_matches_in_memory_encoding(row_kind, item_kind, data, weighted):
    # repeated pairs are likely (few distinct ids); weights are multiples of 1/4 so every summation
    # order gives the same float64 sum
    n = data.draw(st.integers(1, 30))
    rows = data.draw(st.lists(IDS[row_kind], min_size=n, max_size=n))
    items = data.draw(st.lists(IDS[item_kind], min_size=n, max_size=n))
    weights = data.draw(st.lists(st.integers(0, 40).map(lambda v: v / 4), min_size=n, max_size=n))
    table = pa.table({"basket": rows, "item": items, "w": weights})
    weight = "w" if weighted else None
    con = duckdb.connect()
    assert_same(encode_relation(con.from_arrow(table), "basket", "item", weight), encode_transactions(table, "basket", "item", weight))
    # encode_transactions hands a relation to the SQL path
    assert_same(encode_transactions(con.from_arrow(table), "basket", "item", weight), encode_transactions(table, "basket", "item", weight))


def test_one_row_and_a_stored_table():
    con = duckdb.connect()
    con.execute("create table lines as select * from (values (7, 'x', 2)) t(customer, product, qty)")
    enc = encode_transactions(con.sql("select * from lines"), "customer", "product", "qty")
    assert enc.rows.values.tolist() == [7] and enc.items.values.tolist() == ["x"]
    assert enc.indptr.tolist() == [0, 1] and enc.indices.tolist() == [0] and enc.data.tolist() == [2.0]


def test_larger_random_frame_with_repeats():
    rng = np.random.default_rng(3)
    n = 20_000
    df = pd.DataFrame(
        {
            "customer": rng.integers(0, 3000, n) * 1_000_003,  # wide ids (hash path in memory)
            "product": np.array([f"P{i}" for i in range(400)], dtype=object)[rng.integers(0, 400, n)],
            "quantity": rng.integers(1, 5, n).astype(np.int32),
        }
    )
    con = duckdb.connect()
    assert_same(
        encode_transactions(con.from_df(df), "customer", "product", "quantity"),
        encode_transactions(df, "customer", "product", "quantity"),
    )


def test_bad_rows_fail_with_column_and_count():
    con = duckdb.connect()
    rel = con.sql(
        "select * from (values (1, 'a', 1.0), (null, 'b', -2.0), (null, 'c', 'nan'::DOUBLE), (3, 'c', -1.0)) t(u, i, w)"
    )
    with pytest.raises(ValueError, match=r"column 'u' has 2 null values \(of 4 rows\)"):
        encode_transactions(rel, "u", "i")
    ok_ids = rel.filter("u is not null or true").project("coalesce(u, 0) as u, i, w")
    with pytest.raises(ValueError, match=r"column 'w' has 1 non-finite values.*2 negative values"):
        encode_transactions(ok_ids, "u", "i", "w")
    rows, problems = count_bad_rows(rel, ["u", "i"], ["w"])
    assert rows == 4
    assert problems == [
        "column 'u' has 2 null values (of 4 rows); ids must not be null",
        "column 'w' has 1 non-finite values (NaN or inf)",
        "column 'w' has 2 negative values; weights must be >= 0",
    ]
    with pytest.raises(ValueError, match="input is empty"):
        encode_transactions(rel.filter("false"), "u", "i")
    with pytest.raises(ValueError, match=r"item column 'x' not found"):
        encode_transactions(rel, "u", "x")
    with pytest.raises(ValueError, match="column 'i' must be numeric"):
        encode_transactions(ok_ids, "u", "i", "i")
