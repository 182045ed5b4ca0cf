"""Runs in separate processes: a killed run never blocks the next one, and runs on one warehouse never mix."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest

from rusket_assets import runs
from rusket_assets.resources import Warehouse
from rusket_assets.sample_data import generate_store
from rusket_assets.schedules import release_dead_runs
from tests.conftest import ROOT

# The real ingest assets plus `hold`, which keeps its run (and the warehouse) busy until the test
# creates the file "go", then records how many customers the warehouse's raw_transactions has.
JOB = '''
import os, sys, time
import dagster as dg
from rusket_assets.assets.common import POOL
from rusket_assets.assets.ingest import products, raw_transactions
from rusket_assets.definitions import build_resources
from rusket_assets.resources import TransactionSource, Warehouse

DATA = os.environ["RUSKET_TEST_DATA"]

@dg.asset(deps=[products.key], pool=POOL)
def hold(warehouse: Warehouse) -> dg.MaterializeResult:
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(DATA, "go")) and time.monotonic() < deadline:
        time.sleep(0.05)
    customers = warehouse.scalar("select count(distinct customer_id) from ingest.raw_transactions")
    return dg.MaterializeResult(metadata={"customers": customers})

source = TransactionSource(location={"kind": "parquet", "path": os.path.join(DATA, os.environ["RUSKET_TEST_SOURCE"] + ".parquet")})
held = [hold] if os.environ.get("RUSKET_TEST_HOLD") else []
defs = dg.Definitions(
    assets=[raw_transactions, products, hold],
    jobs=[dg.define_asset_job("refresh_all", [raw_transactions, products, *held])],
    resources=build_resources(os.path.join(DATA, "warehouse.duckdb"), os.path.join(DATA, "lancedb"),
                              os.path.join(DATA, "models"), source),
    executor=dg.in_process_executor,
)

if __name__ == "__main__":
    from rusket_assets.main import materialise_all

    ok, _ = materialise_all("WARNING", defs=defs)
    sys.exit(0 if ok else 1)
'''
CUSTOMERS = {"a": 30, "b": 50}


@pytest.fixture
def home(tmp_path, dagster_home):
    (tmp_path / "job.py").write_text(JOB)
    for name, n in CUSTOMERS.items():
        store = generate_store(n_customers=n, n_products=40, n_categories=8, n_days=5, n_lines=300, seed=n)
        pq.write_table(store, tmp_path / f"{name}.parquet")
    return tmp_path


def start(tmp, how: str, source: str = "a", hold: bool = False) -> subprocess.Popen:
    """A run of the job in its own process: through main (`./dev run`) or `dagster job execute`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RUSKET_TEST_DATA": str(tmp), "RUSKET_TEST_SOURCE": source,
           "RUSKET_TEST_HOLD": "1" if hold else ""}  # fmt: skip
    if how == "main":
        command = [sys.executable, str(tmp / "job.py")]
    else:
        dagster = str(Path(sys.executable).with_name("dagster"))
        command = [dagster, "job", "execute", "-f", str(tmp / "job.py"), "-a", "defs", "-j", "refresh_all"]
    return subprocess.Popen(command, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, what: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_holding(instance) -> dg.DagsterRun | None:
    """The run whose `hold` step has started."""
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        steps = instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        if any(r.event_log_entry.step_key == "hold" for r in steps):
            return record.dagster_run
    return None


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=180)
    assert process.returncode == 0, out[-3000:]
    return out


def test_killed_or_interrupted_runs_block_no_later_run(home):
    warehouse = str(home / "warehouse.duckdb")
    with dg.DagsterInstance.get() as instance:
        # kill -9 a `dagster job execute` run mid-materialisation: the next `./dev run` (main) completes
        victim = start(home, "job", hold=True)
        killed = wait_for(lambda: run_holding(instance), "the run to reach its hold step")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
        out = finish(start(home, "main", source="b"))
        assert f"marked run {killed.run_id} failed" in out
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        with duckdb.connect(warehouse, read_only=True) as con:
            assert con.sql("select count(distinct customer_id) from ingest.raw_transactions").fetchall() == [(50,)]

        # SIGTERM a main run: it stops, exits 1, is marked failed; then `dagster job execute` completes
        process = start(home, "main", hold=True)
        interrupted = wait_for(lambda: run_holding(instance), "the run to reach its hold step")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 1
        assert "FAILED hold: interrupted (Ctrl-C or SIGTERM)" in out
        assert "Sample query" not in out
        assert instance.get_run_by_id(interrupted.run_id).status == dg.DagsterRunStatus.FAILURE
        assert runs.holder(warehouse) == {}
        finish(start(home, "job", source="a"))
        with duckdb.connect(warehouse, read_only=True) as con:
            assert con.sql("select count(distinct customer_id) from ingest.raw_transactions").fetchall() == [(30,)]


def test_sensor_fails_runs_of_dead_processes_for_the_run_queue(home):
    """What the daemon does between runs, so a dead run does not hold the UI's run queue."""
    warehouse = str(home / "warehouse.duckdb")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with dg.DagsterInstance.get() as instance:
        dead, alive = (
            instance.add_run(dg.DagsterRun(job_name="refresh_all", status=dg.DagsterRunStatus.STARTED,
                                           tags={**runs.process_tags(pid), runs.PROCESS_START_TAG: ""}))
            for pid in (int(ended.stdout), os.getpid())
        )  # fmt: skip
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default("duckdb")
        storage.claim_concurrency_slot("duckdb", dead.run_id, "ingest__raw_transactions")
        with dg.build_sensor_context(instance=instance, resources={"warehouse": Warehouse(path=warehouse)}) as context:
            assert release_dead_runs(context).skip_message.endswith(dead.run_id)
            assert release_dead_runs(context).skip_message == "no run left behind by a dead process"
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
        assert not storage.get_concurrency_info("duckdb").claimed_slots


def test_second_run_waits_and_reads_its_own_source(home):
    with dg.DagsterInstance.get() as instance:
        first = start(home, "job", source="a", hold=True)
        first_run = wait_for(lambda: run_holding(instance), "the first run to reach its hold step")
        second = start(home, "main", source="b")

        def waiting():
            for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                run_id = record.dagster_run.run_id
                logs = [e.user_message for e in instance.all_logs(run_id) if e.level >= 30]
                if run_id != first_run.run_id and any(first_run.run_id in m and "waiting for warehouse" in m for m in logs):
                    return run_id
            return None

        second_id = wait_for(waiting, "the second run to wait for the first")
        (home / "go").touch()
        finish(first)
        finish(second)
        [held] = [e for e in instance.all_logs(first_run.run_id) if e.step_key == "hold" and e.dagster_event and e.dagster_event.is_step_materialization]
        assert held.dagster_event.step_materialization_data.materialization.metadata["customers"].value == 30
        first_end = max(e.timestamp for e in instance.all_logs(first_run.run_id) if e.dagster_event and e.dagster_event.is_step_success)
        second_start = min(e.timestamp for e in instance.all_logs(second_id) if e.dagster_event and e.dagster_event.is_step_start)
        assert second_start >= first_end
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select count(distinct customer_id) from ingest.raw_transactions").fetchall() == [(50,)]


def test_locked_warehouse_names_the_holder_then_gives_up(tmp_path, caplog):
    path = tmp_path / "warehouse.duckdb"
    duckdb.connect(str(path)).close()
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(path)!r}, read_only=True); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert reader.stdout.readline() == "open\n"
        with (
            caplog.at_level("WARNING"),
            pytest.raises(TimeoutError, match=rf"stayed locked by process {reader.pid} \("),
            Warehouse(path=str(path), lock_timeout_seconds=0.5).connect(),
        ):
            pass
        assert any(f"is locked by process {reader.pid}" in r.getMessage() for r in caplog.records)
    finally:
        reader.communicate("")
    with Warehouse(path=str(path), lock_timeout_seconds=0.5).connect() as con:
        assert con.sql("select 1").fetchall() == [(1,)]


def test_snapshot_readers_never_block_a_run(home):
    from rusket_assets.definitions import build_definitions
    from rusket_assets.resources import TransactionSource

    def ingest(source: str) -> None:
        defs = build_definitions(
            warehouse_path=str(home / "warehouse.duckdb"), lancedb_uri=str(home / "lancedb"), models_path=str(home / "models"),
            source=TransactionSource(location={"kind": "parquet", "path": str(home / f"{source}.parquet")}),
        )
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey(["ingest", "raw_transactions"])})
        assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success

    count = "select count(distinct customer_id) from ingest.raw_transactions"
    ingest("a")
    snapshot = str(home / "warehouse.snapshot.duckdb")
    reader = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb; c = duckdb.connect({snapshot!r}, read_only=True); print(c.sql({count!r}).fetchall()[0][0], flush=True); input(); print(c.sql({count!r}).fetchall()[0][0])"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert reader.stdout.readline() == "30\n"
    ingest("b")  # the snapshot is open in another process: the run is not blocked and publishes a new one
    out, _ = reader.communicate("\n")
    assert out == "30\n"  # the open reader keeps the copy it opened
    with duckdb.connect(snapshot, read_only=True) as con:
        assert con.sql(count).fetchall() == [(50,)]
    assert not list(home.glob("*.tmp"))
