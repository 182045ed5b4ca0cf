"""ALS at scale: CG on gathered factor rows equals direct reads and the float64 solution; fits in locality order equal plain ones."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rusket_core.factorization.als import eigenbasis, locality_order, rotate
from rusket_core.factorization.kernels import als_update


def _csr(rng, n_rows, n_cols, lengths):
    """Rows of the given lengths (distinct random columns, ratings 1..5): empty, single, long rows."""
    rows, cols = [], []
    for u, n in enumerate(lengths):
        rows += [u] * n
        cols += list(rng.choice(n_cols, n, replace=False))
    data = rng.integers(1, 6, len(rows)).astype(np.float32)
    m = sp.csr_array((data, (rows, cols)), shape=(n_rows, n_cols))
    m.sort_indices()
    return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data.astype(np.float32)


def _cg(csr, X, Y, lam, cg_steps, bounds, gather):
    X = X.copy()
    als_update(*csr, X, Y, lam, np.zeros((0, 0)), 40.0, cg_steps, False, bounds, gather)
    return X


# rows with 0, 1, 2, an odd and an even count below, at and above the caps; bounds put them in several chunks
LENGTHS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 33, 0, 60, 1]


@pytest.mark.parametrize("k", [3, 16, 64])
def test_gathered_rows_give_the_same_factors_as_direct_reads(k):
    rng = np.random.default_rng(k)
    csr = _csr(rng, len(LENGTHS), 70, LENGTHS)
    Y = (rng.normal(size=(70, k)) / np.sqrt(k)).astype(np.float32)
    X = (rng.normal(size=(len(LENGTHS), k)) / np.sqrt(k)).astype(np.float32)
    lam, P = eigenbasis(Y, 0.01)
    rotate(X, P)
    rotate(Y, P)
    direct = _cg(csr, X, Y, lam, 3, np.array([0, 5, 9, len(LENGTHS)], np.int64), gather=0)
    assert np.all(direct[0] == 0) and np.all(direct[11] == 0)  # no entries: exactly zero
    assert not np.array_equal(direct[1:], X[1:])
    for gather in (1, 2, 4, 5, 8, 1 << 12):  # odd caps round up to even
        for bounds in ([0, len(LENGTHS)], [0, 5, 9, len(LENGTHS)]):
            got = _cg(csr, X, Y, lam, 3, np.array(bounds, np.int64), gather)
            np.testing.assert_array_equal(got, direct, err_msg=f"gather={gather}, bounds={bounds}")


def test_gathered_cg_converges_to_the_float64_solution():
    k, alpha, reg = 4, 40.0, 0.1
    rng = np.random.default_rng(7)
    csr = _csr(rng, len(LENGTHS), 70, LENGTHS)
    Y = rng.normal(size=(70, k)).astype(np.float32)
    X = rng.normal(size=(len(LENGTHS), k)).astype(np.float32)
    lam, P = eigenbasis(Y, reg)
    Yr = Y.copy()
    rotate(X, P)
    rotate(Yr, P)
    X = X.copy()
    als_update(*csr, X, Yr, lam, np.zeros((0, 0)), alpha, 12, False, np.array([0, len(LENGTHS)], np.int64), 4)
    rotate(X, P.T)
    # float64 reference: (YtY + reg I + sum_i alpha r_ui y_i y_i^T) x_u = sum_i (1 + alpha r_ui) y_i
    Y64 = Y.astype(np.float64)
    indptr, indices, data = csr
    for u in range(len(LENGTHS)):
        cols, r = indices[indptr[u] : indptr[u + 1]], data[indptr[u] : indptr[u + 1]].astype(np.float64)
        A = Y64.T @ Y64 + reg * np.eye(k) + (Y64[cols].T * (alpha * r)) @ Y64[cols]
        b = Y64[cols].T @ (1.0 + alpha * r)
        np.testing.assert_allclose(X[u], np.linalg.solve(A, b), rtol=2e-3, atol=2e-4, err_msg=f"row {u}")


def test_locality_order_sorts_users_by_their_most_popular_items():
    from rusket_core.encoding import Encoded, Labels

    # item popularity: 2 (4 users) > 0 (3) > 1 (2) > 3 (1); ranks 2->0, 0->1, 1->2, 3->3
    rows = [[0, 3], [2], [1, 2], [0, 1, 2], [], [0, 2], [3]]
    indptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    indices = np.array([i for r in rows for i in r], np.int32)
    enc = Encoded(indptr, indices, None, Labels(np.arange(len(rows))), Labels(np.arange(4)))
    # keys (top-3 ranks, 4 past the end): 0:(1,3,4) 1:(0,4,4) 2:(0,2,4) 3:(0,1,2) 4:(4,4,4) 5:(0,1,4) 6:(3,4,4)
    np.testing.assert_array_equal(locality_order(enc), [3, 5, 2, 1, 0, 6, 4])
    np.testing.assert_array_equal(locality_order(enc, depth=1), [1, 2, 3, 5, 0, 6, 4])  # ties keep row order


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_fit_in_locality_order_gives_the_same_model(monkeypatch, caplog, solver):
    import rusket_core.factorization.als as als_module
    import rusket_core.factorization.kernels as kernels
    from rusket_core.factorization import ALS

    rng = np.random.default_rng(3)
    m = sp.random(300, 40, density=0.08, random_state=rng, format="csr", dtype=np.float32)
    m.data = (1 + 4 * m.data).astype(np.float32)
    params = {"factors": 8, "iterations": 4, "regularization": 0.1, "solver": solver, "random_state": 5}
    plain = ALS(**params).fit(m)
    monkeypatch.setattr(als_module, "CACHED_BYTES", 0)  # reorder the users
    monkeypatch.setattr(kernels, "CACHED_BYTES", 0)  # and gather the factor rows
    with caplog.at_level("INFO", logger="rusket_core.factorization.als"):
        ordered = ALS(**params).fit(m)
    # the same factors up to the summation order of each item's entries
    np.testing.assert_allclose(ordered.user_factors, plain.user_factors, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ordered.item_factors, plain.item_factors, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(ordered.users.values, plain.users.values)
    # the loss logged during the fit (on the reordered rows) is the model's loss
    logged = float(caplog.records[-1].getMessage().rsplit("loss ", 1)[1].split(",")[0])
    assert logged == pytest.approx(ordered.training_loss(), rel=1e-4)


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0], [5, 4, 3, 2, 1, 0], [2, 0, 1, 5, 3, 4]])
def test_permute_rows_in_place_equals_fancy_indexing(order):
    from rusket_core.factorization.kernels import permute_rows

    M = np.arange(18, dtype=np.float32).reshape(6, 3)
    order = np.array(order, np.int64)
    want = M[order]
    permute_rows(M, order)
    np.testing.assert_array_equal(M, want)
