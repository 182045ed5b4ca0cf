"""The asset graph on a small generated store: definitions, runs and warehouse reads shared by the
pipeline tests (and by tests that run the graph in a child process)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb

from rusket_assets.definitions import build_definitions
from rusket_assets.resources import TransactionSource

SMALL = {"n_customers": 400, "n_products": 120, "n_categories": 10, "n_days": 30, "n_lines": 5_000, "seed": 3}
RUN_CONFIG: dict = {
    "ops": {
        # small data: few factors and a mild alpha beat popularity clearly (the blocking check)
        "personalization__als_model": {"config": {"factors": 8, "iterations": 6, "alpha": 10.0, "regularization": 0.1}},
        "personalization__bpr_model": {"config": {"factors": 16, "iterations": 30}},
        "baskets__frequent_itemsets": {"config": {"min_support": 0.004}},
    }
}


def build(tmp: Path, source: TransactionSource | None = None) -> dg.Definitions:
    return build_definitions(
        warehouse_path=str(tmp / "warehouse.duckdb"),
        lancedb_uri=str(tmp / "lancedb"),
        models_path=str(tmp / "models"),
        source=source or TransactionSource(store=SMALL),
    )


def run(defs: dg.Definitions, selection=None, run_config=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("refresh_all")
    if selection is not None:
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(selection))
    return job.execute_in_process(
        run_config=run_config or RUN_CONFIG, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def error_text(error) -> str:
    """The error message with its causes (the user's exception is the cause of Dagster's wrapper)."""
    parts = []
    while error is not None:
        parts.append(error.message.strip())
        error = error.cause
    return " <- ".join(parts)


def failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {e.step_key: error_text(e.step_failure_data.error) for e in result.all_events if e.is_step_failure}


def sql(tmp: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
        return con.sql(query).fetchall()
