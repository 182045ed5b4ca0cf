"""Analytics group: customer saturation, cross-sell potential and substitute products."""

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.assets.common import POOL, TABLE_IO, upstream

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
