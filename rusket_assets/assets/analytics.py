"""Analytics group: customer saturation, cross-sell potential and substitute products."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import ALS_GATES, group_asset, lookup, upstream, with_rank
from rusket_assets.interactions import WarehouseTable
from rusket_assets.streaming import TableStream


class SubstitutesConfig(dg.Config):
    """Substitutes: product pairs bought together less than chance."""

    max_lift: float = Field(default=0.8, description="Pairs whose rule lift is below this are substitutes.")


class PotentialConfig(dg.Config):
    """Cross-sell potential: top categories per customer."""

    n: int = Field(default=3, ge=1, description="Target categories (or products) listed per customer.")


GROUP = "analytics"
asset = group_asset(GROUP)


@asset(
    kinds={"duckdb"},
    ins={"raw_transactions": upstream("ingest", "raw_transactions")},
)  # fmt: skip
def customer_saturation(context: dg.AssetExecutionContext, raw_transactions: WarehouseTable) -> pa.Table:
    """Per customer: distinct categories bought, share of all categories, decile (1 = most saturated).

    Falls back to distinct products when the source has no category column.
    """
    from rusket_core import customer_saturation as saturation

    by_category = bool(raw_transactions.scalar("count(category)"))
    if by_category:
        with raw_transactions.relation(["customer_id", "category"], where="category is not null") as lines:
            table = saturation(lines, user_col="customer_id", category_col="category", format="arrow")
    else:
        with raw_transactions.relation(["customer_id", "product_id"]) as lines:
            table = saturation(lines, user_col="customer_id", item_col="product_id", format="arrow")
    context.add_output_metadata(
        {
            "counted": "categories" if by_category else "products",
            "mean_share": float(pc.mean(table["share"]).as_py()),
        }
    )
    return table


@asset(
    kinds={"duckdb"},
    ins={"products": upstream("ingest", "products"), "als_model": upstream("personalization", "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def cross_sell_potential(config: PotentialConfig, products: pa.Table, als_model) -> TableStream:
    """Per customer, the categories not bought yet with the highest propensity (best ALS score in the category).

    Without a category column in the source, the targets are the products themselves (column
    `target` holds product ids then). Purchases are the ALS model's interactions (the order lines'
    customer × product pairs); written in chunks of customers.
    """
    from rusket_core.chunks import iter_score_potential

    mapping = products.select(["product_id", "category"]).filter(pc.is_valid(products["category"]))
    by_category = mapping.num_rows > 0
    targets = mapping if by_category else products["product_id"].to_pylist()
    seen: set = set()

    def chunks():
        for chunk in iter_score_potential(als_model, targets, n=config.n):
            seen.update(pc.unique(chunk["target"]).to_pylist())
            yield with_rank(chunk.rename_columns(["customer_id", "target", "score"]), "customer_id")

    def metadata() -> dict:
        return {"targets": "categories" if by_category else "products", "target_count": len(seen)}

    return TableStream(chunks(), metadata=metadata)


@asset(
    kinds={"duckdb"},
    ins={"association_rules": upstream("baskets", "association_rules"), "products": upstream("ingest", "products")},
)  # fmt: skip
def product_substitutes(
    context: dg.AssetExecutionContext, config: SubstitutesConfig, association_rules: pa.Table, products: pa.Table
) -> pa.Table:
    """Product pairs bought together less often than chance (lift < `max_lift`), weakest first."""
    from rusket_assets.assets.baskets import rules_for_library
    from rusket_core import find_substitutes

    pairs = find_substitutes(rules_for_library(association_rules), max_lift=config.max_lift, format="arrow")
    names_a = lookup(pairs["item_a"], products, "product_id", ["product_name", "category"])
    names_b = lookup(pairs["item_b"], products, "product_id", ["product_name", "category"])
    table = pa.table(
        {
            "product_a": pairs["item_a"],
            "product_b": pairs["item_b"],
            "name_a": names_a["product_name"],
            "name_b": names_b["product_name"],
            "category_a": names_a["category"],
            "category_b": names_b["category"],
            **{name: pairs[name] for name in pairs.column_names[2:]},
        }
    )
    same = int(pc.sum(pc.equal(table["category_a"], table["category_b"])).as_py() or 0) if table.num_rows else 0
    metadata = {"pairs": table.num_rows, "same_category_pairs": same}
    if table.num_rows == 0:  # say why: a pair must be frequent to be mined, yet rarer than chance to qualify
        every = find_substitutes(rules_for_library(association_rules), max_lift=float(np.finfo(np.float64).max), format="arrow")
        lowest = float(pc.min(every["lift"]).as_py()) if every.num_rows else None
        metadata["why_empty"] = (
            f"none of the {every.num_rows} mined product pairs has lift < max_lift {config.max_lift}"
            + (f" (lowest {lowest:.3g})" if lowest is not None else "")
            + ": a pair is only mined when it is frequent (baskets.frequent_itemsets min_support/min_baskets), and on"
            " this data every frequent pair is bought together at least that often; lower min_support or raise max_lift"
        )
    context.add_output_metadata(metadata)
    return table
