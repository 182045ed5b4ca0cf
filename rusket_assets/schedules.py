"""Daily refresh of the whole asset graph."""

from __future__ import annotations

import dagster as dg

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
