"""One run at a time per warehouse, and no run left blocking others after its process died.

Every run that opens the warehouse takes an exclusive lock on ``<warehouse>.run-lock`` for its whole
duration (``Warehouse.setup_for_execution``), whatever started it: ``./dev run``, ``dagster job
execute``, the UI or a schedule. The operating system drops the lock when the process dies, even on
kill -9, so a dead run can never block the next one. A run waiting for the lock says at WARNING which
run and process hold it. Once it holds the lock, the run fails every other in-progress run recorded
against the same warehouse whose process is gone and frees their pool slots, so the Dagster history
and the run queue no longer count them; the ``release_dead_runs`` sensor does the same for the
daemon's run queue between runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WAREHOUSE_TAG = "rusket/warehouse"
PID_TAG = "rusket/pid"
HOST_TAG = "rusket/host"
PROCESS_START_TAG = "rusket/process_start"
_IN_PROGRESS = ("STARTING", "STARTED", "CANCELING")
_held: dict[str, list[Any]] = {}  # lock path -> [open file, holders] (nested resources share one lock)
_held_guard = threading.Lock()


def lock_path(warehouse_path: str) -> str:
    """The run-lock file beside the warehouse."""
    return str(Path(warehouse_path).resolve()) + ".run-lock"


def process_start(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), "" if unknown; tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tags(pid: int | None = None) -> dict[str, str]:
    """Run tags identifying the process executing a run."""
    pid = pid or os.getpid()
    return {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), PROCESS_START_TAG: process_start(pid)}


def process_gone(tags: dict[str, str]) -> bool:
    """Whether the process named by a run's tags no longer exists (False when it cannot be told)."""
    pid = int(tags.get(PID_TAG, "0") or 0)
    if not pid or tags.get(HOST_TAG, socket.gethostname()) != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    started = tags.get(PROCESS_START_TAG)
    return bool(started) and process_start(pid) not in ("", started)


def holder(warehouse_path: str) -> dict[str, Any]:
    """What the lock file says about the run holding it (run id, pid, host), {} if nothing."""
    try:
        return json.loads(Path(lock_path(warehouse_path)).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def try_lock(warehouse_path: str, run_id: str | None = None) -> bool:
    """Take the warehouse's run lock without waiting (re-entrant within this process)."""
    path = lock_path(warehouse_path)
    with _held_guard:
        if path in _held:
            _held[path][1] += 1
            return True
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 (kept open while the lock is held)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.truncate(0)
        handle.write(json.dumps({"run_id": run_id, **process_tags()}))
        handle.flush()
        _held[path] = [handle, 1]
        return True


def holds(warehouse_path: str) -> int:
    """How many holds this process has on the warehouse's run lock (0: not held here)."""
    with _held_guard:
        entry = _held.get(lock_path(warehouse_path))
        return entry[1] if entry else 0


def unlock(warehouse_path: str) -> None:
    """Release one hold of the warehouse's run lock."""
    path = lock_path(warehouse_path)
    with _held_guard:
        entry = _held.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].truncate(0)
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            entry[0].close()
            del _held[path]


def wait_for_lock(
    warehouse_path: str, run_id: str | None, warn: Callable[[str], None], timeout: float
) -> None:
    """Take the run lock, saying (``warn``) which run holds it while waiting; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay, next_warning = 0.2, 0.0
    while not try_lock(warehouse_path, run_id):
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(
                f"warehouse {warehouse_path} is still in use by {describe(holder(warehouse_path))} after "
                f"{timeout:.0f} s (Warehouse.run_wait_seconds); try again when that run has finished"
            )
        if now >= next_warning:
            warn(
                f"waiting for warehouse {warehouse_path}: in use by {describe(holder(warehouse_path))}; "
                "this run starts when that one ends (one run at a time per warehouse)"
            )
            next_warning = now + 60.0
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def describe(info: dict[str, Any]) -> str:
    """``run <id> (process <pid> on <host>)`` from lock-file or tag contents."""
    if not info:
        return "another process"
    return f"run {info.get('run_id') or '?'} (process {info.get(PID_TAG, '?')} on {info.get(HOST_TAG, '?')})"


def release_dead_runs(instance: Any, warehouse_path: str | None = None, current_run_id: str | None = None) -> list[str]:
    """Fail in-progress runs whose process is gone and free their pool slots; return their ids.

    A run counts as dead when its host is this one and its process (pid and start time) no longer
    exists, or, for runs recorded against ``warehouse_path`` while this process holds that
    warehouse's run lock, when it is another run: a live one would still hold the lock.
    """
    import dagster as dg

    statuses = [dg.DagsterRunStatus[s] for s in _IN_PROGRESS]
    holding = warehouse_path is not None and lock_path(warehouse_path) in _held
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
        if run.run_id == current_run_id or PID_TAG not in run.tags:
            continue
        same_warehouse = holding and run.tags.get(WAREHOUSE_TAG) == str(Path(warehouse_path).resolve())
        if not (process_gone(run.tags) or (same_warehouse and run.tags.get(HOST_TAG) != socket.gethostname())):
            continue
        instance.report_run_failed(
            run, message=f"{describe({'run_id': run.run_id, **run.tags})} ended without finishing this run"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released
