"""The Definitions object, the workspace, the instance config and the refresh schedule."""

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import yaml

from rusket_assets.assets.common import POOL
from rusket_assets.definitions import defs
from rusket_assets.incremental import REFRESH_TAG
from rusket_assets.schedules import refresh_schedule, weekly_schedule
from tests.conftest import ROOT

GROUPS = {"ingest", "baskets", "personalization", "analytics", "vectors"}


def test_definitions_validate_and_use_group_schemas():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert dg.AssetKey(["ingest", "raw_transactions"]) in keys
    for key in keys:
        node = graph.get(key)
        assert node.group_name == key.path[0], key  # group = key prefix = DuckDB schema
        assert node.group_name in GROUPS
        assert node.assets_def.op.pool == POOL, key  # one DuckDB writer at a time


def test_workspace_points_at_the_definitions():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    target = workspace["load_from"][0]["python_module"]
    assert (target["module_name"], target["attribute"]) == ("rusket_assets.definitions", "defs")


def test_instance_config_keeps_state_in_project_and_limits_duckdb_writers(dagster_home):
    home = dagster_home
    with dg.DagsterInstance.get() as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
        # the run queue, not the steps, waits for the pool: the UI shows a second run queued
        assert instance.get_concurrency_config().pool_config.pool_granularity.value == "run"
        assert instance.run_storage.__class__.__name__.startswith("Sqlite")
        instance.run_storage.has_run("nothing")  # touches the storage so the files exist
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["telemetry"]["enabled"] is False
    assert list(home.rglob("*.db")), "sqlite storage should live inside DAGSTER_HOME"


def test_daily_schedule_requests_a_run_of_the_whole_graph():
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 1, 2, 3, 0, tzinfo=dt.UTC)
    )
    result = refresh_schedule.evaluate_tick(context)
    assert len(result.run_requests) == 1
    assert refresh_schedule.cron_schedule == "0 3 * * 1-6"  # incremental on weekdays and Saturday
    job = defs.resolve_job_def(refresh_schedule.job_name)
    assert job.tags[REFRESH_TAG] == "incremental"
    assert set(job.asset_layer.executable_asset_keys) == set(defs.resolve_all_asset_keys())
    # the full rebuild on Sundays
    assert weekly_schedule.cron_schedule == "0 3 * * 0"
    full = defs.resolve_job_def(weekly_schedule.job_name)
    assert REFRESH_TAG not in full.tags
    assert set(full.asset_layer.executable_asset_keys) == set(defs.resolve_all_asset_keys())


def test_main_releases_pool_slots_of_a_killed_run(dagster_home):
    from rusket_assets.runs import PID_TAG
    from rusket_assets.runs import release_dead_runs as release_stale_runs

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pids = {"killed": int(finished.stdout), "alive": os.getpid()}
    with dg.DagsterInstance.get() as instance:
        runs = {}
        for name, pid in pids.items():
            run = dg.DagsterRun(
                job_name="refresh_all", status=dg.DagsterRunStatus.STARTED,
                tags={"rusket/launcher": "main", PID_TAG: str(pid)},
            )  # fmt: skip
            runs[name] = instance.add_run(run)
        storage = instance.event_log_storage
        assert storage.initialize_concurrency_limit_to_default(POOL)  # one slot, from dagster.yaml
        storage.claim_concurrency_slot(POOL, runs["killed"].run_id, "ingest__raw_transactions")
        assert storage.get_concurrency_info(POOL).claimed_slots
        assert release_stale_runs(instance) == [runs["killed"].run_id]
        assert not storage.get_concurrency_info(POOL).claimed_slots
        assert instance.get_run_by_id(runs["killed"].run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(runs["alive"].run_id).status == dg.DagsterRunStatus.STARTED
