"""The one reader of rules frames: what ``association_rules`` returns, from pandas, polars or pyarrow.

Consumers (the hybrid recommender, substitutes, the product graph) read rules only through these
functions. mlxtend-style frozensets in a pandas frame are read as lists, and an empty frame whose
list columns lost their type (pandas keeps no element type for an empty column) reads as empty
lists, so "no rule passed the threshold" works everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.frames import column, input_format, to_arrow_table

#: the columns a rules frame needs for pair metrics (substitutes, graph)
SUPPORT_COLUMNS = ("antecedents", "consequents", "antecedent support", "consequent support", "support")
LIST_COLUMNS = ("antecedents", "consequents")


def rules_table(rules_df: Any, required: tuple[str, ...] = SUPPORT_COLUMNS) -> pa.Table:
    """A rules frame as a pyarrow Table with list-typed ``antecedents`` / ``consequents``, checking
    the columns in ``required`` are present."""
    if input_format(rules_df) == "pandas":
        rules_df = _sets_to_lists(rules_df)
    table = to_arrow_table(rules_df)
    for name in required:
        column(table, name, "rules column")
    for name in LIST_COLUMNS:
        if name not in table.column_names:
            continue
        typ = table.column(name).type
        if _is_list(typ):
            continue
        if table.num_rows == 0:  # an empty frame: no element type to keep
            table = table.set_column(table.column_names.index(name), name, pa.array([], pa.list_(pa.null())))
            continue
        raise ValueError(f"rules column {name!r} must hold lists of item labels, got {typ}")
    return table


def list_parts(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat labels) of a list-of-labels rules column; nulls are an error."""
    col = table.column(name).combine_chunks()
    if col.null_count:
        raise ValueError(f"rules column {name!r} has {col.null_count} null values")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr, _labels(pc.list_flatten(col))


def single_item_rules(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a rules table with one antecedent and one consequent item: (row positions, antecedents, consequents)."""
    ant = table.column("antecedents").combine_chunks()
    con = table.column("consequents").combine_chunks()
    mask = pc.and_(pc.equal(pc.list_value_length(ant), 1), pc.equal(pc.list_value_length(con), 1))
    mask = pc.fill_null(mask, False)
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    return rows, _labels(pc.list_flatten(ant.filter(mask))), _labels(pc.list_flatten(con.filter(mask)))


def numeric_column(table: pa.Table, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """A float64 numpy view of a numeric rules column (optionally at ``rows``); nulls are an error."""
    col = column(table, name, "rules column")
    if col.null_count:
        raise ValueError(f"rules column {name!r} has {col.null_count} null values")
    values = col.to_numpy().astype(np.float64, copy=False)
    return values if rows is None else values[rows]


def label_kind(values: np.ndarray) -> str:
    """Label type family: "O" strings, "i" integers, else the numpy kind."""
    return "O" if values.dtype.kind in "OU" else ("i" if values.dtype.kind in "iu" else values.dtype.kind)


def _labels(values: pa.Array) -> np.ndarray:
    """Item labels as numpy (an empty or untyped array stays empty, whatever its type)."""
    if pa.types.is_null(values.type):
        return np.empty(0, dtype=np.int64) if len(values) == 0 else values.to_numpy(zero_copy_only=False)
    return values.to_numpy(zero_copy_only=False)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t)


def _sets_to_lists(df: Any) -> Any:
    """Turn mlxtend-style frozenset/tuple cells of a pandas rules frame into sorted lists (arrow cannot read sets)."""
    out = df
    for name in LIST_COLUMNS:
        if name in df.columns and len(df) and isinstance(df[name].iloc[0], set | frozenset | tuple):
            if out is df:
                out = df.copy()
            out[name] = [sorted(v) for v in df[name]]
    return out
