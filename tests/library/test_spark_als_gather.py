"""Spark ALS task layouts (session 10): on one executor (local[2]) the fit runs in ONE task on all its cores
with the local encoder and ALS, the other tasks only sending it their lines; ``gather=False`` keeps one
task per slot exchanging rows. Both equal the local fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rusket_core import ALS

pytest.importorskip("pyspark")

from rusket_core.spark import fit_als  # noqa: E402
from rusket_core.spark.relay import Peer, Relay  # noqa: E402


def _lines(seed: int, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"user": [f"u{u:02d}" for u in rng.integers(0, 70, n)], "item": rng.integers(0, 30, n) * 3 - 20, "w": rng.integers(1, 5, n) * 0.25}
    )  # fmt: skip


@pytest.mark.parametrize("weighted", [True, False])
def test_gathered_and_exchanging_fits_equal_the_local_fit(spark, weighted):
    """Two input partitions, repeated lines: the gathered fit (2 tasks, task 0 fits) is the
    local fit (same lists, factors to float rounding); one task per slot (``gather=False``) is too, to tolerance."""
    pdf = _lines(11)
    pdf = pd.concat([pdf, pdf.iloc[:50]])  # repeats: weights add up, unweighted pairs count once
    rating = "w" if weighted else None
    params = {"factors": 5, "iterations": 3, "regularization": 0.1, "random_state": 8}
    local = ALS.from_transactions(pdf, "user", "item", rating, **params).fit()
    frame = spark.createDataFrame(pdf).repartition(2, "user")
    assert frame.rdd.getNumPartitions() == 2
    for gather, atol in ((None, 1e-6), (False, 1e-5)):
        remote = fit_als(frame, "user", "item", rating, gather=gather, **params)
        assert remote.users == local.users and remote.items == local.items
        np.testing.assert_array_equal(remote.user_items.indptr, local.user_items.indptr)
        np.testing.assert_array_equal(remote.user_items.indices, local.user_items.indices)
        np.testing.assert_allclose(remote.user_items.weights(), local.user_items.weights())
        np.testing.assert_allclose(remote.user_factors, local.user_factors, rtol=1e-4, atol=atol)
        np.testing.assert_allclose(remote.item_factors, local.item_factors, rtol=1e-4, atol=atol)


def test_gathered_fit_refuses_a_null_id_in_any_partition_with_the_local_message(spark):
    pdf = _lines(12, 40).astype({"item": "float64"})
    pdf.loc[37, "item"] = None  # in one of the two tasks' lines: task 0 encodes both
    with pytest.raises(ValueError) as local:
        ALS.from_transactions(pdf, "user", "item")
    with pytest.raises(ValueError) as remote:
        fit_als(spark.createDataFrame(pdf).coalesce(1).repartition(2), "user", "item")
    assert str(remote.value) == str(local.value) and "'item' has 1 null values" in str(local.value)


def test_relay_keeps_what_a_task_delivers_outside_the_rounds():
    """A delivered result is acknowledged and kept by partition, and the rounds around it still work."""
    import threading

    with Relay("127.0.0.1") as relay:
        got = {}

        def task(p: int) -> None:
            peer = Peer(relay.address, relay.secret, p, 2)
            if p == 1:
                peer.deliver(b"result of 1")
            got[p] = peer.all_gather(bytes([p]))
            if p == 0:
                peer.deliver(b"result of 0" * 1000)
            peer.close()

        threads = [threading.Thread(target=task, args=(p,)) for p in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert got == {0: [b"\x00", b"\x01"], 1: [b"\x00", b"\x01"]}
        assert relay.outputs == {0: b"result of 0" * 1000, 1: b"result of 1"}
