"""Parallel top-k selection over blocks of scores, with a per-row item exclusion list: one driver.

:func:`blocked_topk` is the one blocked top-k driver: a parallel numba kernel hands blocks of query
rows to a *scorer* (one BLAS product per block and thread, plus whatever the caller blends in),
then selects the best ``n`` per row, so memory stays at one block of scores whatever the number of
users. Scorers are plain Python functions in numba's subset, registered with :func:`register_scorer` for a NamedTuple
holding their inputs; numba compiles one specialisation of the driver per scorer (dispatch by the
NamedTuple's class). Factor top-k (``topk``), scoring given rows (``select_topk``), the hybrid blend
and cross-sell potential all run through it.

The driver is :func:`run_chunk` (block loop, scoring, selection); the ``prange`` over chunks sits
in a three-line kernel next to each scorer (:func:`parallel_kernel` shows the shape), because
numba's disk cache is keyed on the file of the cached function: a scorer edited in its module
then recompiles its own kernel instead of leaving a stale driver specialisation behind (numba
cannot cache a kernel that takes the scorer as an argument or closes over it). For the same
reason ``run_chunk`` and ``score_block`` are not cached on their own: a cache index here would
name the scorers' state classes, and numba fails to read an index naming a class that moved.
The row selection and its heap helpers are plain ``@njit`` functions, not ``inline="always"``
(numba-IR inlining re-typed and re-optimised them inside every kernel that used them); the heap
helpers are ``forceinline`` (inlined by LLVM instead). Mid-size calls of this module's scorers run
in parts on Python threads through :func:`serial_kernel` (see :func:`blocked_topk`). ``topk`` scores
each block in products of about ``SUB_SCORES`` scores, selected from while they are in cache: no
block-sized buffer (whose first touch cost more than the product at 100k users)."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import njit, prange
from numba.extending import overload

from rusket_core.progress import Progress
from rusket_core.threads import one_thread_if, single_threaded_blas

logger = logging.getLogger(__name__)

#: scores held per thread at once by ``topk`` (rows per block = this / n_items)
BLOCK_SCORES = 1 << 24
#: scores per BLAS product inside a block (L2-sized: they are selected from while in cache)
SUB_SCORES = 1 << 18
#: products inside a block start at multiples of this many rows from the block's start: a multiple of
#: the row tiles of OpenBLAS's sgemm kernels (48 rows here), so with BLAS on one thread each row's
#: scores are bit for bit those of one product over the whole block (rows not so aligned round some
#: scores differently: benchmarks/RESULTS.md, "Small inputs: session 10")
ROW_TILE = 96
#: rows per block when few rows are scored: at least this many (BLAS efficiency), and otherwise
#: small enough that every thread gets two blocks (a small input must not run on one thread)
MIN_BLOCK_ROWS = 64


@njit(cache=True, forceinline=True)
def _worse(v1, i1, v2, i2):
    """Ranking order: lower score is worse; on equal scores the higher index is worse."""
    return v1 < v2 or (v1 == v2 and i1 > i2)


@njit(cache=True, forceinline=True)
def _sift_down(hv, hi, size, pos, s, j):
    """Put (s, j) into the heap's hole at ``pos``, moving worse children up (a hole, not swaps)."""
    while True:
        w = 2 * pos + 1
        if w >= size:
            break
        wv = hv[w]
        wi = hi[w]
        right = w + 1
        if right < size and _worse(hv[right], hi[right], wv, wi):
            w = right
            wv = hv[right]
            wi = hi[right]
        if not _worse(wv, wi, s, j):
            break
        hv[pos] = wv
        hi[pos] = wi
        pos = w
    hv[pos] = s
    hi[pos] = j


@njit(cache=True, forceinline=True)
def _offer(hv, hi, size, n, s, j):
    """Candidate (s, j) into the heap of the best ``n`` so far; returns (size, entry threshold).

    While the heap fills every candidate enters (threshold -inf); once full only a score above
    the worst kept one (the root) can enter: a later index with an equal score ranks lower."""
    if size < n:
        pos = size
        size += 1
        while pos > 0:  # sift up (min-heap on the ranking order: worst at the root)
            parent = (pos - 1) >> 1
            if not _worse(s, j, hv[parent], hi[parent]):
                break
            hv[pos] = hv[parent]
            hi[pos] = hi[parent]
            pos = parent
        hv[pos] = s
        hi[pos] = j
        return size, (hv[0] if size == n else np.float32(-np.inf))
    _sift_down(hv, hi, size, 0, s, j)
    return size, hv[0]


@njit(cache=True)
def _emit(hv, hi, size, out_idx, out_val):
    """The heap's entries into out_idx/out_val best first, padded with -1 / -inf."""
    n = out_idx.shape[0]
    for q in range(size, n):
        out_idx[q] = -1
        out_val[q] = -np.inf
    # pop the worst into the last free slot: output ends up best first
    while size > 0:
        size -= 1
        out_idx[size] = hi[0]
        out_val[size] = hv[0]
        _sift_down(hv, hi, size, 0, hv[size], hi[size])


@njit(cache=True)
def _select_row(row, mask, excl_indices, e0, e1, hv, hi, out_idx, out_val):
    """Best len(out_idx) entries of one score row into out_idx/out_val (best first, -1 padded)."""
    n = out_idx.shape[0]
    for e in range(e0, e1):
        mask[excl_indices[e]] = True
    size = 0
    thresh = np.float32(-np.inf)  # excluded, NaN and -inf are never candidates
    for j in range(row.shape[0] if n > 0 else 0):
        s = row[j]
        if s > thresh and not mask[j]:
            size, thresh = _offer(hv, hi, size, n, s, j)
    for e in range(e0, e1):
        mask[excl_indices[e]] = False
    _emit(hv, hi, size, out_idx, out_val)


@njit(cache=True)
def select_affine_row(row, srow, ac, as_, b, mask, excl_indices, e0, e1, hv, hi, out_idx, out_val):
    """As :func:`_select_row` on the scores ``ac * row + as_ * srow + b``, computed on the fly
    (``as_ == 0``: ``srow`` is not read); nothing is written back to the rows."""
    n = out_idx.shape[0]
    for e in range(e0, e1):
        mask[excl_indices[e]] = True
    size = 0
    thresh = np.float32(-np.inf)
    if as_ == 0:
        for j in range(row.shape[0] if n > 0 else 0):
            s = ac * row[j] + b
            if s > thresh and not mask[j]:
                size, thresh = _offer(hv, hi, size, n, s, j)
    else:
        for j in range(row.shape[0] if n > 0 else 0):
            s = ac * row[j] + as_ * srow[j] + b
            if s > thresh and not mask[j]:
                size, thresh = _offer(hv, hi, size, n, s, j)
    for e in range(e0, e1):
        mask[excl_indices[e]] = False
    _emit(hv, hi, size, out_idx, out_val)


# ---------------------------------------------------------------------------------------------------------
# the driver

_SCORERS: dict[type, Any] = {}


def register_scorer(state_type: type, scorer: Any) -> None:
    """Use ``scorer(state, r0, r1, buf, scratch, mask)`` for driver states of NamedTuple ``state_type``.

    The scorer fills scores for query rows ``r0:r1`` and returns a 2-D float32 array whose row
    ``r - r0`` is the score row of query ``r`` to select from (``buf``, ``scratch`` or its own);
    ``buf`` / ``scratch`` are per-thread (block_rows, width) buffers, ``mask`` an all-False bool
    array of the selection width that it may use if it leaves it all False.
    """
    _SCORERS[state_type] = scorer


def score_block(state, r0, r1, buf, scratch, mask):  # pragma: no cover - replaced in numba code
    """Scores of a block of query rows by the scorer registered for ``type(state)`` (numba only)."""
    raise NotImplementedError("score_block runs inside numba kernels only")


@overload(score_block)
def _score_block(state, r0, r1, buf, scratch, mask):
    # the scorer's Python source is the implementation: compiled straight into the calling kernel
    return _SCORERS.get(getattr(state, "instance_class", None))


@njit  # not cached itself: compiled into each cached kernel that calls it (see the module docstring)
def run_chunk(state, c, excl_indptr, excl_indices, out_idx, out_val, plan):
    """Chunk ``c`` of the row blocks: score each block with ``state``'s scorer, ``sub_rows`` rows at
    a time, then select the best per row. ``plan`` = (first row, end row, buf_cols, scratch_cols,
    select_cols, block_rows, n_chunks, sub_rows)."""
    first, m, buf_cols, scratch_cols, select_cols, block_rows, n_chunks, sub_rows = plan
    n = out_idx.shape[1]
    n_blocks = (m - first + block_rows - 1) // block_rows
    per = (n_blocks + n_chunks - 1) // n_chunks
    buf = np.empty((sub_rows, buf_cols), np.float32)
    scratch = np.empty((sub_rows, scratch_cols), np.float32)
    mask = np.zeros(select_cols, np.bool_)
    hv = np.empty(n, np.float32)
    hi = np.empty(n, np.int32)
    for b in range(c * per, min(n_blocks, (c + 1) * per)):
        end = min(m, first + (b + 1) * block_rows)
        for r0 in range(first + b * block_rows, end, sub_rows):
            r1 = min(end, r0 + sub_rows)
            rows = score_block(state, r0, r1, buf, scratch, mask)
            if n > 0:
                for r in range(r0, r1):
                    e0, e1 = excl_indptr[r], excl_indptr[r + 1]
                    _select_row(rows[r - r0], mask, excl_indices, e0, e1, hv, hi, out_idx[r], out_val[r])


@njit(parallel=True, cache=True)
def parallel_kernel(state, excl_indptr, excl_indices, out_idx, out_val, plan):
    """The chunks of :func:`run_chunk` in parallel, for this module's scorers (copy it next to a new one)."""
    for c in prange(plan[6]):
        run_chunk(state, c, excl_indptr, excl_indices, out_idx, out_val, plan)


@njit(cache=True, nogil=True)
def serial_kernel(state, excl_indptr, excl_indices, out_idx, out_val, plan):
    """All blocks of ``plan`` on the calling thread, without the GIL: one part of a mid-size call
    run on a Python thread (see :func:`blocked_topk`), for this module's scorers."""
    run_chunk(state, 0, excl_indptr, excl_indices, out_idx, out_val, plan)


def blocked_topk(
    kernel: Any,
    state: Any,
    m: int,
    n: int | None,
    select_cols: int,
    buf_cols: int = 0,
    scratch_cols: int = 0,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
    blas: bool = True,
    label: str = "top-k scoring",
    unit: str = "rows",
    scored_cols: int | None = None,
    serial: Any = None,
    sub_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` of ``select_cols`` columns for each of ``m`` query rows scored by ``state``'s scorer.

    ``kernel`` is the parallel kernel of the scorer's module (see :func:`parallel_kernel`). Rows are scored ``block_rows`` at a time (at most ``BLOCK_SCORES`` values in ``buf`` and
    ``scratch`` per thread), blocks shared among the numba threads; BLAS runs single-threaded
    meanwhile (``blas``); fewer than ``SMALL_SCORES`` scores in all (``scored_cols`` per row, by
    default the wider of ``select_cols`` and ``buf_cols``) run on one numba thread; from
    ``SPLIT_SCORES`` on, such a call is cut into one contiguous part of rows per numba thread, run
    by ``serial`` (the scorer's module's :func:`serial_kernel`, when given) on Python threads. Each
    block is scored ``sub_rows`` rows at a time when given (buffers of that many rows). The
    exclusion CSR has one row per query (see :func:`select_topk`).
    ``n=None`` runs the scorer alone (it stores its own output). Returns ``(idx int32, scores
    float32)`` of shape (m, min(n, select_cols)), padded with -1 / -inf.
    """
    width = 0 if n is None else max(0, min(int(n), select_cols))
    indptr, indices = _exclusion(m, exclude_indptr, exclude_indices)
    out_idx = np.empty((m, width), dtype=np.int32)
    out_val = np.empty((m, width), dtype=np.float32)
    if not m or (n is not None and not width):
        return out_idx, out_val
    scores = m * (max(select_cols, buf_cols) if scored_cols is None else scored_cols)
    small = scores < SMALL_SCORES
    if small and serial is not None and scores >= SPLIT_SCORES and numba.get_num_threads() > 1:
        plans = _split_plans(m, buf_cols, scratch_cols, select_cols, numba.get_num_threads(), sub_rows)
        with single_threaded_blas(blas):
            _run_parts(serial, state, indptr, indices, out_idx, out_val, plans)
        return out_idx, out_val
    threads = 1 if small else numba.get_num_threads()
    block_rows = BLOCK_SCORES // max(buf_cols + scratch_cols, select_cols, 1)
    block_rows = int(max(1, min(m, block_rows, max(MIN_BLOCK_ROWS, -(-m // (2 * threads))))))
    n_chunks = int(max(1, min((m + block_rows - 1) // block_rows, threads)))
    sub = block_rows if sub_rows is None else int(max(1, min(block_rows, sub_rows)))
    # slices of rows (each still many blocks per thread) so progress can be logged between them
    step = max(block_rows * n_chunks * 8, -(-m // 20))
    progress = Progress(logger, label, m, unit)
    with one_thread_if(small), single_threaded_blas(blas and n_chunks > 1):
        for first in range(0, m, step):
            end = min(m, first + step)
            plan = (first, end, buf_cols, scratch_cols, select_cols, block_rows, n_chunks, sub)
            kernel(state, indptr, indices, out_idx, out_val, tuple(np.int64(v) for v in plan))
            progress.update(end)
    return out_idx, out_val


def _split_plans(
    m: int, buf_cols: int, scratch_cols: int, select_cols: int, parts: int, sub_rows: int | None = None
) -> list[tuple]:
    """Driver plans of up to ``parts`` contiguous row ranges, one chunk each, made of the blocks the
    one-thread path uses (so every BLAS product, hence every score, is the one it computes)."""
    cap = BLOCK_SCORES // max(buf_cols + scratch_cols, select_cols, 1)
    block_rows = int(max(1, min(m, cap, max(MIN_BLOCK_ROWS, -(-m // 2)))))
    n_blocks = -(-m // block_rows)
    per = -(-n_blocks // min(parts, n_blocks)) * block_rows
    sub = block_rows if sub_rows is None else int(max(1, min(block_rows, sub_rows)))
    return [
        tuple(np.int64(v) for v in (r0, min(m, r0 + per), buf_cols, scratch_cols, select_cols, block_rows, 1, sub))
        for r0 in range(0, m, per)
    ]


_pool: list = []


def _run_parts(serial: Any, state: Any, indptr, indices, out_idx, out_val, plans: list[tuple]) -> None:
    """The first plan on this thread, the others on pool threads (the kernel drops the GIL).

    Python threads wait on a lock, where numba's OpenMP threads would spin at the region's end:
    on a busy machine the spinning took the core the late part needed (mid-size calls ran slower
    on two numba threads than on one; benchmarks/RESULTS.md, "Small inputs: session 9")."""
    if not _pool:
        from concurrent.futures import ThreadPoolExecutor

        _pool.append(ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1), "rusket-topk"))
    futures = [_pool[0].submit(serial, state, indptr, indices, out_idx, out_val, plan) for plan in plans[1:]]
    try:
        serial(state, indptr, indices, out_idx, out_val, plans[0])
    finally:
        for future in futures:
            future.result()


def _exclusion(m: int, exclude_indptr, exclude_indices) -> tuple[np.ndarray, np.ndarray]:
    if exclude_indptr is None:
        return np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int32)
    indptr = np.ascontiguousarray(exclude_indptr, dtype=np.int64)
    indices = np.ascontiguousarray(exclude_indices, dtype=np.int32)
    if indptr.shape != (m + 1,):
        raise ValueError(f"exclusion indptr must have {m + 1} entries (one row per query), got {indptr.shape}")
    return indptr, indices


# ---------------------------------------------------------------------------------------------------------
# two scorers: dot products of factors, and given score rows


class DotScores(NamedTuple):
    """Driver state: ``query @ items_t`` (float32, C-contiguous)."""

    query: np.ndarray
    items_t: np.ndarray


def _dot_scores(state, r0, r1, buf, scratch, mask):
    block = buf[: r1 - r0]
    np.dot(state.query[r0:r1], state.items_t, block)
    return block


class GivenScores(NamedTuple):
    """Driver state: score rows computed elsewhere (float32, C-contiguous)."""

    scores: np.ndarray


def _given_scores(state, r0, r1, buf, scratch, mask):
    return state.scores[r0:r1]


register_scorer(DotScores, _dot_scores)
register_scorer(GivenScores, _given_scores)


def select_topk(
    scores: np.ndarray,
    n: int,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns per row of a (m, n_items) score block, best first.

    Row ``r`` of the exclusion CSR (``exclude_indptr`` m+1 offsets, ``exclude_indices`` item
    indices) lists columns that may not be chosen for row ``r``; NaN and -inf scores are never
    chosen either. Ties go to the lower column index. Returns ``(idx int32, scores float32)`` of
    shape (m, min(n, n_items)), padded with -1 / -inf where a row has fewer candidates.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (rows × items), got shape {scores.shape}")
    m, n_items = scores.shape
    return blocked_topk(
        parallel_kernel, GivenScores(scores), m, n, n_items, 0, 0, exclude_indptr, exclude_indices, blas=False,
        serial=serial_kernel,
    )  # fmt: skip


def topk(
    query: np.ndarray,
    item_factors: np.ndarray,
    n: int,
    exclude_indptr: np.ndarray | None = None,
    exclude_indices: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` items per query row by dot product ``query @ item_factors.T``, block by block.

    ``query`` is (m, k), ``item_factors`` (n_items, k); the exclusion CSR has one row per query
    row (see :func:`select_topk`). At most ``BLOCK_SCORES`` scores exist at any time per thread.
    Returns ``(idx int32, scores float32)`` of shape (m, min(n, n_items)), -1 / -inf padded.
    """
    query = np.ascontiguousarray(query, dtype=np.float32)
    items = np.ascontiguousarray(item_factors, dtype=np.float32)
    if query.ndim != 2 or items.ndim != 2 or query.shape[1] != items.shape[1]:
        raise ValueError(f"factor shapes do not match: query {query.shape}, items {items.shape}")
    n_items = items.shape[0]
    state = DotScores(query, np.ascontiguousarray(items.T))
    return blocked_topk(
        parallel_kernel, state, query.shape[0], n, n_items, n_items, 0, exclude_indptr, exclude_indices,
        serial=serial_kernel, sub_rows=dot_sub_rows(n_items),
    )  # fmt: skip


def dot_sub_rows(width: int) -> int:
    """Rows per BLAS product of a block (scores kept in cache until selected): a multiple of
    ``ROW_TILE`` rows near ``SUB_SCORES`` scores."""
    return int(max(1, SUB_SCORES // max(width, 1) // ROW_TILE) * ROW_TILE)


def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather CSR rows ``rows`` (in that order) into a new (indptr int64, indices int32) pair."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    out_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_ptr[1:])
    total = int(out_ptr[-1])
    pos = np.arange(total, dtype=np.int64) - np.repeat(out_ptr[:-1] - starts, lengths)
    return out_ptr, np.ascontiguousarray(indices[pos], dtype=np.int32)


#: top-k over fewer scores than this (query rows × columns) runs on one numba thread
SMALL_SCORES = 1 << 24
#: ... but from this many on, a call given a serial kernel runs in parts on Python threads
SPLIT_SCORES = 1 << 19


def n_chunks(m: int) -> int:
    """Chunks of ``m`` independent rows for a ``prange`` loop: a few per thread, for balance."""
    return int(max(1, min(m, 4 * numba.get_num_threads())))
