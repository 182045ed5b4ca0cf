"""Personalization group: ALS and BPR models, their factors, holdout evaluation and similar items."""

import time
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.assets.common import (
    ALS_GATES,
    MODEL_IO,
    group_asset,
    key,
    lookup,
    upstream,
    with_rank,
)
from rusket_assets.config import (
    ALSConfig,
    BPRConfig,
    EvaluationConfig,
    RecommendationConfig,
    SimilarItemsConfig,
)
from rusket_assets.engine import Engine
from rusket_assets.incremental import changed_customers, merge_rows, refresh_model
from rusket_assets.interactions import WarehouseTable, engine_input
from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.streaming import TableStream

GROUP = "personalization"
asset = group_asset(GROUP)
RAW = {"raw_transactions": upstream("ingest", "raw_transactions")}
WEIGHTS = {"quantity": "quantity", "revenue": "revenue", "count": None}
INTERACTION_COLUMNS = ["customer_id", "product_id", "quantity", "revenue"]


def _interaction_lines(raw_transactions: WarehouseTable, weight_col: str | None):
    """A DuckDB relation over the customer, product (and weight) columns: encoded in SQL by the models."""
    return raw_transactions.relation(["customer_id", "product_id", *([weight_col] if weight_col else [])])


def _weight_column(weight: str) -> str | None:
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {sorted(WEIGHTS)}, got {weight!r}")
    return WEIGHTS[weight]


@asset(io_manager_key=MODEL_IO, kinds={"numba"}, ins=RAW)
def als_model(
    context: dg.AssetExecutionContext, config: ALSConfig, engine: Engine, raw_transactions: WarehouseTable,
    models: ModelStore, warehouse: Warehouse,
):  # fmt: skip
    """Implicit ALS on customer × product interactions (confidence 1 + alpha * weight), saved as a model file.

    In an incremental run (tag `rusket/refresh=incremental`) the saved model is updated instead:
    changed customers folded in, new products added, then `warm_iterations` sweeps (rusket_assets.incremental).
    """
    from rusket_core import ALS

    start = time.perf_counter()
    params = {
        "user_col": "customer_id", "item_col": "product_id", "rating_col": _weight_column(config.weight),
        "factors": config.factors, "iterations": config.iterations, "alpha": config.alpha,
        "regularization": config.regularization, "random_state": config.seed,
    }  # fmt: skip
    with _interaction_lines(raw_transactions, params["rating_col"]) as lines:  # encoded in SQL locally
        model = refresh_model(
            context, lambda: ALS.from_transactions(lines, **params),
            lambda: engine.fit_als(engine_input(lines, engine), **params), models, warehouse, config.warm_iterations,
        )  # fmt: skip
    context.add_output_metadata(
        {
            "training_seconds": time.perf_counter() - start,
            "customers": len(model.users),
            "products": len(model.items),
            "factors": model.factors,
            "training_loss": model.training_loss(),
            **engine.metadata(),
        }
    )
    return model


@asset(io_manager_key=MODEL_IO, kinds={"numba"}, ins=RAW)
def bpr_model(
    context: dg.AssetExecutionContext, config: BPRConfig, raw_transactions: WarehouseTable,
    models: ModelStore, warehouse: Warehouse,
):  # fmt: skip
    """Bayesian personalised ranking on customer × product interactions, saved as a model file.

    With `deterministic` (default) the same seed gives the same model on every run: fixed user
    blocks on private copies of the item factors, merged after every round of a fixed number of
    steps. Library-level fit on a busy 2-core machine, bundled store's size: 12.4 s vs 2.2 s
    Hogwild, holdout precision@10 0.092 vs 0.091 (benchmarks/RESULTS.md).
    In an incremental run the saved model's changed customers are folded in (SGD over their rows,
    items fixed) plus `warm_iterations` epochs; new products need a full fit (rusket_assets.incremental).
    """
    from rusket_core import BPR

    start = time.perf_counter()
    with _interaction_lines(raw_transactions, None) as lines:  # encoded in SQL

        def build():
            return BPR.from_transactions(
                lines,
                user_col="customer_id",
                item_col="product_id",
                factors=config.factors,
                iterations=config.iterations,
                learning_rate=config.learning_rate,
                regularization=config.regularization,
                loss=config.loss,
                schedule=config.schedule,
                random_state=config.seed,
                deterministic=config.deterministic,
            )

        model = refresh_model(context, build, lambda: build().fit(), models, warehouse, config.warm_iterations)
    accuracy = getattr(model, "ranking_accuracy_", None)
    loss = getattr(model, "loss_", None)  # a model loaded and folded into has no training curve
    context.add_output_metadata(
        {
            "training_seconds": time.perf_counter() - start,
            "customers": len(model.users),
            "products": len(model.items),
            "factors": model.factors,
            **({"ranking_accuracy": float(accuracy[-1])} if accuracy is not None and len(accuracy) else {}),
            **({"training_loss": float(loss[-1])} if loss is not None and len(loss) else {}),
        }
    )
    return model


@asset(
    kinds={"duckdb"},
    ins={"als_model": upstream(GROUP, "als_model")},
)  # fmt: skip
def user_factors(als_model) -> TableStream:
    """ALS customer vectors: customer_id (source type) and vector FLOAT[factors]."""
    from rusket_core.export import factor_batches

    batches = factor_batches(als_model, kind="user")  # written chunk by chunk
    return TableStream(pa.table({"customer_id": b["label"], "vector": b["vector"]}) for b in batches)


@asset(
    kinds={"duckdb"},
    ins={"als_model": upstream(GROUP, "als_model"), "products": upstream("ingest", "products")},
)  # fmt: skip
def item_factors(als_model, products: pa.Table) -> pa.Table:
    """ALS product vectors with name and category: product_id, product_name, category, vector FLOAT[factors]."""
    table = als_model.export_item_factors(format="arrow")
    info = lookup(table["label"], products, "product_id", ["product_name", "category"])
    return pa.table({"product_id": table["label"], **info, "vector": table["vector"]})


CART_COLUMNS = ["basket_id", "customer_id", "product_id", "ordered_at"]
METRICS = ("precision", "recall", "ndcg", "map", "coverage")


def last_baskets(lines) -> pa.Table:
    """Each customer's latest basket (by ``ordered_at``, then ``basket_id``; nulls oldest) as
    [customer_id, product_id] rows, computed in DuckDB from a relation (or arrow table) of ``CART_COLUMNS``."""
    import duckdb

    from rusket_core.sql_encoding import SOURCE, column_types

    if isinstance(lines, pa.Table):
        lines = duckdb.connect().from_arrow(lines.select(CART_COLUMNS))
    basket = 'basket_id collate "binary"' if column_types(lines)["basket_id"] == "VARCHAR" else "basket_id"
    sql = f"""
        with last as (
            select customer_id, basket_id from (select distinct customer_id, basket_id, ordered_at from {SOURCE})
            qualify row_number() over (partition by customer_id order by ordered_at desc nulls last, {basket} desc nulls last) = 1
        )
        select s.customer_id, s.product_id from {SOURCE} s join last using (customer_id, basket_id)
    """  # fmt: skip
    return lines.query(SOURCE, sql).to_arrow_table()


def published_recommender(als_model, bpr_model, rules: pa.Table, carts: pa.Table, config: RecommendationConfig):
    """The hybrid that ``user_recommendations`` publishes: ALS blended with BPR-embedding similarity
    (``config.als_share``), rule add-ons for each customer's cart, ``carts`` being [customer_id,
    product_id] rows of their last basket (:func:`last_baskets`), (``config.rules_weight``). One
    place, so the quality gate scores exactly what ships."""
    from rusket_assets.assets.baskets import rules_for_library
    from rusket_core import Recommender

    embeddings = bpr_model.export_item_factors(format="arrow").select(["label", "vector"])
    return Recommender(
        model=als_model, rules_df=rules_for_library(rules), item_embeddings=embeddings,
        alpha=config.als_share, rules_weight=config.rules_weight,  # the library checks both
        carts=carts, cart_col="customer_id", cart_item_col="product_id",
    )  # fmt: skip


def _published_config(context: dg.AssetExecutionContext) -> RecommendationConfig:
    """This run's ``user_recommendations`` config (defaults when the run does not set it)."""
    op = key(GROUP, "user_recommendations").to_python_identifier()
    given = (context.run.run_config.get("ops") or {}).get(op) or {}
    return RecommendationConfig(**(given.get("config") or {}))


@asset(
    kinds={"duckdb"},
    ins={
        **RAW,
        "als_model": upstream(GROUP, "als_model"),
        "bpr_model": upstream(GROUP, "bpr_model"),
        "association_rules": upstream("baskets", "association_rules"),
    },
)  # fmt: skip
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    raw_transactions: WarehouseTable,
    als_model,
    bpr_model,
    association_rules: pa.Table,
) -> pa.Table:
    """Holdout ranking quality of ALS, BPR, popularity and the published hybrid, on one split.

    Each customer's items are split at random (seeded) into train and test; every model is refitted
    on train with its published parameters, and the blend that `user_recommendations` publishes
    (`published_recommender`: same models, rules, last-basket carts and weights as this run's
    `user_recommendations` config) is rebuilt from them, its carts taken from the train lines.
    All are scored by the same `evaluate` on the test items of a seeded sample of
    `sample_customers` customers: precision, recall, ndcg, MAP at k, and catalogue coverage.
    The rules are the published ones (mined on all baskets). With `compare_bpr_losses` a row
    `bpr_<loss>` scores BPR with the other pair loss too.
    """
    from rusket_assets.holdout import holdout_split
    from rusket_core.evaluation import evaluate
    from rusket_core.factorization.bpr import LOSSES
    from rusket_core.popularity import PopularityRecommender

    candidates = [("als", als_model, {}), ("bpr", bpr_model, {}), ("popularity", PopularityRecommender(), {})]
    if config.compare_bpr_losses:
        other = next(loss for loss in LOSSES if loss != bpr_model.loss)
        candidates.insert(2, (f"bpr_{other}", bpr_model, {"loss": other}))
    fitted, seconds = {}, {}
    columns = sorted({*INTERACTION_COLUMNS, *CART_COLUMNS})
    with holdout_split(raw_transactions, columns, "customer_id", "product_id", config.test_fraction, config.seed,
                       config.sample_customers) as (train, test, n_customers):  # fmt: skip
        for name, model, changes in candidates:
            start = time.perf_counter()
            fitted[name] = type(model).from_transactions(
                train, user_col="customer_id", item_col="product_id",  # encoded in SQL
                rating_col=model.rating_col, **{**model.get_params(), **changes},
            ).fit()  # fmt: skip
            seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        fitted["published"] = published_recommender(
            fitted["als"], fitted["bpr"], association_rules, last_baskets(train), _published_config(context)
        )
        seconds["published"] = seconds["als"] + seconds["bpr"] + time.perf_counter() - start
    rows = []
    for name, recommender in fitted.items():
        metrics = evaluate(recommender, test=test, k=config.k)
        rows.append({"model": name, **{m: metrics[m] for m in METRICS},
                     "k": config.k, "n_users": metrics["n_users"], "fit_seconds": seconds[name]})  # fmt: skip
    table = pa.Table.from_pylist(rows)
    k = config.k
    context.add_output_metadata(
        {
            f"{metric}@{k} {row['model']}": float(row[metric])
            for row in rows
            for metric in ("precision", "recall", "ndcg", "map")
        }
        | {f"coverage {row['model']}": float(row["coverage"]) for row in rows}
        | {f"fit_seconds {row['model']}": float(row["fit_seconds"]) for row in rows}
        | {"test_interactions": test.num_rows, "evaluated_customers": n_customers}
    )
    return table


@asset(
    kinds={"duckdb"},
    ins={"als_model": upstream(GROUP, "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def similar_items(config: SimilarItemsConfig, engine: Engine, als_model) -> Any:  # TableStream | SparkTable
    """For each product, the most similar products by cosine of ALS item factors (itself excluded).

    With engine=spark the rows are computed and written by the executors (parquet files under the
    engine's lakehouse path, published as a DuckDB view: rusket_assets.lakehouse)."""
    from rusket_core.chunks import iter_batch_similar_items

    names = ["product_id", "similar_product_id", "score"]
    if engine.is_spark:
        return engine.spark_table(engine.similar_items(als_model, config.top_n).toDF(*names, "rank"))
    chunks = iter_batch_similar_items(als_model, n=config.top_n)  # written chunk by chunk
    ranked = (with_rank(chunk.rename_columns(names), "product_id") for chunk in chunks)
    return TableStream(ranked, metadata=engine.metadata)


@asset(
    kinds={"duckdb", "numba"},
    ins={
        **RAW,
        "als_model": upstream(GROUP, "als_model"),
        "bpr_model": upstream(GROUP, "bpr_model"),
        "association_rules": upstream("baskets", "association_rules"),
    },
    deps=ALS_GATES,
)  # fmt: skip
def user_recommendations(
    context: dg.AssetExecutionContext,
    config: RecommendationConfig,
    raw_transactions: WarehouseTable,
    als_model,
    bpr_model,
    association_rules: pa.Table,
    warehouse: Warehouse,
) -> TableStream | None:
    """Top-N unseen products per customer: a hybrid of ALS, BPR-embedding similarity and basket rules.

    `published_recommender` (also scored by `model_evaluation`) with each customer's last basket
    as the cart. Model part:
    ALS scores blended with the cosine similarity of BPR item vectors to the customer's strongest
    product (`alpha`), normalised to [0, 1]. Rules part: rule add-ons for the last basket, scored
    by confidence. Final score = (1 - rules_weight) * model + rules_weight * rules; `source` says
    which parts proposed the product. Products the customer already bought are never listed.
    In an incremental run only the customers whose model rows changed are recomputed and merged
    into the table (their rows deleted and inserted in one transaction); the others stay as they are.
    """
    from rusket_core.chunks import iter_recommend_for_users

    with raw_transactions.relation(CART_COLUMNS) as lines:  # the last baskets, found in SQL
        carts = last_baskets(lines)
    recommender = published_recommender(als_model, bpr_model, association_rules, carts, config)
    del carts
    changed = changed_customers(context, warehouse, [key(GROUP, "als_model"), key(GROUP, "bpr_model")])
    merge = changed is not None and warehouse.has_table(GROUP, "user_recommendations")
    users = None
    if merge:  # incremental run: only the customers whose model rows changed
        labels = pa.array(recommender.users.values)
        users = labels.filter(pc.is_in(labels.cast(pa.string()), value_set=changed))
        if len(users) == 0:
            context.add_output_metadata({"refresh": "incremental", "customers_refreshed": 0, "rows_replaced": 0})
            return None
    names = {"user_id": "customer_id", "item_id": "product_id"}
    columns = ["customer_id", "rank", "product_id", "score", "model_score", "rule_score", "source"]
    shares: dict[str, int] = {}
    customers = [0]

    def chunks():
        batches = iter_recommend_for_users(
            recommender, n=config.top_n, chunk_size=config.chunk_customers,
            users=None if users is None else users.to_numpy(zero_copy_only=False),
        )  # fmt: skip
        for chunk in batches:
            chunk = chunk.rename_columns([names.get(c, c) for c in chunk.column_names]).select(columns)
            chunk = chunk.set_column(1, "rank", chunk["rank"].cast(pa.int32()))
            for row in chunk.group_by("source").aggregate([("source", "count")]).to_pylist():
                shares[row["source"]] = shares.get(row["source"], 0) + row["source_count"]
            customers[0] += len(pc.unique(chunk["customer_id"]))  # chunks hold disjoint customers
            yield chunk

    def metadata() -> dict:
        return {f"from_{source}": count for source, count in shares.items()} | {
            "customers": customers[0], "missing_embeddings": recommender.missing_embeddings
        }

    if not merge:
        return TableStream(chunks(), metadata=metadata)  # at least one chunk: the model has users
    ranked = pa.concat_tables(list(chunks()))  # only the changed customers: small
    replaced = merge_rows(warehouse, GROUP, "user_recommendations", "customer_id", changed, ranked)
    total = warehouse.scalar(f"select count(*) from {GROUP}.user_recommendations")
    context.add_output_metadata(
        metadata()
        | {"refresh": "incremental", "customers_refreshed": len(users), "rows_replaced": replaced,
           "rows_inserted": len(ranked), "dagster/row_count": dg.MetadataValue.int(int(total))}
    )  # fmt: skip
    return None
