"""The source reader: filters that cannot reach other tables, returns policies, errors naming the cause."""

import argparse

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rusket_assets.definitions import build_definitions
from rusket_assets.main import source_config
from rusket_assets.resources import TransactionSource, Warehouse
from rusket_assets.source import SourceError, filter_statement, read_transactions

UNMAPPED = {"category_col": "", "product_name_col": "", "price_col": ""}
# Customer 1 buys x twice (2 then 3 units) and y once, then returns 4 x; customer 2 buys x and
# returns a z it never bought (not in the data window).
LINES = pa.table(
    {
        "basket": ["o1", "o1", "o2", "C3", "o4", "C5"],
        "customer": [1, 1, 1, 1, 2, 2],
        "product": ["x", "y", "x", "x", "x", "z"],
        "qty": [2, 1, 3, -4, 1, -1],
        "rev": [2.0, 10.0, 6.0, -8.0, 1.0, -5.0],
        "at": pa.array([1, 1, 2, 3, 4, 5], pa.timestamp("s")),
    }
)
MAPPING = {"basket_col": "basket", "customer_col": "customer", "product_col": "product",
           "quantity_col": "qty", "revenue_col": "rev", "timestamp_col": "at", **UNMAPPED}  # fmt: skip
INJECTIONS = [
    "1=1); drop table baskets.association_rules; select 1 from (select 1",
    "1=1; drop table baskets.association_rules",
    "customer_id in (select customer_id from baskets.association_rules)",
    "exists (select 1 from baskets.association_rules)",
    "1=1 union all select * from baskets.association_rules",
    "1=1 order by 1",
    "1=1 limit 1",
]


def parquet_source(tmp_path, table=LINES, returns="net", **location) -> TransactionSource:
    path = tmp_path / "lines.parquet"
    pq.write_table(table, path)
    return TransactionSource(location={"kind": "parquet", "path": str(path), **location}, columns=MAPPING, returns=returns)


def read(tmp_path, source):
    return read_transactions(source, Warehouse(path=str(tmp_path / "warehouse.duckdb")))


def test_returns_policies_give_the_documented_rows(tmp_path):
    with pytest.raises(SourceError, match=r"column 'qty' \(quantity\) has 2 negative values in 6 rows.*source.returns"):
        read(tmp_path, parquet_source(tmp_path, returns="fail"))

    dropped, counts = read(tmp_path, parquet_source(tmp_path, returns="drop"))
    assert counts == {"return_lines": 2, "return_lines_dropped": 2}
    assert sorted(dropped["basket_id"].to_pylist()) == ["o1", "o1", "o2", "o4"]

    netted, counts = read(tmp_path, parquet_source(tmp_path, returns="net"))
    # the 4 returned x of customer 1 take the latest purchase (o2, 3 units) and 1 of o1's 2 units;
    # customer 2's returned z has no purchase to net against
    assert counts == {"return_lines": 2, "purchase_lines_reduced": 1, "purchase_lines_removed": 1,
                      "returned_units_without_purchase": 1}  # fmt: skip
    rows = sorted(zip(*(netted[c].to_pylist() for c in ("basket_id", "customer_id", "product_id", "quantity", "revenue")), strict=True))
    assert rows == [("o1", 1, "x", 1, 1.0), ("o1", 1, "y", 1, 10.0), ("o4", 2, "x", 1, 1.0)]
    assert TransactionSource().returns == "net"
    # fields live in their part of the config: a flat or misspelt one is refused, never ignored
    with pytest.raises(ValueError, match="kind"):
        TransactionSource(kind="parquet")
    with pytest.raises(ValueError, match="basket"):
        TransactionSource(columns={"basket": "invoice"})


def test_no_returns_keeps_every_line_in_order(tmp_path):
    purchases = LINES.filter(pa.compute.greater(LINES["qty"], 0))
    table, counts = read(tmp_path, parquet_source(tmp_path, purchases))
    assert counts == {"return_lines": 0}
    assert table["basket_id"].to_pylist() == purchases["basket"].to_pylist()


def test_structured_filters(tmp_path):
    source = parquet_source(tmp_path, returns="drop", date_from="1970-01-01 00:00:02", date_to="1970-01-01 00:00:05", min_quantity=2)
    table, _ = read(tmp_path, source)
    assert table["basket_id"].to_pylist() == ["o2"]
    with pytest.raises(SourceError, match="source.location.date_from must be an ISO date"):
        read(tmp_path, parquet_source(tmp_path, date_from="last week"))
    with pytest.raises(SourceError, match=r"has no rows matching source.location.where \(--where\) 'qty > 100'"):
        read(tmp_path, parquet_source(tmp_path, where="qty > 100"))


@pytest.mark.parametrize("where", INJECTIONS)
def test_filter_must_be_one_expression(where):
    with pytest.raises(SourceError, match=r"source.location.where \(--where\)"):
        filter_statement(where)


def test_filter_keeps_ordinary_expressions():
    assert filter_statement("Quantity > 0 and Country = 'UK' -- comment").startswith("SELECT * FROM src WHERE")
    args = argparse.Namespace(source_kind=None, source_path=None, source_table=None, where=INJECTIONS[0], map=[],
                              date_from=None, date_to=None, min_quantity=None, returns=None)  # fmt: skip
    with pytest.raises(SystemExit, match=r"^error: source.location.where \(--where\) is not a valid SQL expression"):
        source_config(args)


def test_crafted_where_on_the_warehouse_fails_ingest_and_leaves_every_table(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("create schema ingest; create schema baskets")
        con.register("lines", LINES)
        con.execute("create table ingest.source_lines as select * from lines where qty > 0")
        con.execute("create table baskets.association_rules as select 42 as answer")
    before = duckdb.connect(str(warehouse), read_only=True)
    tables = before.sql("select table_schema, table_name from information_schema.tables order by all").fetchall()
    before.close()
    defs = build_definitions(
        warehouse_path=str(warehouse), lancedb_uri=str(tmp_path / "lancedb"), models_path=str(tmp_path / "models"),
        source=TransactionSource(location={"kind": "duckdb", "table": "ingest.source_lines"}, columns=MAPPING),
    )
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(["ingest", "raw_transactions"])})
    def config(where):  # run config replaces the whole source config
        location = {"kind": "duckdb", "table": "ingest.source_lines", "where": where}
        return {"resources": {"source": {"config": {"location": location, "columns": MAPPING}}}}

    for where in INJECTIONS[:3] + ["no_such_column > 1"]:
        result = job.execute_in_process(run_config=config(where), instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        assert "source.location.where (--where)" in failure.step_failure_data.error.cause.message
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select table_schema, table_name from information_schema.tables order by all").fetchall() == tables
        assert con.sql("select * from baskets.association_rules").fetchall() == [(42,)]
    ok = job.execute_in_process(run_config=config("basket <> 'o4'"), instance=dg.DagsterInstance.ephemeral())
    assert ok.success
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.sql("select count(*) from ingest.raw_transactions").fetchall() == [(3,)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty (0 bytes)"),
        ("basket,customer,product,qty\n", "has no rows"),
        ("basket,customer,product,qty\no1,1,x,2\no2,1,y,two\n", "column 'qty' (quantity) has 1 values in 2 rows that are not a number (e.g. 'two')"),
    ],
)
def test_csv_errors_name_the_file_or_column(tmp_path, content, message):
    path = tmp_path / "lines.csv"
    path.write_text(content)
    columns = {"basket_col": "basket", "customer_col": "customer", "product_col": "product", "quantity_col": "qty",
               "revenue_col": "", "timestamp_col": "", **UNMAPPED}  # fmt: skip
    source = TransactionSource(location={"kind": "csv", "path": str(path)}, columns=columns)
    with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read(tmp_path, source)
    with pytest.raises(SourceError, match=r"source.location.path \(--source-path\): no csv file"):
        read(tmp_path, TransactionSource(location={"kind": "csv", "path": str(tmp_path / "nothing*.csv")}, columns=columns))


@pytest.mark.parametrize("policy", ["drop", "net"])
def test_streamed_lines_equal_the_whole_read_in_small_batches(tmp_path, policy):
    from rusket_assets.source import stream_transactions

    source = parquet_source(tmp_path, returns=policy)
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    whole, counts = read_transactions(source, warehouse)
    reader, streamed_counts = stream_transactions(source, warehouse, batch_rows=2)
    batches = list(reader)
    assert streamed_counts == counts
    assert len(batches) == -(-whole.num_rows // 2) >= 2
    assert pa.Table.from_batches(batches, reader.schema).equals(whole)


def test_streaming_fails_before_any_line_is_read(tmp_path):
    from rusket_assets.source import stream_transactions

    nulls = LINES.set_column(1, "customer", pa.array([1, None, 1, 1, None, 2]))
    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(SourceError, match=r"column 'customer' \(customer_id\) has 2 null values in 6 rows"):
        stream_transactions(parquet_source(tmp_path, nulls, returns="drop"), warehouse)
    with pytest.raises(SourceError, match=r"column 'qty' \(quantity\) has 2 negative values in 6 rows"):
        stream_transactions(parquet_source(tmp_path, returns="fail"), warehouse)


def test_a_warehouse_table_streams_into_the_same_warehouse_and_a_failure_keeps_the_old_table(tmp_path):
    """Source table inside the warehouse file: read in batches over the warehouse's own connection while
    the lines are written into it (batch boundaries inside customer 1's rows), equal to the whole read."""
    from rusket_assets.source import stream_transactions
    from rusket_assets.streaming import TableStream, replace_table_stream

    warehouse = Warehouse(path=str(tmp_path / "warehouse.duckdb"))
    with warehouse.connect() as con:
        con.execute("create schema ingest")
        con.register("lines", LINES)
        con.execute("create table ingest.source_lines as select * from lines")
        con.execute("create table ingest.raw_transactions as select 'old' as basket_id")
    source = TransactionSource(location={"kind": "duckdb", "table": "ingest.source_lines"}, columns=MAPPING, returns="drop")
    whole, counts = read_transactions(source, warehouse)  # the unchunked read (nothing else open)
    assert whole.num_rows == 4 and read_transactions(parquet_source(tmp_path, returns="drop"), warehouse)[0].equals(whole)

    def failing(reader):
        yield next(reader)
        raise RuntimeError("disk full")

    reader, _ = stream_transactions(source, warehouse, batch_rows=2)
    with warehouse.connect() as con, pytest.raises(RuntimeError, match="disk full"):
        replace_table_stream(con, "ingest", "raw_transactions", TableStream(failing(iter(reader)), reader.schema))
    reader.close()
    with warehouse.connect() as con:
        assert con.sql("select * from ingest.raw_transactions").fetchall() == [("old",)]
        assert con.sql("select count(*) from duckdb_tables() where table_name like '%staging%'").fetchall() == [(0,)]

    reader, streamed_counts = stream_transactions(source, warehouse, batch_rows=2)
    assert streamed_counts == counts
    sizes = []

    def counted(batches):
        for batch in batches:
            sizes.append(batch.num_rows)
            yield batch

    with warehouse.connect() as con:  # the reader holds its own connection to the same file meanwhile
        assert replace_table_stream(con, "ingest", "raw_transactions", TableStream(counted(reader), reader.schema)) == 4
    assert sizes == [2, 2]
    with warehouse.connect() as con:
        stored = con.sql("select * from ingest.raw_transactions").to_arrow_table()
    assert stored.equals(whole)
