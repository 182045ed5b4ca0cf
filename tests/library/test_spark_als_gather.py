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


def test_put_goes_through_spill_files_only_for_a_task_that_holds_the_relays_secret(tmp_path):
    """A task that reads the relay's secret in its spill directory sends paths, and ``take`` gives back the same
    parts; a task with another directory (another host) or none sends them inline. The directory goes on exit."""
    import os

    import pyarrow as pa

    from rusket_core.spark.relay import take

    table = pa.table({"u": pa.array(["a", "b", None]), "i": pa.array([3, 1, 2], pa.int64())})
    values = np.arange(7, dtype=np.float32).reshape(7, 1) * 0.5
    with Relay("127.0.0.1", spill=True) as relay:
        spill = relay.spill_dir
        assert os.path.isdir(spill)
        (tmp_path / "token").write_text("not-the-secret")
        for directory, kind in ((spill, b"F"), (str(tmp_path), b"I"), (None, b"I"), (str(tmp_path / "gone"), b"I")):
            peer = Peer(relay.address, relay.secret, 3, 4, directory)
            message = peer.put("lines", [table, values, b"raw", np.zeros(0, np.int64)])
            peer.close()
            assert message[:1] == kind
            got_table, got_values, raw, empty = take(message)
            assert pa.ipc.open_stream(got_table).read_all().equals(table)
            np.testing.assert_array_equal(np.frombuffer(got_values, np.float32).reshape(7, 1), values)
            assert bytes(raw) == b"raw" and len(empty) == 0
            if kind == b"F":
                mapped = got_values
        names = sorted(os.listdir(spill))  # lines-<partition>-<attempt>-<part>
        assert len(names) == 5 and names[-1] == "token" and len({n.rsplit("-", 1)[0] for n in names[:4]}) == 1
        assert [n.split("-")[:2] + n.split("-")[3:] for n in names[:4]] == [["lines", "3", str(j)] for j in range(4)]
    assert not os.path.exists(spill)
    np.testing.assert_array_equal(np.frombuffer(mapped, np.float32), values.ravel())  # mapped files outlive it


def test_gathered_fit_leaves_no_spill_directory(spark, monkeypatch, tmp_path):
    """The fit's lines and result pass through files in a directory of its own, removed when the fit ends."""
    import tempfile

    import rusket_core.spark.als as als_module

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kinds, real_take = [], als_module.take

    def recording_take(message):  # the driver's side: the fitted model it is handed
        kinds.append(message[:1])
        return real_take(message)

    monkeypatch.setattr(als_module, "take", recording_take)
    pdf = _lines(13)
    remote = fit_als(spark.createDataFrame(pdf).repartition(2, "user"), "user", "item", factors=3, iterations=2, random_state=1)
    local = ALS.from_transactions(pdf, "user", "item", factors=3, iterations=2, random_state=1).fit()
    np.testing.assert_allclose(remote.item_factors, local.item_factors, rtol=1e-4, atol=1e-6)
    assert kinds == [b"F"]  # through the files (the tasks run on this host)
    assert list(tmp_path.iterdir()) == []


def test_closing_the_relay_wakes_its_serving_thread_at_once():
    """The serving thread waits in accept(); closing the relay must end that wait itself, not leave it to
    the accept timeout (here longer than the 5 s the close waits for the thread)."""
    import time

    relay = Relay("127.0.0.1")
    with relay:
        relay._server.settimeout(60)
        peer = Peer(relay.address, relay.secret, 0, 1)  # one round, so the thread is back in accept() after
        assert peer.all_gather(b"x") == [b"x"]
        peer.close()
        time.sleep(0.5)  # the thread notices the closed connection and goes back to accept()
    assert not relay._thread.is_alive()


def test_put_sends_inline_when_a_spill_file_cannot_be_written(monkeypatch):
    """A full temp disk must not fail the fit: the parts go through the socket, and no partial file stays."""
    import os

    import rusket_core.spark.relay as relay_module
    from rusket_core.spark.relay import take

    real_write = relay_module._write

    def fails_on_second(part, path):
        if path.endswith("-1"):
            raise OSError(28, "No space left on device")
        real_write(part, path)

    monkeypatch.setattr(relay_module, "_write", fails_on_second)
    values = np.arange(5, dtype=np.int64)
    with Relay("127.0.0.1", spill=True) as relay:
        peer = Peer(relay.address, relay.secret, 0, 1, relay.spill_dir)
        message = peer.put("result", [values, b"abc"])
        peer.close()
        assert message[:1] == b"I" and os.listdir(relay.spill_dir) == ["token"]
        got, raw = take(message)
    np.testing.assert_array_equal(np.frombuffer(got, np.int64), values)
    assert raw == b"abc"


def test_a_spill_file_that_is_short_is_refused_and_a_failed_write_raises(tmp_path):
    """Bytes lost on the way (a file cut short) raise instead of reaching the kernels as a shorter array;
    writing an array reports the disk's error (``ndarray.tofile`` does not when it closes the file)."""
    import os

    from rusket_core.spark.relay import _write, take

    with Relay("127.0.0.1", spill=True) as relay:
        peer = Peer(relay.address, relay.secret, 0, 1, relay.spill_dir)
        message = peer.put("result", [np.arange(100, dtype=np.int32)])
        peer.close()
        (path,) = [f for f in os.listdir(relay.spill_dir) if f.startswith("result-")]
        os.truncate(os.path.join(relay.spill_dir, path), 396)
        with pytest.raises(OSError, match="holds 396 bytes, 400 were written"):
            take(message)
    if os.path.exists("/dev/full"):
        with pytest.raises(OSError):
            _write(np.arange(10), "/dev/full")


@pytest.mark.parametrize("lines", [1, 3])
def test_gathered_fit_of_one_customer_equals_the_local_fit(spark, lines):
    """The smallest input through the spill files: one customer (one line in one partition, or three lines
    in two partitions so one task sends its lines to task 0)."""
    pdf = pd.DataFrame({"user": ["c1"] * lines, "item": [f"p{j}" for j in range(lines)]})
    params = {"factors": 2, "iterations": 2, "random_state": 3}
    local = ALS.from_transactions(pdf, "user", "item", **params).fit()
    frame = spark.createDataFrame(pdf).repartition(min(lines, 2))
    remote = fit_als(frame, "user", "item", **params)
    assert remote.users == local.users and remote.items == local.items
    np.testing.assert_array_equal(remote.user_items.indices, local.user_items.indices)
    np.testing.assert_allclose(remote.user_factors, local.user_factors, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(remote.item_factors, local.item_factors, rtol=1e-4, atol=1e-6)
    items, _ = remote.recommend_items("c1", n=5)  # every item is the customer's own: nothing to recommend
    assert len(items) == 0
    items, _ = remote.recommend_items("c1", n=5, exclude_seen=False)
    assert sorted(items) == sorted(pdf["item"])
