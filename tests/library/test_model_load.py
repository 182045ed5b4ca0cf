"""Loading saved factor models: arrays mapped from the file equal ``np.load``'s, and stay private."""

from __future__ import annotations

import zipfile

import numpy as np
import pyarrow as pa
import pytest

from rusket_core import ALS, BPR
from rusket_core.factorization import base
from rusket_core.factorization.base import FactorModel, read_npz


def _lines(seed: int, string_ids: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 300, 3000), rng.integers(0, 80, 3000)
    if string_ids:
        return pa.table({"u": [f"user-{u}" for u in users], "i": [f"item-é{i}" for i in items],
                         "w": rng.integers(1, 4, 3000).astype(np.float64)})  # fmt: skip
    return pa.table({"u": users, "i": items, "w": rng.integers(1, 4, 3000).astype(np.float64)})


def _mapped(array: np.ndarray) -> bool:
    """Whether ``array``'s memory is a mapping of a file (a view of an ``mmap``)."""
    import mmap

    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None)
    return array is not None


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("cls", [ALS, BPR])
def test_mapped_arrays_equal_np_load(tmp_path, monkeypatch, cls, string_ids):
    """Every member read by read_npz (the large ones mapped: the threshold lowered so all of them are)
    has np.load's dtype, shape and values; the loaded model scores as the saved one."""
    monkeypatch.setattr(base, "MAP_BYTES", 64)
    rating = "w" if cls is ALS else None
    model = cls.from_transactions(_lines(0, string_ids), "u", "i", rating, factors=8, iterations=2).fit()
    path = model.save(tmp_path / "m.npz")
    got = read_npz(path)
    with np.load(path, allow_pickle=False) as want:
        assert sorted(got) == sorted(want.files)
        for name in want.files:
            assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape, name
            np.testing.assert_array_equal(got[name], want[name])
    # saved 64-byte aligned, so every array of the threshold's size is mapped, not read
    assert all(_mapped(got[n]) == (got[n].nbytes >= 64) for n in got)
    assert all(a.ctypes.data % base.ALIGN == 0 for a in got.values() if _mapped(a))
    loaded = FactorModel.load(path)
    assert type(loaded) is cls and loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    assert loaded.users.values.tolist() == model.users.values.tolist()
    users = model.users.values[:5]
    a, b = model.batch_recommend(users=users, n=5, format="arrow"), loaded.batch_recommend(users=users, n=5, format="arrow")
    assert a.equals(b)


def test_changes_to_a_loaded_model_stay_in_the_process(tmp_path, monkeypatch):
    """Arrays are mapped copy-on-write: a fold-in or an edit of the loaded model does not write the file."""
    monkeypatch.setattr(base, "MAP_BYTES", 64)
    model = ALS.from_transactions(_lines(1, False), "u", "i", "w", factors=8, iterations=2).fit()
    path = model.save(tmp_path / "m.npz")
    before = path.read_bytes()
    loaded = ALS.load(path)
    loaded.user_factors[:] = 7.0
    loaded.user_items.indices[:] = 0
    loaded.partial_fit(pa.table({"u": [1, 999], "i": [3, 4], "w": [2.0, 1.0]}))
    del loaded
    assert path.read_bytes() == before
    np.testing.assert_array_equal(ALS.load(path).user_factors, model.user_factors)


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_files_np_savez_wrote_load_the_same(tmp_path, monkeypatch, writer):
    """Older files (np.savez: members not aligned, read instead of mapped) and compressed ones load the same."""
    monkeypatch.setattr(base, "MAP_BYTES", 64)
    model = ALS.from_transactions(_lines(2, True), "u", "i", "w", factors=4, iterations=1).fit()
    path = model.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    other = tmp_path / "other.npz"
    writer(other, **arrays)
    with zipfile.ZipFile(other) as archive:
        stored = {i.compress_type for i in archive.infolist()}
    assert stored == ({zipfile.ZIP_STORED} if writer is np.savez else {zipfile.ZIP_DEFLATED})
    got = read_npz(other)
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and got[name].flags.aligned
        np.testing.assert_array_equal(got[name], want)
    loaded = ALS.load(other)
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.user_items.indptr, model.user_items.indptr)
    assert loaded.items.values.tolist() == model.items.values.tolist()
