"""Daily refresh of the whole asset graph, and the sensor that clears runs left by dead processes."""

from __future__ import annotations

import dagster as dg

from rusket_assets import runs
from rusket_assets.resources import Warehouse

refresh_job = dg.define_asset_job(
    "refresh_all",
    selection=dg.AssetSelection.all(),
    description="Materialise every asset (and run its checks) from the configured source.",
)

refresh_schedule = dg.ScheduleDefinition(
    name="daily_refresh",
    job=refresh_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Rebuild the graph every day at 03:00 UTC (run by the daemon that `dagster dev` starts).",
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
