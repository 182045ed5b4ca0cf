"""Asset checks guarding what downstream users rely on (read from DuckDB with SQL)."""

import dagster as dg

from rusket_assets.assets.common import POOL, key
from rusket_assets.resources import Warehouse

NOT_FINITE = "not list_bool_and(list_transform(vector::FLOAT[], lambda x: isfinite(x)))"


def _finite_factors(table: str, warehouse: Warehouse) -> dg.AssetCheckResult:
    bad, rows, width = warehouse.query(
        f"select count(*) filter (where {NOT_FINITE}), count(*), max(array_length(vector)) from {table}"
    ).to_pylist()[0].values()
    return dg.AssetCheckResult(
        passed=bad == 0 and rows > 0,
        metadata={"rows_with_nan_or_inf": bad, "rows": rows, "factors": width or 0},
    )


@dg.asset_check(asset=key("personalization", "user_factors"), pool=POOL, blocking=True)
def user_factors_finite(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every customer vector is finite (no NaN or inf)."""
    return _finite_factors("personalization.user_factors", warehouse)


@dg.asset_check(asset=key("personalization", "item_factors"), pool=POOL, blocking=True)
def item_factors_finite(warehouse: Warehouse) -> dg.AssetCheckResult:
    """Every product vector is finite (no NaN or inf)."""
    return _finite_factors("personalization.item_factors", warehouse)


@dg.asset_check(asset=key("personalization", "model_evaluation"), pool=POOL, blocking=True)
def als_beats_popularity(warehouse: Warehouse) -> dg.AssetCheckResult:
    """ALS (which feeds the published recommendations) ranks the holdout better than popularity.

    Blocking: when it fails, the recommendations downstream are not refreshed.
    """
    rows = {
        r["model"]: r
        for r in warehouse.query("select * from personalization.model_evaluation").to_pylist()
    }
    als, pop = rows["als"], rows["popularity"]
    passed = als["precision"] > pop["precision"] and als["ndcg"] > pop["ndcg"]
    k = als["k"]
    return dg.AssetCheckResult(
        passed=bool(passed),
        metadata={
            f"precision@{k} als": als["precision"],
            f"precision@{k} popularity": pop["precision"],
            f"ndcg@{k} als": als["ndcg"],
            f"ndcg@{k} popularity": pop["ndcg"],
        },
    )


@dg.asset_check(asset=key("personalization", "model_evaluation"), pool=POOL)
def bpr_beats_popularity(warehouse: Warehouse) -> dg.AssetCheckResult:
    """BPR ranks the holdout better than popularity (a warning only: BPR does not publish)."""
    rows = {
        r["model"]: r
        for r in warehouse.query("select * from personalization.model_evaluation").to_pylist()
    }
    bpr, pop = rows["bpr"], rows["popularity"]
    k = bpr["k"]
    return dg.AssetCheckResult(
        passed=bool(bpr["precision"] > pop["precision"] and bpr["ndcg"] > pop["ndcg"]),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={f"precision@{k} bpr": bpr["precision"], f"precision@{k} popularity": pop["precision"]},
    )


def all_checks() -> list[dg.AssetChecksDefinition]:
    """Every asset check of the project."""
    return [user_factors_finite, item_factors_finite, als_beats_popularity, bpr_beats_popularity]
