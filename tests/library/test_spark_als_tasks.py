"""Spark ALS task layouts (session 9): an input in fewer partitions than slots is fitted without a
shuffle (one task on local[2] solves on both slots' threads, no exchange) and equals the local fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from rusket_core import ALS

pytest.importorskip("pyspark")

from rusket_core.spark import fit_als  # noqa: E402


def test_one_partition_input_runs_one_task_and_equals_local(spark, tmp_path):
    rng = np.random.default_rng(7)
    n = 400
    pdf = pd.DataFrame(
        {"user": rng.integers(0, 60, n), "item": [f"p{i:02d}" for i in rng.integers(0, 25, n)], "w": rng.integers(1, 4, n) * 0.5}
    )  # fmt: skip
    params = {"factors": 6, "iterations": 3, "regularization": 0.1, "random_state": 4}
    local = ALS.from_transactions(pdf, "user", "item", "w", **params).fit()
    pdf.to_parquet(tmp_path / "lines.parquet")
    parquet = spark.read.parquet(str(tmp_path / "lines.parquet"))
    assert parquet.rdd.getNumPartitions() == 1
    coalesced = spark.createDataFrame(pdf).coalesce(1)  # a barrier stage refuses it: shuffled instead
    for one in (parquet, coalesced):
        _assert_same(fit_als(one, "user", "item", "w", num_partitions=2, **params), local)


def _assert_same(remote: ALS, local: ALS) -> None:
    assert remote.users == local.users and remote.items == local.items
    np.testing.assert_array_equal(remote.user_items.indptr, local.user_items.indptr)
    np.testing.assert_array_equal(remote.user_items.indices, local.user_items.indices)
    np.testing.assert_allclose(remote.user_items.data, local.user_items.data)  # repeated lines add their weights
    np.testing.assert_allclose(remote.user_factors, local.user_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(remote.item_factors, local.item_factors, rtol=1e-4, atol=1e-5)


def _lance_rows(uri, table: str):
    import lancedb

    tbl = lancedb.connect(str(uri)).open_table(table)
    return tbl, tbl.to_arrow().sort_by("id")


def test_lancedb_vectors_written_from_partitions_equal_the_local_write(spark, tmp_path):
    """Three tasks write fragments of a 300-item table in 40-row batches, one commit publishes them: the
    rows, columns and recorded version of the local writer's table; a NaN vector in the last task's rows
    fails the job and leaves the previous table (rows and version) as it was."""
    lance = pytest.importorskip("lance")

    from rusket_core.export import table_version, write_lancedb
    from rusket_core.spark.vectors import dataset_path
    from rusket_core.spark.vectors import write_lancedb as spark_write

    rng = np.random.default_rng(1)
    pdf = pd.DataFrame({"user": rng.integers(0, 80, 2000), "item": [f"p{i:03d}" for i in rng.integers(0, 300, 2000)]})
    model = ALS.from_transactions(pdf, "user", "item", factors=8, iterations=2, random_state=0).fit()
    n_items = len(model.items)
    extra = pa.table({"name": [f"name of {x}" for x in model.items.values]})
    kw = {"kind": "item", "normalize": True, "keep_versions": None, "version": "v7"}
    write_lancedb(_WithExtra(model, extra), str(tmp_path / "local"), "item_vectors", chunk_rows=40, **kw)
    tbl, facts = spark_write(spark, model, str(tmp_path / "spark"), "item_vectors", chunk_rows=40, extra=extra, num_partitions=3, **kw)
    assert facts == {}  # below the index threshold, as locally
    assert len(lance.dataset(dataset_path(str(tmp_path / "spark"), "item_vectors")).get_fragments()) == 3
    local_tbl, local_rows = _lance_rows(tmp_path / "local", "item_vectors")
    got_tbl, got_rows = _lance_rows(tmp_path / "spark", "item_vectors")
    assert got_rows.num_rows == n_items and got_rows.schema == local_rows.schema
    assert got_rows.equals(local_rows) and table_version(got_tbl) == "v7"
    assert got_tbl.to_arrow()["id"].to_pylist() == list(range(n_items))  # the model's order, as locally

    version = got_tbl.version
    model.item_factors[-5] = np.nan  # in the last task's last batch
    with pytest.raises(Exception, match="not finite"):
        spark_write(spark, model, str(tmp_path / "spark"), "item_vectors", chunk_rows=40, extra=extra, num_partitions=3, **kw)
    after_tbl, after_rows = _lance_rows(tmp_path / "spark", "item_vectors")
    assert after_tbl.version == version and after_rows.equals(got_rows)


class _WithExtra:
    """The model's item export with ``extra`` columns appended (as the vectors asset's product info)."""

    def __init__(self, model, extra) -> None:
        self.model, self.extra = model, extra

    def export_item_factors(self, **kwargs):
        table = self.model.export_item_factors(**{**kwargs, "format": "arrow"})
        for name in self.extra.column_names:
            table = table.append_column(name, self.extra.column(name))
        return table
