"""Ingest group: order lines from the configured source, and the product catalogue."""


import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.assets.common import group_asset, key
from rusket_assets.resources import TransactionSource, Warehouse
from rusket_assets.source import read_transactions

GROUP = "ingest"
asset = group_asset(GROUP)


@asset(kinds={"duckdb"})
def raw_transactions(
    context: dg.AssetExecutionContext, source: TransactionSource, warehouse: Warehouse
) -> pa.Table:
    """Order lines in the standard columns (basket_id, customer_id, product_id, quantity, revenue, ...).

    Ids keep the source's types. Missing mapped columns, null ids and text in numeric columns fail
    here, naming the column and the number of rows, and nothing downstream is written; return lines
    follow `source.returns` (the counts it touched are in the metadata).
    """
    table, returns = read_transactions(source, warehouse)
    context.log.info(f"read {table.num_rows} order lines from {source.kind} source; returns ({source.returns}): {returns}")
    context.add_output_metadata(
        {
            "source": source.kind if source.kind == "synthetic" else f"{source.kind}: {source.path or source.table}",
            "baskets": len(pc.unique(table["basket_id"])),
            "customers": len(pc.unique(table["customer_id"])),
            "products": len(pc.unique(table["product_id"])),
            "returns_policy": source.returns,
            **returns,
        }
    )
    return table


@asset(
    kinds={"duckdb"},
    deps=[key(GROUP, "raw_transactions")],
)  # fmt: skip
def products(warehouse: Warehouse) -> pa.Table:
    """Product catalogue derived from the order lines: name, main category, price, reach and revenue."""
    return warehouse.query(
        """
        select product_id,
               any_value(product_name) as product_name,
               mode(category) as category,
               median(price) as price,
               count(distinct basket_id) as n_baskets,
               count(distinct customer_id) as n_customers,
               cast(sum(quantity) as BIGINT) as quantity,
               sum(revenue) as revenue
        from ingest.raw_transactions
        group by product_id
        order by n_baskets desc, product_id
        """
    )
