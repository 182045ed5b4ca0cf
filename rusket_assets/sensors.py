"""Sensor on the daily folder: a new (or rewritten) day file requests that day's partition."""

from __future__ import annotations

import json
import os

import dagster as dg

from rusket_assets.assets.daily import DailyFiles, daily_partitions
from rusket_assets.assets.daily import daily_ingest as daily_ingest_job


def file_stamp(path: str) -> str:
    """A file's identity in the cursor: path, size and modification time (a rewrite is a new file)."""
    stat = os.stat(path)
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


@dg.sensor(
    job=daily_ingest_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Watch the daily folder (DailyFiles.path): each new or rewritten day file requests its day's "
    "partition of ingest.daily_orders. The cursor holds the files seen.",
)
def daily_files_sensor(context: dg.SensorEvaluationContext, daily_files: DailyFiles) -> dg.SensorResult:
    """Request the partitions of the files that appeared (or changed) since the last tick."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    stamps = {}
    for path, day in daily_files.files().items():
        try:
            stamps[file_stamp(path)] = day
        except FileNotFoundError:  # removed while listing
            continue
    valid = set(daily_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    new = {s: d for s, d in stamps.items() if s not in seen}
    outside = sorted({d for d in new.values() if d not in valid})
    if outside:
        context.log.warning(f"daily files for days outside the partitions ({daily_partitions.start}..): {outside}")
    days = sorted({d for d in new.values() if d in valid})
    requests = [
        dg.RunRequest(partition_key=day, run_key=f"{day}:" + ",".join(sorted(s for s, d in new.items() if d == day)))
        for day in days
    ]
    cursor = json.dumps(sorted(seen & stamps.keys() | stamps.keys()))
    if not requests:
        return dg.SensorResult(skip_reason=f"no new daily file in {daily_files.path}", cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)
