"""The engine resource: the asset graph materialised with engine=spark writes the local engine's tables."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyspark")


def test_dagster_engine_spark_tables_equal_local(spark, tmp_path):
    """raw_transactions (read from parquet by Spark), frequent_itemsets, the ALS factors and similar_items
    materialised with engine=spark equal the local engine's."""
    import dagster as dg
    import duckdb
    import pyarrow.parquet as pq

    from rusket_assets.definitions import build_definitions
    from rusket_assets.engine import Engine
    from rusket_assets.resources import SyntheticStore, TransactionSource
    from rusket_assets.sample_data import generate_store
    from tests.pipeline.conftest import RUN_CONFIG, SMALL, failure_messages, run

    lines = tmp_path / "lines.parquet"
    pq.write_table(generate_store(SyntheticStore(**SMALL).spec()), lines)
    source = TransactionSource(location={"kind": "parquet", "path": str(lines)})

    keys = [["ingest", "raw_transactions"], ["ingest", "products"], ["baskets", "frequent_itemsets"],
            ["personalization", "als_model"], ["personalization", "user_factors"],
            ["personalization", "similar_items"], ["personalization", "bpr_model"], ["baskets", "association_rules"],
            ["personalization", "user_recommendations"], ["vectors", "item_vectors"],
            ["vectors", "user_vectors"]]  # fmt: skip
    tables = {}
    for name in ("local", "spark"):
        tmp = tmp_path / name
        defs = build_definitions(
            warehouse_path=str(tmp / "warehouse.duckdb"), lancedb_uri=str(tmp / "lancedb"),
            models_path=str(tmp / "models"), source=source, engine=Engine(engine=name),
        )  # fmt: skip
        result = run(defs, [dg.AssetKey(k) for k in keys], RUN_CONFIG)
        assert result.success, failure_messages(result)
        meta = {
            e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()
        }
        assert meta["raw_transactions"]["engine"].value == name
        assert meta["frequent_itemsets"]["engine"].value == name
        assert meta["als_model"]["engine"].value == name
        assert meta["similar_items"]["engine"].value == name
        assert meta["item_vectors"]["engine"].value == meta["user_vectors"]["engine"].value == name  # who wrote them
        with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:  # Spark's rows: parquet files and a view
            for table in ("raw_transactions", "similar_items", "user_recommendations"):
                kind = con.execute("select table_type from information_schema.tables where table_name = ?", [table])
                assert kind.fetchall() == [("VIEW" if name == "spark" else "BASE TABLE",)]
        with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
            tables[name] = (
                con.sql("select * from ingest.raw_transactions").fetchall(),
                con.sql("select list_sort(itemset), count from baskets.frequent_itemsets").fetchall(),
                con.sql("select customer_id, vector from personalization.user_factors order by 1").fetchall(),
                con.sql("select product_id, rank, similar_product_id, score from personalization.similar_items"
                        " order by 1, 2").fetchall(),
            )  # fmt: skip
        tables[name] += (_lancedb_tables(tmp / "lancedb"),)
    assert meta["frequent_itemsets"]["spark_partitions"].value >= 1
    _assert_recommendations_equal_local(tmp_path / "spark")
    local_lines, local_sets, local_factors, local_similar, local_vectors = tables["local"]
    spark_lines, spark_sets, spark_factors, spark_similar, spark_vectors = tables["spark"]
    # LanceDB: the same rows and columns; the vectors within the factor tolerance (unit length, cosine)
    assert sorted(spark_vectors) == sorted(local_vectors) == ["item_vectors", "user_vectors"]
    for name, local_table in local_vectors.items():
        got = spark_vectors[name]
        assert got.num_rows == local_table.num_rows > 0 and got.schema.names == local_table.schema.names
        assert got.drop_columns(["vector"]).equals(local_table.drop_columns(["vector"]))
        np.testing.assert_allclose(
            np.stack(got["vector"].to_numpy(zero_copy_only=False)),
            np.stack(local_table["vector"].to_numpy(zero_copy_only=False)),
            atol=5e-3,
        )
    assert len(local_lines) > 1000 and sorted(spark_lines, key=str) == sorted(local_lines, key=str)
    assert len(local_sets) > 10 and sorted(map(str, spark_sets)) == sorted(map(str, local_sets))
    assert [c for c, _ in spark_factors] == [c for c, _ in local_factors]
    np.testing.assert_allclose(
        np.array([v for _, v in spark_factors]), np.array([v for _, v in local_factors]), atol=5e-3
    )
    # similar items from (nearly) the same factors: the same products, scores within the factor tolerance
    assert len(spark_similar) == len(local_similar) > 0
    assert [r[:2] for r in spark_similar] == [r[:2] for r in local_similar]
    np.testing.assert_allclose([r[3] for r in spark_similar], [r[3] for r in local_similar], atol=1e-2)


def test_spark_table_becomes_a_parquet_view_swapped_atomically(spark, tmp_path):
    """A Spark output is parquet under the lakehouse plus a DuckDB view; a failed write keeps the old
    view; two versions stay on disk; a local write replaces the view with a table again."""
    import pyarrow as pa

    from rusket_assets.lakehouse import SparkTable, default_root, write_parquet_view
    from rusket_assets.resources import Warehouse
    from rusket_assets.tables import relation_type

    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    warehouse.replace_table("recs", "t", pa.table({"a": [1, 2]}))
    home = default_root(warehouse.path) / "recs" / "t"

    def kind() -> str:
        with warehouse.connect() as con:
            return relation_type(con, "recs", "t")

    def rows() -> list:
        return sorted(warehouse.query("select a from recs.t").column("a").to_pylist())

    first = write_parquet_view(warehouse, "recs", "t", SparkTable(spark.range(3).toDF("a")))
    assert kind() == "VIEW" and rows() == [0, 1, 2] and first.parent == home
    broken = spark.range(2).selectExpr("raise_error('boom') as a")
    with pytest.raises(Exception, match="boom"):
        write_parquet_view(warehouse, "recs", "t", SparkTable(broken))
    assert rows() == [0, 1, 2] and [p.name for p in home.iterdir()] == [first.name]
    second = write_parquet_view(warehouse, "recs", "t", SparkTable(spark.range(5, 7).toDF("a")))
    third = write_parquet_view(warehouse, "recs", "t", SparkTable(spark.range(8, 9).toDF("a")))
    assert rows() == [8] and sorted(p.name for p in home.iterdir()) == sorted([second.name, third.name])
    warehouse.replace_table("recs", "t", pa.table({"a": [4]}))
    assert kind() == "BASE TABLE" and rows() == [4]


def _lancedb_tables(uri) -> dict:
    """Every LanceDB table under ``uri`` as an arrow table sorted by ``id``."""
    import lancedb

    db = lancedb.connect(str(uri))
    return {name: db.open_table(name).to_arrow().sort_by("id") for name in db.table_names()}


def _assert_recommendations_equal_local(tmp) -> None:
    """The Spark run's user_recommendations equal the local hybrid computed from that run's own models."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rusket_assets.assets.personalization import (
        CART_COLUMNS,
        RecommendationConfig,
        last_baskets,
        published_recommender,
    )
    from rusket_assets.interactions import WarehouseTable
    from rusket_assets.io import load_model
    from rusket_assets.resources import Warehouse

    warehouse = Warehouse(path=str(tmp / "warehouse.duckdb"))
    als, bpr = (load_model(tmp / "models", f"personalization__{m}") for m in ("als_model", "bpr_model"))
    with WarehouseTable(warehouse, "ingest", "raw_transactions").relation(CART_COLUMNS) as lines:
        carts = last_baskets(lines)
    rules = warehouse.query("select * from baskets.association_rules")
    want = published_recommender(als, bpr, rules, carts, RecommendationConfig()).recommend_for_users(
        n=RecommendationConfig().n, format="arrow"
    )
    got = warehouse.query("select * from personalization.user_recommendations order by customer_id, rank")
    assert got.num_rows == want.num_rows > 0
    assert got["customer_id"].to_pylist() == want["user_id"].to_pylist()
    assert got["product_id"].to_pylist() == want["item_id"].to_pylist()
    assert got["source"].to_pylist() == want["source"].to_pylist()
    assert pc.max(pc.abs(pc.subtract(got["score"], want["score"].cast(pa.float64())))).as_py() < 1e-5
