"""LanceDB export: table contents, nearest neighbours equal similar_items, atomic replace, ANN index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rusket_core.encoding import Encoded, Labels
from rusket_core.export import lancedb_table, search_labels, to_lancedb, upsert_lancedb
from rusket_core.factorization import ALS

pytest.importorskip("lancedb")


def _model(n_users: int, n_items: int, k: int, seed: int = 0) -> ALS:
    """A 'fitted' model with random factors (string item ids, int user ids)."""
    rng = np.random.default_rng(seed)
    model = ALS(factors=k)
    model.users = Labels(np.arange(n_users) * 7)
    model.items = Labels(np.array([f"sku{j:04d}" for j in range(n_items)], dtype=object))
    model.user_factors = rng.normal(size=(n_users, k)).astype(np.float32)
    model.item_factors = rng.normal(size=(n_items, k)).astype(np.float32)
    model.user_items = Encoded(np.zeros(n_users + 1, np.int64), np.zeros(0, np.int32), None, model.users, model.items)
    return model


def test_lancedb_table_columns():
    model = _model(5, 9, 4)
    items = lancedb_table(model)
    assert items.column_names == ["id", "label", "vector"]
    assert items.schema.field("vector").type == pa.list_(pa.float32(), 4)
    assert items["label"].to_pylist() == model.items.values.tolist()
    users = lancedb_table(model, kind="user")
    assert users["label"].to_pylist() == [0, 7, 14, 21, 28] and pa.types.is_integer(users["label"].type)
    with pytest.raises(ValueError, match="kind"):
        lancedb_table(model, kind="basket")


def test_flat_search_returns_similar_items(tmp_path):
    model = _model(10, 80, 8)
    tbl = to_lancedb(model, str(tmp_path / "lance"), "item_vectors", kind="item")
    assert tbl.count_rows() == 80 and tbl.list_indices() == []
    for j in (0, 17, 42, 79):
        label = model.items.values[j]
        expected, _ = model.similar_items(label, n=5)
        found = search_labels(tbl, model.item_factors[j], n=6)
        assert found[0] == label  # the item itself, at cosine distance 0
        assert found[1:].tolist() == expected.tolist()


def test_replace_is_one_new_version(tmp_path):
    import lancedb

    uri = str(tmp_path / "lance")
    first = to_lancedb(_model(10, 30, 8, seed=1), uri, "vectors", kind="user")
    reader = lancedb.connect(uri).open_table("vectors")
    second = to_lancedb(_model(4, 12, 3, seed=2), uri, "vectors", kind="item")
    assert second.version == first.version + 1
    assert reader.count_rows() == 10  # a reader on the old version keeps the complete old rows
    fresh = lancedb.connect(uri).open_table("vectors")
    assert fresh.count_rows() == 12
    assert fresh.schema.field("vector").type == pa.list_(pa.float32(), 3)
    assert fresh.to_arrow()["label"].to_pylist()[:2] == ["sku0000", "sku0001"]


def _disk_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.filterwarnings("ignore:optimize.cleanup_older_than=0. removes every version")
def test_old_versions_are_pruned_after_their_retention(tmp_path):
    from datetime import timedelta

    import lancedb

    uri = tmp_path / "lance"
    for seed in range(4):  # a refresh schedule: the same table replaced again and again
        kept = to_lancedb(_model(10, 500, 16, seed=seed), str(uri), "vectors", keep_versions=None)
    assert len(kept.list_versions()) == 4
    size_all = _disk_bytes(uri)
    tbl = to_lancedb(_model(10, 500, 16, seed=9), str(uri), "vectors", keep_versions=timedelta(0))
    assert [v["version"] for v in tbl.list_versions()] == [tbl.version]
    assert _disk_bytes(uri) < size_all / 2  # four dead copies of the vectors are gone
    fresh = lancedb.connect(str(uri)).open_table("vectors")
    assert fresh.count_rows() == 500
    np.testing.assert_array_equal(
        np.stack(fresh.to_arrow()["vector"].to_numpy(zero_copy_only=False)), _model(10, 500, 16, seed=9).item_factors
    )


def test_index_built_when_large_enough(tmp_path):
    model = _model(10, 600, 16)
    uri = str(tmp_path / "lance")
    flat = to_lancedb(model, uri, "small", index_min_rows=601)
    assert flat.list_indices() == []
    tbl = to_lancedb(model, uri, "big", index_min_rows=500)
    (index,) = tbl.list_indices()
    assert index.index_type == "IvfPq" and index.columns == ["vector"]
    for j in (3, 300):
        expected, _ = model.similar_items(model.items.values[j], n=5)
        # probe every partition and re-rank PQ candidates exactly: the ANN answer equals the exact one
        found = search_labels(tbl, model.item_factors[j], n=6, nprobes=1000, refine_factor=50)
        assert found[1:].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="metric"):
        to_lancedb(model, uri, "big", metric="hamming")


def _vectors(tbl) -> dict[int, tuple]:
    rows = tbl.to_arrow().sort_by("id")
    return {i: (label, tuple(v)) for i, label, v in zip(*(rows[c].to_pylist() for c in ("id", "label", "vector")), strict=True)}


def test_upsert_updates_given_rows_and_appends_new_ones(tmp_path):
    """Changed rows equal the new factors, untouched rows are as written, appended labels are inserted
    (and an index is built once the table crosses the threshold); a gap in the appended rows refuses."""
    import lancedb

    model = _model(300, 5, 16)
    to_lancedb(model, str(tmp_path), "users", kind="user", index_min_rows=10_000)
    before = _vectors(lancedb.connect(str(tmp_path)).open_table("users"))
    rng = np.random.default_rng(1)
    model.user_factors[[3, 50]] = rng.normal(size=(2, 16)).astype(np.float32)  # fold-in of two customers
    model.users = Labels(np.concatenate([model.users.values, np.arange(300, 320) * 7]))  # 20 new customers
    model.user_factors = np.vstack([model.user_factors, rng.normal(size=(20, 16)).astype(np.float32)])
    with pytest.raises(ValueError, match="must all be upserted"):
        upsert_lancedb(model, str(tmp_path), "users", np.array([3, 50, 300]), index_min_rows=310)
    rows = np.array([50, 3, *range(300, 320)])
    tbl, facts = upsert_lancedb(model, str(tmp_path), "users", rows, index_min_rows=310)
    assert facts == {"rows_upserted": 22, "rows_inserted": 20, "index": "built"}
    assert tbl.count_rows() == 320 and tbl.list_indices()
    after = _vectors(tbl)
    assert {i: after[i] for i in before if i not in (3, 50)} == {i: v for i, v in before.items() if i not in (3, 50)}
    for i in rows:
        assert after[i][0] == model.users.values[i]
        np.testing.assert_array_equal(np.array(after[i][1], np.float32), model.user_factors[i])
    # searching finds an upserted customer's own vector (index + unindexed rows)
    assert search_labels(tbl, model.user_factors[305], 1, nprobes=20, refine_factor=10)[0] == 305 * 7


def test_upsert_refuses_a_table_of_another_model_version(tmp_path):
    """The version written with the rows is recorded; an upsert expecting another version refuses
    (nothing written) and a matching one records the new version; extra columns go in with the rows."""
    import lancedb

    from rusket_core.export import table_version, write_lancedb

    model = _model(20, 5, 4)
    extra = pa.table({"name": [f"n{i}" for i in range(20)]})
    tbl, _ = write_lancedb(model, str(tmp_path), "users", kind="user", version="v1")
    assert table_version(tbl) == "v1"
    before = _vectors(tbl)
    model.user_factors[2] += 1.0
    with pytest.raises(ValueError, match="'v1', not 'v0'"):
        upsert_lancedb(model, str(tmp_path), "users", np.array([2]), expected_version="v0", version="v2")
    reopened = lancedb.connect(str(tmp_path)).open_table("users")
    assert table_version(reopened) == "v1" and _vectors(reopened) == before
    lancedb.connect(str(tmp_path)).open_table("users").add_columns({"name": "cast(null as string)"})
    tbl, facts = upsert_lancedb(model, str(tmp_path), "users", np.array([2]), expected_version="v1", version="v2", extra=extra)
    assert facts["rows_upserted"] == 1 and table_version(tbl) == "v2"
    rows = tbl.to_arrow().sort_by("id")
    assert rows["name"].to_pylist() == [None, None, "n2", *[None] * 17]
    np.testing.assert_array_equal(np.array(rows["vector"][2].as_py(), np.float32), model.user_factors[2])
    assert table_version(write_lancedb(model, str(tmp_path), "users", kind="user")[0]) is None  # a rewrite without one


class _WithExtraColumn:
    """An export wrapper (like the pipeline's product-info one): no factor arrays, only an export."""

    def __init__(self, model: ALS) -> None:
        self.model = model

    def export_item_factors(self, **kwargs) -> pa.Table:
        table = self.model.export_item_factors(**{**kwargs, "format": "arrow"})
        return table.append_column("category", pa.array(["c"] * table.num_rows))


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_nan_vector_is_refused_with_its_row_and_label_and_the_table_is_kept(tmp_path, wrapped):
    uri = str(tmp_path / "lance")
    good = _model(4, 12, 3, seed=3)
    kept = to_lancedb(good, uri, "vectors", kind="item")
    bad = _model(4, 12, 3, seed=4)
    bad.item_factors[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 7 \(label 'sku0007'\) is not finite"):
        to_lancedb(_WithExtraColumn(bad) if wrapped else bad, uri, "vectors", kind="item")
    import lancedb

    table = lancedb.connect(uri).open_table("vectors")
    assert table.version == kept.version and table.count_rows() == 12
