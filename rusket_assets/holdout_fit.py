"""One fit per factor model serves both the published model and its holdout twin.

The holdout model is trained on the train lines (every line but the sampled customers' test pairs,
:mod:`rusket_assets.holdout`) and saved under :func:`holdout_model_name` with a record (the split,
the run, the customers whose rows changed, the day marks of its lines) that ``model_evaluation``
checks before scoring it instead of fitting its own. In a full rebuild the published model is that
model with the held-out lines folded in (``partial_fit``: the sampled customers' rows re-solved from
their whole history with the item factors fixed, the exact least-squares rows for ALS, seeded SGD
passes for BPR; products bought only in held-out pairs added from their buyers), so its item factors
miss only those pairs. In an incremental run both models take the same update
(:func:`rusket_assets.incremental.refresh`) from their own saved versions: the holdout model the
day's train lines, the published model the day's lines (held-out ones included), each comparing
only the customers of the days appended since it was saved when no older day changed. When the
held-out lines are more than ``shared_fit_max_share`` of all lines (a small store, where the
sample covers most customers) the published model is fitted on all lines separately instead, as
it would lose too much.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from rusket_assets.holdout import is_held_out, sample_cut
from rusket_assets.incremental import (
    Refresh,
    added_days,
    apply_update,
    customers_of_days,
    days_marks,
    diff_lines,
    model_name,
    record_changes,
    refresh,
    refresh_mode,
)
from rusket_assets.interactions import WarehouseTable
from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.tables import quote

USER, ITEM = "customer_id", "product_id"
SPLIT_FILE = "personalization__model_evaluation__split.json"


def holdout_model_name(name: str) -> str:
    """The model store's name of the holdout model ``name`` ("als" or "bpr")."""
    return f"personalization__model_evaluation__{name}"


def _record_path(models: ModelStore, name: str) -> Path:
    return Path(models.path) / f"{holdout_model_name(name)}.fit.json"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old or the new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def split_signature(config: Any) -> dict:
    """What the held-out lines depend on besides the data and the sample cut (an EvaluationConfig's fields)."""
    import duckdb

    return {"test_fraction": config.test_fraction, "seed": config.random_state,
            "sample_customers": config.sample_customers, "duckdb": duckdb.__version__}  # fmt: skip


def run_split(context: dg.AssetExecutionContext, models: ModelStore, table: WarehouseTable, config: Any) -> dict:
    """This run's split: :func:`split_signature` plus the sample ``cut``. The saved split is kept when
    this run chose it, or in an incremental run when its settings are the same (so the sample stays as
    days are appended); otherwise (a full rebuild, changed settings) the cut is chosen from the data
    (:func:`rusket_assets.holdout.sample_cut`) and saved."""
    signature = split_signature(config)
    path = Path(models.path) / SPLIT_FILE
    saved = _read_json(path) or {}
    split = saved.get("split") or {}
    kept = saved.get("run_id") == context.run.run_id or refresh_mode(context) == "incremental"
    if kept and "cut" in split and {k: v for k, v in split.items() if k != "cut"} == signature:
        return split
    cut = sample_cut(table, USER, ITEM, config.test_fraction, config.random_state, config.sample_customers)
    split = signature | {"cut": cut}
    _write_json(path, {"split": split, "run_id": context.run.run_id})
    return split


def held_out(split: dict) -> str:
    """SQL condition over the order lines: held out by ``split``."""
    return is_held_out(quote(USER), quote(ITEM), split["test_fraction"], split["seed"], split["cut"])


def holdout_record(models: ModelStore, name: str) -> dict | None:
    """The record of the saved holdout model ``name`` (None when there is none or it is not the
    current saved version)."""
    from rusket_assets.io import model_version

    record = _read_json(_record_path(models, name))
    if record is None or record.get("version") != model_version(models.path, holdout_model_name(name)):
        return None
    return record


def save_holdout(
    models: ModelStore, name: str, result: Refresh, split: dict, run_id: str, metadata: dict, days: dict | None = None,
    published: dict | None = None,
) -> None:  # fmt: skip
    """Save holdout model ``name`` and its record (split, run, changed customers, metadata, the
    :func:`~rusket_assets.incremental.day_marks` of the lines it was trained on and, from the model
    asset, ``published``: the run and the day marks of every line, which the published model this run
    saves is trained on); the record is removed first, so a failure in between leaves a model without
    one (refitted next time)."""
    from rusket_assets.io import model_version, save_model

    path = _record_path(models, name)
    path.unlink(missing_ok=True)
    save_model(result.model, models.path, holdout_model_name(name))
    changed = None if result.changed is None else result.changed.cast(pa.string()).to_pylist()
    _write_json(path, {"split": split, "run_id": run_id, "version": model_version(models.path, holdout_model_name(name)),
                       "changed": changed, "metadata": metadata, "days": days, "published": published})  # fmt: skip


def changed_of(record: dict) -> pa.Array | None:
    """The customers (as text) whose holdout rows a record's update changed; None after a full fit."""
    return None if record["changed"] is None else pa.array(record["changed"], pa.string())


def holdout_diff(
    con: Any, table: WarehouseTable, split: dict, columns: list[str], record: dict | None
) -> tuple[Callable, dict, int, int, dict]:
    """The diff of a saved holdout model (its ``record``; None: compare every line) to today's train
    lines of ``table`` (``columns``: the model's user, item[, rating]), on ``con``: restricted to the
    customers of the days appended since when no other day changed; today's day marks to record; how
    many lines the table has and how many are held out; and the day marks of every line (what the
    published model is trained on). One scan counts them all."""
    train = f"not {held_out(split)}"
    (days, every), lines = days_marks(con, table.name, [train, "true"], columns)
    added = added_days(None if record is None else record.get("days"), days)
    customers = None if added is None else customers_of_days(table.name, train, USER, added)
    source = f"select {', '.join(quote(c) for c in columns)} from {table.name} where {train}"
    held = lines - sum(int(n) for n, _ in days.values())
    return (lambda previous: diff_lines(con, source, previous, customers)), days, lines, held, every


def fit_with_holdout(
    context: dg.AssetExecutionContext,
    name: str,
    build: Callable[[Any], Any],
    separate: Callable[[], Any],
    models: ModelStore,
    warehouse: Warehouse,
    table: WarehouseTable,
    config: Any,
    columns: list[str],
    warm_iterations: int,
) -> Any:
    """The published model ``name`` ("als" or "bpr"); its holdout twin is saved on the way.

    ``build(lines)``: an unfitted model over a DuckDB relation of ``columns``; ``separate()``: the
    published model fitted (or refreshed) on all lines, used when the held-out lines are more than
    ``config.shared_fit_max_share`` of them. In an incremental run the holdout model is updated
    (:func:`rusket_assets.incremental.refresh`) when it was trained on this split, and so is the
    saved published model (the day's lines of all its customers, sampled or not); when either cannot
    be, the published model is derived from the holdout model as in a full rebuild."""
    start = time.perf_counter()
    split = run_split(context, models, table, config)
    condition = held_out(split)
    record = holdout_record(models, name)
    same_split = record is not None and record["split"] == split
    incremental = refresh_mode(context) == "incremental" and same_split
    with table.relation(columns, where=f"not {condition}") as train, warehouse.connect() as con:
        # the update compares the saved model with today's train lines in SQL, only the customers of the days
        # appended since when no other day changed; build() then only names the parameters
        diff, days, n_lines, n_held, every = holdout_diff(con, table, split, columns, record if incremental else None)
        share = n_held / max(n_lines, 1)
        shared = share <= config.shared_fit_max_share
        result = refresh(incremental, models, holdout_model_name(name), lambda: build(train.limit(1)), lambda: build(train).fit(),
                         warm_iterations, diff)  # fmt: skip
    seconds = time.perf_counter() - start
    if not same_split and refresh_mode(context) == "incremental":
        result.metadata["full_refresh_reason"] = "the evaluation split changed"
    published_days = _published_days(context, models, record) if incremental else None
    save_holdout(models, name, result, split, context.run.run_id, result.metadata | {"seconds": seconds}, days,
                 {"run_id": context.run.run_id, "days": every})  # fmt: skip
    info = {"evaluation_fit": "shared" if shared else "separate", "held_out_lines": n_held,
            "held_out_share": share, "holdout_seconds": seconds}  # fmt: skip
    info |= {f"holdout {k}": v for k, v in result.metadata.items()}
    start = time.perf_counter()
    if not shared:
        model = separate()
        info["published_seconds"] = time.perf_counter() - start
        context.add_output_metadata(info)
        return model
    model = result.model  # saved already: the fold-in may change it in place
    previous, parent, reason = _saved_published(models, context.asset_key, model, result)
    if previous is not None:
        # the saved published model takes the same update as the holdout model: the day's lines folded in
        with warehouse.connect() as con:
            updated = apply_update(previous, _published_diff(con, table, columns, published_days, every)(previous),
                                   warm_iterations, parent)  # fmt: skip
        if isinstance(updated, Refresh):
            record_changes(warehouse, model_name(context.asset_key), context.run.run_id, updated.changed, updated.products, parent)
            info["fold_in_seconds"] = time.perf_counter() - start
            context.add_output_metadata(info | updated.metadata | {"published_from": "saved published model"})
            return updated.model
        reason = f"the saved published model cannot be updated: {updated}"
    # a full rebuild (or no usable saved published model): the holdout model with the held-out lines folded in
    with table.relation(columns, where=condition) as lines:
        held = lines.to_arrow_table()
    if held.num_rows:
        model.partial_fit(held)
    info["fold_in_seconds"] = time.perf_counter() - start
    context.log.info(f"{model_name(context.asset_key)}: full fit ({reason})")
    context.add_output_metadata(info | {"refresh": "full", "full_refresh_reason": reason, "published_from": "holdout model"})
    return model


def _published_days(context: dg.AssetExecutionContext, models: ModelStore, record: dict | None) -> dict | None:
    """The day marks of the lines the current saved published model was trained on, from the holdout
    ``record`` written by the run that saved it; None when that is not known (e.g. its save failed after
    the record was written, or another path such as Spark saved it since): the update then compares every line."""
    from rusket_assets.io import model_version

    published = (record or {}).get("published")
    if not published:
        return None
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None or event.run_id != published["run_id"] or event.asset_materialization is None:
        return None
    path = event.asset_materialization.metadata.get("path")
    if path is None or Path(str(path.value)).name != model_version(models.path, model_name(context.asset_key)):
        return None
    return published["days"]


def _published_diff(con: Any, table: WarehouseTable, columns: list[str], recorded: dict | None, today: dict) -> Callable:
    """The diff of the saved published model to today's lines (all of them: train and held out), only
    the customers of the days appended since ``recorded`` (its training lines' day marks) when no
    other day changed (``today``: today's marks)."""
    added = added_days(recorded, today)
    customers = None if added is None else customers_of_days(table.name, "true", USER, added)
    source = f"select {', '.join(quote(c) for c in columns)} from {table.name}"
    return lambda previous: diff_lines(con, source, previous, customers)


def _saved_published(models: ModelStore, asset_key: dg.AssetKey, model: Any, result: Refresh) -> tuple[Any, Any, str | None]:
    """The saved published model this incremental update follows and its version, loaded once; or
    (None, None, why every row counts as new)."""
    from rusket_assets.io import load_model_version

    if result.changed is None:
        return None, None, "holdout model refitted"
    try:
        previous, parent = load_model_version(models.path, model_name(asset_key))
    except FileNotFoundError:
        return None, None, "no saved model yet"
    if type(previous) is not type(model) or previous.get_params() != model.get_params():
        return None, None, "parameters changed since the saved model"
    return previous, parent, None
