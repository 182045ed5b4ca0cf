"""The hybrid Recommender's per-customer top-N on Spark: customers partitioned, the recommender (factors,
embeddings, rules, carts) shipped once per executor, the local blend kernel and rule merge per partition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.chunks import CHUNK_ROWS, iter_recommend_for_users
from rusket_core.spark.fpgrowth import _one_thread
from rusket_core.spark.scoring import _active
from rusket_core.spark.session import default_parallelism, shipped


def recommend_for_users(
    recommender: Any, n: int = 10, spark: Any = None, num_partitions: int | None = None, chunk_size: int = CHUNK_ROWS
) -> Any:
    """``recommender.recommend_for_users(n=n)`` computed on Spark: a DataFrame [user_id, rank, item_id, score,
    model_score, rule_score, source] with the local rows (each partition runs the local call on its customers)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    spark = _active(spark)
    users = recommender.users.values
    if len(users) == 0:
        raise ValueError("the recommender's model has no users to score")
    # the output schema, from the local call on one customer (the same code the tasks run)
    schema = recommender.recommend_for_users(users=users[:1], n=n, format="arrow").schema
    spark_schema = from_arrow_schema(schema)
    get, _ = shipped(spark, recommender)  # lives as long as the lazy result
    parts = num_partitions or default_parallelism(spark)

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _one_thread()
        rec = get()
        labels = rec.users.values
        for batch in batches:
            rows = np.asarray(batch.column(0).to_numpy(), dtype=np.int64)
            for chunk in iter_recommend_for_users(rec, n=n, chunk_size=chunk_size, users=labels[rows]):
                yield from chunk.cast(schema).to_batches()

    return spark.range(0, len(users), 1, parts).mapInArrow(task, spark_schema)
