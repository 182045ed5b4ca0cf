"""A full disk fails a write with "No space left on device" and leaves the previous data current."""

import errno
import subprocess

import duckdb
import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from rusket_assets.io import load_model, save_model
from rusket_assets.tables import replace_table
from rusket_core import ALS


def small_model() -> ALS:
    rng = np.random.default_rng(0)
    matrix = sp.csr_matrix((rng.random((20, 15)) < 0.3).astype(np.float32))
    return ALS(factors=4, iterations=2).fit(matrix)


def test_model_save_on_full_disk_leaves_no_version(tmp_path, monkeypatch):
    model = small_model()
    save_model(model, tmp_path, "als")
    before = sorted(p.name for p in tmp_path.iterdir())

    def full_disk(self, path):
        open(f"{path}.npz", "wb").close()  # the 0-byte file a full disk leaves
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ALS, "save", full_disk)
    with pytest.raises(OSError, match="saving model als .* No space left on device") as failure:
        save_model(model, tmp_path, "als")
    assert failure.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    monkeypatch.undo()
    assert np.allclose(load_model(tmp_path, "als").item_factors, model.item_factors)


class FailingCommit:
    """A DuckDB connection whose COMMIT fails like a full disk and whose rollback then finds no transaction."""

    def __init__(self, con):
        self._con = con

    def __getattr__(self, name):
        return getattr(self._con, name)

    def commit(self):
        raise duckdb.IOException('IO Error: Could not write file "warehouse.duckdb": No space left on device')

    def rollback(self):
        raise duckdb.TransactionException("TransactionContext Error: cannot rollback - no transaction is active")


def test_failed_commit_reports_the_cause_not_the_rollback(tmp_path):
    path = str(tmp_path / "w.duckdb")
    with duckdb.connect(path) as con:
        replace_table(con, "s", "t", pa.table({"x": [1, 2, 3]}))
        with pytest.raises(duckdb.IOException, match="No space left on device"):
            replace_table(FailingCommit(con), "s", "t", pa.table({"x": [4]}))
    with duckdb.connect(path) as con:
        assert con.sql("select x from s.t order by x").fetchall() == [(1,), (2,), (3,)]


def test_replace_table_on_a_full_tmpfs(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with duckdb.connect(str(mount / "w.duckdb")) as con:
            replace_table(con, "s", "t", pa.table({"x": np.arange(10)}))
            with pytest.raises(duckdb.IOException, match="No space left on device"):
                replace_table(con, "s", "t", pa.table({"x": np.random.default_rng(0).random(2_000_000)}))
            assert con.sql("select count(*), sum(x) from s.t").fetchall() == [(10, 45)]
    finally:
        subprocess.run(["umount", str(mount)], check=False)
