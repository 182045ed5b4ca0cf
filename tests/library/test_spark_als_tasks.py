"""Spark ALS task layouts (session 9): an input in fewer partitions than slots is fitted without a
shuffle (one task on local[2] solves on both slots' threads, no exchange) and equals the local fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
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
