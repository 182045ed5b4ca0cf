"""Analytics group: customer saturation, cross-sell potential and substitute products."""

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import ALS_GATES, group_asset, key, lookup, upstream, with_rank
from rusket_assets.incremental import (
    built_from,
    merge_rows,
    mergeable,
    model_name,
    reached,
    rows_of,
)
from rusket_assets.interactions import WarehouseTable
from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.streaming import TableStream


class SubstitutesConfig(dg.Config):
    """Substitutes: product pairs bought together less than chance."""

    max_lift: float = Field(default=0.8, description="Pairs whose rule lift is below this are substitutes.")


class PotentialConfig(dg.Config):
    """Cross-sell potential: top categories per customer."""

    n: int = Field(default=3, ge=1, description="Target categories (or products) listed per customer.")


GROUP = "analytics"
asset = group_asset(GROUP)
ALS = key("personalization", "als_model")


@asset(
    kinds={"duckdb"},
    ins={"raw_transactions": upstream("ingest", "raw_transactions")},
    deps=[ALS],  # an incremental run recounts the customers whose ALS rows the day changed
)  # fmt: skip
def customer_saturation(
    context: dg.AssetExecutionContext, raw_transactions: WarehouseTable, warehouse: Warehouse, models: ModelStore
) -> pa.Table | None:
    """Per customer: distinct categories bought, share of all categories, decile (1 = most saturated).

    Falls back to distinct products when the source has no category column.
    In an incremental run (ALS updated by fold-in from the version this table was built from, same
    counted values) only the customers whose ALS rows changed, i.e. whose (customer, product) lines
    changed, are recounted in SQL; share and decile depend on every customer (a new category, deciles
    moving), so they are recomputed in SQL over the stored counts, in the same transaction as the merge.
    """
    from rusket_core import customer_saturation as saturation

    by_category = bool(raw_transactions.scalar("count(category)"))
    value_col, counted = ("category", "categories") if by_category else ("product_id", "products")
    changes = mergeable(context, warehouse, [ALS], same={"counted": counted})
    context.add_output_metadata(built_from(models, [ALS]) | {"counted": counted})
    if changes is None or not warehouse.has_table(GROUP, "customer_saturation"):
        with raw_transactions.relation(["customer_id", value_col], where=f"{value_col} is not null") as lines:
            table = saturation(lines, user_col="customer_id", **{"category_col" if by_category else "item_col": value_col},
                               format="arrow")  # fmt: skip
        context.add_output_metadata({"mean_share": float(pc.mean(table["share"]).as_py())})
        return table
    customers = changes[model_name(ALS)].customers
    recounted = _recount(raw_transactions, value_col, customers)
    total = raw_transactions.scalar(f"count(distinct {value_col})")
    target = f"{GROUP}.customer_saturation"
    derived = (f"update {target} t set share = t.n_distinct / ?, decile = d.decile from (select customer_id, "
               f"1 + (10 * (rank() over (order by n_distinct desc) - 1)) // count(*) over () as decile from {target}) d "
               "where t.customer_id = d.customer_id")  # fmt: skip  # the library's tie rule (customers with more + 1)
    replaced = merge_rows(warehouse, GROUP, "customer_saturation", "customer_id", customers, recounted, then=[(derived, [total])])
    rows, mean_share = warehouse.query(f"select count(*) as n, avg(share) as m from {target}").to_pylist()[0].values()
    context.add_output_metadata({
        "refresh": "incremental", "customers_recounted": recounted.num_rows, "customers_changed": len(customers),
        "rows_replaced": replaced, "mean_share": float(mean_share or 0.0), "dagster/row_count": dg.MetadataValue.int(int(rows)),
    })  # fmt: skip
    return None


def _recount(raw_transactions: WarehouseTable, value_col: str, customers: pa.Array) -> pa.Table:
    """[customer_id, n_distinct] of ``customers`` (compared as text) from the order lines, in SQL."""
    import uuid

    view = f"__rusket_customers_{uuid.uuid4().hex}"
    with raw_transactions.warehouse.connect() as con:
        con.register(view, pa.table({"k": customers.cast(pa.string())}))
        try:
            return con.sql(
                f"select customer_id, count(distinct {value_col}) as n_distinct from {raw_transactions.name} "
                f"where {value_col} is not null and cast(customer_id as VARCHAR) in (select k from {view}) group by customer_id"
            ).to_arrow_table()
        finally:
            con.unregister(view)


@asset(
    kinds={"duckdb"},
    ins={"products": upstream("ingest", "products"), "als_model": upstream("personalization", "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def cross_sell_potential(
    context: dg.AssetExecutionContext, config: PotentialConfig, products: pa.Table, als_model,
    warehouse: Warehouse, models: ModelStore,
) -> TableStream | None:  # fmt: skip
    """Per customer, the categories not bought yet with the highest propensity (best ALS score in the category).

    Without a category column in the source, the targets are the products themselves (column
    `target` holds product ids then). Purchases are the ALS model's interactions (the order lines'
    customer × product pairs); written in chunks of customers.

    In an incremental run (ALS updated by fold-in from the version this table was built from, same
    `n`, the known products' targets unchanged) only these customers are rescored and merged in one
    transaction: those whose ALS rows changed, and those for whom a new product scores at least
    their n-th listed score (only then can it change their list, since known products' factors and
    everyone else's purchases and factors are as before). The others keep their rows.
    """
    from rusket_core.chunks import iter_score_potential

    mapping = products.select(["product_id", "category"]).filter(pc.is_valid(products["category"]))
    by_category = mapping.num_rows > 0
    targets = mapping if by_category else products.select(["product_id"])
    seen: set = set()
    changes = mergeable(context, warehouse, [ALS], same={"n": config.n})
    change = None if changes is None else changes[model_name(ALS)]
    if change is not None and len(change.products) == len(als_model.items):  # a warm pass moved every product
        change = None
    known = als_model.items.values if change is None else np.delete(als_model.items.values, rows_of(als_model.items.values, change.products))
    fingerprint = _targets_fingerprint(targets, known)
    if change is not None and not (
        warehouse.has_table(GROUP, "cross_sell_potential") and _recorded(context, "known_targets") == fingerprint
    ):
        change = None
    # recorded for the next run: the targets of every product of this model
    context.add_output_metadata(built_from(models, [ALS]) | {"n": config.n, "known_targets": _targets_fingerprint(targets, als_model.items.values)})
    targets = targets if by_category else targets["product_id"].to_pylist()

    def chunks(rows=None):
        for chunk in iter_score_potential(als_model, targets, n=config.n, rows=rows):
            seen.update(pc.unique(chunk["target"]).to_pylist())
            yield with_rank(chunk.rename_columns(["customer_id", "target", "score"]), "customer_id")

    def metadata() -> dict:
        return {"targets": "categories" if by_category else "products", "target_count": len(seen)}

    if change is None:
        return TableStream(chunks(), metadata=metadata)
    rows = _rows_to_rescore(warehouse, als_model, change, mapping if by_category else None, config.n)
    keys = pa.array(als_model.users.values[rows]).cast(pa.string())
    table = pa.concat_tables(list(chunks(rows))) if len(rows) else None
    replaced = merge_rows(warehouse, GROUP, "cross_sell_potential", "customer_id", keys, table) if table is not None else 0
    total = warehouse.scalar(f"select count(*) from {GROUP}.cross_sell_potential")
    context.add_output_metadata(metadata() | {
        "refresh": "incremental", "customers_rescored": len(rows), "customers_changed": len(change.customers),
        "new_products": len(change.products), "rows_replaced": replaced,
        "dagster/row_count": dg.MetadataValue.int(int(total)),
    })  # fmt: skip
    return None


def _recorded(context: dg.AssetExecutionContext, name: str):
    """Metadata value ``name`` of the asset's last materialisation (None when absent)."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    value = None if event is None or event.asset_materialization is None else event.asset_materialization.metadata.get(name)
    return None if value is None else value.value


def _targets_fingerprint(targets: pa.Table, items) -> str:
    """A hash of the target of each of ``items`` (its category, or itself), in label order."""
    import hashlib

    text = pa.array(items).cast(pa.string())
    labels = targets["product_id"].cast(pa.string())
    values = targets["category"].cast(pa.string()) if "category" in targets.column_names else labels
    target = values.take(pc.index_in(text, value_set=labels))
    order = pc.sort_indices(text)
    pairs = pc.binary_join_element_wise(text.take(order), target.take(order).fill_null(""), "\t")
    return hashlib.sha256("\n".join(pairs.to_pylist()).encode()).hexdigest()[:16]


def _rows_to_rescore(warehouse: Warehouse, model, change, mapping: pa.Table | None, n: int) -> np.ndarray:
    """Model rows of the customers whose cross-sell rows may differ after the update ``change``: those
    whose ALS rows changed and, when the update added target products, those with fewer than ``n``
    rows listed and those for whom a new one scores at least their n-th listed score (with a small
    margin for float rounding)."""
    rescore = np.zeros(len(model.users), dtype=bool)
    rescore[rows_of(model.users.values, change.customers)] = True
    new = rows_of(model.items.values, change.products)
    if mapping is not None and len(new):  # only new products with a category are targets
        new = new[pc.is_in(pa.array(model.items.values[new]).cast(pa.string()),
                           value_set=mapping["product_id"].cast(pa.string())).to_numpy(zero_copy_only=False)]  # fmt: skip
    if len(new):
        best = (model.user_factors @ model.item_factors[new].T).max(axis=1)
        rescore |= reached(warehouse, GROUP, "cross_sell_potential", "customer_id", model.users.values, best, n)
    return np.flatnonzero(rescore)


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
