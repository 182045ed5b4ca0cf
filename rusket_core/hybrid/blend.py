"""The user blend: CF scores and item-embedding cosine, min-max scaled per user, top-n via the shared driver."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.topk import (
    blocked_topk,
    csr_rows,
    register_scorer,
    run_chunk,
    select_affine_row,
    topk,
)
from rusket_core.hybrid.embeddings import ItemEmbeddings


@njit(cache=True)
def _blend_coefficients(row, srow, use_sem, mask, alpha):
    """(ac, as_, b) of the blend ``ac * cf + as_ * sem + b`` = alpha * minmax(cf) + (1 - alpha) * minmax(sem).

    Min-max runs over the candidate items (``mask`` False), both signals in one pass; a constant
    signal contributes 0; without a semantic target the CF part is used alone (weight 1)."""
    n_items = row.shape[0]
    cmin, cmax = np.float32(np.inf), np.float32(-np.inf)
    smin, smax = np.float32(np.inf), np.float32(-np.inf)
    if use_sem:
        for j in range(n_items):
            if not mask[j]:
                x = row[j]
                y = srow[j]
                cmin = min(cmin, x)
                cmax = max(cmax, x)
                smin = min(smin, y)
                smax = max(smax, y)
    else:
        for j in range(n_items):
            if not mask[j]:
                x = row[j]
                cmin = min(cmin, x)
                cmax = max(cmax, x)
    ac = np.float32(0.0)
    as_ = np.float32(0.0)
    if cmax > cmin:
        ac = np.float32((alpha if use_sem else 1.0) / (cmax - cmin))
    if use_sem and smax > smin:
        as_ = np.float32((1.0 - alpha) / (smax - smin))
    b = np.float32(-(ac * cmin if ac != 0 else 0.0) - (as_ * smin if as_ != 0 else 0.0))
    return ac, as_, b


class BlendScores(NamedTuple):
    """Driver state of the user blend: CF ``query @ items_t``, cosine ``units[target_key] @ emb_t``, the output.

    ``target_key`` is each row's target, a row of ``units`` (rows with equal keys are adjacent and share one
    cosine row, computed once per block); ``has_sem`` False: no semantic part for the row."""

    query: np.ndarray
    items_t: np.ndarray
    units: np.ndarray
    emb_t: np.ndarray
    has_sem: np.ndarray
    target_key: np.ndarray
    excl_indptr: np.ndarray
    excl_indices: np.ndarray
    alpha: np.float32
    out_idx: np.ndarray
    out_val: np.ndarray


def _blend_scores(state, r0, r1, buf, scratch, mask):
    """A block of users: CF scores (one BLAS product), cosine rows of its distinct targets (one
    more), then per user the min-max coefficients and the top-n of the blend computed on the fly."""
    cf = buf[: r1 - r0]
    np.dot(state.query[r0:r1], state.items_t, cf)
    slot = np.full(r1 - r0, -1, np.int64)
    firsts = np.empty(r1 - r0, np.int64)
    u = 0
    for r in range(r0, r1):
        if state.has_sem[r]:
            if u == 0 or state.target_key[r] != state.target_key[firsts[u - 1]]:
                firsts[u] = r
                u += 1
            slot[r - r0] = u - 1
    if u:
        np.dot(state.units[state.target_key[firsts[:u]]], state.emb_t, scratch[:u])
    n = state.out_idx.shape[1]
    hv = np.empty(n, np.float32)
    hi = np.empty(n, np.int32)
    for r in range(r0, r1):
        e0, e1 = state.excl_indptr[r], state.excl_indptr[r + 1]
        for e in range(e0, e1):
            mask[state.excl_indices[e]] = True
        s = max(slot[r - r0], 0)
        ac, as_, b = _blend_coefficients(cf[r - r0], scratch[s], slot[r - r0] >= 0, mask, state.alpha)
        for e in range(e0, e1):
            mask[state.excl_indices[e]] = False
        select_affine_row(cf[r - r0], scratch[s], ac, as_, b, mask, state.excl_indices, e0, e1, hv, hi,
                          state.out_idx[r], state.out_val[r])  # fmt: skip
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
        if not m or not width:
            return np.empty((m, width), dtype=np.int32), np.empty((m, width), dtype=np.float32)
        if emb is None:  # the blend with no semantic part: CF scaled to [0, 1]
            keys, units, emb_t = np.full(m, -1, np.int64), np.zeros((1, 1), np.float32), np.zeros((1, n_items), np.float32)
        else:
            # the strongest item of the scored rows only, not of every customer
            keys, units = emb.target_keys(targets, None if targets is not None else strongest_items(enc, rows))
            emb_t = np.ascontiguousarray(emb.aligned.T)
            if alpha == 1.0:  # a semantic weight of 0: no cosine product at all
                keys = np.full(m, -1, np.int64)
        # users with the same target side by side: one cosine row per target and block
        order = np.argsort(keys, kind="stable")
        if exclude_seen:
            ptr, ind = csr_rows(ptr, ind, order)
        out_idx = np.empty((m, width), dtype=np.int32)
        out_val = np.empty((m, width), dtype=np.float32)
        state = BlendScores(
            np.ascontiguousarray(model.user_factors[rows[order]], dtype=np.float32),
            np.ascontiguousarray(model.item_factors.T, dtype=np.float32),
            np.ascontiguousarray(units, dtype=np.float32),
            emb_t, keys[order] >= 0, keys[order], ptr, ind, np.float32(alpha), out_idx, out_val,
        )  # fmt: skip
        blocked_topk(_blend_kernel, state, m, None, n_items, n_items, n_items, ptr, ind,
                     label=f"scoring {n_items} items", unit="users")  # fmt: skip
        idx, val = np.empty_like(out_idx), np.empty_like(out_val)
        idx[order], val[order] = out_idx, out_val
        return idx, val


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
