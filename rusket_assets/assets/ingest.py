"""Ingest group: order lines from the configured source, and the product catalogue."""


from typing import Any

import dagster as dg
import pyarrow as pa

from rusket_assets.assets.common import group_asset, key
from rusket_assets.engine import Engine
from rusket_assets.io import table_location
from rusket_assets.resources import TransactionSource, Warehouse
from rusket_assets.source import query_transactions, reads_warehouse, stream_transactions
from rusket_assets.streaming import TableStream
from rusket_assets.tables import quote

GROUP = "ingest"
asset = group_asset(GROUP)


@asset(kinds={"duckdb"})
def raw_transactions(
    context: dg.AssetExecutionContext, source: TransactionSource, warehouse: Warehouse, engine: Engine
) -> Any:  # TableStream | SparkTable
    """Order lines in the standard columns (basket_id, customer_id, product_id, quantity, revenue, ...).

    Ids keep the source's types. Missing mapped columns, null ids and text in numeric columns fail
    here, naming the column and the number of rows, and nothing downstream is written; return lines
    follow `source.returns` (the counts it touched are in the metadata). Checked and counted in
    DuckDB, then streamed batch by batch into the warehouse: the lines are never all in Python
    (a source table inside the warehouse file is written by queries that never leave DuckDB, and
    only the days whose lines changed are replaced unless returns were netted: metadata `write`).
    With engine=spark a parquet, CSV or catalog source is read, checked (same messages) and netted by
    Spark and written as parquet under the lakehouse, a DuckDB view over it (rusket_assets.spark_source).
    """
    from rusket_assets.spark_source import SPARK_KINDS

    on_spark = engine.is_spark and source.location.kind.lower() in SPARK_KINDS
    if on_spark:
        from rusket_assets.lakehouse import SparkTable
        from rusket_assets.spark_source import spark_transactions

        frame, returns = spark_transactions(engine.session(), source)
    elif reads_warehouse(source, warehouse):
        in_warehouse, returns = query_transactions(source, warehouse)
    else:
        reader, returns = stream_transactions(source, warehouse)

    schema, table = table_location(context.asset_key)

    def metadata() -> dict:  # called once the stream is stored: counted in SQL over the new table
        n_lines, baskets, customers, products = warehouse.query(
            "select count(*), count(distinct basket_id), count(distinct customer_id), count(distinct product_id) "
            f"from {quote(schema)}.{quote(table)}"
        ).to_pylist()[0].values()
        where = source.location
        context.log.info(f"read {n_lines} order lines from {where.kind} source; returns ({source.returns}): {returns}")
        return {
            "source": where.kind if where.kind == "synthetic" else f"{where.kind}: {where.path or where.table}",
            "baskets": baskets,
            "customers": customers,
            "products": products,
            "returns_policy": source.returns,
            **returns,
            **engine.metadata(),
        }

    if on_spark:
        return SparkTable(frame, engine.lakehouse_path, metadata)
    if reads_warehouse(source, warehouse):
        in_warehouse.metadata = metadata
        return in_warehouse
    return TableStream(reader, reader.schema, metadata=metadata)


@asset(
    kinds={"duckdb"},
    deps=[key(GROUP, "raw_transactions")],
)  # fmt: skip
def products(warehouse: Warehouse) -> pa.Table:
    """Product catalogue derived from the order lines: name, main category, price, reach and revenue.

    Reach (distinct baskets and customers per product) is counted from the distinct pairs first:
    DuckDB's per-group `count(distinct ...)` grew fastest of the ingest steps at 50M lines."""
    return warehouse.query(
        """
        with per_product as (
            select product_id,
                   any_value(product_name) as product_name,
                   mode(category) as category,
                   median(price) as price,
                   cast(sum(quantity) as BIGINT) as quantity,
                   sum(revenue) as revenue
            from ingest.raw_transactions
            group by product_id
        ),
        baskets as (
            select product_id, count(basket_id) as n_baskets
            from (select distinct product_id, basket_id from ingest.raw_transactions)
            group by product_id
        ),
        customers as (
            select product_id, count(customer_id) as n_customers
            from (select distinct product_id, customer_id from ingest.raw_transactions)
            group by product_id
        )
        select product_id, product_name, category, price, n_baskets, n_customers, quantity, revenue
        from per_product join baskets using (product_id) join customers using (product_id)
        order by n_baskets desc, product_id
        """
    )
