"""Runs launched the way an operator does: GraphQL `launchRun`, and "Materialize all" in a real browser.

One `dagster dev` (webserver + daemon, this project's dagster.yaml) serves all tests, with the graph on
a smaller store (tests/pipeline/webserver_store.py) so a default "Materialize all" stays short. The browser is
Debian's headless Chromium driven by Playwright for Python; the test is skipped only when no
`chromium` is installed (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rusket_assets.definitions import defs
from tests.conftest import ROOT, free_port, make_dagster_home
from tests.pipeline.conftest import RUN_CONFIG, SMALL

STORE = Path(__file__).with_name("webserver_store.py")
SELECTOR = {"repositoryLocationName": "rusket_assets", "repositoryName": "__repository__", "jobName": "refresh_all"}
LAUNCH = """mutation ($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on PythonError { message }
} }"""
STATUS = "query ($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status stepStats { endTime } } } }"
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"
CHECKS = """{ assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks {
  name executionForLatestMaterialization { runId status } } } } } }"""
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


class Dagster:
    """A `dagster dev` process and its GraphQL endpoint."""

    def __init__(self, tmp: Path) -> None:
        home = make_dagster_home(tmp)
        workspace = tmp / "workspace.yaml"
        workspace.write_text(
            "load_from:\n  - python_file:\n"
            f"      relative_path: {STORE}\n"
            "      attribute: defs\n      location_name: rusket_assets\n"
            f"      working_directory: {ROOT}\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "DAGSTER_HOME": str(home), "RUSKET_DATA_DIR": str(tmp / "data")}
        self.log = open(tmp / "dagster_dev.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.tmp = tmp

    def query(self, query: str, **variables) -> dict:
        reply = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        body = reply.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait_until_loaded(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.tmp / "dagster_dev.log").read_text()[-3000:]
            try:
                if self.query("{ assetNodes { id } }")["assetNodes"]:
                    return
            except (requests.ConnectionError, requests.Timeout, ValueError, AssertionError, KeyError):
                pass
            time.sleep(1)
        raise TimeoutError("dagster dev did not serve the workspace")

    def wait_for_run(self, run_id: str, idle: float = 300, limit: float = 3600) -> str:
        """The run's final status; gives up after ``idle`` seconds without a step finishing (a loaded
        machine only slows the run down) or ``limit`` seconds in all."""
        start = last = time.monotonic()
        finished = -1
        while time.monotonic() - last < idle and time.monotonic() - start < limit:
            run = self.query(STATUS, id=run_id)["runOrError"]
            if run["status"] in DONE:
                return run["status"]
            done = sum(step["endTime"] is not None for step in run.get("stepStats") or [])
            if done != finished:
                finished, last = done, time.monotonic()
            time.sleep(1)
        raise TimeoutError(f"run {run_id} still not finished: {run['status']}, {finished} steps done")

    def runs(self) -> list[dict]:
        return self.query(RUNS)["runsOrError"]["results"]

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture(scope="module")
def dagster(tmp_path_factory):
    server = Dagster(tmp_path_factory.mktemp("dagster_dev"))
    try:
        server.wait_until_loaded()
        yield server
    finally:
        server.stop()


def launch(server: Dagster, run_config: dict) -> dict:
    params = {"selector": SELECTOR, "runConfigData": run_config, "mode": "default"}
    return server.query(LAUNCH, params=params)["launchRun"]


def test_launchpad_refuses_a_bad_choice_without_starting_a_run(dagster):
    bad = {"ops": {"personalization__als_model": {"config": {"weight": "price"}}}}
    reply = launch(dagster, bad)
    assert reply["__typename"] == "RunConfigValidationInvalid"
    assert any("weight" in error["message"] for error in reply["errors"])
    assert dagster.runs() == []


def test_graphql_launch_of_refresh_all_passes_every_check(dagster):
    run_config = {**RUN_CONFIG, "resources": {"source": {"config": {"store": SMALL}}}}
    reply = launch(dagster, run_config)
    assert reply["__typename"] == "LaunchRunSuccess", reply
    run_id = reply["run"]["runId"]
    assert dagster.wait_for_run(run_id) == "SUCCESS", (dagster.tmp / "dagster_dev.log").read_text()[-3000:]
    checks = {}
    for node in dagster.query(CHECKS)["assetNodes"]:
        for check in node["assetChecksOrError"].get("checks", []):
            checks[(tuple(node["assetKey"]["path"]), check["name"])] = check["executionForLatestMaterialization"]
    expected = {(tuple(spec.asset_key.path), spec.name) for c in defs.asset_checks for spec in c.check_specs}
    assert set(checks) == expected
    assert all(e is not None and e["runId"] == run_id and e["status"] == "SUCCEEDED" for e in checks.values()), checks


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium installed (apt-get install chromium; .ci/run does)")
def test_materialize_all_in_a_real_browser(dagster):
    from playwright.sync_api import sync_playwright

    before = {run["runId"] for run in dagster.runs()}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            # a fresh instance greets the first visitor with a community sign-up dialog: skip it
            page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                     lambda: page.get_by_role("button", name="Skip").click())  # fmt: skip
            page.goto(f"{dagster.url}/asset-groups", wait_until="domcontentloaded")
            page.get_by_role("button", name="Materialize all").click(timeout=60_000)
            deadline = time.monotonic() + 60
            new = set()
            while not new and time.monotonic() < deadline:
                new = {run["runId"] for run in dagster.runs()} - before
                time.sleep(0.5)
            assert len(new) == 1, "Materialize all did not launch a run"
            (run_id,) = new
            page.goto(f"{dagster.url}/runs/{run_id}", wait_until="domcontentloaded")
            assert dagster.wait_for_run(run_id) == "SUCCESS", (dagster.tmp / "dagster_dev.log").read_text()[-3000:]
            page.reload(wait_until="domcontentloaded")
            page.get_by_text("Success", exact=True).first.wait_for(timeout=30_000)
        finally:
            browser.close()
