"""Reading pandas / polars / pyarrow / DuckDB input and returning output in the caller's library."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa

Format = Literal["pandas", "polars", "arrow"]
FORMATS: tuple[str, ...] = ("pandas", "polars", "arrow")


def input_format(obj: Any) -> Format:
    """Name the dataframe library ``obj`` belongs to ("pandas", "polars" or "arrow")."""
    module = type(obj).__module__.split(".")[0]
    if module == "pandas":
        return "pandas"
    if module == "polars":
        return "polars"
    if isinstance(obj, pa.Table | pa.RecordBatch):
        return "arrow"
    if module == "duckdb":
        return "arrow"
    raise TypeError(
        f"expected a pandas, polars or pyarrow table (or a DuckDB relation), got {type(obj).__name__}"
    )


def is_duckdb_relation(obj: Any) -> bool:
    """Whether ``obj`` is a DuckDB relation (queried lazily inside DuckDB, not yet in Python)."""
    return type(obj).__module__.split(".")[0] == "duckdb" and hasattr(obj, "query")


def to_arrow_table(obj: Any) -> pa.Table:
    """Convert a pandas/polars/pyarrow frame or DuckDB relation to a pyarrow Table without copying where possible."""
    kind = input_format(obj)
    if kind == "pandas":
        return pa.Table.from_pandas(obj, preserve_index=False)
    if kind == "polars":
        return obj.to_arrow()
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        return obj
    # DuckDB relation: relations keep .arrow() in duckdb 2.x (connection results do not).
    result = obj.arrow()
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def resolve_format(format: str | None, like: Any = None, default: Format = "pandas") -> str:
    """Pick the output format: explicit ``format``, else the library of ``like``, else ``default``."""
    if format is not None:
        if format not in (*FORMATS, "spark"):
            raise ValueError(f"format must be one of {FORMATS + ('spark',)}, got {format!r}")
        return format
    if like is not None:
        try:
            return input_format(like)
        except TypeError:
            pass
    return default


def column(table: pa.Table, name: str, what: str = "column") -> pa.ChunkedArray:
    """Fetch ``name`` from ``table`` or raise a ValueError naming it and the columns present."""
    if name not in table.column_names:
        raise ValueError(f"{what} {name!r} not found; available columns: {table.column_names}")
    return table.column(name)


def to_arrow_array(values: Any) -> pa.Array | pa.ChunkedArray:
    """Make a pyarrow array from a numpy array, list or pyarrow array (unchanged)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return fixed_size_list(values)
    return pa.array(values)


def fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """Turn an (n, k) numpy matrix into a fixed-size list array of k float32 values per row."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, k = matrix.shape
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), k)


def list_column(offsets: np.ndarray, values: np.ndarray | pa.Array) -> pa.ListArray:
    """Build a list column (row i = values[offsets[i]:offsets[i+1]]) without a Python loop."""
    offsets = pa.array(np.asarray(offsets, dtype=np.int32))
    values = values if isinstance(values, pa.Array) else pa.array(values)
    return pa.ListArray.from_arrays(offsets, values)


def make_frame(columns: dict[str, Any], format: str = "pandas") -> Any:
    """Build a frame in ``format`` from a dict of numpy arrays, lists or pyarrow arrays."""
    table = pa.table({name: to_arrow_array(values) for name, values in columns.items()})
    return from_arrow(table, format)


def from_arrow(table: pa.Table, format: str) -> Any:
    """Return ``table`` as a pandas, polars or arrow frame (or a Spark DataFrame)."""
    if format == "arrow":
        return table
    if format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if format == "pandas":
        return _arrow_to_pandas(table)
    if format == "spark":
        return _arrow_to_spark(table)
    raise ValueError(f"format must be one of {FORMATS + ('spark',)}, got {format!r}")


def _arrow_to_pandas(table: pa.Table) -> Any:
    """Convert to pandas keeping list columns as Python lists and vectors as float32 arrays."""
    import pandas as pd

    data: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_fixed_size_list(col.type):
            flat = col.combine_chunks()
            width = col.type.list_size
            matrix = flat.values.to_numpy(zero_copy_only=False).reshape(-1, width)
            data[name] = list(matrix)
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            data[name] = pd.Series(col.to_pylist(), dtype=object)  # object also when empty (not float64)
        else:
            data[name] = col.to_pandas()
    return pd.DataFrame(data, columns=table.column_names)


def _arrow_to_spark(table: pa.Table) -> Any:
    """Convert to a Spark DataFrame on the active session, or explain why that is not possible."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise RuntimeError("format='spark' needs pyspark installed (pip install pyspark)") from exc
    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("format='spark' needs an active SparkSession (SparkSession.builder.getOrCreate())")
    return spark.createDataFrame(_arrow_to_pandas(table))
