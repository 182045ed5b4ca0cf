"""Refresh schedules of the asset graph (daily incremental, weekly full, daily ingest), and the sensor that clears runs left by dead processes."""

from __future__ import annotations

import dagster as dg

from rusket_assets import runs
from rusket_assets.incremental import REFRESH_TAG
from rusket_assets.resources import Warehouse
from rusket_assets.sensors import daily_ingest_job

GRAPH = dg.AssetSelection.all()

refresh_job = dg.define_asset_job(
    "refresh_all",
    selection=GRAPH,
    description="Materialise every asset (and run its checks) from the configured source.",
)

incremental_job = dg.define_asset_job(
    "refresh_incremental",
    selection=GRAPH,
    tags={REFRESH_TAG: "incremental"},
    description="Materialise the graph, updating ALS/BPR from their saved versions by fold-in of the changed "
    "customers and merging only those customers' recommendations (a full fit where fold-in cannot apply).",
)

refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh",
    job=incremental_job,
    cron_schedule="0 3 * * 1-6",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Incremental refresh Monday to Saturday at 03:00 UTC (run by the daemon that `dagster dev` starts).",
)

weekly_schedule = dg.ScheduleDefinition(
    name="weekly_full_rebuild",
    job=refresh_job,
    cron_schedule="0 3 * * 0",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild every model and table from the whole history on Sundays at 03:00 UTC.",
)

daily_ingest_schedule = dg.build_schedule_from_partitioned_job(
    daily_ingest_job,
    name="daily_ingest_schedule",
    hour_of_day=2,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Load yesterday's partition of ingest.daily_orders at 02:00 UTC (start it when the graph reads "
    "the history table).",
)


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fail runs whose process died (kill -9, crash) and free their pool slots, so the run queue "
    "does not wait for them forever (the daemon's own run monitoring cannot tell for local processes).",
)
def release_dead_runs(context: dg.SensorEvaluationContext, warehouse: Warehouse) -> dg.SkipReason:
    """Sweep runs left in progress by dead processes; never requests a run itself."""
    if runs.try_lock(warehouse.path):
        try:
            released = runs.release_dead_runs(context.instance, warehouse.path)
        finally:
            runs.unlock(warehouse.path)
    else:  # a live run holds the warehouse: only runs whose process is visibly gone
        released = runs.release_dead_runs(context.instance)
    if released:
        return dg.SkipReason(f"marked {len(released)} run(s) failed, their process had ended: {', '.join(released)}")
    return dg.SkipReason("no run left behind by a dead process")
