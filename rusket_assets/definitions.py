"""The project's single Dagster ``Definitions`` (loaded by workspace.yaml and ``dagster dev``)."""

from __future__ import annotations

import dagster as dg

from rusket_assets.assets import analytics, baskets, daily, ingest, personalization, vectors
from rusket_assets.engine import Engine
from rusket_assets.io import DuckDBTableIOManager, ModelIOManager
from rusket_assets.resources import (
    DEFAULT_LANCEDB,
    DEFAULT_MODELS,
    DEFAULT_WAREHOUSE,
    ModelStore,
    TransactionSource,
    VectorStore,
    Warehouse,
)

ASSET_MODULES = [ingest, baskets, personalization, analytics, vectors]


def all_assets() -> list[dg.AssetsDefinition]:
    """Every asset of the graph."""
    return list(dg.load_assets_from_modules(ASSET_MODULES))


def build_resources(
    warehouse_path: str = DEFAULT_WAREHOUSE,
    lancedb_uri: str = DEFAULT_LANCEDB,
    models_path: str = DEFAULT_MODELS,
    source: TransactionSource | None = None,
    engine: Engine | None = None,
    daily_files: daily.DailyFiles | None = None,
) -> dict[str, object]:
    """Resources bound to the given storage locations and source."""
    warehouse = Warehouse(path=warehouse_path)
    store = ModelStore(path=models_path)
    return {
        "warehouse": warehouse,
        "vectors": VectorStore(uri=lancedb_uri),
        "models": store,
        "source": source or TransactionSource(),
        "daily_files": daily_files or daily.DailyFiles(),
        "engine": engine or Engine(),
        "warehouse_io": DuckDBTableIOManager(warehouse=warehouse),
        "model_io": ModelIOManager(store=store),
    }


def build_definitions(**resource_args: object) -> dg.Definitions:
    """Definitions for the whole graph; arguments as :func:`build_resources` (tests point them at tmp)."""
    from rusket_assets.checks import all_checks
    from rusket_assets.schedules import (
        daily_ingest_schedule,
        incremental_job,
        refresh_job,
        refresh_schedule,
        release_dead_runs,
        weekly_schedule,
    )
    from rusket_assets.sensors import daily_files_sensor, daily_ingest_job

    return dg.Definitions(
        assets=all_assets(),
        asset_checks=all_checks(),
        jobs=[refresh_job, incremental_job, daily_ingest_job],
        schedules=[refresh_schedule, weekly_schedule, daily_ingest_schedule],
        sensors=[release_dead_runs, daily_files_sensor],
        resources=build_resources(**resource_args),  # type: ignore[arg-type]
        # One process per run: steps share the numba JIT cache in memory and open DuckDB in turn.
        executor=dg.in_process_executor,
    )


defs = build_definitions()
