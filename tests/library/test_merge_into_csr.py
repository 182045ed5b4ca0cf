"""merge_into_csr: rebuilding only the touched rows gives exactly what rebuilding every entry gives."""

from __future__ import annotations

import numpy as np
import pytest

from rusket_core.encoding import _build_csr, merge_into_csr


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("drop_by", [None, "rows", "columns"])
@pytest.mark.parametrize("seed", range(5))
def test_merge_equals_the_full_rebuild(seed, drop_by, weighted):
    """Random CSR (repeated pairs merged), random new entries (some on existing pairs, some on new
    rows past the old ones, repeats among them), entries dropped by row or by column: indptr,
    indices and weights equal _build_csr over all the kept entries followed by the new ones."""
    rng = np.random.default_rng(seed)
    n_rows, n_cols, n = 40, 25, 300
    r, c = rng.integers(0, n_rows, n), rng.integers(0, n_cols, n)
    w = rng.random(n) * 3 if weighted else None
    indptr, indices, data = _build_csr(r, c, w, n_rows)
    data = data if weighted else None
    extra = 3  # rows appended
    m = 25
    rows = np.concatenate([rng.integers(0, n_rows, m - 4), rng.integers(n_rows, n_rows + extra, 4)]).astype(np.int64)
    cols = rng.integers(0, n_cols + 2, m).astype(np.int64)  # two new columns too
    old_rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    hit = rng.choice(len(indices), 3, replace=False)  # three on pairs the CSR holds
    rows[:3], cols[:3] = old_rows[hit], indices[hit]
    weights = rng.random(m) * 2 if weighted else None
    drop = None
    if drop_by == "rows":
        drop = np.isin(old_rows, rng.choice(n_rows, 5, replace=False))
    elif drop_by == "columns":
        drop = np.isin(indices, rng.choice(n_cols, 3, replace=False))
    keep = slice(None) if drop is None else ~drop
    want = _build_csr(np.concatenate([old_rows[keep], rows]), np.concatenate([indices[keep].astype(np.int64), cols]),
                      None if data is None else np.concatenate([data[keep].astype(np.float64), weights]),
                      n_rows + extra)  # fmt: skip
    got = merge_into_csr(indptr, indices, data, rows, cols, weights, n_rows + extra, drop)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert len(got[1]) > 0


def test_merge_of_nothing_copies_the_rows():
    indptr, indices, data = _build_csr(np.array([0, 0, 2]), np.array([1, 3, 0]), np.array([1.0, 2.0, 3.0]), 3)
    got = merge_into_csr(indptr, indices, data, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), 4)
    np.testing.assert_array_equal(got[0], [0, 2, 2, 3, 3])
    np.testing.assert_array_equal(got[1], indices)
    np.testing.assert_array_equal(got[2], data)
