"""Personalization group: ALS and BPR models, their factors, holdout evaluation and similar items."""

import time
from typing import Any, Literal

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import (
    ALS_GATES,
    MODEL_IO,
    group_asset,
    key,
    lookup,
    upstream,
    with_rank,
)
from rusket_assets.engine import Engine
from rusket_assets.holdout_fit import fit_with_holdout, holdout_model_name
from rusket_assets.incremental import (
    built_from,
    changed_customers,
    diff_lines,
    in_transaction,
    merge_rows,
    mergeable,
    model_name,
    reached,
    refresh,
    refresh_mode,
    refresh_model,
    rows_of,
)
from rusket_assets.interactions import WarehouseTable, engine_input
from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.streaming import TableStream

# Closed choices (tests check they match the library's own lists).
Weight = Literal["quantity", "revenue", "count"]
BPRLoss = Literal["logistic", "rational"]
BPRSchedule = Literal["linear", "constant"]


class ALSConfig(dg.Config):
    """Implicit ALS hyper-parameters."""

    factors: int = Field(default=64, ge=1, description="Length of each customer and product vector.")
    iterations: int = Field(default=15, ge=0, description="Alternating sweeps (customers, then products).")
    alpha: float = Field(default=40.0, ge=0.0, description="Confidence scale: confidence = 1 + alpha * weight.")
    regularization: float = Field(default=0.01, ge=0.0, description="L2 penalty on the factors.")
    weight: Weight = Field(default="quantity", description="Interaction strength: quantity, revenue or count (lines).")
    random_state: int = Field(default=42, description="Seed of the initial factors (same seed, same model).")
    warm_iterations: int = Field(
        default=0, ge=0, description="Incremental runs: sweeps over all interactions after the fold-in (0: fold-in only)."
    )


class BPRConfig(dg.Config):
    """BPR hyper-parameters."""

    factors: int = Field(default=64, ge=1, description="Length of each customer and product vector.")
    iterations: int = Field(
        default=50,
        ge=0,
        description="Epochs; each takes as many SGD steps as there are interactions (fit time grows linearly with them).",
    )
    learning_rate: float = Field(default=0.05, gt=0.0, description="SGD step size in the first epoch.")
    regularization: float = Field(default=0.01, ge=0.0, description="L2 penalty applied at every SGD step.")
    loss: BPRLoss = Field(
        default="rational",
        description="Pair loss: rational (ranked better at 50 epochs than logistic at 100 on the 1M/3M-line "
        "benchmark sets) or logistic (BPR-Opt, better on the small bundled store); compare both in "
        "model_evaluation (compare_bpr_losses) on your data.",
    )
    schedule: BPRSchedule = Field(default="linear", description="Learning rate over epochs: linear (to 0) or constant.")
    random_state: int = Field(default=42, description="Seed of the initial factors and the sample streams.")
    deterministic: bool = Field(
        default=True,
        description="Same seed, same factors whatever the thread timing (fixed user blocks, item changes merged "
        "after every round of a fixed number of steps); off = Hogwild threads, faster but results vary run to run.",
    )
    warm_iterations: int = Field(
        default=0, ge=0, description="Incremental runs: epochs over all interactions after the fold-in (0: fold-in only)."
    )


class EvaluationConfig(dg.Config):
    """Holdout evaluation: cut-off, share of each customer's items held out, seed and sample size."""

    k: int = Field(default=10, ge=1, description="Cut-off of the ranking metrics (precision@k, ...).")
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Share of (customer, product) pairs held out, by a seeded hash of the pair (a pair keeps its side as days are added).",
    )  # fmt: skip
    random_state: int = Field(default=42, description="Seed of the split hash and of the customer sample.")
    sample_customers: int = Field(
        default=20_000, ge=1,
        description="About this many customers are sampled (seeded hash of the customer below a cut chosen at a full "
        "rebuild); only their test pairs are held out from the models and scored.",
    )  # fmt: skip
    shared_fit_max_share: float = Field(
        default=0.03, ge=0.0, le=1.0,
        description="The published models are the holdout models with the held-out lines folded in (one fit per model) "
        "while those lines are at most this share of all lines (their item factors miss only those); above it "
        "(e.g. the bundled store, whose sample covers every customer) they are fitted on all lines separately.",
    )  # fmt: skip
    compare_bpr_losses: bool = Field(default=False, description="Also score BPR with the other pair loss (row bpr_<loss>).")
    incremental_sample: int = Field(
        default=2_000, ge=1,
        description="Incremental runs: the first of the sampled customers always scored, besides the sampled "
        "customers whose holdout model rows changed (the gate compares the published blend with popularity on them).",
    )  # fmt: skip


class RecommendationConfig(dg.Config):
    """Batch recommendations: top-N per customer and the blend of model, embeddings and rules."""

    n: int = Field(default=10, ge=1, description="Recommendations per customer.")
    als_share: float = Field(
        default=0.7, ge=0.0, le=1.0,
        description="Share of ALS scores in the model part; the rest is BPR-embedding similarity (the library's Recommender alpha=).",
    )
    rules_weight: float = Field(default=0.3, description="Weight of rule confidence (last basket as cart).")
    chunk_customers: int = Field(
        default=50_000, ge=1, description="Customers scored and written per chunk (memory holds one chunk)."
    )
    rule_changes: bool = Field(
        default=False,
        description="Incremental runs: also recompute the customers whose last basket matches a rule that changed "
        "(exact, but a day moves most rules' confidence, so that is most customers). Off: only customers whose "
        "history or model rows changed; the others keep add-ons of older rules until the next full run.",
    )


class SimilarItemsConfig(dg.Config):
    """Similar items per product."""

    n: int = Field(default=10, ge=1, description="Similar products listed per product.")


GROUP = "personalization"
asset = group_asset(GROUP)
RAW = {"raw_transactions": upstream("ingest", "raw_transactions")}
WEIGHTS = {"quantity": "quantity", "revenue": "revenue", "count": None}
INTERACTION_COLUMNS = ["customer_id", "product_id", "quantity", "revenue"]


def _interaction_lines(raw_transactions: WarehouseTable, weight_col: str | None):
    """A DuckDB relation over the customer, product (and weight) columns: encoded in SQL by the models."""
    return raw_transactions.relation(["customer_id", "product_id", *([weight_col] if weight_col else [])])


def _lines_diff(con, raw_transactions: WarehouseTable, weight_col: str | None, where: str = "true"):
    """The diff of a saved model to today's lines of ``raw_transactions`` matching ``where`` (in DuckDB on ``con``)."""
    columns = ", ".join(["customer_id", "product_id", *([weight_col] if weight_col else [])])
    source = f"select {columns} from {raw_transactions.name} where {where}"
    return lambda previous: diff_lines(con, source, previous)


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

    One fit serves the evaluation too (`rusket_assets.holdout_fit`): ALS is trained on every line but
    the sampled customers' held-out pairs and saved as the holdout model; the published model is that
    model with those customers' rows re-solved exactly from their whole history (items fixed). When the
    held-out lines are more than `shared_fit_max_share` (model_evaluation's config) of all lines the
    published model is fitted on all lines separately; metadata `evaluation_fit` says which ran.
    With engine=spark the published model is fitted on Spark and model_evaluation fits the holdout twin.
    In an incremental run (tag `rusket/refresh=incremental`) the saved model is updated instead:
    changed customers folded in, new products added, then `warm_iterations` sweeps (rusket_assets.incremental);
    metadata `training_loss` (a sum over every interaction) is reported by full runs only.
    """
    from rusket_core import ALS

    start = time.perf_counter()
    params = {
        "user_col": "customer_id", "item_col": "product_id", "rating_col": _weight_column(config.weight),
        "factors": config.factors, "iterations": config.iterations, "alpha": config.alpha,
        "regularization": config.regularization, "random_state": config.random_state,
    }  # fmt: skip

    def separate():
        with _interaction_lines(raw_transactions, params["rating_col"]) as lines, warehouse.connect() as con:
            return refresh_model(
                context, lambda: ALS.from_transactions(lines.limit(1), **params),
                lambda: engine.fit_als(engine_input(raw_transactions, lines, engine), **params), models, warehouse,
                config.warm_iterations, _lines_diff(con, raw_transactions, params["rating_col"]),
            )  # fmt: skip

    if engine.is_spark:  # the holdout twin is fitted locally by model_evaluation
        model = separate()
    else:
        model = fit_with_holdout(
            context, "als", lambda lines: ALS.from_transactions(lines, **params), separate, models, warehouse,
            raw_transactions, _run_config(context, "model_evaluation", EvaluationConfig),
            ["customer_id", "product_id", *([params["rating_col"]] if params["rating_col"] else [])], config.warm_iterations,
        )  # fmt: skip
    context.add_output_metadata(
        {
            "training_seconds": time.perf_counter() - start,
            "customers": len(model.users),
            "products": len(model.items),
            "factors": model.factors,
            # a sum over every interaction: reported by full runs only, not by the day's update
            **({"training_loss": model.training_loss()} if refresh_mode(context) == "full" else {}),
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
    steps; it takes longer than lock-free Hogwild threads at about the same holdout precision
    (benchmarks/RESULTS.md, "Deterministic BPR").
    One fit serves the evaluation too, as for `als_model`: the holdout model, and the published model
    derived from it by seeded SGD passes over the sampled customers' whole rows (items fixed).
    In an incremental run the saved model's changed customers are folded in (SGD over their rows,
    items fixed; new products by SGD over their buyers, customers fixed) plus `warm_iterations`
    epochs (rusket_assets.incremental).
    """
    from rusket_core import BPR

    start = time.perf_counter()

    def build(lines):
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
            random_state=config.random_state,
            deterministic=config.deterministic,
        )

    def separate():
        with _interaction_lines(raw_transactions, None) as lines, warehouse.connect() as con:  # encoded in SQL
            return refresh_model(context, lambda: build(lines.limit(1)), lambda: build(lines).fit(), models, warehouse,
                                 config.warm_iterations, _lines_diff(con, raw_transactions, None))  # fmt: skip

    model = fit_with_holdout(
        context, "bpr", build, separate, models, warehouse, raw_transactions,
        _run_config(context, "model_evaluation", EvaluationConfig), ["customer_id", "product_id"], config.warm_iterations,
    )  # fmt: skip
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
def user_factors(context: dg.AssetExecutionContext, warehouse: Warehouse, models: ModelStore, als_model) -> TableStream | None:
    """ALS customer vectors: customer_id (source type) and vector FLOAT[factors].

    In an incremental run only the customers whose ALS rows changed (new ones included) are replaced
    (`merge_rows`, one transaction); the others keep their rows, which the fold-in left as they were.
    The table is rewritten instead when it was not built from the model version this run updated.
    """
    from rusket_core.export import factor_batches
    from rusket_core.frames import fixed_size_list

    model_key = key(GROUP, "als_model")
    context.add_output_metadata(built_from(models, [model_key]))
    changes = mergeable(context, warehouse, [model_key])
    rows = None if changes is None else rows_of(als_model.users.values, changes[model_name(model_key)].customers)
    if rows is not None and len(rows) == len(als_model.users):  # a warm pass changed every row
        rows = None
    if rows is None or not warehouse.has_table(GROUP, "user_factors"):
        batches = factor_batches(als_model, kind="user")  # written chunk by chunk
        return TableStream(pa.table({"customer_id": b["label"], "vector": b["vector"]}) for b in batches)
    table = pa.table({"customer_id": pa.array(als_model.users.values[rows]),
                      "vector": fixed_size_list(als_model.user_factors[rows])})  # fmt: skip
    replaced = merge_rows(warehouse, GROUP, "user_factors", "customer_id", table["customer_id"], table)
    total = warehouse.scalar(f"select count(*) from {GROUP}.user_factors")
    context.add_output_metadata({"refresh": "incremental", "customers_refreshed": len(rows), "rows_replaced": replaced,
                                 "dagster/row_count": dg.MetadataValue.int(int(total))})  # fmt: skip
    return None


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


def _spark_recommendations(engine: Engine, recommender, config: RecommendationConfig, warehouse: Warehouse, names, columns):
    """``user_recommendations`` computed on Spark (rusket_core.spark.recommend_for_users), as a lakehouse table."""
    from pyspark.sql import functions as F

    from rusket_assets.lakehouse import SparkTable
    from rusket_core.spark import recommend_for_users

    frame = recommend_for_users(recommender, n=config.n, spark=engine.session(), num_partitions=engine.n_partitions(),
                                chunk_size=config.chunk_customers)  # fmt: skip
    back = {v: k for k, v in names.items()}
    frame = frame.select(*[F.col(back.get(c, c)).alias(c) for c in columns]).withColumn("rank", F.col("rank").cast("int"))

    def metadata() -> dict:
        table = f"{GROUP}.user_recommendations"
        shares = warehouse.query(f"select source, count(*) as n from {table} group by source").to_pylist()
        customers = warehouse.scalar(f"select count(distinct customer_id) from {table}")
        return {f"from_{row['source']}": row["n"] for row in shares} | {
            "customers": customers, "missing_embeddings": recommender.missing_embeddings, **engine.metadata()
        }

    return SparkTable(frame, engine.lakehouse_path, metadata)


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


def _run_config(context: dg.AssetExecutionContext, asset_name: str, cls: type[dg.Config]) -> dg.Config:
    """This run's config of another asset of the group (defaults when the run does not set it)."""
    op = key(GROUP, asset_name).to_python_identifier()
    given = (context.run.run_config.get("ops") or {}).get(op) or {}
    return cls(**(given.get("config") or {}))


#: the holdout twin of each published factor model: (asset, its config class)
HOLDOUT_MODELS = {"als": ("als_model", ALSConfig), "bpr": ("bpr_model", BPRConfig)}


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
    models: ModelStore,
    warehouse: Warehouse,
) -> pa.Table:
    """Holdout ranking quality of ALS, BPR, popularity and the published hybrid, on one split.

    A seeded hash of each (customer, product) pair puts all its lines in train or test, and a seeded
    hash of the customer samples about `sample_customers` customers (`rusket_assets.holdout`); only
    the sampled customers' test pairs are held out, and a pair and a customer keep their side as days
    are appended. The holdout ALS and BPR (the published parameters, trained on every other line) are
    saved by `als_model` / `bpr_model` from the fit the published models share
    (`rusket_assets.holdout_fit`) and loaded here; when one is missing or was not saved in this run on
    this split (e.g. ALS on Spark) it is fitted here (in an incremental run updated like the published
    model when that was updated). The blend that `user_recommendations` publishes
    (`published_recommender`: same rules, last-basket carts from the train lines and this run's
    weights) is built from them; popularity is fitted on the holdout ALS's training pairs. All are
    scored by the same `evaluate` on the test lines of the sampled customers with pairs on both
    sides: precision, recall, ndcg, MAP at k, and catalogue coverage.

    The holdout models follow exactly the update path of the shipped models (refit, or fold-in of
    the customers whose train lines grew, new products added, `warm_iterations`), so the blocking
    gate judges what that path produces. After incremental updates of both only the sampled
    customers whose holdout rows changed and the first `incremental_sample` are scored.
    With `compare_bpr_losses` a row `bpr_<loss>` scores BPR refitted with the other pair loss.
    """
    from rusket_assets.holdout import holdout_split
    from rusket_assets.holdout_fit import (
        changed_of,
        holdout_diff,
        holdout_record,
        run_split,
        save_holdout,
    )
    from rusket_assets.io import load_model
    from rusket_core.encoding import encode_transactions
    from rusket_core.evaluation import evaluate
    from rusket_core.factorization.bpr import LOSSES
    from rusket_core.popularity import PopularityRecommender

    published = {"als": als_model, "bpr": bpr_model}
    fitted, seconds, info, updates = {}, {}, {}, {}
    columns = sorted({*INTERACTION_COLUMNS, *CART_COLUMNS})
    start = time.perf_counter()
    split = run_split(context, models, raw_transactions, config)
    with holdout_split(raw_transactions, columns, "customer_id", "product_id", split["test_fraction"], split["seed"],
                       split["cut"]) as (train, test, n_customers, sample_train, sample):  # fmt: skip
        info["split_seconds"] = time.perf_counter() - start
        encodings: dict = {}

        def encoded(rating_col: str | None):
            """The train lines encoded in SQL once (the weighted encoding serves unweighted models too)."""
            weighted = als_model.rating_col if rating_col is None else rating_col
            if weighted not in encodings:
                encodings[weighted] = encode_transactions(train, "customer_id", "product_id", weight_col=weighted)
            return encodings[weighted]

        for name, (asset_name, config_cls) in HOLDOUT_MODELS.items():
            model = published[name]
            start = time.perf_counter()
            record = holdout_record(models, name)
            same_split = record is not None and record["split"] == split
            if same_split and record["run_id"] == context.run.run_id:  # saved by this run's model asset
                fitted[name], updates[name] = load_model(models.path, holdout_model_name(name)), changed_of(record)
                seconds[name] = record["metadata"]["seconds"]
                info |= {f"holdout_{name} {k}": v for k, v in record["metadata"].items() if k != "seconds"}
                info[f"holdout_{name} fitted_by"] = asset_name
                continue

            def build(model=model):
                return type(model).from_encoded(encoded(model.rating_col), "customer_id", "product_id",
                                                model.rating_col, **model.get_params())  # fmt: skip

            # incremental only when the published model was updated (not refitted) in this run
            incremental = same_split and changed_customers(context, warehouse, [key(GROUP, asset_name)]) is not None
            warm = _run_config(context, asset_name, config_cls).warm_iterations
            with warehouse.connect() as con:  # the update's diff: the saved holdout model against today's train lines
                model_columns = ["customer_id", "product_id", *([model.rating_col] if model.rating_col else [])]
                diff, days, _, _, _ = holdout_diff(con, raw_transactions, split, model_columns, record if incremental else None)
                result = refresh(incremental, models, holdout_model_name(name), lambda m=model: type(m)(**m.get_params()),
                                 lambda b=build: b().fit(), warm, diff)  # fmt: skip
            fitted[name], seconds[name] = result.model, time.perf_counter() - start
            updates[name] = result.changed
            save_holdout(models, name, result, split, context.run.run_id, result.metadata | {"seconds": seconds[name]}, days)
            info |= {f"holdout_{name} {k}": v for k, v in result.metadata.items()}
            info[f"holdout_{name} fitted_by"] = "model_evaluation"
        start = time.perf_counter()
        # popularity counts the train pairs: the holdout ALS's training matrix (weights dropped)
        fitted["popularity"] = PopularityRecommender.from_encoded(fitted["als"].user_items, "customer_id", "product_id").fit()
        seconds["popularity"] = time.perf_counter() - start
        candidates = []
        if config.compare_bpr_losses:
            other = next(loss for loss in LOSSES if loss != bpr_model.loss)
            candidates.append((f"bpr_{other}", bpr_model, {"loss": other}))
        for name, model, changes in candidates:
            start = time.perf_counter()
            fitted[name] = type(model).from_encoded(
                encoded(model.rating_col), "customer_id", "product_id", model.rating_col,
                **{**model.get_params(), **changes},
            ).fit()  # fmt: skip
            seconds[name] = time.perf_counter() - start
        encodings.clear()  # the matrices stay referenced by the fitted models only
        start = time.perf_counter()
        blend = published_recommender(
            fitted["als"], fitted["bpr"], association_rules, last_baskets(sample_train),
            _run_config(context, "user_recommendations", RecommendationConfig),
        )  # fmt: skip
        seconds["published"] = seconds["als"] + seconds["bpr"] + time.perf_counter() - start
        order = ["als", "bpr", *(n for n, _, _ in candidates), "popularity"]
        fitted = {name: fitted[name] for name in order} | {"published": blend}
    test, info["evaluation_scope"] = _scored_lines(test, sample, updates, config.incremental_sample)
    start = time.perf_counter()
    rows = []
    for name, recommender in fitted.items():
        metrics = evaluate(recommender, test=test, k=config.k)
        rows.append({"model": name, **{m: metrics[m] for m in METRICS},
                     "k": config.k, "n_users": metrics["n_users"], "fit_seconds": seconds[name]})  # fmt: skip
    info["evaluate_seconds"] = time.perf_counter() - start
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
        | {"test_interactions": test.num_rows, "sampled_customers": n_customers,
           "evaluated_customers": int(rows[0]["n_users"]) if rows else 0}
        | info
    )
    return table


def _scored_lines(test: pa.Table, sample: pa.Array, updates: dict, fixed: int) -> tuple[pa.Table, str]:
    """The test lines scored and what they cover: all sampled customers' after a refit of a holdout
    model; after incremental updates of both, those of the sampled customers whose holdout rows
    changed plus the first ``fixed`` of the sample (so the gate's cost follows the day)."""
    if any(changed is None for changed in updates.values()):
        return test, "all sampled customers"
    changed = pa.concat_arrays([c.cast(pa.string()) for c in updates.values()])
    text = sample.cast(pa.string())
    keep = pc.or_(pc.is_in(text, value_set=changed), pa.array(np.arange(len(sample)) < fixed))
    scored = sample.filter(keep)
    lines = test.filter(pc.is_in(test["customer_id"], value_set=scored.cast(test.schema.field("customer_id").type)))
    n_changed = int(pc.sum(pc.is_in(text, value_set=changed)).as_py() or 0)
    return lines, f"incremental: {n_changed} sampled customers with changed holdout rows + the first {min(fixed, len(sample))} sampled"


def _items_to_recompute(warehouse: Warehouse, model, products: pa.Array, n: int) -> np.ndarray:
    """Model rows of the products whose similar-items list may differ after a fold-in that added
    ``products`` (the known products' factors unchanged): the new ones, and those a new one is at
    least as similar to as their n-th listed product (:func:`rusket_assets.incremental.reached`)."""
    new = rows_of(model.items.values, products)
    rescore = np.zeros(len(model.items), dtype=bool)
    rescore[new] = True
    if len(new):
        unit = model._unit_item_factors()
        best = (unit @ unit[new].T).max(axis=1)
        rescore |= reached(warehouse, GROUP, "similar_items", "product_id", model.items.values, best, n)
    return np.flatnonzero(rescore)


@asset(
    kinds={"duckdb"},
    ins={"als_model": upstream(GROUP, "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def similar_items(
    context: dg.AssetExecutionContext, config: SimilarItemsConfig, engine: Engine, als_model, warehouse: Warehouse,
    models: ModelStore,
) -> Any:  # TableStream | SparkTable | None
    """For each product, the most similar products by cosine of ALS item factors (itself excluded).

    With engine=spark the rows are computed and written by the executors (parquet files under the
    engine's lakehouse path, published as a DuckDB view: rusket_assets.lakehouse).
    In an incremental run (ALS updated by fold-in from the version this table was built from, same
    `n`) the known products' factors are as before, so only the new products and the products a new
    one is at least as similar to as their n-th listed product are recomputed and merged; with no
    new product the table stays as it is."""
    from rusket_core.chunks import iter_batch_similar_items

    names = ["product_id", "similar_product_id", "score"]
    if engine.is_spark:
        return engine.spark_table(engine.similar_items(als_model, config.n).toDF(*names, "rank"))
    model_key = key(GROUP, "als_model")
    changes = mergeable(context, warehouse, [model_key], same={"n": config.n})
    context.add_output_metadata(built_from(models, [model_key]) | {"n": config.n})
    change = None if changes is None else changes[model_name(model_key)]
    if change is None or len(change.products) == len(als_model.items) or not warehouse.has_table(GROUP, "similar_items"):
        chunks = iter_batch_similar_items(als_model, n=config.n)  # written chunk by chunk
        ranked = (with_rank(chunk.rename_columns(names), "product_id") for chunk in chunks)
        return TableStream(ranked, metadata=engine.metadata)
    labels = als_model.items.values[_items_to_recompute(warehouse, als_model, change.products, config.n)]
    new = change.products
    replaced = 0
    if len(labels):
        rows = with_rank(als_model.batch_similar_items(n=config.n, items=labels, format="arrow").rename_columns(names), "product_id")
        replaced = merge_rows(warehouse, GROUP, "similar_items", "product_id", pa.array(labels), rows)
    total = warehouse.scalar(f"select count(*) from {GROUP}.similar_items")
    context.add_output_metadata({"refresh": "incremental", "products_recomputed": len(labels), "new_products": len(new),
                                 "rows_replaced": replaced, "dagster/row_count": dg.MetadataValue.int(int(total))})  # fmt: skip
    return None


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
    models: ModelStore,
    engine: Engine,
) -> Any:  # TableStream | SparkTable | None
    """Top-N unseen products per customer: a hybrid of ALS, BPR-embedding similarity and basket rules.

    `published_recommender` (also scored by `model_evaluation`) with each customer's last basket
    as the cart. Model part:
    ALS scores blended with the cosine similarity of BPR item vectors to the customer's strongest
    product (`alpha`), normalised to [0, 1]. Rules part: rule add-ons for the last basket, scored
    by confidence. Final score = (1 - rules_weight) * model + rules_weight * rules; `source` says
    which parts proposed the product. Products the customer already bought are never listed.
    In an incremental run only the customers whose model rows changed, and those whose last basket
    holds the antecedents of a rule added, removed or with another confidence since the rules the
    table was built from (kept in `recommendation_rules`), are recomputed and merged into the table
    (their rows deleted and inserted in one transaction, with the rules kept); the others stay as they
    are, unless the table was not built from the model versions this run updated and those rules
    (then all are recomputed).
    With engine=spark every customer is scored on Spark (partitions of customers, the same blend and
    rule merge per partition), written as parquet with a DuckDB view over it.
    """
    from rusket_core.chunks import iter_recommend_for_users

    model_keys = [key(GROUP, "als_model"), key(GROUP, "bpr_model")]
    rules_from = context.run.run_id  # the version of the rules this table is built from (recommendation_rules)
    context.add_output_metadata(built_from(models, model_keys) | {"rules_from": rules_from})
    context.add_output_metadata({"rule_changes": config.rule_changes})
    same = {"rules_from": _rules_used(warehouse), "rule_changes": config.rule_changes}  # switching it rewrites the table
    changes = mergeable(context, warehouse, model_keys, same=same)
    merge = changes is not None and not engine.is_spark and warehouse.has_table(GROUP, "user_recommendations")
    by_model = None if not merge else pa.array(sorted({c for ch in changes.values() for c in ch.customers.to_pylist()}), pa.string())
    # the last baskets, found in SQL: only the changed customers' when only they are scored
    only = by_model if merge and not config.rule_changes else None
    with raw_transactions.relation(CART_COLUMNS, where=None if only is None else _customers_in(only)) as lines:
        carts = last_baskets(lines)
    if merge:  # incremental run: the customers whose model rows or whose matching rules changed
        by_rules, rules_changed = _rule_changed_customers(warehouse, carts) if config.rule_changes else (pa.array([], pa.string()), 0)
        changed = pa.array(sorted(set(by_model.to_pylist()) | set(by_rules.to_pylist())), pa.string())
    recommender = published_recommender(als_model, bpr_model, association_rules, carts, config)
    del carts
    users = None
    if merge:
        labels = pa.array(recommender.users.values)
        users = labels.filter(pc.is_in(labels.cast(pa.string()), value_set=changed))
        info = {"refresh": "incremental", "customers_refreshed": len(users), "customers_rule_changes": len(by_rules),
                "rules_changed": rules_changed}  # fmt: skip
        if len(users) == 0:
            with warehouse.connect() as con:
                in_transaction(con, _keep_rules_used(rules_from))
            context.add_output_metadata(info | {"rows_replaced": 0})
            return None
    else:
        with warehouse.connect() as con:  # a full rewrite: the table stream is written after this returns
            in_transaction(con, _keep_rules_used(rules_from))
    names = {"user_id": "customer_id", "item_id": "product_id"}
    columns = ["customer_id", "rank", "product_id", "score", "model_score", "rule_score", "source"]
    if engine.is_spark:
        return _spark_recommendations(engine, recommender, config, warehouse, names, columns)
    shares: dict[str, int] = {}
    customers = [0]

    def chunks():
        batches = iter_recommend_for_users(
            recommender, n=config.n, chunk_size=config.chunk_customers,
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
    replaced = merge_rows(warehouse, GROUP, "user_recommendations", "customer_id", changed, ranked, then=_keep_rules_used(rules_from))
    total = warehouse.scalar(f"select count(*) from {GROUP}.user_recommendations")
    context.add_output_metadata(
        metadata() | info
        | {"rows_replaced": replaced, "rows_inserted": len(ranked), "dagster/row_count": dg.MetadataValue.int(int(total))}
    )  # fmt: skip
    return None


def _customers_in(ids: pa.Array) -> str:
    """SQL condition: ``customer_id`` (compared as text) is one of ``ids``."""
    listed = ", ".join("'" + str(v).replace("'", "''") + "'" for v in ids.to_pylist()) or "null"
    return f"cast(customer_id as VARCHAR) in ({listed})"


RULES_USED = f"{GROUP}.recommendation_rules"  # the rules user_recommendations was last built from
RULES = "baskets.association_rules"


def _keep_rules_used(run_id: str) -> list[tuple[str, list]]:
    """Statements replacing ``recommendation_rules`` with the current rules (antecedents, consequents,
    confidence) and a row with no rule naming the run that wrote them (``rules_from``)."""
    return [(f"create or replace table {RULES_USED} as select antecedents, consequents, confidence, ? as run_id "
             f"from {RULES} union all select null, null, null, ?", [run_id, run_id])]  # fmt: skip


def _rules_used(warehouse: Warehouse) -> str:
    """The run whose rules ``recommendation_rules`` holds ("" when there are none)."""
    if not warehouse.has_table(GROUP, "recommendation_rules"):
        return ""
    return warehouse.scalar(f"select coalesce(any_value(run_id), '') from {RULES_USED} where antecedents is null")


def _rule_changed_customers(warehouse: Warehouse, carts: pa.Table) -> tuple[pa.Array, int]:
    """Customers (as text) whose cart (last basket) holds every antecedent of a rule added, removed or
    whose confidence changed since ``recommendation_rules``, i.e. whose rule add-ons may differ (the
    merge takes each item's best matching confidence; lift only breaks ties, and moves with the
    basket count for every rule alike); and the number of such rules. In SQL, old rules against new."""
    import uuid

    view = f"__rusket_carts_{uuid.uuid4().hex}"
    changed = f"""
        select coalesce(o.antecedents, n.antecedents) as ant
        from (select * from {RULES_USED} where antecedents is not null) o
        full join {RULES} n on o.antecedents = n.antecedents and o.consequents = n.consequents
        where o.confidence is distinct from n.confidence"""
    with warehouse.connect() as con:
        con.register(view, carts.select(["customer_id", "product_id"]))
        try:
            rules = con.sql(f"select count(*) from ({changed})").fetchall()[0][0]
            customers = con.sql(f"""
                with items as (select ant, len(ant) as n, unnest(ant) as product_id from (select distinct ant from ({changed})))
                select distinct cast(customer_id as VARCHAR) as k from (
                    select c.customer_id from {view} c join items i on c.product_id = i.product_id
                    group by c.customer_id, i.ant, i.n having count(distinct i.product_id) = i.n)
                order by k""").to_arrow_table()["k"]
        finally:
            con.unregister(view)
    return customers.combine_chunks() if customers.num_chunks else pa.array([], pa.string()), int(rules)
