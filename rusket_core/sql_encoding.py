"""Long-format rows to CSR inside DuckDB: validation, id dictionaries, weight sums and grouping in SQL.

Only integer codes, summed weights and the label dictionaries are fetched, so memory follows the
interaction matrix rather than the raw table. The result equals ``encode_transactions`` on the same
rows: labels sorted the same way (byte order for strings), same CSR, same sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rusket_core.encoding import Encoded, Labels, _build_csr

SOURCE = "__rusket_source"
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
           "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip
FLOATS = ("FLOAT", "DOUBLE")


def quote(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def column_types(relation: Any) -> dict[str, str]:
    """Column name -> DuckDB type name (``DECIMAL(18,3)`` reported as ``DECIMAL``)."""
    return {name: str(kind).split("(")[0] for name, kind in zip(relation.columns, relation.types, strict=True)}


def _sort_key(name: str, kind: str) -> str:
    """ORDER BY key matching Arrow's order: strings byte-wise whatever the session's collation."""
    return f"{quote(name)} collate \"binary\"" if kind == "VARCHAR" else quote(name)


def count_bad_rows(relation: Any, ids: list[str], non_negative: list[str]) -> tuple[int, list[str]]:
    """One scan counting null/NaN ids and null, non-finite or negative values; (rows, problem messages).

    Messages name the column and the count (the same wording as ``encode_transactions``), so a large
    source fails before any of its lines reach Python.
    """
    types = column_types(relation)
    exprs, messages = ["count(*)"], []
    for name in ids:
        col = quote(name)
        exprs.append(f"count(*) filter (where {col} is null)")
        messages.append(f"column {name!r} has {{n}} null values (of {{rows}} rows); ids must not be null")
        if types[name] in FLOATS:
            exprs.append(f"count(*) filter (where isnan({col}))")
            messages.append(f"column {name!r} has {{n}} NaN values (of {{rows}} rows); ids must not be NaN")
    for name in non_negative:
        col = quote(name)
        exprs.append(f"count(*) filter (where {col} is null)")
        messages.append(f"column {name!r} has {{n}} null values (of {{rows}} rows)")
        if types[name] in FLOATS:
            exprs.append(f"count(*) filter (where not isfinite({col}))")
            messages.append(f"column {name!r} has {{n}} non-finite values (NaN or inf)")
        exprs.append(f"count(*) filter (where {col} < 0)")
        messages.append(f"column {name!r} has {{n}} negative values; weights must be >= 0")
    n_rows, *counts = relation.query(SOURCE, f"select {', '.join(exprs)} from {SOURCE}").fetchall()[0]
    return int(n_rows), [m.format(n=n, rows=n_rows) for m, n in zip(messages, counts, strict=True) if n]


def encode_relation(relation: Any, transaction_col: str, item_col: str, weight_col: str | None = None) -> Encoded:
    """Encode a DuckDB relation of long-format rows into CSR; repeats collapse, weights add up (in SQL)."""
    types = column_types(relation)
    for name, what in ((transaction_col, "transaction column"), (item_col, "item column"), (weight_col, "weight column")):
        if name is not None and name not in types:
            raise ValueError(f"{what} {name!r} not found; available columns: {list(relation.columns)}")
    if weight_col is not None and types[weight_col] not in NUMERIC:
        raise ValueError(f"column {weight_col!r} must be numeric, got {types[weight_col]}")
    n_rows, problems = count_bad_rows(relation, [transaction_col, item_col], [] if weight_col is None else [weight_col])
    if n_rows == 0:
        raise ValueError("input is empty: no rows to encode")
    if problems:
        raise ValueError(problems[0] + (f" (also: {'; '.join(problems[1:])})" if len(problems) > 1 else ""))
    rows = _labels(relation, transaction_col, types[transaction_col])
    items = _labels(relation, item_col, types[item_col])
    row_codes, item_codes, weights = _pairs(relation, transaction_col, item_col, weight_col, types)
    indptr, indices, summed = _build_csr(row_codes, item_codes, weights, len(rows))
    return Encoded(indptr, indices, summed if weight_col is not None else None, rows, items)


def _labels(relation: Any, name: str, kind: str) -> Labels:
    """The sorted distinct values of one column (the code of a value is its position)."""
    sql = f"select distinct {quote(name)} as v from {SOURCE} order by {_sort_key('v', kind)}"
    return Labels(relation.query(SOURCE, sql).to_arrow_table().column(0))


def _pairs(
    relation: Any, row_col: str, item_col: str, weight_col: str | None, types: dict[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(row code, item code[, summed weight]) per distinct pair, codes from dictionaries joined in SQL."""
    r, i = quote(row_col), quote(item_col)
    weight = f", sum(cast(s.{quote(weight_col)} as DOUBLE)) as w" if weight_col is not None else ""
    sql = f"""
        with rd as (select v, (row_number() over (order by {_sort_key('v', types[row_col])}) - 1)::INTEGER as code
                    from (select distinct {r} as v from {SOURCE})),
             idict as (select v, (row_number() over (order by {_sort_key('v', types[item_col])}) - 1)::INTEGER as code
                       from (select distinct {i} as v from {SOURCE}))
        select rd.code as rc, idict.code as ic{weight}
        from {SOURCE} s join rd on s.{r} = rd.v join idict on s.{i} = idict.v
        group by rd.code, idict.code
    """  # fmt: skip
    reader = relation.query(SOURCE, sql).arrow()
    parts: dict[str, list[np.ndarray]] = {"rc": [], "ic": [], "w": []}
    for batch in reader:
        for name in batch.schema.names:
            parts[name].append(batch.column(name).to_numpy(zero_copy_only=False))

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[name]).astype(dtype, copy=False) if parts[name] else np.empty(0, dtype)

    return cat("rc", np.int64), cat("ic", np.int32), cat("w", np.float64) if weight_col is not None else None

