"""The source read by Spark (engine=spark): the local reader's rows, counts and error messages."""

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest

from rusket_assets.resources import TransactionSource
from rusket_assets.source import STANDARD_COLUMNS, SourceError
from tests.pipeline.test_source import LINES, MAPPING, parquet_source, read

pytest.importorskip("pyspark")


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*(table[c].to_pylist() for c in STANDARD_COLUMNS), strict=True), key=str)


def _spark_read(spark, source):
    from rusket_assets.spark_source import spark_transactions

    frame, counts = spark_transactions(spark, source)
    return frame.toArrow(), counts


@pytest.mark.parametrize(
    "returns, location",
    [("net", {}), ("drop", {}), ("net", {"where": "product <> 'y'", "date_from": "1970-01-01 00:00:02", "min_quantity": -2})],
)
def test_spark_source_rows_and_counts_equal_local(spark, tmp_path, returns, location):
    source = parquet_source(tmp_path, returns=returns, **location)
    local, local_counts = read(tmp_path, source)
    remote, remote_counts = _spark_read(spark, source)
    assert remote.column_names == local.column_names
    assert remote_counts == local_counts and local_counts["return_lines"] > 0
    assert _rows(remote) == _rows(local) and local.num_rows > 0


def _messages(spark, tmp_path, source) -> tuple[str, str]:
    with pytest.raises(SourceError) as local:
        read(tmp_path, source)
    with pytest.raises(SourceError) as remote:
        _spark_read(spark, source)
    return str(local.value), str(remote.value)


def test_spark_source_fails_with_the_local_messages(spark, tmp_path):
    local, remote = _messages(spark, tmp_path, parquet_source(tmp_path, returns="fail"))
    assert remote == local and "column 'qty' (quantity) has 2 negative values in 6 rows" in local
    nulls = LINES.set_column(1, "customer", pa.array([1, None, 1, None, 2, None], pa.int64()))
    local, remote = _messages(spark, tmp_path, parquet_source(tmp_path, nulls, returns="drop"))
    assert remote == local and "column 'customer' (customer_id) has 3 null values in 6 rows" in local
    local, remote = _messages(spark, tmp_path, parquet_source(tmp_path, where="customer > 5"))
    assert remote == local and "has no rows matching" in local
    missing = TransactionSource(location={"kind": "parquet", "path": str(tmp_path / "lines.parquet")},
                                columns={**MAPPING, "quantity_col": "units"})  # fmt: skip
    local, remote = _messages(spark, tmp_path, missing)
    assert remote == local and "source column 'units' (mapped to quantity) not found" in local
    text = LINES.drop_columns(["at"]).set_column(3, "qty", pa.array(["2", "1", "three", "-4", "1", "-1"]))
    pcsv.write_csv(text, tmp_path / "lines.csv")
    csv = TransactionSource(location={"kind": "csv", "path": str(tmp_path / "lines.csv")},
                            columns={**MAPPING, "timestamp_col": ""})  # fmt: skip
    local, remote = _messages(spark, tmp_path, csv)
    assert remote == local and "column 'qty' (quantity) has 1 values in 6 rows that are not a number (e.g. 'three')" in local


def test_catalog_source_needs_the_spark_engine(spark, tmp_path):
    spark.createDataFrame(LINES.drop_columns(["at"])).createOrReplaceTempView("catalog_lines")
    source = TransactionSource(location={"kind": "catalog", "table": "catalog_lines"},
                               columns={**MAPPING, "timestamp_col": ""}, returns="drop")  # fmt: skip
    remote, counts = _spark_read(spark, source)
    assert counts == {"return_lines": 2, "return_lines_dropped": 2} and remote.num_rows == 4
    with pytest.raises(SourceError, match="'catalog' .* needs the Spark engine"):
        read(tmp_path, source)
