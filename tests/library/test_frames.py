"""Frames: input detection and output in the caller's library."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from rusket_core.frames import input_format, list_column, make_frame, resolve_format, to_arrow_table


def test_input_format_and_resolution():
    pdf = pd.DataFrame({"a": [1]})
    assert input_format(pdf) == "pandas"
    assert input_format(pl.from_pandas(pdf)) == "polars"
    assert input_format(pa.table({"a": [1]})) == "arrow"
    assert resolve_format(None, like=pl.DataFrame({"a": [1]})) == "polars"
    assert resolve_format("arrow", like=pdf) == "arrow"
    assert resolve_format(None, like=[1, 2]) == "pandas"
    with pytest.raises(ValueError, match="format must be one of"):
        resolve_format("excel")
    with pytest.raises(TypeError, match="pandas, polars or pyarrow"):
        input_format({"a": 1})


def test_duckdb_relation_input():
    duckdb = pytest.importorskip("duckdb")
    rel = duckdb.sql("select 1 as a, 'x' as b")
    assert to_arrow_table(rel).to_pylist() == [{"a": 1, "b": "x"}]


@pytest.mark.parametrize("fmt", ["pandas", "polars", "arrow"])
def test_make_frame_list_and_vector_columns(fmt):
    cols = {
        "id": np.array([7, 8]),
        "items": list_column(np.array([0, 2, 3]), np.array(["a", "b", "c"], dtype=object)),
        "vector": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32),
    }
    frame = make_frame(cols, fmt)
    table = to_arrow_table(frame)
    assert table.column("id").to_pylist() == [7, 8]
    assert [list(x) for x in table.column("items").to_pylist()] == [["a", "b"], ["c"]]
    assert [list(x) for x in table.column("vector").to_pylist()] == [[1.0, 2.0], [3.0, 4.0]]
