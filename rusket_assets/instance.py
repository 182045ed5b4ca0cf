"""The Dagster instance of runs launched from Python (``./dev run``, benchmarks): where it lives, runs
left by dead processes, and the steps' wall-clock times read from its event log."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg

from rusket_assets.resources import PROJECT_ROOT
from rusket_assets.runs import release_dead_runs

#: the project's instance (runs show up in ``dagster dev``) unless DAGSTER_HOME points elsewhere
DEFAULT_HOME = PROJECT_ROOT / "dagster_home"


@contextmanager
def project_instance(instance: dg.DagsterInstance | None = None) -> Iterator[dg.DagsterInstance]:
    """``instance``, else the project's (``DAGSTER_HOME``, default ``<repo>/dagster_home``, disposed at
    the end); runs whose process died are marked failed first, so their pool slots are free."""
    own = instance is None
    if own:
        os.environ.setdefault("DAGSTER_HOME", str(DEFAULT_HOME))
        instance = dg.DagsterInstance.get()
    try:
        for run_id in release_dead_runs(instance):
            print(f"marked run {run_id} failed: its process ended without finishing it", file=sys.stderr)
        yield instance
    finally:
        if own:
            instance.dispose()


def step_seconds(instance: Any, run_id: str) -> dict[str, float]:
    """Wall-clock seconds of each step of a run, from its event log."""
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            seconds[event.step_key] = entry.timestamp - started.get(event.step_key, entry.timestamp)
    return seconds
