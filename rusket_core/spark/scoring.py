"""Batch top-N and similar items on Spark: rows partitioned with their vectors, the other side's factors
shipped to every task, the local numba top-k per partition (seen items excluded)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Labels
from rusket_core.factorization.base import FactorModel, _normalized
from rusket_core.factorization.topk import topk
from rusket_core.frames import list_column
from rusket_core.spark.fpgrowth import _list_parts, _one_thread
from rusket_core.spark.session import default_parallelism, shipped


def _active(spark: Any) -> Any:
    if spark is not None:
        return spark
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        raise RuntimeError("no active SparkSession: pass spark= or start one (rusket_core.spark.spark_session())")
    return session


def _query_rows(spark: Any, labels: Labels, vectors: np.ndarray, excl_ptr, excl_idx, parts: int) -> Any:
    """Spark rows [label, vector, excluded codes], ``parts`` partitions."""
    n, k = vectors.shape
    table = pa.table(
        {
            "label": labels.to_arrow(),
            "v": list_column(np.arange(n + 1, dtype=np.int64) * k, pa.array(vectors.reshape(-1))),
            "x": list_column(excl_ptr, pa.array(np.asarray(excl_idx, np.int32))),
        }
    )
    return spark.createDataFrame(table).repartition(parts)


def _score(
    rows: Any, targets: np.ndarray, target_labels: Labels, label_type: pa.DataType, names, n: int, rank: bool = False
) -> Any:
    """Top-``n`` targets per row with the local top-k kernel, as Spark rows [names[0], names[1], score]
    (and ``rank``, 1 = best, in the kernel's order, with ``rank=True``)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import FloatType, IntegerType, StructField, StructType

    k = targets.shape[1]
    target_arrow = target_labels.to_arrow()
    schema = StructType(
        [
            StructField(names[0], from_arrow_type(label_type), False),
            StructField(names[1], from_arrow_type(target_arrow.type), False),
            StructField("score", FloatType(), False),
            *([StructField("rank", IntegerType(), False)] if rank else []),
        ]
    )

    shipped_targets, _ = shipped(rows.sparkSession, targets)  # lives as long as the lazy result

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _one_thread()
        targets = shipped_targets()
        for batch in batches:
            _, flat = _list_parts(batch.column(1))
            ptr, excl = _list_parts(batch.column(2))
            idx, scores = topk(flat.reshape(-1, k), targets, n, ptr, excl)
            keep = idx >= 0
            rows = np.repeat(np.arange(len(idx)), keep.sum(axis=1))
            columns = [batch.column(0).take(pa.array(rows)), target_arrow.take(pa.array(idx[keep])), pa.array(scores[keep])]
            if rank:  # kept entries come first in each row, best first
                columns.append(pa.array(np.nonzero(keep)[1].astype(np.int32) + 1))
            yield pa.RecordBatch.from_arrays(columns, names=list(schema.names))

    return rows.mapInArrow(task, schema)


def batch_recommend(
    model: FactorModel, n: int = 10, exclude_seen: bool = True, spark: Any = None, num_partitions: int | None = None
) -> Any:
    """``model.batch_recommend`` computed on Spark: a DataFrame [user_id, item_id, score] with the local rows."""
    model._check_fitted()
    spark = _active(spark)
    enc = model.user_items
    if exclude_seen:
        ptr, ind = enc.indptr, enc.indices
    else:
        ptr, ind = np.zeros(len(model.users) + 1, np.int64), np.zeros(0, np.int32)
    parts = num_partitions or default_parallelism(spark)
    rows = _query_rows(spark, model.users, model.user_factors, ptr, ind, parts)
    items = np.ascontiguousarray(model.item_factors)
    return _score(rows, items, model.items, model.users.to_arrow().type, ("user_id", "item_id"), n)


def batch_similar_items(
    model: FactorModel, n: int = 10, spark: Any = None, num_partitions: int | None = None, rank: bool = False
) -> Any:
    """``model.batch_similar_items`` computed on Spark: [item_id, similar_item_id, score] (cosine, self
    excluded), plus ``rank`` (1 = most similar) with ``rank=True``."""
    model._check_fitted()
    spark = _active(spark)
    unit = _normalized(model.item_factors)
    m = len(unit)
    parts = num_partitions or default_parallelism(spark)
    rows = _query_rows(spark, model.items, unit, np.arange(m + 1, dtype=np.int64), np.arange(m, dtype=np.int32), parts)
    label_type = model.items.to_arrow().type
    return _score(rows, unit, model.items, label_type, ("item_id", "similar_item_id"), n, rank)
