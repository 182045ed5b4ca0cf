"""ALS on Spark: the driver loops over iterations; each half-iteration ships the fixed side's factors and
Gram matrix to the tasks, which solve their rows (carrying their interaction lists) with the local
numba row solver. Same seed, same initial factors and same row solves as :class:`~rusket_core.ALS`."""

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
from rusket_core.spark.session import default_parallelism, shipped


def interaction_rows(pairs: Any, key: str, other: str) -> Any:
    """One Spark row per ``key`` code: ``id``, its sorted ``other`` codes ``idx`` and their weights ``w``."""
    from pyspark.sql import functions as F

    entries = F.sort_array(F.collect_list(F.struct(F.col(other).alias("i"), F.col("weight").cast("float").alias("w"))))
    return (
        pairs.groupBy(key)
        .agg(entries.alias("e"))
        .select(F.col(key).alias("id"), F.col("e.i").alias("idx"), F.col("e.w").alias("w"))
    )


def solve_rows(rows: Any, X: np.ndarray, Y: np.ndarray, model: ALS) -> np.ndarray:
    """Re-solve the rows of ``X`` held by the Spark rows against fixed ``Y``; returns the new ``X``.

    As in the local fit, the CG solve runs in the eigenbasis of ``Y^T Y + reg*I`` (rotated on the
    driver, rotated back here), the Cholesky solve in the original basis."""
    k = X.shape[1]
    alpha, cg_steps, cholesky = model.alpha, model.cg_steps, model.solver == "cholesky"
    P = None
    if cholesky:
        G64, lam = gram(Y) + model.regularization * np.eye(k), np.zeros(0, np.float32)
    else:
        G64 = np.zeros((0, 0))
        lam, P = eigenbasis(Y, model.regularization)
        X, Y = X.copy(), Y.copy()
        rotate(X, P)
        rotate(Y, P)
    arrays, release = shipped(rows.sparkSession, (X, Y, lam, G64))

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _one_thread()
        X, Y, lam, G64 = arrays()
        for batch in batches:
            ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
            offsets, idx = _list_parts(batch.column(1))
            _, w = _list_parts(batch.column(2))
            x = np.ascontiguousarray(X[ids])
            als_update(
                offsets, idx.astype(np.int32), w.astype(np.float32), x, Y, lam, G64,
                alpha, cg_steps, cholesky, _balanced_bounds(offsets, k),
            )  # fmt: skip
            vectors = list_column(np.arange(len(ids) + 1, dtype=np.int64) * k, pa.array(x.reshape(-1)))
            yield pa.RecordBatch.from_arrays([pa.array(ids.astype(np.int32)), vectors], names=["id", "f"])

    try:
        out = rows.mapInArrow(task, "id int, f array<float>").toArrow()
    finally:
        release()
    ids = out.column("id").to_numpy().astype(np.int64)
    _, flat = _list_parts(out.column("f"))
    new = X.copy()
    new[ids] = flat.reshape(-1, k)
    if P is not None:
        rotate(new, P.T)
    return new


def fit_als(
    df: Any,
    user_col: str,
    item_col: str,
    rating_col: str | None = None,
    num_partitions: int | None = None,
    **params: Any,
) -> ALS:
    """Train :class:`~rusket_core.ALS` on a Spark DataFrame of interactions; returns a fitted local model.

    ``params`` are ALS's (factors, iterations, alpha, regularization, solver, cg_steps,
    random_state, init_scale). The fitted model holds the labels and the training interactions (needed to
    exclude seen items), so every local method works on it; ``num_partitions`` (default: the
    session's task slots) splits the row solves.
    """
    model = ALS(**params)
    enc = encode(df, user_col, item_col, rating_col)
    parts = num_partitions or default_parallelism(df.sparkSession)
    user_rows = interaction_rows(enc.pairs, "row", "item").repartition(parts).persist()
    item_rows = interaction_rows(enc.pairs, "item", "row").repartition(parts).persist()
    try:
        U, V = init_factors(len(enc.rows), len(enc.items), model.factors, model.random_state, model.init_scale)
        for _ in range(model.iterations):
            U = solve_rows(user_rows, U, V, model)
            V = solve_rows(item_rows, V, U, model)
        csr = user_rows.toArrow()
    finally:
        user_rows.unpersist()
        item_rows.unpersist()
    order = np.argsort(csr.column("id").to_numpy())
    csr = csr.take(pa.array(order))
    indptr, indices = _list_parts(csr.column("idx"))
    _, data = _list_parts(csr.column("w"))
    encoded = Encoded(
        indptr, indices.astype(np.int32), data.astype(np.float32) if enc.has_weights else None, enc.rows, enc.items
    )
    model._set_interactions(encoded)
    model.user_factors, model.item_factors = U, V
    model.user_col, model.item_col, model.rating_col = user_col, item_col, rating_col
    model._format = "pandas"
    return model
