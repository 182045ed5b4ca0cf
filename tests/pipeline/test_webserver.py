"""The Dagster UI serves the workspace: every asset of the Definitions is listed over GraphQL."""

import os
import signal
import subprocess
import sys
import time

import requests

from rusket_assets.definitions import defs
from tests.conftest import ROOT, free_port, make_dagster_home

QUERY = "{ assetNodes { assetKey { path } groupName } }"


def test_webserver_lists_every_asset(tmp_path):
    home = make_dagster_home(tmp_path)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "RUSKET_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        listed: set[tuple[str, ...]] = set()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not listed:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                reply = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                nodes = reply.json()["data"]["assetNodes"]
                listed = {tuple(node["assetKey"]["path"]) for node in nodes}
            except (requests.ConnectionError, KeyError, TypeError, ValueError):
                pass
            if not listed:
                time.sleep(1)
        expected = {tuple(key.path) for key in defs.resolve_all_asset_keys()}
        assert listed == expected
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
