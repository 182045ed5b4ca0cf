"""Run configuration of the assets (editable in the launchpad).

Every closed choice is a Literal, so the launchpad autocompletes it and rejects a bad value before
the run starts; value ranges (ge/gt) are checked for the whole run at the start of its first step
(`assets.common.check_run_config`), so nothing is written either; every field carries a one-line
description shown in the UI.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field

# Closed choices (tests check they match the library's own lists).
Weight = Literal["quantity", "revenue", "count"]
BPRLoss = Literal["logistic", "rational"]
BPRSchedule = Literal["linear", "constant"]
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

    top_n: int = Field(default=5, ge=1, description="Add-ons listed per product.")


class GraphConfig(dg.Config):
    """Product graph: rules kept as edges (lift at least min_lift) and the Louvain seed."""

    min_lift: float = Field(default=1.0, description="Rules with a lower lift are not edges of the graph.")
    seed: int = Field(default=0, description="Seed of the Louvain community detection (same seed, same communities).")


class SubstitutesConfig(dg.Config):
    """Substitutes: product pairs bought together less than chance."""

    max_lift: float = Field(default=0.8, description="Pairs whose rule lift is below this are substitutes.")


class ALSConfig(dg.Config):
    """Implicit ALS hyper-parameters."""

    factors: int = Field(default=64, ge=1, description="Length of each customer and product vector.")
    iterations: int = Field(default=15, ge=0, description="Alternating sweeps (customers, then products).")
    alpha: float = Field(default=40.0, ge=0.0, description="Confidence scale: confidence = 1 + alpha * weight.")
    regularization: float = Field(default=0.01, ge=0.0, description="L2 penalty on the factors.")
    weight: Weight = Field(default="quantity", description="Interaction strength: quantity, revenue or count (lines).")
    seed: int = Field(default=42, description="Seed of the initial factors (same seed, same model).")
    warm_iterations: int = Field(
        default=0, ge=0, description="Incremental runs: sweeps over all interactions after the fold-in (0: fold-in only)."
    )


class BPRConfig(dg.Config):
    """BPR hyper-parameters."""

    factors: int = Field(default=64, ge=1, description="Length of each customer and product vector.")
    iterations: int = Field(default=100, ge=0, description="Epochs; each takes as many SGD steps as there are interactions.")
    learning_rate: float = Field(default=0.05, gt=0.0, description="SGD step size in the first epoch.")
    regularization: float = Field(default=0.01, ge=0.0, description="L2 penalty applied at every SGD step.")
    loss: BPRLoss = Field(
        default="logistic",
        description="Pair loss: logistic (BPR-Opt) or rational. Logistic ranks better on the bundled store "
        "(holdout precision@10 0.092 vs 0.089); compare in model_evaluation on your data.",
    )
    schedule: BPRSchedule = Field(default="linear", description="Learning rate over epochs: linear (to 0) or constant.")
    seed: int = Field(default=42, description="Seed of the initial factors and the sample streams.")
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
    seed: int = Field(default=42, description="Seed of the split hash and of the customer sample.")
    sample_customers: int = Field(
        default=20_000, ge=1, description="Customers (smallest seeded hash) whose held-out items are scored."
    )
    compare_bpr_losses: bool = Field(default=False, description="Also score BPR with the other pair loss (row bpr_<loss>).")


class RecommendationConfig(dg.Config):
    """Batch recommendations: top-N per customer and the blend of model, embeddings and rules."""

    top_n: int = Field(default=10, ge=1, description="Recommendations per customer.")
    als_share: float = Field(
        default=0.7, ge=0.0, le=1.0,
        description="Share of ALS scores in the model part; the rest is BPR-embedding similarity (the library's Recommender alpha=).",
    )
    rules_weight: float = Field(default=0.3, description="Weight of rule confidence (last basket as cart).")
    chunk_customers: int = Field(
        default=50_000, ge=1, description="Customers scored and written per chunk (memory holds one chunk)."
    )


class SimilarItemsConfig(dg.Config):
    """Similar items per product."""

    top_n: int = Field(default=10, ge=1, description="Similar products listed per product.")


class PotentialConfig(dg.Config):
    """Cross-sell potential: top categories per customer."""

    top_n: int = Field(default=3, ge=1, description="Target categories (or products) listed per customer.")


class VectorsConfig(dg.Config):
    """LanceDB export: normalise vectors (cosine search) or keep raw factors."""

    normalize: bool = Field(default=True, description="Store unit-length vectors (cosine search); off keeps raw factors.")
    keep_versions_hours: float = Field(
        default=1.0, ge=0.0, description="Older LanceDB table versions (and their files) are pruned after this long."
    )
