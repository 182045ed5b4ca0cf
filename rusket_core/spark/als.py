"""ALS on Spark with the local numba row solver. Same seed, same initial factors and same row solves as
:class:`~rusket_core.ALS`, so the factors equal the local fit's to float tolerance.

Default (``barrier=True``): the whole fit is ONE Spark job. Every coded line goes once to the task
holding its user and once to the task holding its item, as flat [side, key, other, w] rows (one
shuffle, no Spark-side grouping); the task builds its user and item CSR with numpy, per
half-iteration solves its rows against the fixed side, and the tasks exchange the new rows through a
relay on the driver (:mod:`rusket_core.spark.relay`): no job, broadcast or collect per iteration.
Factors and the users' lists come back as packed bytes, not Arrow lists. A barrier stage needs
one free slot per task, so the partitions are capped at the session's task slots. ``barrier=False``
runs one job per half-iteration instead (the driver broadcasts the fixed side and collects the solved
rows; about 1 s per job on local[2]): for Spark Connect clients (the driver is remote, no relay) and
clusters where barrier stages cannot run (dynamic allocation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Encoded
from rusket_core.factorization.als import (
    ALS,
    _balanced_bounds,
    eigenbasis,
    gram,
    init_factors,
    rotate,
)
from rusket_core.factorization.kernels import als_update
from rusket_core.frames import list_column
from rusket_core.spark.encoding import encode
from rusket_core.spark.fpgrowth import _list_parts, _one_thread
from rusket_core.spark.relay import Peer, Relay
from rusket_core.spark.session import default_parallelism, is_classic, shipped

OUT_SCHEMA = "side int, ids binary, f binary, lens binary, idx binary, w binary"
#: rows per output record of the barrier job (keeps every binary value far below Arrow's 2 GiB)
OUT_ROWS = 1 << 20


def side_lines(lines: Any, row_key: str = "row") -> Any:
    """Every coded line once per side: [side, key, other, w], side 0 keyed by ``row_key``, side 1 by item."""
    from pyspark.sql import functions as F

    def entry(side: int, key: str, other: str) -> Any:
        return F.struct(F.lit(side).alias("side"), F.col(key).alias("key"), F.col(other).alias("other"),
                        F.col("weight").alias("w"))  # fmt: skip

    both = F.array(entry(0, row_key, "item"), entry(1, "item", row_key))
    return lines.select(F.explode(both).alias("e")).select("e.*")


def csr_of(key: np.ndarray, other: np.ndarray, w: np.ndarray, add: bool) -> tuple[np.ndarray, ...]:
    """``(ids, offsets, idx, w)``: the entries grouped by ``key`` (sorted) with sorted ``other``; repeated
    (key, other) merge as the encoder merges lines (weights ``add``-ed, else counted once)."""
    if len(key) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    order = np.argsort(key * (int(other.max()) + 1) + other, kind="stable")  # by key, then other
    key, other, w = key[order], other[order], w[order]
    new = np.ones(len(key), bool)
    new[1:] = (key[1:] != key[:-1]) | (other[1:] != other[:-1])
    starts = np.flatnonzero(new)
    w = (np.add if add else np.maximum).reduceat(w, starts)
    key, other = key[starts], other[starts]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    offsets = np.append(np.flatnonzero(first), len(key)).astype(np.int64)
    return key[first].astype(np.int64), offsets, other.astype(np.int32), w.astype(np.float32)


def _sorted_csr(ids: np.ndarray, lens: np.ndarray, idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(indptr, indices, data)`` of rows given in any order (``ids``, row lengths ``lens``), rows by id."""
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    order = np.argsort(ids, kind="stable")
    new_len = lens[order].astype(np.int64)
    indptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(new_len, out=indptr[1:])
    pos = np.repeat(offsets[:-1][order] - indptr[:-1], new_len) + np.arange(indptr[-1])
    return indptr, idx[pos], w[pos]


def interaction_rows(pairs: Any, key: str, other: str) -> Any:
    """One Spark row per ``key`` code: ``id``, its sorted ``other`` codes ``idx`` and their weights ``w``."""
    from pyspark.sql import functions as F

    entries = F.sort_array(F.collect_list(F.struct(F.col(other).alias("i"), F.col("weight").cast("float").alias("w"))))
    return (
        pairs.groupBy(key)
        .agg(entries.alias("e"))
        .select(F.col(key).alias("id"), F.col("e.i").alias("idx"), F.col("e.w").alias("w"))
    )


def _fixed(Y: np.ndarray, model: ALS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The fixed side ready for :func:`_solve`: ``(Y', lam, G64, P)``. CG works in the eigenbasis of
    ``Y^T Y + reg*I`` (``Y' = Y @ P``, the matrix is ``diag(lam)``), as the local fit does; Cholesky in
    the original basis with ``G64 = Y^T Y + reg*I`` (``P`` is None)."""
    k = Y.shape[1]
    if model.solver == "cholesky":
        return Y, np.zeros(0, np.float32), gram(Y) + model.regularization * np.eye(k), None
    lam, P = eigenbasis(Y, model.regularization)
    Y = Y.copy()
    rotate(Y, P)
    return Y, lam, np.zeros((0, 0)), P


def _solve(ids: np.ndarray, offsets, idx, w, X: np.ndarray, fixed: tuple, model: ALS) -> np.ndarray:
    """The new rows ``ids`` of ``X`` (entries ``offsets/idx/w``) against the fixed side (:func:`_fixed`), one thread."""
    Y, lam, G64, P = fixed
    x = np.ascontiguousarray(X[ids])
    if P is not None:
        rotate(x, P)
    als_update(
        offsets, idx, w, x, Y, lam, G64, model.alpha, model.cg_steps, model.solver == "cholesky",
        _balanced_bounds(offsets, X.shape[1]),
    )  # fmt: skip
    if P is not None:
        rotate(x, P.T)
    return x


def _csr_parts(batch: pa.RecordBatch | pa.Table, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, offsets, idx, w) of the columns ``first..first+2`` (id, idx, w) as kernel-ready arrays."""
    ids = batch.column(first).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets, idx = _list_parts(batch.column(first + 1))
    _, w = _list_parts(batch.column(first + 2))
    return ids, offsets, idx.astype(np.int32), w.astype(np.float32)


def _vectors(x: np.ndarray) -> pa.Array:
    n, k = x.shape
    return list_column(np.arange(n + 1, dtype=np.int64) * k, pa.array(np.ascontiguousarray(x).reshape(-1)))


def _gather(peer: Peer, ids: np.ndarray, x: np.ndarray, full: np.ndarray) -> np.ndarray:
    """``full`` with every task's solved rows (``ids``, ``x``) written in."""
    k = full.shape[1]
    out = full.copy()
    for raw in peer.all_gather(ids.astype(np.int32).tobytes() + np.ascontiguousarray(x, np.float32).tobytes()):
        m = len(raw) // (4 * (k + 1))
        got = np.frombuffer(raw, np.int32, m)
        out[got] = np.frombuffer(raw, np.float32, m * k, offset=4 * m).reshape(m, k)
    return out


def _columns(batches: list[pa.RecordBatch]) -> tuple[np.ndarray, ...]:
    """(side, key, other, w) of the task's [side, key, other, w] batches as numpy arrays."""
    dtypes = (np.int8, np.int64, np.int32, np.float64)
    if not batches:
        return tuple(np.zeros(0, d) for d in dtypes)
    return tuple(
        np.concatenate([b.column(c).to_numpy(zero_copy_only=False) for b in batches]).astype(d, copy=False)
        for c, d in enumerate(dtypes)
    )


def _fit_barrier(lines: Any, n_users: int, n_items: int, add: bool, model: ALS) -> tuple[np.ndarray, ...]:
    """The whole fit in one barrier job over :func:`side_lines`: ``(U, V, indptr, indices, data)``, the
    final factors and the users' interactions (rows by user code)."""
    iterations, k = model.iterations, model.factors
    start = (n_users, n_items, k, model.random_state, model.init_scale)  # each task draws the same start
    spark = lines.sparkSession
    relay = Relay(spark.conf.get("spark.driver.host"))
    address, secret = relay.address, relay.secret

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        _one_thread()
        context = BarrierTaskContext.get()
        side, key, other, w = _columns(list(batches))
        u_parts = csr_of(key[side == 0], other[side == 0], w[side == 0], add)
        i_parts = csr_of(key[side == 1], other[side == 1], w[side == 1], add)
        X, Y = init_factors(*start)
        peer = Peer(address, secret, context.partitionId(), len(context.getTaskInfos()))
        try:
            for _ in range(iterations):
                X = _gather(peer, u_parts[0], _solve(*u_parts, X, _fixed(Y, model), model), X)
                Y = _gather(peer, i_parts[0], _solve(*i_parts, Y, _fixed(X, model), model), Y)
        finally:
            peer.close()
        for s, (ids, offsets, idx, ws), F in ((0, u_parts, X), (1, i_parts, Y)):
            for lo in range(0, len(ids), OUT_ROWS):  # packed bytes, not Arrow lists: cheap on both ends
                hi = min(lo + OUT_ROWS, len(ids))
                a, b = (offsets[lo], offsets[hi]) if s == 0 else (0, 0)  # only the users' lists go back
                lens = np.diff(offsets[lo : hi + 1])[: hi - lo if s == 0 else 0]
                packed = [ids[lo:hi].astype(np.int32), F[ids[lo:hi]], lens.astype(np.int32), idx[a:b], ws[a:b]]
                yield pa.RecordBatch.from_arrays(
                    [pa.array([s], pa.int32()), *(pa.array([np.ascontiguousarray(v).tobytes()], pa.binary()) for v in packed)],
                    names=["side", "ids", "f", "lens", "idx", "w"],
                )  # fmt: skip

    with relay:
        out = lines.mapInArrow(task, OUT_SCHEMA, barrier=True).toArrow().to_pylist()
    U, V = init_factors(*start)  # every row is overwritten; rows no task held (none) would stay as started
    for r in out:
        ids = np.frombuffer(r["ids"], np.int32)
        (U if r["side"] == 0 else V)[ids] = np.frombuffer(r["f"], np.float32).reshape(len(ids), k)
    users = [r for r in out if r["side"] == 0]

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype), *(np.frombuffer(r[name], dtype) for r in users)])

    return U, V, *_sorted_csr(cat("ids", np.int32), cat("lens", np.int32), cat("idx", np.int32), cat("w", np.float32))


def solve_rows(rows: Any, X: np.ndarray, Y: np.ndarray, model: ALS) -> np.ndarray:
    """One Spark job: re-solve the rows of ``X`` held by the Spark rows against fixed ``Y``; returns the new ``X``."""
    k = X.shape[1]
    arrays, release = shipped(rows.sparkSession, (X, *_fixed(Y, model)))

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _one_thread()
        X, *fixed = arrays()
        for batch in batches:
            ids, offsets, idx, w = _csr_parts(batch, 0)
            x = _solve(ids, offsets, idx, w, X, tuple(fixed), model)
            yield pa.RecordBatch.from_arrays([pa.array(ids.astype(np.int32)), _vectors(x)], names=["id", "f"])

    try:
        out = rows.mapInArrow(task, "id int, f array<float>").toArrow()
    finally:
        release()
    new = X.copy()
    new[out.column("id").to_numpy().astype(np.int64)] = _list_parts(out.column("f"))[1].reshape(-1, k)
    return new


def _fit_jobs(user_rows: Any, item_rows: Any, U: np.ndarray, V: np.ndarray, model: ALS) -> tuple[np.ndarray, ...]:
    """The fit as one Spark job per half-iteration (rows cached on the executors); as :func:`_fit_barrier`."""
    user_rows, item_rows = user_rows.persist(), item_rows.persist()
    try:
        for _ in range(model.iterations):
            U = solve_rows(user_rows, U, V, model)
            V = solve_rows(item_rows, V, U, model)
        users = user_rows.toArrow()
    finally:
        user_rows.unpersist()
        item_rows.unpersist()
    offsets, idx = _list_parts(users.column("idx"))
    ids = users.column("id").to_numpy().astype(np.int64)
    w = _list_parts(users.column("w"))[1].astype(np.float32)
    return U, V, *_sorted_csr(ids, np.diff(offsets), idx.astype(np.int32), w)


def fit_als(
    df: Any,
    user_col: str,
    item_col: str,
    rating_col: str | None = None,
    num_partitions: int | None = None,
    barrier: bool | None = None,
    **params: Any,
) -> ALS:
    """Train :class:`~rusket_core.ALS` on a Spark DataFrame of interactions; returns a fitted local model.

    ``params`` are ALS's (factors, iterations, alpha, regularization, solver, cg_steps,
    random_state, init_scale). The fitted model holds the labels and the training interactions (needed to
    exclude seen items), so every local method works on it. ``num_partitions`` (default and, with
    ``barrier``, at most: the session's task slots) splits the row solves; ``barrier`` picks one job
    for the whole fit or one per half-iteration (see the module docstring); by default one job on a
    classic session, one per half-iteration on Spark Connect.
    """
    model = ALS(**params)
    enc = encode(df, user_col, item_col, rating_col)
    slots = default_parallelism(df.sparkSession)
    barrier = is_classic(df.sparkSession) if barrier is None else barrier
    parts = min(num_partitions or slots, slots) if barrier else (num_partitions or slots)
    if barrier:
        lines = side_lines(enc.lines).repartition(parts, "side", "key")
        U, V, indptr, indices, data = _fit_barrier(lines, len(enc.rows), len(enc.items), enc.has_weights, model)
    else:
        U, V = init_factors(len(enc.rows), len(enc.items), model.factors, model.random_state, model.init_scale)
        user_rows = interaction_rows(enc.pairs, "row", "item").repartition(parts)
        item_rows = interaction_rows(enc.pairs, "item", "row").repartition(parts)
        U, V, indptr, indices, data = _fit_jobs(user_rows, item_rows, U, V, model)
    if len(indptr) != len(enc.rows) + 1:
        raise RuntimeError(f"the Spark fit returned {len(indptr) - 1} user rows for {len(enc.rows)} users")
    encoded = Encoded(indptr, indices, data if enc.has_weights else None, enc.rows, enc.items)
    model._set_interactions(encoded)
    model.user_factors, model.item_factors = U, V
    model.user_col, model.item_col, model.rating_col = user_col, item_col, rating_col
    model._format = "pandas"
    return model
