"""The user blend: CF scores and item-embedding cosine, min-max scaled per user, top-n via the shared driver."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.topk import blocked_topk, csr_rows, register_scorer, run_chunk, topk
from rusket_core.hybrid.embeddings import ItemEmbeddings


@njit(cache=True)
def _blend_row(row, srow, use_sem, mask, excl_indices, e0, e1, alpha):
    """In place: row = alpha * minmax(row) + (1 - alpha) * minmax(srow) over the row's candidates.

    Min-max runs over the candidate (non-excluded) items; a constant signal contributes 0; without
    a semantic target the CF part is used alone (weight 1); excluded items become -inf.
    """
    n_items = row.shape[0]
    for e in range(e0, e1):
        mask[excl_indices[e]] = True
    cmin, cmax = np.float32(np.inf), np.float32(-np.inf)
    smin, smax = np.float32(np.inf), np.float32(-np.inf)
    for j in range(n_items):
        if not mask[j]:
            x = row[j]
            cmin = min(cmin, x)
            cmax = max(cmax, x)
    if use_sem:
        for j in range(n_items):
            if not mask[j]:
                y = srow[j]
                smin = min(smin, y)
                smax = max(smax, y)
    # the blend is affine in (cf, sem): score = ac * cf + as_ * sem + b
    ac = np.float32(0.0)
    as_ = np.float32(0.0)
    if cmax > cmin:
        ac = np.float32((alpha if use_sem else 1.0) / (cmax - cmin))
    if use_sem and smax > smin:
        as_ = np.float32((1.0 - alpha) / (smax - smin))
    b = np.float32(-(ac * cmin if ac != 0 else 0.0) - (as_ * smin if as_ != 0 else 0.0))
    for j in range(n_items):
        row[j] = ac * row[j] + as_ * srow[j] + b
    for e in range(e0, e1):
        row[excl_indices[e]] = -np.inf
        mask[excl_indices[e]] = False


class BlendScores(NamedTuple):
    """Driver state of the user blend: CF ``query @ items_t`` and cosine ``target @ emb_t`` (see ``_blend_row``)."""

    query: np.ndarray
    items_t: np.ndarray
    target: np.ndarray
    emb_t: np.ndarray
    has_sem: np.ndarray
    excl_indptr: np.ndarray
    excl_indices: np.ndarray
    alpha: np.float32


def _blend_scores(state, r0, r1, buf, scratch, mask):
    """CF and cosine scores of a block of users (one BLAS product each), blended row by row."""
    cf = buf[: r1 - r0]
    sem = scratch[: r1 - r0]
    np.dot(state.query[r0:r1], state.items_t, cf)
    np.dot(state.target[r0:r1], state.emb_t, sem)
    for r in range(r0, r1):
        e0, e1 = state.excl_indptr[r], state.excl_indptr[r + 1]
        _blend_row(cf[r - r0], sem[r - r0], state.has_sem[r], mask, state.excl_indices, e0, e1, state.alpha)
    return cf


register_scorer(BlendScores, _blend_scores)


@njit(parallel=True, cache=True)
def _blend_kernel(state, excl_indptr, excl_indices, out_idx, out_val, plan):
    """The shared blocked top-k driver over :func:`_blend_scores` (see ``topk.parallel_kernel``)."""
    for c in prange(plan[6]):
        run_chunk(state, c, excl_indptr, excl_indices, out_idx, out_val, plan)


class UserBlend:
    """Top-n items per user: the model's CF ranking, or ``alpha * CF + (1 - alpha) * cosine(item, target)``."""

    def __init__(self, model: FactorModel, embeddings: ItemEmbeddings | None) -> None:
        self.model = model
        self.embeddings = embeddings

    def topk(
        self, rows: np.ndarray, n: int, alpha: float, targets: list | None, scaled: bool = False,
        exclude_seen: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-n (model item index, score) per user row, -1 padded; the blend when embeddings exist.

        Without embeddings the scores are the model's raw ones, or min-max scaled per user (over
        the candidate items) when ``scaled``."""
        alpha = check_weight("alpha", alpha)
        model = self.model
        enc = model.user_items
        if exclude_seen:
            ptr, ind = csr_rows(enc.indptr, enc.indices, rows)
        else:
            ptr, ind = np.zeros(len(rows) + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
        n_items = len(model.items)
        width = max(0, min(int(n), n_items))
        emb = self.embeddings
        if emb is None and targets is not None:
            raise ValueError("a semantic target needs item_embeddings= on the Recommender")
        if emb is None and not scaled:
            return topk(model.user_factors[rows], model.item_factors, width, ptr, ind)
        m = len(rows)
        if emb is None:  # the blend with no semantic part: CF scaled to [0, 1]
            vectors = np.zeros((n_items, 1), dtype=np.float32)
            target_vecs, has_sem = np.zeros((m, 1), dtype=np.float32), np.zeros(m, dtype=np.bool_)
        else:
            vectors = emb.aligned
            # the strongest item of the scored rows only, not of every customer
            target_vecs, has_sem = emb.target_vectors(np.arange(m), targets, strongest_items(enc, rows))
        state = BlendScores(
            np.ascontiguousarray(model.user_factors[rows], dtype=np.float32),
            np.ascontiguousarray(model.item_factors.T, dtype=np.float32),
            np.ascontiguousarray(target_vecs, dtype=np.float32),
            np.ascontiguousarray(vectors.T),
            has_sem, ptr, ind, np.float32(alpha),
        )  # fmt: skip
        return blocked_topk(_blend_kernel, state, m, width, n_items, n_items, n_items, ptr, ind,
                            label=f"scoring {n_items} items", unit="users")


@njit(cache=True)
def _strongest(indptr, indices, weights, rows, out):
    """out[r] = the item of CSR row rows[r] with the largest weight (ties: lowest index), -1 if empty."""
    for r in range(len(rows)):
        p0, p1 = indptr[rows[r]], indptr[rows[r] + 1]
        if p0 == p1:
            out[r] = -1
            continue
        best, top = indices[p0], weights[p0]
        for p in range(p0 + 1, p1):
            j, w = indices[p], weights[p]
            if w > top or (w == top and j < best):
                best, top = j, w
        out[r] = best


def strongest_items(enc: Encoded, rows: np.ndarray | None = None) -> np.ndarray:
    """Per row of an Encoded matrix (or per row index in ``rows``), the item index with the largest
    weight (ties: lowest index); -1 if empty. Only the requested rows are read."""
    rows = np.arange(enc.n_rows, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    out = np.empty(len(rows), dtype=np.int64)
    _strongest(enc.indptr, enc.indices, enc.weights(), rows, out)
    return out


def check_weight(name: str, value: float) -> float:
    """A blend weight in [0, 1], or a ValueError naming it."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)
