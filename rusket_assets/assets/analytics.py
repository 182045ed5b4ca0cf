"""Analytics group: customer saturation, cross-sell potential and substitute products."""

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.assets.common import POOL, TABLE_IO, upstream, with_rank
from rusket_assets.config import PotentialConfig

GROUP = "analytics"


@dg.asset(
    key_prefix=GROUP, group_name=GROUP, io_manager_key=TABLE_IO, pool=POOL, kinds={"duckdb"},
    ins={"raw_transactions": upstream("ingest", "raw_transactions")},
)  # fmt: skip
def customer_saturation(context: dg.AssetExecutionContext, raw_transactions: pa.Table) -> pa.Table:
    """Per customer: distinct categories bought, share of all categories, decile (1 = most saturated).

    Falls back to distinct products when the source has no category column.
    """
    from rusket_core import customer_saturation as saturation

    lines = raw_transactions.select(["customer_id", "product_id", "category"])
    by_category = lines["category"].null_count < lines.num_rows
    if by_category:
        lines = lines.filter(pc.is_valid(lines["category"]))
        table = saturation(lines, user_col="customer_id", category_col="category", format="arrow")
    else:
        table = saturation(lines, user_col="customer_id", item_col="product_id", format="arrow")
    context.add_output_metadata(
        {
            "counted": "categories" if by_category else "products",
            "mean_share": float(pc.mean(table["share"]).as_py()),
        }
    )
    return table


@dg.asset(
    key_prefix=GROUP, group_name=GROUP, io_manager_key=TABLE_IO, pool=POOL, kinds={"duckdb"},
    ins={
        "raw_transactions": upstream("ingest", "raw_transactions"),
        "products": upstream("ingest", "products"),
        "als_model": upstream("personalization", "als_model"),
    },
)  # fmt: skip
def cross_sell_potential(
    context: dg.AssetExecutionContext, config: PotentialConfig, raw_transactions: pa.Table, products: pa.Table, als_model
) -> pa.Table:
    """Per customer, the categories not bought yet with the highest propensity (best ALS score in the category)."""
    from rusket_core import score_potential

    mapping = products.select(["product_id", "category"]).filter(pc.is_valid(products["category"]))
    if mapping.num_rows == 0:
        raise ValueError("cross_sell_potential needs product categories: map the source's category column")
    table = score_potential(
        user_history=raw_transactions.select(["customer_id", "product_id"]),
        model=als_model,
        target_categories=mapping,
        user_col="customer_id",
        item_col="product_id",
        top_n=config.top_n,
        format="arrow",
    )
    table = table.rename_columns(["customer_id", "category", "score"])
    table = with_rank(table.sort_by([("customer_id", "ascending"), ("score", "descending")]), "customer_id")
    context.add_output_metadata({"categories": len(pc.unique(mapping["category"]))})
    return table
