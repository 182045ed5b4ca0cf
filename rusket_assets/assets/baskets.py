"""Baskets group: frequent itemsets, association rules, cart add-ons and the product graph."""

from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import ALS_GATES, group_asset, lookup, upstream
from rusket_assets.engine import Engine
from rusket_assets.interactions import WarehouseTable, engine_input

# Closed choices (tests check they match the library's own lists).
RuleMetric = Literal[
    "confidence", "lift", "leverage", "conviction", "support", "antecedent support", "consequent support",
    "zhangs_metric", "jaccard", "certainty", "kulczynski",
]  # fmt: skip


class MiningConfig(dg.Config):
    """Frequent-itemset mining: support threshold (fraction of baskets) and longest itemset."""

    min_support: float = Field(default=0.0003, description="Fraction of baskets in (0, 1], or a count >= 1.")
    max_len: int | None = Field(default=3, description="Longest itemset to mine; None for no limit.")
    min_baskets: int = Field(
        default=10, description="Floor on the absolute basket count (keeps small data sets from mining every combination)."
    )


class RulesConfig(dg.Config):
    """Association rules: the metric to filter on and its minimum value."""

    metric: RuleMetric = Field(default="confidence", description="Rule metric that min_threshold applies to.")
    min_threshold: float = Field(default=0.01, description="Keep rules whose metric is at least this value.")


class AddOnsConfig(dg.Config):
    """Cart add-ons: how many per product."""

    n: int = Field(default=5, ge=1, description="Add-ons listed per product.")


class GraphConfig(dg.Config):
    """Product graph: rules kept as edges (lift at least min_lift) and the Louvain seed."""

    min_lift: float = Field(default=1.0, description="Rules with a lower lift are not edges of the graph.")
    random_state: int = Field(default=0, description="Seed of the Louvain community detection (same seed, same communities).")


GROUP = "baskets"
asset = group_asset(GROUP)
# Rule columns named as rusket_core (mlxtend) names them, and as stored in DuckDB (snake_case).
RULE_RENAMES = {"antecedent support": "antecedent_support", "consequent support": "consequent_support"}


def rules_for_library(rules: pa.Table) -> pa.Table:
    """The stored rules table with the column names rusket_core expects."""
    back = {v: k for k, v in RULE_RENAMES.items()}
    return rules.rename_columns([back.get(name, name) for name in rules.column_names])


@asset(
    kinds={"duckdb", "numba"},
    ins={"raw_transactions": upstream("ingest", "raw_transactions")},
)  # fmt: skip
def frequent_itemsets(
    context: dg.AssetExecutionContext, config: MiningConfig, engine: Engine, raw_transactions: WarehouseTable
) -> pa.Table:
    """Itemsets of products bought together in at least `min_support` of baskets (FP-growth, exact).

    The threshold never goes below `min_baskets` baskets, so a small source does not mine every
    combination of every basket.

    Columns: itemset (list of product ids, e.g. VARCHAR[]), length, support (fraction), count.
    """
    import math
    import time

    start = time.perf_counter()
    n_baskets = raw_transactions.scalar("count(distinct basket_id)")
    min_support = config.min_support
    if min_support < 1 and math.ceil(min_support * n_baskets) < config.min_baskets:
        min_support = int(config.min_baskets)  # an absolute count
    with raw_transactions.relation(["basket_id", "product_id"]) as lines:  # encoded in SQL (local engine)
        model = engine.fpgrowth(engine_input(raw_transactions, lines, engine), "basket_id", "product_id", min_support, config.max_len)
    itemsets = model.mine(format="arrow")
    lengths = pc.list_value_length(itemsets["itemsets"])
    context.add_output_metadata(
        {
            "baskets": model.n_transactions,
            "min_count": model.min_count,
            "mining_seconds": time.perf_counter() - start,
            "itemset_count": itemsets.num_rows,
            "pairs_and_larger": int(pc.sum(pc.greater(lengths, 1)).as_py() or 0),
            **engine.metadata(),
        }
    )
    return pa.table(
        {
            "itemset": itemsets["itemsets"],
            "length": pc.cast(lengths, pa.int32()),
            "support": itemsets["support"],
            "count": itemsets["count"],
        }
    )


@asset(
    kinds={"duckdb", "numba"},
    ins={"frequent_itemsets": upstream(GROUP, "frequent_itemsets")},
)  # fmt: skip
def association_rules(context: dg.AssetExecutionContext, config: RulesConfig, frequent_itemsets: pa.Table) -> pa.Table:
    """Rules antecedents -> consequents from the stored itemsets (no re-mining), with every metric.

    Kept: rules whose `metric` is at least `min_threshold`. Columns: antecedents, consequents,
    antecedent_support, consequent_support, support, confidence, lift, leverage, conviction,
    zhangs_metric, jaccard, certainty, kulczynski.
    """
    from rusket_core import association_rules as rules_from

    itemsets = pa.table({"itemsets": frequent_itemsets["itemset"], "support": frequent_itemsets["support"]})
    rules = rules_from(itemsets, metric=config.metric, min_threshold=config.min_threshold, format="arrow")
    rules = rules.rename_columns([RULE_RENAMES.get(name, name) for name in rules.column_names])
    context.add_output_metadata(
        {
            "rule_count": rules.num_rows,
            "mean_confidence": float(pc.mean(rules["confidence"]).as_py() or 0.0),
            "max_lift": float(pc.max(rules["lift"]).as_py() or 0.0),
        }
    )
    return rules


@asset(
    kinds={"duckdb", "numba"},
    ins={
        "association_rules": upstream(GROUP, "association_rules"),
        "products": upstream("ingest", "products"),
        "als_model": upstream("personalization", "als_model"),
    },
    deps=ALS_GATES,
)  # fmt: skip
def cart_addons(
    context: dg.AssetExecutionContext, config: AddOnsConfig, association_rules: pa.Table, products: pa.Table, als_model
) -> pa.Table:
    """Top add-ons for a cart holding one product, for every product ("frequently bought together").

    Rules first (confidence, then lift), then ALS item similarity, then popularity; `source` says
    which. Columns: product_id, rank, addon_product_id, score, source.
    """
    from rusket_core import Recommender

    recommender = Recommender(model=als_model, rules_df=rules_for_library(association_rules))
    carts = pa.table({"cart": products["product_id"], "item": products["product_id"]})
    addons = recommender.recommend_for_carts(carts, n=config.n, cart_col="cart", item_col="item", format="arrow")
    table = pa.table(
        {
            "product_id": addons["cart_id"],
            "rank": pc.cast(addons["rank"], pa.int32()),
            "addon_product_id": addons["item_id"],
            "score": addons["score"],
            "source": addons["source"],
        }
    )
    counts = pc.value_counts(table["source"]).to_pylist()
    context.add_output_metadata({f"from_{c['values']}": c["counts"] for c in counts})
    return table


@asset(
    kinds={"duckdb", "networkx"},
    ins={"association_rules": upstream(GROUP, "association_rules"), "products": upstream("ingest", "products")},
)  # fmt: skip
def product_graph(
    context: dg.AssetExecutionContext, config: GraphConfig, association_rules: pa.Table, products: pa.Table
) -> pa.Table:
    """Products as a graph of one-to-one rules (lift >= `min_lift`): Louvain community and pagerank.

    Columns: product_id, product_name, category, community (0 = largest), community_size, pagerank,
    support, rank_in_community, is_gateway (highest pagerank of its community).
    """
    from rusket_core.viz import product_communities, to_networkx

    rules = rules_for_library(association_rules)
    rules = rules.filter(pc.greater_equal(rules["lift"], config.min_lift))
    graph = to_networkx(rules, edge_attr="lift")
    table = product_communities(graph, weight="lift", random_state=config.random_state, format="arrow")
    info = lookup(table["item"], products, "product_id", ["product_name", "category"])
    table = table.rename_columns(["product_id", *table.column_names[1:]])
    for i, (name, values) in enumerate(info.items()):
        table = table.add_column(1 + i, name, values)
    context.add_output_metadata(
        {
            "nodes": graph.number_of_nodes(),
            "edges": graph.number_of_edges(),
            "communities": len(pc.unique(table["community"])) if table.num_rows else 0,
        }
    )
    return table
