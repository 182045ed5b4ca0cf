"""ALS on Spark with the local numba row solver. Same seed, same initial factors and same row solves as
:class:`~rusket_core.ALS`, so the factors equal the local fit's to float tolerance.

Default (``barrier=True``): the whole fit is ONE Spark job. Every task holds one share of the user rows
and of the item rows (each carrying its interaction list); per half-iteration it solves its rows
against the fixed side, and the tasks exchange the new rows through a relay on the driver
(:mod:`rusket_core.spark.relay`): no job, broadcast or collect per iteration. A barrier stage needs
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

EMPTY_ROWS = pa.table({
    "side": pa.array([], pa.int32()), "id": pa.array([], pa.int32()),
    "idx": pa.array([], pa.list_(pa.int32())), "w": pa.array([], pa.list_(pa.float32())),
})  # fmt: skip
OUT_SCHEMA = "side int, id int, f array<float>, idx array<int>, w array<float>"


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


def _fit_barrier(rows: Any, n_users: int, n_items: int, model: ALS) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """The whole fit in one barrier job: the final ``(U, V)`` and the user rows [id, idx, w]."""
    iterations, k = model.iterations, model.factors
    start = (n_users, n_items, k, model.random_state, model.init_scale)  # each task draws the same start
    spark = rows.sparkSession
    relay = Relay(spark.conf.get("spark.driver.host"))
    address, secret = relay.address, relay.secret

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        _one_thread()
        context = BarrierTaskContext.get()
        batches = [b.cast(EMPTY_ROWS.schema) for b in batches]
        table = pa.Table.from_batches(list(batches), schema=EMPTY_ROWS.schema) if batches else EMPTY_ROWS
        side = table.column("side").to_numpy()
        users = table.filter(pa.array(side == 0))
        items = table.filter(pa.array(side == 1))
        u_parts, i_parts = _csr_parts(users, 1), _csr_parts(items, 1)
        X, Y = init_factors(*start)
        peer = Peer(address, secret, context.partitionId(), len(context.getTaskInfos()))
        try:
            for _ in range(iterations):
                X = _gather(peer, u_parts[0], _solve(*u_parts, X, _fixed(Y, model), model), X)
                Y = _gather(peer, i_parts[0], _solve(*i_parts, Y, _fixed(X, model), model), Y)
        finally:
            peer.close()
        for sub, parts, F in ((users, u_parts, X), (items, i_parts, Y)):
            yield pa.RecordBatch.from_arrays(
                [sub.column("side").combine_chunks(), sub.column("id").combine_chunks(), _vectors(F[parts[0]]),
                 sub.column("idx").combine_chunks(), sub.column("w").combine_chunks()],
                names=["side", "id", "f", "idx", "w"],
            )  # fmt: skip

    with relay:
        out = rows.mapInArrow(task, OUT_SCHEMA, barrier=True).toArrow()
    side = out.column("side").to_numpy()
    ids = out.column("id").to_numpy().astype(np.int64)
    flat = _list_parts(out.column("f"))[1].reshape(-1, k)
    U, V = init_factors(*start)  # every row is overwritten; rows no task held (none) would stay as started
    U[ids[side == 0]] = flat[side == 0]
    V[ids[side == 1]] = flat[side == 1]
    return U, V, out.filter(pa.array(side == 0)).select(["id", "idx", "w"])


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


def _fit_jobs(user_rows: Any, item_rows: Any, U: np.ndarray, V: np.ndarray, model: ALS) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """The fit as one Spark job per half-iteration (rows cached on the executors); as :func:`_fit_barrier`."""
    user_rows, item_rows = user_rows.persist(), item_rows.persist()
    try:
        for _ in range(model.iterations):
            U = solve_rows(user_rows, U, V, model)
            V = solve_rows(item_rows, V, U, model)
        return U, V, user_rows.toArrow()
    finally:
        user_rows.unpersist()
        item_rows.unpersist()


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
    from pyspark.sql import functions as F

    model = ALS(**params)
    enc = encode(df, user_col, item_col, rating_col)
    slots = default_parallelism(df.sparkSession)
    barrier = is_classic(df.sparkSession) if barrier is None else barrier
    parts = min(num_partitions or slots, slots) if barrier else (num_partitions or slots)
    user_rows = interaction_rows(enc.pairs, "row", "item")
    item_rows = interaction_rows(enc.pairs, "item", "row")
    if barrier:
        rows = user_rows.select(F.lit(0).alias("side"), "*").unionByName(item_rows.select(F.lit(1).alias("side"), "*"))
        U, V, users = _fit_barrier(rows.repartition(parts), len(enc.rows), len(enc.items), model)
    else:
        U, V = init_factors(len(enc.rows), len(enc.items), model.factors, model.random_state, model.init_scale)
        U, V, users = _fit_jobs(user_rows.repartition(parts), item_rows.repartition(parts), U, V, model)
    users = users.take(pa.array(np.argsort(users.column("id").to_numpy())))
    indptr, indices = _list_parts(users.column("idx"))
    _, data = _list_parts(users.column("w"))
    encoded = Encoded(
        indptr, indices.astype(np.int32), data.astype(np.float32) if enc.has_weights else None, enc.rows, enc.items
    )
    model._set_interactions(encoded)
    model.user_factors, model.item_factors = U, V
    model.user_col, model.item_col, model.rating_col = user_col, item_col, rating_col
    model._format = "pandas"
    return model
