"""Engine choice per deployment: ``local`` (one process, the default) or ``spark`` (the same numba kernels
inside Spark tasks, on ``master`` or a Spark Connect ``remote`` such as ``sc://host:15002``)."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pyarrow as pa

ENGINES = ("local", "spark")


class Engine(dg.ConfigurableResource):
    """Where the heavy steps (source read, frequent itemsets, ALS, similar items, user recommendations) run;
    asset keys, tables and checks stay the same."""

    engine: str = "local"
    master: str = "local[2]"
    remote: str | None = None
    conf: dict[str, str] = {}
    partitions: int | None = None
    lakehouse_path: str | None = None  # parquet root for Spark-written tables (default: beside the warehouse file)

    @property
    def is_spark(self) -> bool:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        return self.engine == "spark"

    def session(self) -> Any:
        """The Spark session (started on first use, then shared by the run's steps)."""
        from rusket_core.spark import spark_session

        return spark_session(self.master, self.remote, self.conf)

    def n_partitions(self) -> int:
        """Partitions (and mining groups) the Spark steps use."""
        from rusket_core.spark.session import default_parallelism

        return self.partitions or default_parallelism(self.session())

    def frame(self, data: Any, columns: list[str]) -> Any:
        """``columns`` of ``data`` (an arrow table, a Spark DataFrame or a parquet path/glob Spark reads) as a
        Spark DataFrame in ``n_partitions()`` partitions."""
        if isinstance(data, str):
            data = self.session().read.parquet(data)
        elif isinstance(data, pa.Table):
            data = self.session().createDataFrame(data.select(columns))
        return data.select(*columns).repartition(self.n_partitions())

    def fpgrowth(self, table: Any, transaction_col: str, item_col: str, min_support: Any, max_len: Any) -> Any:
        """Frequent itemsets (an object with ``mine``, ``association_rules``, ``n_transactions``, ``min_count``)."""
        if not self.is_spark:
            from rusket_core import FPGrowth

            return FPGrowth.from_transactions(table, transaction_col, item_col, min_support, max_len)
        from rusket_core.spark import frequent_itemsets

        df = self.frame(table, [transaction_col, item_col])
        return frequent_itemsets(df, transaction_col, item_col, min_support, max_len, 2 * self.n_partitions())

    def fit_als(self, table: Any, user_col: str, item_col: str, rating_col: str | None, **params: Any) -> Any:
        """A fitted :class:`~rusket_core.ALS` (the same factors on either engine, to float tolerance)."""
        if not self.is_spark:
            from rusket_core import ALS

            return ALS.from_transactions(table, user_col, item_col, rating_col, **params).fit()
        from rusket_core.spark import fit_als

        cols = [user_col, item_col, *([rating_col] if rating_col else [])]
        return fit_als(self.frame(table, cols), user_col, item_col, rating_col, self.n_partitions(), **params)

    def similar_items(self, model: Any, n: int) -> Any:
        """Spark DataFrame [item_id, similar_item_id, score, rank] of ``model``'s most similar items (the
        local top-k per partition: the local engine's rows)."""
        from rusket_core.spark import batch_similar_items

        return batch_similar_items(model, n, spark=self.session(), num_partitions=self.n_partitions(), rank=True)

    def write_vectors(self, model: Any, uri: str, table: str, extra: pa.Table | None = None, **params: Any) -> Any:
        """Spark only: LanceDB table ``table`` replaced by the model's vectors, the rows written by the Spark
        tasks in batches and published in one commit (:func:`rusket_core.spark.vectors.write_lancedb`);
        (table, index facts). ``extra``: more columns, one row per model row."""
        from rusket_core.spark.vectors import write_lancedb

        spark, parts = self.session(), self.n_partitions()
        return write_lancedb(spark, model, uri, table, extra=extra, num_partitions=parts, **params)

    def spark_table(self, frame: Any) -> Any:
        """An asset output written by Spark as parquet under ``lakehouse_path``, a DuckDB view over it."""
        from rusket_assets.lakehouse import SparkTable

        return SparkTable(frame, self.lakehouse_path, self.metadata)

    def metadata(self) -> dict[str, Any]:
        """What an asset reports about where it ran."""
        if not self.is_spark:
            return {"engine": "local"}
        return {"engine": "spark", "spark_partitions": self.n_partitions(), "spark_master": self.remote or self.master}
