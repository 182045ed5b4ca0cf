"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with conjugate-gradient or Cholesky row solves."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba
import numpy as np

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel, check_int, check_real, transpose_csr
from rusket_core.factorization.foldin import FoldIn
from rusket_core.factorization.kernels import (
    CACHED_BYTES,
    als_loss,
    als_update,
    gather_cap,
    permute_rows,
    take_csr_rows,
    top_ranks,
)
from rusket_core.progress import Progress
from rusket_core.threads import one_thread_if, single_threaded_blas

logger = logging.getLogger(__name__)

SOLVERS = ("cg", "cholesky")
#: fits with fewer multiply-adds per half-iteration than this (entries × factors × solver steps)
#: run on one numba thread (see ``threads.one_thread_if``)
SMALL_FIT = 1 << 24


class ALS(FoldIn, FactorModel):
    """Alternating least squares on confidence ``1 + alpha * rating`` with preference 1 on observed entries.

    ``solver="cg"`` runs ``cg_steps`` conjugate-gradient steps per row warm-started from the previous
    factors (Takács et al. 2011), preconditioned by the row matrix's diagonal in the eigenbasis of
    ``Y^T Y + reg*I`` (2 such steps reach about the loss of 3 plain ones; benchmarks/RESULTS.md);
    ``"cholesky"`` solves each row exactly. Users, then items, are solved in parallel; results
    depend only on ``random_state`` (not on the thread count).
    Confidence grows linearly with the rating, so heavy-tailed ratings (revenue) are best
    compressed first (e.g. ``log1p``) to keep the row systems well conditioned.

    Starting factors are zero-mean normal with rows of norm about ``init_scale``. With a small
    ``regularization`` that scale persists through the fit and acts as extra regularisation: a
    small start (``init_scale=0.01``, about implicit's ``rand * 0.01``) leaves user and item norms
    unbalanced, which penalises like a larger ``regularization``. That start fits dense data
    (about 40+ training items per user) better and sparse data worse than the balanced default
    (benchmarks/RESULTS.md, "ALS vs implicit precision gap"); raising ``regularization`` helps both.

    At scale (a user factor table larger than the last-level cache) users are solved in
    :func:`locality_order` and the item solves copy their buyers' rows once (``gather_cap``): the
    same model up to the summation order, about half the item half-iteration's time at 48M pairs.

    Fold-in: ``recalculate_user(s)`` / ``recalculate_item(s)`` return the exact rows for given
    interactions with the other side fixed (model unchanged); ``partial_fit_users`` /
    ``partial_fit_items`` write them into the model (new labels appended), ``partial_fit`` does
    both for a batch of lines; ``fit(init=model)`` warm-starts from a previous model's rows.
    """

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 15,
        alpha: float = 40.0,
        regularization: float = 0.01,
        solver: str = "cg",
        cg_steps: int = 2,
        random_state: int = 0,
        num_threads: int | None = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(num_threads)
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        self.factors = check_int("factors", factors, 1)
        self.iterations = check_int("iterations", iterations, 0)
        self.alpha = check_real("alpha", alpha)
        self.regularization = check_real("regularization", regularization)
        self.solver = solver
        self.cg_steps = check_int("cg_steps", cg_steps, 1)
        self.random_state = random_state
        self.init_scale = check_real("init_scale", init_scale, strict=True)

    def _fit(self, interactions: Encoded) -> None:
        k = self.factors
        self.user_factors, self.item_factors = init_factors(
            interactions.n_rows, interactions.n_items, k, self.random_state, self.init_scale
        )
        self._warm_start()
        U, V = self.user_factors, self.item_factors
        ui = _csr(interactions)
        order = None
        if U.nbytes > CACHED_BYTES:  # solve users in an order that keeps each item's buyers close in U
            order = locality_order(interactions)
            ui = take_csr_rows(*ui, order)
            permute_rows(U, order)
        iu = transpose_csr(*ui, interactions.n_items)
        user_bounds = _balanced_bounds(ui[0], k)
        item_bounds = _balanced_bounds(iu[0], k)
        progress = Progress(logger, f"ALS fit ({interactions.n_rows} users × {interactions.n_items} items, {k} factors)",
                            self.iterations, "iterations")  # fmt: skip
        cg = self.solver == "cg"
        basis = np.eye(k)  # U and V are held as (original factors) @ basis during a CG fit
        small = len(ui[1]) * k * (self.cg_steps + 1 if cg else k) < SMALL_FIT
        with one_thread_if(small), single_threaded_blas():  # BLAS products alternate with numba regions
            for it in range(self.iterations):
                basis = self._solve(ui, U, V, user_bounds, basis if cg else None)
                basis = self._solve(iu, V, U, item_bounds, basis if cg else None)
                if progress.due(it + 1):  # the loss is computed only when logged (rotation-invariant)
                    progress.update(it + 1, loss=self._loss(ui, U, V))
            if cg:
                rotate(U, basis.T)
                rotate(V, basis.T)
        if order is not None:
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            permute_rows(U, back)

    def _solve(self, csr, X: np.ndarray, Y: np.ndarray, bounds: np.ndarray, basis: np.ndarray | None = None):
        """Re-solve every row of X with Y fixed: exactly by Cholesky when ``basis`` is None, else by CG
        after rotating X and Y (in place) into the eigenbasis of ``Y^T Y + reg*I``; returns the new basis."""
        if basis is None:
            G64 = gram(Y) + self.regularization * np.eye(Y.shape[1])
            als_update(csr[0], csr[1], csr[2], X, Y, np.zeros(0, np.float32), G64,
                       self.alpha, self.cg_steps, True, bounds, 0)  # fmt: skip
            return None
        lam, P = eigenbasis(Y, self.regularization)
        rotate(X, P)
        rotate(Y, P)
        als_update(csr[0], csr[1], csr[2], X, Y, lam, _NO_G64, self.alpha, self.cg_steps, False, bounds, gather_cap(Y))
        return basis @ P

    def _solve_rows(self, side: str, indptr, indices, data, X: np.ndarray, new: np.ndarray) -> None:
        """Fold-in rows: the exact least-squares solution whatever ``solver`` is."""
        Y = self.item_factors if side == "users" else self.user_factors
        with single_threaded_blas():  # as in the fit: the same products, the same rounding
            self._solve((indptr, indices, data), X, Y, _balanced_bounds(indptr, self.factors))

    def recalculate_user(self, user_id: Any, interactions: Any) -> np.ndarray:
        """The exact factor row of a user (known or new) with exactly ``interactions``, item factors fixed.

        Solves (Y^T C_u Y + reg I) x = Y^T C_u p_u with confidence ``1 + alpha * rating`` (Hu et
        al.), ratings handled as in ``fit``. ``interactions``: a frame with the item (and rating)
        column, a mapping ``{item: rating}``, or a list of items for a model without ratings.
        The model is not changed (see :meth:`partial_fit_users`).
        """
        return self._recalculate("users", self._single_row("users", user_id, interactions), {})[1][0]

    def recalculate_users(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Exact rows for every user in ``data`` (a frame with user, item and rating columns, or
        ``{user: {item: rating}}``), each from exactly the given interactions: (labels, factors)."""
        return self._recalculate("users", data, {})

    def recalculate_item(self, item_id: Any, interactions: Any) -> np.ndarray:
        """The item-side twin of :meth:`recalculate_user` (user factors fixed)."""
        return self._recalculate("items", self._single_row("items", item_id, interactions), {})[1][0]

    def recalculate_items(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """The item-side twin of :meth:`recalculate_users`; mappings are ``{item: {user: rating}}``."""
        return self._recalculate("items", data, {})

    def training_loss(self) -> float:
        """The Hu et al. objective on the training interactions at the current factors."""
        self._check_fitted()
        return self._loss(_csr(self.user_items), self.user_factors, self.item_factors)

    def _loss(self, ui, U: np.ndarray, V: np.ndarray) -> float:
        return float(als_loss(ui[0], ui[1], ui[2], U, V, gram(V), self.alpha, self.regularization))


def init_factors(
    n_users: int, n_items: int, k: int, random_state: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Starting user and item factors for ``random_state`` (shared by the local and Spark fits).

    Zero-mean normal rows of norm about ``scale``; see :class:`ALS` on what the scale does.
    """
    rng = np.random.default_rng(random_state)
    scale = np.float32(scale / np.sqrt(k))
    users = rng.standard_normal((n_users, k), dtype=np.float32) * scale
    return users, rng.standard_normal((n_items, k), dtype=np.float32) * scale


def locality_order(interactions: Encoded, depth: int = 3) -> np.ndarray:
    """Users sorted by their ``depth`` most popular items (by popularity rank, lexicographically).

    An item's buyers are scattered over the user factor table, which at scale is far larger than
    the caches, and the item half-iteration reads each buyer's row. In this order the buyers of a
    popular item come in long runs of neighbouring rows (all of the most popular item's buyers in
    one run), which the cache and the hardware prefetcher serve (benchmarks/RESULTS.md, "ALS at
    scale: session 9"). Rows are solved independently, so the order changes only the summation
    order of each item's entries.
    """
    counts = interactions.item_counts()
    rank = np.empty(len(counts), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    indptr = np.ascontiguousarray(interactions.indptr, dtype=np.int64)
    top = top_ranks(indptr, np.ascontiguousarray(interactions.indices, dtype=np.int32), rank, depth)
    bits = int(len(counts)).bit_length()  # ranks go up to len(counts)
    if bits * depth < 63:  # one packed key: a single stable sort instead of depth passes
        key = np.zeros(len(top), np.int64)
        for d in range(depth):
            key = (key << bits) | top[:, d]
        return np.argsort(key, kind="stable")
    return np.lexsort(top.T[::-1])


#: rows per BLAS block of ``gram`` and ``rotate``: bounded temporaries, and blocks to share between threads
BLOCK = 1 << 12


def _map_blocks(fn, n_rows: int, block: int) -> list:
    """``fn(start, stop)`` for every row block, in block order, on up to ``numba.get_num_threads()``
    threads (numpy's BLAS calls release the GIL; the fit pins BLAS itself to one thread)."""
    spans = [(start, min(start + block, n_rows)) for start in range(0, n_rows, block)]
    threads = min(numba.get_num_threads(), len(spans))
    if threads <= 1:
        return [fn(*span) for span in spans]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda span: fn(*span), spans))


def gram(Y: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """``Y^T Y`` in float64: float32 BLAS products of row blocks, summed in float64 in block order
    (the same sum whatever the thread count)."""
    Y = np.ascontiguousarray(Y, dtype=np.float32)
    out = np.zeros((Y.shape[1], Y.shape[1]))
    for part in _map_blocks(lambda a, b: Y[a:b].T @ Y[a:b], Y.shape[0], block):
        out += part
    return out


def eigenbasis(Y: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues float32, orthonormal eigenvectors float64) of ``Y^T Y + reg*I``.

    In that basis (factors ``@ P``) the matrix every CG row solve multiplies by is diagonal, and
    dot products between user and item factors are unchanged; CG's iterates are the same as in
    the original basis up to rounding.
    """
    lam, P = np.linalg.eigh(gram(Y) + reg * np.eye(Y.shape[1]))
    return lam.astype(np.float32), P


def rotate(M: np.ndarray, P: np.ndarray, block: int = BLOCK) -> None:
    """``M[:] = M @ P`` in place: float32 BLAS products of row blocks (bounded temporaries), on
    the numba threads' budget (a parallel numba region measured 30-70 ms of wake-up per call on a
    loaded machine, more than the products on small inputs; small fits run on one thread)."""
    P32 = np.ascontiguousarray(P, dtype=np.float32)

    def product(start: int, stop: int) -> None:
        M[start:stop] = M[start:stop] @ P32

    _map_blocks(product, M.shape[0], block)


_NO_G64 = np.zeros((0, 0))  # the CG solve does not read the float64 Gram matrix


def _csr(enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.ascontiguousarray(enc.indptr, dtype=np.int64),
        np.ascontiguousarray(enc.indices, dtype=np.int32),
        np.ascontiguousarray(enc.weights(), dtype=np.float32),
    )


def _balanced_bounds(indptr: np.ndarray, k: int) -> np.ndarray:
    """Chunk boundaries with about equal work (entries + k/2 per row) for the parallel solve."""
    n_rows = len(indptr) - 1
    n_chunks = max(1, min(n_rows, 16 * numba.get_num_threads()))
    cost = indptr.astype(np.float64) + np.arange(n_rows + 1) * (k / 2.0)
    bounds = np.searchsorted(cost, np.linspace(0.0, cost[-1], n_chunks + 1))
    bounds[0], bounds[-1] = 0, n_rows
    return np.unique(bounds).astype(np.int64)
