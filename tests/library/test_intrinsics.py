"""prefetch_row: a cache hint that compiles for any row of a C-contiguous 2-D array and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from rusket_core.intrinsics import prefetch_row


@njit(cache=True)
def _prefetch_rows_then_sum(a, rows):
    for r in rows:
        prefetch_row(a, r)
    return a.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("cols", [1, 16, 17, 100])
def test_prefetch_leaves_the_array_and_results_unchanged(dtype, cols):
    a = np.arange(5 * cols, dtype=dtype).reshape(5, cols)
    before = a.copy()
    rows = np.array([0, 4, 2, 4], dtype=np.int64)
    assert _prefetch_rows_then_sum(a, rows) == before.sum()
    np.testing.assert_array_equal(a, before)


def test_prefetch_refuses_non_contiguous_arrays():
    with pytest.raises(Exception, match="prefetch_row"):
        _prefetch_rows_then_sum(np.ones((4, 4), np.float32)[:, ::2], np.array([0], np.int64))
