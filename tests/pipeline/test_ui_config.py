"""The launchpad's view of the project: typed choices rejected before a run, every field described."""

import typing
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from rusket_assets.assets import baskets, personalization
from rusket_assets.assets.common import CONFIGS
from rusket_assets.definitions import build_definitions
from rusket_assets.resources import ColumnMapping, SourceLocation, SyntheticStore, TransactionSource

SMALL = {"n_customers": 200, "n_products": 60, "n_categories": 6, "n_days": 20, "n_lines": 2_000, "seed": 1}


def build(tmp: Path) -> dg.Definitions:
    return build_definitions(
        warehouse_path=str(tmp / "warehouse.duckdb"),
        lancedb_uri=str(tmp / "lancedb"),
        models_path=str(tmp / "models"),
        source=TransactionSource(store=SMALL),
    )


def test_choices_match_the_library():
    from rusket_core.factorization.bpr import LOSSES, SCHEDULES
    from rusket_core.mining import METRICS

    assert set(typing.get_args(personalization.Weight)) == set(personalization.WEIGHTS)
    assert set(typing.get_args(personalization.BPRLoss)) == set(LOSSES)
    assert set(typing.get_args(personalization.BPRSchedule)) == set(SCHEDULES)
    assert set(typing.get_args(baskets.RuleMetric)) == set(METRICS)


@pytest.mark.parametrize(
    ("op", "field", "value"),
    [
        ("personalization__als_model", "weight", "price"),
        ("personalization__bpr_model", "loss", "hinge"),
        ("personalization__bpr_model", "schedule", "cosine"),
        ("baskets__association_rules", "metric", "confidance"),
    ],
)
def test_bad_choice_fails_config_validation(tmp_path, op, field, value):
    job = build(tmp_path).resolve_job_def("refresh_all")
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{field}.*not in enum type"):
        dg.validate_run_config(job, {"ops": {op: {"config": {field: value}}}})


@pytest.mark.parametrize(("field", "config"), [("kind", {"location": {"kind": "excel"}}), ("returns", {"returns": "keep"})])
def test_bad_source_choice_fails_config_validation(tmp_path, field, config):
    from rusket_assets.source import RETURN_POLICIES

    fields = TransactionSource.model_fields
    assert set(typing.get_args(fields["returns"].annotation)) == set(RETURN_POLICIES)
    job = build(tmp_path).resolve_job_def("refresh_all")
    with pytest.raises(dg.DagsterInvalidConfigError, match=f"{field}.*not in enum type"):
        dg.validate_run_config(job, {"resources": {"source": {"config": config}}})


def test_bad_choice_rejected_before_any_asset_runs(tmp_path):
    """A run with weight: price never starts: the tables of the previous run stay as they were."""
    defs = build(tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    ingest = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection={dg.AssetKey(["ingest", "raw_transactions"]), dg.AssetKey(["ingest", "products"])}
    )
    assert ingest.execute_in_process(instance=instance).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        before = con.sql("select * from ingest.products order by product_id").fetchall()
        tables_before = con.sql("select table_schema, table_name from information_schema.tables").fetchall()
    bad = {"ops": {"personalization__als_model": {"config": {"weight": "price"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="weight"):
        defs.resolve_job_def("refresh_all").execute_in_process(run_config=bad, instance=instance)
    assert len(instance.get_runs()) == 1  # only the ingest run: the bad one never started
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        assert con.sql("select * from ingest.products order by product_id").fetchall() == before
        assert con.sql("select table_schema, table_name from information_schema.tables").fetchall() == tables_before


def _config_classes():
    """The Config class of every asset that takes one (registered by the group decorators)."""
    return sorted(set(CONFIGS.values()), key=lambda cls: cls.__name__)


def test_every_config_field_is_described_in_plain_text():
    classes = [*_config_classes(), TransactionSource, SourceLocation, ColumnMapping, SyntheticStore]
    assert len(classes) >= 12
    for cls in classes:
        assert cls.__doc__ and "``" not in cls.__doc__, cls.__name__
        for name, field in cls.model_fields.items():
            if cls is personalization.EvaluationConfig:  # owned by the evaluation work; described there
                continue
            assert field.description, f"{cls.__name__}.{name} has no description"
            assert "``" not in field.description and "\n" not in field.description, f"{cls.__name__}.{name}"


def test_asset_and_check_descriptions_have_no_rst_markup(tmp_path):
    defs = build(tmp_path)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description
        assert description, key
        assert "``" not in description and ":func:" not in description, key
    for check in defs.asset_checks or []:
        for spec in check.check_specs:
            assert spec.description and "``" not in spec.description, spec.name


def test_every_asset_has_owner_domain_freshness_and_code_version(tmp_path):
    from rusket_assets.assets.common import DOMAINS, OWNERS

    graph = build(tmp_path).resolve_asset_graph()
    keys = list(graph.get_all_asset_keys())
    assert len(keys) >= 18
    for key in keys:
        node = graph.get(key)
        assert list(node.owners) == OWNERS, key
        assert node.tags.get("domain") == DOMAINS[key.path[0]], key
        assert node.code_version and len(node.code_version) == 12, key
        assert node.freshness_policy is not None, key
    assert len({graph.get(key).code_version for key in keys}) == len(keys)  # one per function body


def test_code_version_follows_the_code_not_the_docstring():
    from rusket_assets.assets.common import code_version

    def a(x):
        """One text."""
        return x + 1

    def b(x):
        """Another text."""
        return x + 1

    def c(x):
        return x + 2

    assert code_version(a) == code_version(b) != code_version(c)


def test_preview_shows_nulls_as_empty_cells():
    import pyarrow as pa

    from rusket_assets.io import markdown_table

    lines = markdown_table(pa.table({"a": [1, None], "b": [None, "x"]})).splitlines()
    assert lines[2:] == ["| 1 |  |", "|  | x |"]


def test_out_of_range_value_fails_the_first_step_and_writes_nothing(tmp_path):
    """A range error in a late asset's config (vectors) stops the run at its first step."""
    from rusket_assets.assets.common import CONFIGS

    assert set(CONFIGS) >= {"personalization__als_model", "personalization__bpr_model", "vectors__item_vectors"}
    defs = build(tmp_path)
    bad = {"ops": {"vectors__item_vectors": {"config": {"keep_versions_hours": -1.0}},
                   "personalization__bpr_model": {"config": {"learning_rate": 0.0}}}}  # fmt: skip
    result = defs.resolve_job_def("refresh_all").execute_in_process(
        run_config=bad, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["ingest__raw_transactions"]
    message = failures[0].step_failure_data.error.cause.message
    assert "keep_versions_hours" in message and "learning_rate" in message
    assert not result.get_asset_materialization_events()
    assert not (tmp_path / "warehouse.duckdb").exists()
