"""The graph as the UI shows it: described columns, progress in the run log, gates, reproducible runs."""

from pathlib import Path

import dagster as dg
import lancedb
import pytest

from tests.pipeline.conftest import RUN_CONFIG, build, failure_messages, run, sql

P = "personalization"
# Everything built from the ALS model that a consumer reads (DuckDB tables and LanceDB vectors).
PUBLISHED = {
    dg.AssetKey([P, "similar_items"]),
    dg.AssetKey([P, "user_recommendations"]),
    dg.AssetKey(["baskets", "cart_addons"]),
    dg.AssetKey(["analytics", "cross_sell_potential"]),
    dg.AssetKey(["vectors", "item_vectors"]),
    dg.AssetKey(["vectors", "user_vectors"]),
}
MODEL_STEP = {dg.AssetKey([P, name]) for name in ("als_model", "user_factors", "item_factors", "model_evaluation")}
EVALUATION = [dg.AssetKey(["ingest", "raw_transactions"]), dg.AssetKey(["baskets", "frequent_itemsets"]),
              dg.AssetKey(["baskets", "association_rules"]), dg.AssetKey([P, "als_model"]),
              dg.AssetKey([P, "bpr_model"]), dg.AssetKey([P, "model_evaluation"])]  # fmt: skip
NO_TIMING = "select * exclude (fit_seconds) from personalization.model_evaluation order by model"


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui_graph")
    defs = build(tmp)
    instance = dg.DagsterInstance.ephemeral()
    result = defs.resolve_job_def("refresh_all").execute_in_process(
        run_config=RUN_CONFIG, instance=instance, raise_on_error=False
    )
    assert result.success, failure_messages(result)
    return tmp, defs, result, instance


def test_every_column_of_every_table_is_described(graph):
    _, defs, result, _ = graph
    described = {}
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "dagster/column_schema" in metadata:
            columns = metadata["dagster/column_schema"].schema.columns
            described[event.asset_key] = {c.name: c.description for c in columns}
    tables = {key for key in defs.resolve_all_asset_keys() if not key.path[-1].endswith("_model")}
    assert set(described) == tables
    missing = {key.to_user_string(): [n for n, d in cols.items() if not d] for key, cols in described.items()}
    assert not {k: v for k, v in missing.items() if v}
    assert "in (0, 1]" in described[dg.AssetKey(["baskets", "association_rules"])]["confidence"]


def test_progress_of_long_steps_is_in_the_run_log(graph):
    _, _, result, instance = graph
    logs = {}
    for entry in instance.all_logs(result.run_id):
        if entry.dagster_event is None:  # a context.log message, not a framework event
            logs.setdefault(entry.step_key, []).append(entry.user_message)
    logs = {step: "\n".join(lines) for step, lines in logs.items()}
    assert "rusket_core.mining.fpgrowth: mined " in logs["baskets__frequent_itemsets"]
    assert "ALS fit (400 users" in logs["personalization__als_model"]
    assert "of 6 iterations" in logs["personalization__als_model"]
    assert "of 30 epochs" in logs["personalization__bpr_model"]
    assert "scoring 120 items: 400 of 400 users" in logs["personalization__user_recommendations"]
    assert "LanceDB table item_vectors replaced: 120 rows" in logs["vectors__item_vectors"]


def test_same_config_gives_identical_model_evaluation(graph, tmp_path):
    tmp, *_ = graph
    again = run(build(tmp_path), EVALUATION)
    assert again.success, failure_messages(again)
    first, second = sql(tmp, NO_TIMING), sql(tmp_path, NO_TIMING)
    assert len(first) >= 4 and first == second


def _vectors(tmp: Path, name: str) -> list:
    table = lancedb.connect(str(tmp / "lancedb")).open_table(name).to_arrow()
    return sorted(zip(table["label"].to_pylist(), table["vector"].to_pylist(), strict=True))


def test_a_model_failing_a_blocking_check_publishes_nothing(graph):
    """ALS without training loses to popularity: no table or vector set built from it is replaced."""
    tmp, *_ = graph
    tables = ["personalization.similar_items", "personalization.user_recommendations", "baskets.cart_addons",
              "analytics.cross_sell_potential"]  # fmt: skip
    before = {t: sql(tmp, f"select * from {t} order by all") for t in tables}
    vectors = {name: _vectors(tmp, name) for name in ("item_vectors", "user_vectors")}
    weak = {"ops": {**RUN_CONFIG["ops"], "personalization__als_model": {"config": {"factors": 8, "iterations": 0}}}}
    result = run(build(tmp), MODEL_STEP | PUBLISHED, weak)
    failed = {e.asset_check_key.asset_key for e in result.get_asset_check_evaluations() if not e.passed}
    assert dg.AssetKey([P, "model_evaluation"]) in failed  # the quality gate (checks named by their asset)
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized >= MODEL_STEP and not materialized & PUBLISHED
    assert {t: sql(tmp, f"select * from {t} order by all") for t in tables} == before
    assert {name: _vectors(tmp, name) for name in vectors} == vectors


def test_evaluation_and_training_figures_are_numeric_metadata(graph):
    _, _, result, _ = graph
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    evaluation = metadata["model_evaluation"]
    for name in ("precision@10 als", "recall@10 als", "map@10 bpr", "ndcg@10 popularity", "fit_seconds als"):
        assert isinstance(evaluation[name], dg.FloatMetadataValue), name
    assert isinstance(metadata["bpr_model"]["training_loss"], dg.FloatMetadataValue)
    assert 0 < metadata["bpr_model"]["training_loss"].value < 0.7  # mean -ln sigma(z) below chance (ln 2)


def test_a_model_with_nan_factors_writes_no_factor_table(graph, monkeypatch):
    """The blocking finiteness check runs on the ALS model itself: the factor tables keep their rows."""
    import numpy as np

    from rusket_core import ALS

    tmp, *_ = graph
    fit = ALS._fit

    def broken_fit(self, interactions):
        fit(self, interactions)
        self.item_factors[0, 0] = np.nan

    monkeypatch.setattr(ALS, "_fit", broken_fit)
    tables = ["personalization.user_factors", "personalization.item_factors"]
    before = {t: sql(tmp, f"select * from {t} order by all") for t in tables}
    factors = {dg.AssetKey([P, name]) for name in ("user_factors", "item_factors")}
    result = run(build(tmp), {dg.AssetKey([P, "als_model"])} | factors, RUN_CONFIG)
    failed = {e.asset_check_key.name for e in result.get_asset_check_evaluations() if not e.passed}
    assert "als_model_finite" in failed
    assert not {e.asset_key for e in result.get_asset_materialization_events()} & factors
    assert {t: sql(tmp, f"select * from {t} order by all") for t in tables} == before
