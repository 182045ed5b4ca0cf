"""Chunked outputs: streamed table writes swap in atomically, and chunked batch calls equal unchunked ones."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rusket_assets.streaming import TableStream, replace_table_stream
from rusket_core import ALS
from rusket_core.analytics import score_potential
from rusket_core.chunks import (
    chunk_bounds,
    iter_batch_recommend,
    iter_batch_similar_items,
    iter_score_potential,
)
from rusket_core.encoding import Labels
from rusket_core.export import factor_batches, lancedb_table, write_lancedb

RECS = pa.table(
    {
        "customer_id": pa.array([1, 1, 1, 2, 2, 3], pa.int64()),
        "product_id": ["a", "b", "c", "a", "d", "b"],
        "score": pa.array([0.9, 0.5, 0.1, 0.7, 0.2, 0.4], pa.float32()),
    }
)


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Same ids in the same order; scores equal up to float32 rounding (BLAS blocks differ by chunk)."""
    assert got.schema == want.schema
    for name in want.column_names:
        if name == "score":
            np.testing.assert_allclose(got[name].to_numpy(), want[name].to_numpy(), rtol=1e-5, atol=1e-6)
        else:
            assert got[name].to_pylist() == want[name].to_pylist()


def stored(con, name="recs.top") -> pa.Table:
    return con.sql(f"select * from {name}").to_arrow_table()


def slices(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    bounds = [0, *cuts, table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize(
    "cuts",
    [
        [3],  # two chunks split between customers
        [2],  # the boundary falls inside customer 1's rows
        [0, 2, 2, 6],  # empty chunks first, in the middle and last
    ],
)
def test_streamed_write_equals_the_whole_table(cuts):
    con = duckdb.connect()
    rows = replace_table_stream(con, "recs", "top", TableStream(iter(slices(RECS, cuts))))
    assert rows == RECS.num_rows
    assert stored(con).equals(RECS)
    assert [r[0] for r in con.sql("select table_name from duckdb_tables()").fetchall()] == ["top"]


def test_record_batches_reader_and_empty_stream():
    con = duckdb.connect()
    reader = pa.RecordBatchReader.from_batches(RECS.schema, RECS.to_batches(max_chunksize=4))
    replace_table_stream(con, "recs", "top", reader)
    assert stored(con).equals(RECS)
    replace_table_stream(con, "recs", "top", TableStream(iter([]), schema=RECS.schema))
    assert stored(con).num_rows == 0 and stored(con).schema == RECS.schema
    with pytest.raises(ValueError, match="no chunks .* no schema"):
        replace_table_stream(con, "recs", "top", TableStream(iter([])))


def test_failure_mid_stream_keeps_the_old_table():
    con = duckdb.connect()
    replace_table_stream(con, "recs", "top", TableStream([RECS]))

    def failing():
        yield RECS.slice(0, 2)
        yield RECS.slice(2, 2)
        raise RuntimeError("scoring failed in chunk 3")

    with pytest.raises(RuntimeError, match="chunk 3"):
        replace_table_stream(con, "recs", "top", TableStream(failing()))
    assert stored(con).equals(RECS)
    assert con.sql("select count(*) from duckdb_tables() where table_name like '%staging%'").fetchall() == [(0,)]
    with pytest.raises(ValueError, match="differ from the first chunk"):
        replace_table_stream(con, "recs", "top", TableStream([RECS, RECS.select(["score"])]))
    assert stored(con).equals(RECS)


def test_chunks_are_cast_to_the_first_schema():
    con = duckdb.connect()
    second = RECS.slice(3).cast(pa.schema([("customer_id", pa.int32()), ("product_id", pa.string()), ("score", pa.float64())]))
    replace_table_stream(con, "recs", "top", TableStream([RECS.slice(0, 3), second]))
    assert stored(con).equals(RECS)


def test_chunk_bounds():
    assert list(chunk_bounds(5, 2)) == [(0, 2), (2, 4), (4, 5)]
    assert list(chunk_bounds(0, 3)) == []
    with pytest.raises(ValueError, match="chunk_size"):
        list(chunk_bounds(5, 0))


@pytest.fixture(scope="module")
def als():
    rng = np.random.default_rng(5)
    n = 3000
    lines = pa.table(
        {
            "customer": rng.integers(0, 230, n),
            "product": pa.array([f"P{i:03d}" for i in rng.integers(0, 90, n)]),
        }
    )
    return ALS.from_transactions(lines, "customer", "product", factors=8, iterations=3, random_state=1).fit()


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 10_000])
def test_chunked_batch_calls_equal_the_whole_call(als, chunk_size):
    whole = als.batch_recommend(n=5, format="arrow")
    assert_same_rows(pa.concat_tables(iter_batch_recommend(als, n=5, chunk_size=chunk_size)), whole)
    sims = als.batch_similar_items(n=4, format="arrow")
    assert_same_rows(pa.concat_tables(iter_batch_similar_items(als, n=4, chunk_size=chunk_size)), sims)


@pytest.mark.parametrize("chunk_size", [1, 64, 10_000])
def test_chunked_potential_equals_the_whole_call_by_customer(als, chunk_size):
    items = als.items.values
    mapping = pa.table({"product": items, "category": [f"c{int(p[1:]) % 6}" for p in items]})
    whole = score_potential(None, als, mapping, n=3, format="arrow")
    whole = whole.sort_by([(whole.column_names[0], "ascending"), ("score", "descending")])
    chunked = pa.concat_tables(iter_score_potential(als, mapping, n=3, chunk_size=chunk_size))
    assert_same_rows(chunked, whole)
    # every customer keeps at most 3 targets and never one whose category was bought
    assert pc.max(pc.value_counts(chunked.column(0)).field("counts")).as_py() <= 3


def test_lancedb_written_in_batches_equals_the_whole_export(tmp_path):
    pytest.importorskip("lancedb")
    rng = np.random.default_rng(2)
    model = ALS(factors=16)
    model.users = Labels(np.array([f"c{i:04d}" for i in range(700)], dtype=object))
    model.items = Labels(np.arange(5) * 3)
    model.user_factors = rng.normal(size=(700, 16)).astype(np.float32)
    model.item_factors = rng.normal(size=(5, 16)).astype(np.float32)
    for normalize in (False, True):
        whole = lancedb_table(model, kind="user", normalize=normalize)
        reader = factor_batches(model, kind="user", normalize=normalize, chunk_rows=300)
        batches = list(reader)
        assert [b.num_rows for b in batches] == [300, 300, 100]
        assert pa.Table.from_batches(batches).equals(whole)
    tbl, facts = write_lancedb(model, str(tmp_path), "users", kind="user", index_min_rows=256, chunk_rows=300)
    assert tbl.to_arrow().sort_by("id").equals(lancedb_table(model, kind="user"))
    # 700 rows: sqrt(700) = 26 partitions would hold < 256 rows each, so 700 // 256 = 2
    assert facts["index_partitions"] == 2 and facts["index_sub_vectors"] == 2 and facts["index_seconds"] > 0
    _, none = write_lancedb(model, str(tmp_path), "items", kind="item")
    assert none == {}


def test_io_manager_streams_outputs_and_hands_out_table_references(tmp_path):
    import dagster as dg
    from dagster._core.types.dagster_type import resolve_dagster_type

    from rusket_assets.interactions import WarehouseTable
    from rusket_assets.io import DuckDBTableIOManager
    from rusket_assets.resources import Warehouse

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    manager = DuckDBTableIOManager(warehouse=warehouse)
    key = dg.AssetKey(["recs", "top"])
    seen = []

    def chunks():
        for chunk in slices(RECS, [2, 2]):
            seen.append(chunk.num_rows)
            yield chunk

    context = dg.build_output_context(asset_key=key)
    manager.handle_output(context, TableStream(chunks(), metadata=lambda: {"chunk_rows": str(seen)}))
    assert warehouse.query("select * from recs.top").equals(RECS)
    logged = context.get_logged_metadata()
    assert logged["chunk_rows"].value == "[2, 0, 4]" and logged["dagster/row_count"].value == 6
    ref = manager.load_input(dg.build_input_context(asset_key=key, dagster_type=resolve_dagster_type(WarehouseTable)))
    assert isinstance(ref, WarehouseTable) and (ref.schema, ref.table) == ("recs", "top")
    with ref.relation(["customer_id", "score"], where="score > 0.3") as rel:
        assert rel.columns == ["customer_id", "score"]
        assert rel.to_arrow_table().num_rows == 4
    assert ref.scalar("count(distinct customer_id)") == 3
