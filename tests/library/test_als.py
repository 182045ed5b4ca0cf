"""ALS: row solves against numpy, CG vs Cholesky, objective descent, degenerate input, planted quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from rusket_core.evaluation import (
    PopularityRecommender,
    evaluate,
    planted_interactions,
    train_test_split,
)
from rusket_core.factorization import ALS
from rusket_core.factorization.als import eigenbasis, rotate
from rusket_core.factorization.kernels import _cg_row, als_update


def _random_csr(rng, n_rows, n_cols, density, empty_row=True, empty_col=True):
    m = sp.random(n_rows, n_cols, density=density, random_state=rng, format="csr", dtype=np.float32)
    m.data = (1 + 4 * m.data).astype(np.float32)
    m = m.tolil()
    if empty_row:
        m[1, :] = 0
    if empty_col:
        m[:, 2] = 0
    m = sp.csr_array(m)
    m.eliminate_zeros()
    m.sort_indices()
    return m


def _solve_rows(csr, X, Y, alpha, reg, cholesky, cg_steps=3):
    """Re-solve X's rows in place; CG runs in the eigenbasis of YtY + reg I and X is rotated back."""
    G64 = Y.astype(np.float64).T @ Y.astype(np.float64) + reg * np.eye(Y.shape[1])
    bounds = np.array([0, 2, X.shape[0]], dtype=np.int64)
    lam, P = eigenbasis(Y, reg)
    if not cholesky:
        Y = Y.copy()
        rotate(X, P)
        rotate(Y, P)
    als_update(
        csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data.astype(np.float32),
        X, Y, lam, G64, alpha, cg_steps, cholesky, bounds, 4,
    )  # fmt: skip
    if not cholesky:
        rotate(X, P.T)


def _numpy_rows(csr, Y, alpha, reg):
    """Reference: solve (YtY + reg I + Y^T (C_u - I) Y) x = Y^T C_u p_u for every row, densely."""
    dense = csr.toarray().astype(np.float64)
    Y = Y.astype(np.float64)
    out = np.zeros((dense.shape[0], Y.shape[1]))
    for u, row in enumerate(dense):
        c = np.where(row > 0, 1 + alpha * row, 1.0)
        p = (row > 0).astype(np.float64)
        A = Y.T @ (Y * c[:, None]) + reg * np.eye(Y.shape[1])
        out[u] = np.linalg.solve(A, Y.T @ (c * p))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cholesky_row_solves_satisfy_normal_equations(seed):
    rng = np.random.default_rng(seed)
    csr = _random_csr(rng, 12, 9, 0.3)
    Y = rng.normal(size=(9, 4)).astype(np.float32)
    X = rng.normal(size=(12, 4)).astype(np.float32)
    _solve_rows(csr, X, Y, alpha=3.0, reg=0.1, cholesky=True)
    np.testing.assert_allclose(X, _numpy_rows(csr, Y, 3.0, 0.1), rtol=1e-4, atol=1e-5)
    assert np.all(X[1] == 0)  # empty row: exactly zero


@pytest.mark.parametrize("seed", [0, 1])
def test_cg_converges_to_the_cholesky_solution(seed):
    rng = np.random.default_rng(seed)
    csr = _random_csr(rng, 15, 10, 0.3)
    Y = rng.normal(size=(10, 5)).astype(np.float32)
    X0 = rng.normal(size=(15, 5)).astype(np.float32)
    exact, cg = X0.copy(), X0.copy()
    _solve_rows(csr, exact, Y, 2.0, 0.1, cholesky=True)
    _solve_rows(csr, cg, Y, 2.0, 0.1, cholesky=False, cg_steps=12)
    np.testing.assert_allclose(cg, exact, rtol=1e-3, atol=1e-4)


def test_few_cg_steps_move_towards_the_solution():
    rng = np.random.default_rng(3)
    csr = _random_csr(rng, 20, 30, 0.2, empty_row=False)
    Y = rng.normal(size=(30, 8)).astype(np.float32)
    X0 = rng.normal(size=(20, 8)).astype(np.float32)
    exact = X0.copy()
    _solve_rows(csr, exact, Y, 2.0, 0.1, cholesky=True)
    errors = []
    for steps in (1, 2, 4):
        x = X0.copy()
        _solve_rows(csr, x, Y, 2.0, 0.1, cholesky=False, cg_steps=steps)
        errors.append(np.linalg.norm(x - exact))
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_objective_decreases_over_iterations(solver):
    csr = _random_csr(np.random.default_rng(4), 40, 25, 0.15)
    losses = [
        ALS(factors=6, iterations=it, alpha=5.0, regularization=0.1, solver=solver).fit(csr).training_loss()
        for it in range(1, 7)
    ]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < losses[0]


def test_cg_and_cholesky_models_agree_on_recommendations():
    df = planted_interactions(n_users=200, n_items=80, n_interactions=3000, n_clusters=4, random_state=1)
    cg = ALS.from_transactions(df, "user_id", "item_id", factors=8, iterations=10, cg_steps=3).fit()
    ch = ALS.from_transactions(
        df, "user_id", "item_id", factors=8, iterations=10, solver="cholesky"
    ).fit()
    overlap = [
        len(set(cg.recommend_items(u, n=10)[0]) & set(ch.recommend_items(u, n=10)[0])) / 10
        for u in range(0, 200, 10)
    ]
    assert np.mean(overlap) > 0.7


def test_empty_rows_and_columns_stay_finite():
    csr = _random_csr(np.random.default_rng(5), 30, 20, 0.1)
    for solver in ("cg", "cholesky"):
        model = ALS(factors=5, iterations=5, solver=solver).fit(csr)
        assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()
        assert np.all(model.user_factors[1] == 0) and np.all(model.item_factors[2] == 0)
        items, scores = model.recommend_items(1, n=3)
        assert len(items) == 3 and np.isfinite(scores).all()
        assert np.isfinite(model.similar_items(2, n=3)[1]).all()


def test_deterministic_for_a_seed_whatever_the_thread_count():
    csr = _random_csr(np.random.default_rng(6), 50, 30, 0.1)
    a = ALS(factors=8, iterations=4, random_state=7, num_threads=1).fit(csr)
    b = ALS(factors=8, iterations=4, random_state=7).fit(csr)
    c = ALS(factors=8, iterations=4, random_state=8).fit(csr)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert not np.array_equal(a.item_factors, c.item_factors)
    assert a.user_factors.dtype == np.float32 and a.user_factors.flags.c_contiguous


def test_planted_clusters_beat_popularity_and_group_similar_items():
    df = planted_interactions(
        n_users=400, n_items=200, n_interactions=8000, n_clusters=8, in_cluster=0.9,
        popularity_exponent=0.5, random_state=0,
    )  # fmt: skip
    train, test = train_test_split(df, "user_id", "item_id", 0.2, random_state=0)
    als = ALS.from_transactions(train, "user_id", "item_id", factors=16, iterations=10).fit()
    pop = PopularityRecommender.from_transactions(train, "user_id", "item_id").fit()
    als_p = evaluate(als, None, test, k=10)["precision"]
    pop_p = evaluate(pop, None, test, k=10)["precision"]
    assert als_p > 3 * pop_p, (als_p, pop_p)
    same = [np.mean(als.similar_items(i, n=10)[0] % 8 == i % 8) for i in range(0, 200, 7)]
    assert np.mean(same) > 0.85  # chance is 1/8


def test_from_transactions_sums_duplicates_and_checks_ratings():
    df = pd.DataFrame({"c": [1, 1, 2, 2], "s": ["a", "a", "b", "a"], "r": [1.0, 2.0, 0.5, 0.0]})
    model = ALS.from_transactions(df, user_col="c", item_col="s", rating_col="r", factors=2)
    enc = model.user_items
    assert enc.data.tolist() == [3.0, 0.0, 0.5]
    assert model.fit() is model
    for bad in (-1.0, np.nan, np.inf):
        bad_df = df.assign(r=[1.0, bad, 1.0, 1.0])
        with pytest.raises(ValueError, match="'r'"):
            ALS.from_transactions(bad_df, "c", "s", rating_col="r")
    with pytest.raises(ValueError, match="'missing'"):
        ALS.from_transactions(df, "c", "s", rating_col="missing")


def test_from_encoded_shares_one_encoding_between_weighted_and_unweighted_models():
    from rusket_core.encoding import Encoded, encode_transactions
    from rusket_core.factorization import BPR

    df = pd.DataFrame({"c": [1, 1, 2, 3, 3], "s": ["a", "a", "b", "a", "c"], "r": [1.0, 2.0, 0.5, 1.0, 4.0]})
    enc = encode_transactions(df, "c", "s", weight_col="r")
    als = ALS.from_encoded(enc, "c", "s", "r", factors=2, iterations=3).fit()
    same = ALS.from_transactions(df, "c", "s", "r", factors=2, iterations=3).fit()
    np.testing.assert_array_equal(als.user_factors, same.user_factors)
    bpr = BPR.from_encoded(enc, "c", "s", factors=2)  # no rating column: each pair counts once
    assert bpr.user_items.data is None and bpr.user_items.indices is enc.indices
    assert (bpr.user_col, bpr.item_col, bpr.rating_col) == ("c", "s", None)
    assert enc.data.tolist() == [3.0, 0.5, 1.0, 4.0]  # the shared encoding keeps its weights
    with pytest.raises(ValueError, match="'r'.*no weights"):
        ALS.from_encoded(encode_transactions(df, "c", "s"), "c", "s", "r")
    negative = Encoded(enc.indptr, enc.indices, -enc.data, enc.rows, enc.items)
    with pytest.raises(ValueError, match="'r'"):
        ALS.from_encoded(negative, "c", "s", "r")  # ratings checked as in from_transactions


def test_fit_on_a_matrix_uses_indices_as_ids_and_rejects_bad_input():
    csr = sp.csr_array(np.array([[1, 0, 2], [0, 1, 0]], dtype=np.float32))
    model = ALS(factors=2, iterations=2).fit(csr)
    assert model.users.values.tolist() == [0, 1] and model.items.values.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="finite and >= 0"):
        ALS(factors=2).fit(sp.csr_array(np.array([[1.0, -1.0]])))
    with pytest.raises(TypeError, match="from_transactions"):
        ALS().fit(pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="nothing to fit"):
        ALS().fit()


@pytest.mark.parametrize(
    "params",
    [{"factors": 0}, {"iterations": -1}, {"alpha": -1}, {"regularization": -0.1},
     {"solver": "lu"}, {"cg_steps": 0}, {"num_threads": 0}, {"init_scale": 0.0}],
)  # fmt: skip
def test_invalid_parameters_raise(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        ALS(**params)


@pytest.mark.parametrize("k", [8, 37, 64])
def test_cg_row_does_not_depend_on_where_its_scratch_lies(k):
    # the vectorizer guards loops with run-time alias checks such as ``p - r < 256 bytes``; the
    # allocator places each thread's scratch differently, so no path may change the summation order
    rng = np.random.default_rng(k)
    csr = _random_csr(rng, 40, 30, 0.2)
    indptr, indices, data = csr.indptr.astype(np.int64), csr.indices.astype(np.int32), csr.data
    Y = (rng.normal(size=(30, k)) / np.sqrt(k)).astype(np.float32)
    lam = np.linalg.eigvalsh(Y.astype(np.float64).T @ Y + 0.01 * np.eye(k)).astype(np.float32)
    X0 = rng.normal(size=(40, k)).astype(np.float32)
    buf = np.zeros(4096, np.float32)
    G, cg = np.empty((8, k), np.float32), np.empty(8, np.float32)  # rows gathered for the CG steps

    def solve(gap):  # r, p, ap placed ``gap`` floats apart in one buffer
        X = X0.copy()
        r, p, ap, m = (buf[j * gap : j * gap + k] for j in range(1, 5))
        for u in range(40):
            if indptr[u + 1] > indptr[u]:
                _cg_row(X[u], indptr, indices, data, u, Y, lam, np.float32(40.0), 3, r, p, ap, m, G, cg)
        return X

    far = solve(1024)
    for gap in (k, k + 1, k + 8, k + 40, 2 * k + 64, 500):  # adjacent to well apart
        np.testing.assert_array_equal(solve(gap), far, err_msg=f"scratch rows {gap} floats apart")


def _reference_cg_fit(csr, U, V, alpha, reg, iterations, cg_steps):
    """numpy reference of the warm-started preconditioned CG ALS loop in float64, in the original basis:
    the preconditioner is the diagonal of each row's matrix in the eigenbasis P of YtY + reg I,
    i.e. M = P diag(d) P^T with d = diag(P^T A_u P)."""
    ui = csr.toarray().astype(np.float64)
    U, V = U.astype(np.float64), V.astype(np.float64)
    for _ in range(iterations):
        for R, X, Y in ((ui, U, V), (ui.T, V, U)):
            A0 = Y.T @ Y + reg * np.eye(Y.shape[1])
            lam, P = np.linalg.eigh(A0)
            for u, row in enumerate(R):
                seen = row > 0
                if not seen.any():
                    X[u] = 0.0
                    continue
                c, Ys = alpha * row[seen], Y[seen]
                inv_m = P @ np.diag(1.0 / (lam + c @ (Ys @ P) ** 2)) @ P.T
                x = X[u]
                r = Ys.T @ (1 + c) - A0 @ x - Ys.T @ (c * (Ys @ x))
                z = inv_m @ r
                p, rz = z.copy(), r @ z
                for _ in range(cg_steps):
                    ap = A0 @ p + Ys.T @ (c * (Ys @ p))
                    step = rz / (p @ ap)
                    x += step * p
                    r -= step * ap
                    z = inv_m @ r
                    rz_new = r @ z
                    p = z + rz_new / rz * p
                    rz = rz_new
    return U, V


@pytest.mark.parametrize("init_scale", [1.0, 0.01])
def test_cg_fit_follows_the_reference_loop_from_a_scaled_start(init_scale):
    """The whole fit = the reference CG loop from init_factors(..., init_scale); the start is scaled."""
    csr = _random_csr(np.random.default_rng(5), 30, 20, 0.2)
    params = {"factors": 6, "alpha": 5.0, "regularization": 0.1, "cg_steps": 3, "random_state": 3}
    start = ALS(**params, iterations=0, init_scale=init_scale).fit(csr)
    unit = ALS(**params, iterations=0).fit(csr)
    np.testing.assert_allclose(start.item_factors, init_scale * unit.item_factors, rtol=1e-6)
    model = ALS(**params, iterations=3, init_scale=init_scale).fit(csr)
    U, V = _reference_cg_fit(csr, start.user_factors, start.item_factors, 5.0, 0.1, 3, 3)
    np.testing.assert_allclose(model.user_factors, U, rtol=2e-3, atol=2e-4 * np.abs(U).max())
    np.testing.assert_allclose(model.item_factors, V, rtol=2e-3, atol=2e-4 * np.abs(V).max())


def test_fit_is_the_same_on_one_thread_and_on_all(monkeypatch):
    """Small fits run on one numba thread (no parallel start-up); the factors must not change."""
    import rusket_core.factorization.als as als_module

    csr = _random_csr(np.random.default_rng(8), 60, 40, 0.15)
    fits = []
    for small_fit in (0, 1 << 40):  # never / always "small"
        monkeypatch.setattr(als_module, "SMALL_FIT", small_fit)
        fits.append(ALS(factors=8, iterations=4, random_state=2).fit(csr))
    np.testing.assert_array_equal(fits[0].user_factors, fits[1].user_factors)
    np.testing.assert_array_equal(fits[0].item_factors, fits[1].item_factors)


def test_gram_and_rotate_by_row_blocks_on_any_thread_count():
    """Blocks handed to threads: the same Gram matrix (summed in block order) and rotation as one pass."""
    import numba

    from rusket_core.factorization.als import gram

    rng = np.random.default_rng(9)
    Y = rng.normal(size=(53, 6)).astype(np.float32)
    P = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    previous = numba.get_num_threads()
    grams, rotated = [], []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            grams.append(gram(Y, block=7))
            M = Y.copy()
            rotate(M, P, block=5)
            rotated.append(M)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(grams[0], grams[1])
    np.testing.assert_allclose(grams[0], Y.astype(np.float64).T @ Y, rtol=1e-5)
    np.testing.assert_array_equal(rotated[0], rotated[1])
    np.testing.assert_allclose(rotated[0], Y @ P.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_data", [True, False])
def test_transpose_csr_equals_scipy_with_rows_sorted_in_each_column(with_data):
    """The counting-sort transpose: scipy's transpose, each column's rows ascending, empty rows/columns kept."""
    from rusket_core.factorization.base import transpose_csr

    rng = np.random.default_rng(11)
    csr = _random_csr(rng, 37, 23, 0.2)  # row 1 and column 2 empty
    csr = sp.csr_array(sp.vstack([csr, sp.csr_array((2, 23), dtype=np.float32)]))  # trailing empty rows
    data = csr.data.astype(np.float32) if with_data else None
    ptr, rows, out = transpose_csr(csr.indptr, csr.indices, data, 25)  # two trailing empty columns
    expected = sp.csc_array(csr, shape=(39, 23))
    expected.sort_indices()
    assert ptr.dtype == np.int64 and rows.dtype == np.int32 and len(ptr) == 26
    np.testing.assert_array_equal(ptr, np.concatenate([expected.indptr, [csr.nnz, csr.nnz]]))
    np.testing.assert_array_equal(rows, expected.indices)
    if with_data:
        np.testing.assert_array_equal(out, expected.data)
    else:
        assert out is None
