"""Transactions to CSR: long format, one-hot frames, scipy matrices and basket lists, with label vocabularies.

Every encoder returns an :class:`Encoded` (rows × items CSR plus the user's own labels for both axes),
so kernels see plain integer arrays and the public API speaks the caller's ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit, prange

from rusket_core.frames import column, input_format, is_duckdb_relation, to_arrow_table


class Labels:
    """A vocabulary: position ``i`` holds the user's label for index ``i``; types are kept as given."""

    __slots__ = ("values", "_index")

    def __init__(self, values: Any):
        arr = _as_numpy_labels(values)
        if arr.ndim != 1:
            raise ValueError("labels must be one-dimensional")
        self.values = arr
        self._index = None
        if not self.lookup.is_unique:
            dupes = self.lookup[self.lookup.duplicated()].unique()[:5].tolist()
            raise ValueError(f"labels must be unique; repeated: {dupes}")

    @classmethod
    def from_values(cls, values: Any) -> Labels:
        """Sorted unique labels of ``values``."""
        arr = _as_numpy_labels(values)
        return cls(np.unique(arr) if arr.dtype != object else np.array(sorted(set(arr.tolist())), dtype=object))

    @classmethod
    def range(cls, n: int) -> Labels:
        """Labels 0..n-1, used when the input carries no labels of its own (row positions)."""
        return cls(np.arange(n, dtype=np.int64))

    @property
    def lookup(self):
        """A pandas Index over the labels, built on first use (hash lookups for ids)."""
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self.values, dtype=self.values.dtype, tupleize_cols=False)
        return self._index

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"Labels(n={len(self)}, dtype={self.values.dtype})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Labels) and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]

    def index_of(self, label: Any) -> int:
        """Index of one label; ``KeyError`` naming it when unknown."""
        if not _label_type_matches(label, self.values.dtype):
            raise KeyError(f"unknown id {label!r} (ids here are {self._kind()})")
        try:
            pos = self.lookup.get_loc(label)
        except (KeyError, TypeError):
            raise KeyError(f"unknown id {label!r}") from None
        if not isinstance(pos, int | np.integer):
            raise KeyError(f"unknown id {label!r}")
        return int(pos)

    def indices_of(self, labels: Iterable[Any]) -> np.ndarray:
        """Indices of many labels (int64); ``KeyError`` naming the first unknown one."""
        arr = _as_numpy_labels(list(labels) if not isinstance(labels, np.ndarray | pa.Array | pa.ChunkedArray) else labels)
        if len(arr) == 0:
            return np.empty(0, dtype=np.int64)
        if arr.dtype.kind != self.values.dtype.kind and not (
            arr.dtype.kind in "iu" and self.values.dtype.kind in "iu"
        ):
            raise KeyError(f"unknown id {arr[0]!r} (ids here are {self._kind()})")
        idx = self.lookup.get_indexer(arr)
        missing = np.flatnonzero(idx < 0)
        if len(missing):
            raise KeyError(f"unknown id {arr[missing[0]]!r} ({len(missing)} unknown in all)")
        return idx.astype(np.int64)

    def take(self, idx: Any) -> np.ndarray:
        """Labels at integer positions ``idx``."""
        return self.values[np.asarray(idx, dtype=np.int64)]

    def to_arrow(self) -> pa.Array:
        """The labels as a pyarrow array."""
        return pa.array(self.values)

    def _kind(self) -> str:
        return {"i": "integers", "u": "integers", "f": "floats", "O": "strings", "U": "strings"}.get(
            self.values.dtype.kind, str(self.values.dtype)
        )


def _label_type_matches(label: Any, dtype: np.dtype) -> bool:
    """Refuse cross-type matches ("1001" vs 1001) that a hash lookup could coerce."""
    if isinstance(label, bool | np.bool_):
        return dtype.kind == "b"
    if isinstance(label, int | np.integer):
        return dtype.kind in "iu"
    if isinstance(label, str):
        return dtype.kind in "OU"
    return True


def _as_numpy_labels(values: Any) -> np.ndarray:
    """Labels as numpy: ints stay int64, strings become an object array of str, dates stay datetime64."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
            return np.asarray(values.to_pylist(), dtype=object)
        return values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        arr = arr.astype(object)
    return arr


@dataclass
class Encoded:
    """A rows × items CSR matrix with the user's labels for both axes.

    ``indices`` are sorted and unique within each row; ``data`` holds summed weights (float32) or is
    None when only presence matters.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray | None
    rows: Labels
    items: Labels

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def weights(self) -> np.ndarray:
        """The stored weights, or ones when the matrix only records presence."""
        return self.data if self.data is not None else np.ones(self.nnz, dtype=np.float32)

    def to_scipy(self):
        """The matrix as a ``scipy.sparse.csr_array`` (float32)."""
        from scipy import sparse

        return sparse.csr_array((self.weights(), self.indices, self.indptr), shape=(self.n_rows, self.n_items))

    def row_slice(self, start: int, stop: int) -> Encoded:
        """Rows ``start:stop`` as their own Encoded (same items), e.g. one chunk of customers."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        data = None if self.data is None else self.data[lo:hi]
        return Encoded(self.indptr[start : stop + 1] - lo, self.indices[lo:hi], data, Labels(self.rows.values[start:stop]), self.items)

    def take_rows(self, rows: Any) -> Encoded:
        """Rows ``rows`` (indices, in that order) as their own Encoded (same items)."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1], dtype=np.int64)
        data = None if self.data is None else self.data[take]
        return Encoded(indptr, self.indices[take], data, Labels(self.rows.values[rows]), self.items)

    def item_counts(self) -> np.ndarray:
        """Number of rows containing each item."""
        return np.bincount(self.indices, minlength=self.n_items).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# long format


def encode_transactions(
    data: Any, transaction_col: str, item_col: str, weight_col: str | None = None
) -> Encoded:
    """Encode long-format rows (one per transaction × item) into CSR; repeats collapse, weights add up.

    A DuckDB relation is encoded inside DuckDB (:func:`rusket_core.sql_encoding.encode_relation`): only
    the codes, summed weights and label dictionaries reach Python, with the same result.
    """
    if is_duckdb_relation(data):
        from rusket_core.sql_encoding import encode_relation

        return encode_relation(data, transaction_col, item_col, weight_col)
    table = to_arrow_table(data)
    rows_col = column(table, transaction_col, "transaction column")
    items_col = column(table, item_col, "item column")
    if table.num_rows == 0:
        raise ValueError("input is empty: no rows to encode")
    row_codes, rows = _factorize(rows_col, transaction_col)
    item_codes, items = _factorize(items_col, item_col)
    weights = None
    if weight_col is not None:
        weights = _weights(column(table, weight_col, "weight column"), weight_col)
    indptr, indices, summed = _build_csr(row_codes, item_codes, weights, len(rows))
    return Encoded(indptr, indices, summed if weights is not None else None, rows, items)


def _factorize(col: pa.ChunkedArray, name: str) -> tuple[np.ndarray, Labels]:
    """Codes into the sorted unique values of ``col``; errors name the column for nulls and NaN."""
    check_ids(name, len(col), n_null=col.null_count)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_floating(col.type):
        check_ids(name, len(col), n_nan=pc.sum(pc.is_nan(col)).as_py() or 0)
    if pa.types.is_integer(col.type):
        dense = _factorize_dense_ints(col)
        if dense is not None:
            return dense
    if pa.types.is_string_view(col.type):
        col = col.cast(pa.large_string())
    uniques = pc.unique(col)
    uniques = uniques.take(pc.sort_indices(uniques))
    codes = pc.index_in(col, value_set=uniques)
    codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
    return codes.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), Labels(uniques)


def _factorize_dense_ints(col: pa.ChunkedArray) -> tuple[np.ndarray, Labels] | None:
    """Integer ids spanning a compact range: a lookup table beats hashing (None when the range is wide)."""
    bounds = pc.min_max(col)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    span = hi - lo + 1
    if span > 4 * len(col) + 1024 or span >= 2**31:
        return None
    values = col.combine_chunks().to_numpy(zero_copy_only=False)
    offset = (values - lo).astype(np.int64, copy=False)
    present = np.zeros(span, dtype=bool)
    present[offset] = True
    uniques = (np.flatnonzero(present) + lo).astype(values.dtype)
    lut = np.cumsum(present, dtype=np.int64) - 1
    return lut[offset], Labels(uniques)


def _weights(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """Weights as float64; must be numeric, non-null, finite and >= 0."""
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
        raise ValueError(f"column {name!r} must be numeric, got {col.type}")
    check_weights(name, len(col), n_null=col.null_count)
    w = col.combine_chunks().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    check_weights(name, len(col), n_bad=int((~np.isfinite(w)).sum()), n_negative=int((w < 0).sum()))
    return w


def check_ids(name: str, n_rows: int, n_null: int = 0, n_nan: int = 0) -> None:
    """Refuse null or NaN ids (messages shared with the Spark engine)."""
    if n_null:
        raise ValueError(f"column {name!r} has {n_null} null values (of {n_rows} rows); ids must not be null")
    if n_nan:
        raise ValueError(f"column {name!r} has {n_nan} NaN values (of {n_rows} rows); ids must not be NaN")


def check_weights(name: str, n_rows: int, n_null: int = 0, n_bad: int = 0, n_negative: int = 0) -> None:
    """Refuse null, non-finite or negative weights (messages shared with the Spark engine)."""
    if n_null:
        raise ValueError(f"column {name!r} has {n_null} null values (of {n_rows} rows)")
    if n_bad:
        raise ValueError(f"column {name!r} has {n_bad} non-finite values (NaN or inf)")
    if n_negative:
        raise ValueError(f"column {name!r} has {n_negative} negative values; weights must be >= 0")


@njit(cache=True, parallel=True)
def _csr_kernel(row_codes, item_codes, weights, has_weights, n_rows):  # pragma: no cover - numba
    """Bucket (row, item[, weight]) by row, sort each row in place, merge repeats (weights add)."""
    n = row_codes.shape[0]
    start = np.zeros(n_rows + 1, dtype=np.int64)
    for k in range(n):
        start[row_codes[k] + 1] += 1
    for r in range(n_rows):
        start[r + 1] += start[r]
    fill = start[:-1].copy()
    items = np.empty(n, dtype=np.int32)
    w = np.empty(n if has_weights else 0, dtype=np.float64)
    for k in range(n):
        r = row_codes[k]
        p = fill[r]
        items[p] = item_codes[k]
        if has_weights:
            w[p] = weights[k]
        fill[r] = p + 1
    kept = np.zeros(n_rows + 1, dtype=np.int64)
    for r in prange(n_rows):
        lo = start[r]
        hi = start[r + 1]
        # Shell sort with Knuth's gaps (1, 4, 13, 40, ...): plain insertion sort for the usual
        # short rows, allocates nothing, and compiles far faster than numba's argsort
        gap = 1
        while 3 * gap + 1 < hi - lo:
            gap = 3 * gap + 1
        while gap > 0:
            for a in range(lo + gap, hi):
                key = items[a]
                kw = w[a] if has_weights else 0.0
                b = a - gap
                while b >= lo and items[b] > key:
                    items[b + gap] = items[b]
                    if has_weights:
                        w[b + gap] = w[b]
                    b -= gap
                items[b + gap] = key
                if has_weights:
                    w[b + gap] = kw
            gap = (gap - 1) // 3
        out = lo
        for p in range(lo, hi):
            if out > lo and items[out - 1] == items[p]:
                if has_weights:
                    w[out - 1] += w[p]
            else:
                items[out] = items[p]
                if has_weights:
                    w[out] = w[p]
                out += 1
        kept[r + 1] = out - lo
    indptr = np.cumsum(kept)
    out_items = np.empty(indptr[n_rows], dtype=np.int32)
    out_w = np.empty(indptr[n_rows] if has_weights else 0, dtype=np.float32)
    for r in prange(n_rows):
        src = start[r]
        dst = indptr[r]
        for j in range(indptr[r + 1] - dst):
            out_items[dst + j] = items[src + j]
            if has_weights:
                out_w[dst + j] = w[src + j]
    return indptr, out_items, out_w


def _build_csr(
    row_codes: np.ndarray, item_codes: np.ndarray, weights: np.ndarray | None, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays from parallel code arrays (see ``_csr_kernel``)."""
    has_weights = weights is not None
    w = weights if has_weights else np.empty(0, dtype=np.float64)
    # writable arrays only: a read-only view (pandas often hands one out) is another numba type,
    # which would compile the kernel a second time
    return _csr_kernel(
        np.require(row_codes, np.int64, "CW"),
        np.require(item_codes, np.int32, "CW"),
        np.require(w, np.float64, "CW"),
        has_weights,
        n_rows,
    )


@njit(cache=True, parallel=True)
def _splice_kernel(indptr, indices, data, has_data, n_rows, touched, sub_indptr, sub_indices, sub_data):  # pragma: no cover - numba
    """CSR of ``n_rows`` rows: row ``touched[t]`` from the sub-CSR's row t, the other rows as they were
    (rows past the old ones empty)."""
    n_old = indptr.shape[0] - 1
    source = np.full(n_rows, -1, dtype=np.int64)
    for t in range(touched.shape[0]):
        source[touched[t]] = t
    lengths = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        t = source[r]
        if t >= 0:
            lengths[r + 1] = sub_indptr[t + 1] - sub_indptr[t]
        elif r < n_old:
            lengths[r + 1] = indptr[r + 1] - indptr[r]
    out_ptr = np.cumsum(lengths)
    out_items = np.empty(out_ptr[n_rows], dtype=np.int32)
    out_w = np.empty(out_ptr[n_rows] if has_data else 0, dtype=np.float32)
    for r in prange(n_rows):
        t = source[r]
        dst = out_ptr[r]
        if t >= 0:
            src = sub_indptr[t]
            for j in range(out_ptr[r + 1] - dst):
                out_items[dst + j] = sub_indices[src + j]
                if has_data:
                    out_w[dst + j] = sub_data[src + j]
        elif r < n_old:
            src = indptr[r]
            for j in range(out_ptr[r + 1] - dst):
                out_items[dst + j] = indices[src + j]
                if has_data:
                    out_w[dst + j] = data[src + j]
    return out_ptr, out_items, out_w


def merge_into_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray | None, rows: np.ndarray, cols: np.ndarray,
    weights: np.ndarray | None, n_rows: int, drop: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """What ``_build_csr`` gives for the CSR's entries (less those flagged in ``drop``) followed by
    the entries (``rows``, ``cols``[, ``weights``]) over ``n_rows`` rows, rebuilding only the rows
    that gain or lose entries (a day's fold-in touches few of a history's rows)."""
    n_old = len(indptr) - 1
    lost = np.empty(0, np.int64)
    if drop is not None:
        lost = np.searchsorted(indptr, np.flatnonzero(drop), side="right") - 1
    touched = np.unique(np.concatenate([np.asarray(rows, np.int64), lost]))
    old = touched[touched < n_old]
    starts, lengths = indptr[old], indptr[old + 1] - indptr[old]
    pos = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    old_rows = np.repeat(np.searchsorted(touched, old), lengths)
    if drop is not None:
        kept = ~drop[pos]
        pos, old_rows = pos[kept], old_rows[kept]
    w = None if data is None else np.concatenate([data[pos].astype(np.float64), weights])
    sub = _build_csr(np.concatenate([old_rows, np.searchsorted(touched, rows)]),
                     np.concatenate([indices[pos].astype(np.int64), cols]), w, len(touched))  # fmt: skip
    has_data = data is not None
    return _splice_kernel(
        np.require(indptr, np.int64, "C"), np.require(indices, np.int32, "C"),
        np.require(data if has_data else np.empty(0, np.float32), np.float32, "C"), has_data, int(n_rows),
        touched, sub[0], sub[1], sub[2],
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# one-hot, sparse, basket lists


def encode_onehot(df: Any) -> Encoded:
    """Encode a one-hot frame (columns = items, values bool or 0/1); column names become item labels."""
    kind = input_format(df)
    if kind == "pandas" and len(df.columns) and all(str(t).startswith("Sparse") for t in df.dtypes):
        from scipy import sparse

        coo = sparse.csr_array(df.sparse.to_coo())
        _check_binary_values(coo.data, "a sparse column")
        return encode_sparse(coo, item_names=list(df.columns))
    table = to_arrow_table(df)
    if table.num_rows == 0 or table.num_columns == 0:
        raise ValueError("input is empty: a one-hot frame needs at least one row and one column")
    cols = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if col.null_count:
            raise ValueError(f"one-hot column {name!r} has {col.null_count} null values")
        if not (pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise ValueError(f"one-hot column {name!r} must be bool or 0/1, got type {col.type}")
        values = col.combine_chunks().to_numpy(zero_copy_only=False)
        _check_binary_values(values, f"one-hot column {name!r}")
        cols.append(values.astype(bool, copy=False))
    dense = np.column_stack(cols)
    names = table.column_names
    if kind == "pandas":
        names = list(df.columns)
    rows, items = np.nonzero(dense)
    indptr = np.zeros(dense.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=dense.shape[0]), out=indptr[1:])
    return Encoded(indptr, items.astype(np.int32), None, Labels.range(dense.shape[0]), Labels(names))


def _check_binary_values(values: np.ndarray, what: str) -> None:
    if values.dtype == bool:
        return
    bad = (values != 0) & (values != 1)
    if bad.any():
        example = values[np.flatnonzero(bad)[0]]
        raise ValueError(f"{what} has {int(bad.sum())} values other than 0/1/True/False (e.g. {example!r})")


def encode_sparse(matrix: Any, item_names: Sequence[Any] | None = None) -> Encoded:
    """Encode a scipy sparse rows × items matrix; ``item_names`` label the columns (default 0..n-1)."""
    from scipy import sparse

    csr = sparse.csr_array(matrix, dtype=np.float32, copy=True)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    n_items = csr.shape[1]
    items = Labels.range(n_items) if item_names is None else Labels(item_names)
    if len(items) != n_items:
        raise ValueError(f"item_names has {len(items)} names for {n_items} columns")
    if csr.data.size and not np.isfinite(csr.data).all():
        raise ValueError("matrix has non-finite values (NaN or inf)")
    return Encoded(
        csr.indptr.astype(np.int64),
        csr.indices.astype(np.int32),
        csr.data.astype(np.float32),
        Labels.range(csr.shape[0]),
        items,
    )


def encode_baskets(baskets: Sequence[Iterable[Any]]) -> Encoded:
    """Encode a list of baskets (each an iterable of item labels); repeats within a basket count once."""
    baskets = [list(b) for b in baskets]
    if not baskets:
        raise ValueError("input is empty: no baskets to encode")
    lengths = np.fromiter((len(b) for b in baskets), dtype=np.int64, count=len(baskets))
    flat = [item for basket in baskets for item in basket]
    if not flat:
        raise ValueError("input is empty: every basket is empty")
    try:
        items_arr = pa.chunked_array([pa.array(flat)])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"basket items must share one type (all strings or all integers): {exc}") from exc
    item_codes, items = _factorize(items_arr, "items")
    row_codes = np.repeat(np.arange(len(baskets), dtype=np.int64), lengths)
    indptr, indices, _ = _build_csr(row_codes, item_codes, None, len(baskets))
    return Encoded(indptr, indices, None, Labels.range(len(baskets)), items)


def encode(data: Any, item_names: Sequence[Any] | None = None) -> Encoded:
    """Encode whatever a model accepts: an Encoded, scipy sparse, dense 0/1 array, basket list or one-hot frame."""
    if isinstance(data, Encoded):
        return data
    from scipy import sparse

    if sparse.issparse(data):
        return encode_sparse(data, item_names)
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"a dense array must be 2-D (rows × items), got shape {data.shape}")
        _check_binary_values(data, "the array")
        return encode_sparse(sparse.csr_array(data.astype(np.float32)), item_names)
    if isinstance(data, list | tuple):
        return encode_baskets(data)
    try:
        input_format(data)
    except TypeError:
        raise TypeError(
            "expected a one-hot DataFrame (pandas/polars/pyarrow), a scipy sparse matrix, a 2-D 0/1 array, "
            f"a list of baskets or an Encoded; got {type(data).__name__}. For long-format rows use "
            "from_transactions(df, transaction_col=..., item_col=...)."
        ) from None
    return encode_onehot(data)
