"""One fit per factor model serves both the published model and its holdout twin.

The holdout model is trained on the train lines (every line but the sampled customers' test pairs,
:mod:`rusket_assets.holdout`) and saved under :func:`holdout_model_name` with a record (the split,
the run, the customers whose rows changed) that ``model_evaluation`` checks before scoring it
instead of fitting its own. The published model is that model with the held-out lines folded in
(``partial_fit``: the sampled customers' rows re-solved from their whole history with the item
factors fixed, the exact least-squares rows for ALS, seeded SGD passes for BPR; products bought only
in held-out pairs added from their buyers), so its item factors miss only those pairs. When they are
more than ``shared_fit_max_share`` of all lines (a small store, where the sample covers most
customers) the published model is fitted on all lines separately instead, as it would lose too much.
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.holdout import is_held_out, sample_cut
from rusket_assets.incremental import (
    Refresh,
    added_days,
    customers_of_days,
    day_marks,
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
    models: ModelStore, name: str, result: Refresh, split: dict, run_id: str, metadata: dict, days: dict | None = None
) -> None:
    """Save holdout model ``name`` and its record (split, run, changed customers, metadata, the
    :func:`~rusket_assets.incremental.day_marks` of the lines it was trained on); the record is removed
    first, so a failure in between leaves a model without one (refitted next time)."""
    from rusket_assets.io import model_version, save_model

    path = _record_path(models, name)
    path.unlink(missing_ok=True)
    save_model(result.model, models.path, holdout_model_name(name))
    changed = None if result.changed is None else result.changed.cast(pa.string()).to_pylist()
    _write_json(path, {"split": split, "run_id": run_id, "version": model_version(models.path, holdout_model_name(name)),
                       "changed": changed, "metadata": metadata, "days": days})  # fmt: skip


def changed_of(record: dict) -> pa.Array | None:
    """The customers (as text) whose holdout rows a record's update changed; None after a full fit."""
    return None if record["changed"] is None else pa.array(record["changed"], pa.string())


def holdout_diff(
    con: Any, table: WarehouseTable, split: dict, columns: list[str], record: dict | None
) -> tuple[Callable, dict, int, int]:
    """The diff of a saved holdout model (its ``record``; None: compare every line) to today's train
    lines of ``table`` (``columns``: the model's user, item[, rating]), on ``con``: restricted to the
    customers of the days appended since when no other day changed; today's day marks to record; how
    many lines the table has and how many are held out (counted in the same scan)."""
    train = f"not {held_out(split)}"
    days, lines = day_marks(con, table.name, train, columns)
    added = added_days(None if record is None else record.get("days"), days)
    customers = None if added is None else customers_of_days(table.name, train, USER, added)
    source = f"select {', '.join(quote(c) for c in columns)} from {table.name} where {train}"
    held = lines - sum(int(n) for n, _ in days.values())
    return (lambda previous: diff_lines(con, source, previous, customers)), days, lines, held


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
    (:func:`rusket_assets.incremental.refresh`) when it was trained on this split, and the
    published model is derived from it again."""
    start = time.perf_counter()
    split = run_split(context, models, table, config)
    condition = held_out(split)
    record = holdout_record(models, name)
    same_split = record is not None and record["split"] == split
    incremental = refresh_mode(context) == "incremental" and same_split
    with table.relation(columns, where=f"not {condition}") as train, warehouse.connect() as con:
        # the update compares the saved model with today's train lines in SQL, only the customers of the days
        # appended since when no other day changed; build() then only names the parameters
        diff, days, n_lines, n_held = holdout_diff(con, table, split, columns, record if incremental else None)
        share = n_held / max(n_lines, 1)
        shared = share <= config.shared_fit_max_share
        result = refresh(incremental, models, holdout_model_name(name), lambda: build(train.limit(1)), lambda: build(train).fit(),
                         warm_iterations, diff)  # fmt: skip
    seconds = time.perf_counter() - start
    if not same_split and refresh_mode(context) == "incremental":
        result.metadata["full_refresh_reason"] = "the evaluation split changed"
    save_holdout(models, name, result, split, context.run.run_id, result.metadata | {"seconds": seconds}, days)
    info = {"evaluation_fit": "shared" if shared else "separate", "held_out_lines": n_held,
            "held_out_share": share, "holdout_seconds": seconds}  # fmt: skip
    info |= {f"holdout {k}": v for k, v in result.metadata.items()}
    start = time.perf_counter()
    if not shared:
        model = separate()
        info["published_seconds"] = time.perf_counter() - start
        context.add_output_metadata(info)
        return model
    with table.relation(columns, where=condition) as lines:
        held = lines.to_arrow_table()
    model = result.model  # saved already: the fold-in may change it in place
    previous, parent, reason = _saved_published(models, context.asset_key, model, result)
    if held.num_rows:
        # a model whose fold-in is iterative (BPR) only adds the lines here when it can (no product
        # new to it): the kept rows get their saved values back below, the others are re-solved then
        lazy = previous is not None and _iterative(model) and _all_known(model, held[ITEM])
        n_trained = len(model.items)
        model.partial_fit(held, **({"epochs": 0} if lazy else {}))
        if previous is not None:
            kept, rest = _keep_unchanged_rows(previous, model, held, result.changed)
            info["sampled_rows_kept"] = kept
            products = info["held_out_products_kept"] = _keep_unchanged_products(previous, model, n_trained)
            if lazy or (products and not _iterative(model)):  # ALS: rows exact for the item rows published
                if len(rest):
                    model.partial_fit_users(_rows_table(model, rest), replace=True)
                info["sampled_rows_solved"] = len(rest)
    info["fold_in_seconds"] = time.perf_counter() - start
    context.add_output_metadata(info | _record_published(context, warehouse, model, previous, parent, reason, warm_iterations))
    return model


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


def _keep_unchanged_rows(previous: Any, model: Any, held: pa.Table, changed: pa.Array) -> tuple[int, np.ndarray]:
    """After an incremental update: give the sampled customers whose holdout rows and whole history
    are as in the saved published model their saved rows back, so only the day's customers change
    (re-solving them would move every one slightly when the day adds products, as for no other
    customer). The histories are compared as arrays (product labels matched through both models'
    product lists), not customer by customer. Returns how many were kept and the model's row
    indices of the other sampled customers."""
    from rusket_core.factorization.foldin import _lookup

    customers = pc.unique(held[USER]).to_numpy(zero_copy_only=False)
    new_enc, old_enc = model.user_items, previous.user_items
    rows, old_rows = _lookup(model.users, customers), _lookup(previous.users, customers)
    lines, old_lines = _lookup(new_enc.rows, customers), _lookup(old_enc.rows, customers)
    candidate = (rows >= 0) & (old_rows >= 0) & (lines >= 0) & (old_lines >= 0)
    candidate &= ~pc.is_in(pa.array(customers).cast(pa.string()), value_set=changed.cast(pa.string())).to_numpy(zero_copy_only=False)
    same = np.zeros(len(customers), dtype=bool)
    same[candidate] = _same_rows(new_enc, old_enc, _lookup(previous.items, model.items.values), lines[candidate], old_lines[candidate])
    model.user_factors[rows[same]] = previous.user_factors[old_rows[same]]
    return int(same.sum()), lines[~same & (lines >= 0)]


def _keep_unchanged_products(previous: Any, model: Any, n_trained: int) -> int:
    """The products bought only in held-out lines (rows ``n_trained`` on, added from their buyers) that
    have the same buyers and weights as in the saved published model get their saved rows back: solved
    again they would move with every changed customer (so every product would count as changed for the
    outputs keyed by products); how many were kept."""
    from rusket_core.encoding import Encoded, Labels
    from rusket_core.factorization.base import transpose_csr
    from rusket_core.factorization.foldin import _lookup

    rows = np.arange(n_trained, len(model.items))
    old_rows = _lookup(previous.items, model.items.values[rows])
    rows, old_rows = rows[old_rows >= 0], old_rows[old_rows >= 0]
    if not len(rows):
        return 0

    def by_product(enc: Any, items: Any) -> Any:
        ptr, ind, dat = transpose_csr(enc.indptr, enc.indices, enc.data, enc.n_items)
        return Encoded(ptr, ind, dat, items, enc.rows)

    new_enc, old_enc = model.user_items, previous.user_items
    user_map = _lookup(old_enc.rows, new_enc.rows.values)
    same = _same_rows(by_product(new_enc, Labels(model.items.values)), by_product(old_enc, Labels(previous.items.values)),
                      user_map, rows, old_rows)  # fmt: skip
    model.item_factors[rows[same]] = previous.item_factors[old_rows[same]]
    return int(same.sum())


def _iterative(model: Any) -> bool:
    """Whether the model's fold-in takes a number of epochs (BPR: 0 adds the lines without moving rows)."""
    from rusket_core.factorization.bpr import BPR

    return isinstance(model, BPR)


def _all_known(model: Any, items: Any) -> bool:
    """Whether every product of ``items`` has a row in the model."""
    from rusket_core.factorization.foldin import _lookup

    return bool((_lookup(model.items, items.to_numpy(zero_copy_only=False)) >= 0).all())


def _rows_table(model: Any, rows: np.ndarray) -> pa.Table:
    """Rows ``rows`` of the model's interactions as a frame of its user, item (and rating) columns."""
    from rusket_assets.incremental import _pairs

    user_col, item_col, rating_col = model._columns()
    frame = _pairs(model.user_items.take_rows(rows), user_col, item_col).to_arrow()
    return frame.rename_columns([user_col, item_col, rating_col]) if rating_col else frame.drop(["w"])


def _same_rows(new_enc: Any, old_enc: Any, item_map: np.ndarray, lines: np.ndarray, old_lines: np.ndarray) -> np.ndarray:
    """Whether row ``lines[i]`` of ``new_enc`` holds the same products (``item_map``: new product index
    to old, -1 for a product the old model lacks) with the same weights as row ``old_lines[i]`` of ``old_enc``."""
    length = new_enc.indptr[lines + 1] - new_enc.indptr[lines]
    same = length == old_enc.indptr[old_lines + 1] - old_enc.indptr[old_lines]
    idx = np.flatnonzero(same & (length > 0))
    if not len(idx):
        return same
    n = length[idx]
    seg = np.repeat(np.arange(len(idx)), n)
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    new_pos = np.repeat(new_enc.indptr[lines[idx]], n) + offset
    old_pos = np.repeat(old_enc.indptr[old_lines[idx]], n) + offset
    new_items, old_items = item_map[new_enc.indices[new_pos]], old_enc.indices[old_pos].astype(np.int64)
    new_w = np.ones(len(new_pos)) if new_enc.data is None else new_enc.data[new_pos].astype(np.float64)
    old_w = np.ones(len(old_pos)) if old_enc.data is None else old_enc.data[old_pos].astype(np.float64)
    a, b = np.lexsort((new_items, seg)), np.lexsort((old_items, seg))  # rows' products in one order on both sides
    differs = (new_items[a] != old_items[b]) | (new_w[a] != old_w[b])
    same[idx] = np.bincount(seg[a], weights=differs, minlength=len(idx)) == 0
    return same


def _record_published(
    context: dg.AssetExecutionContext, warehouse: Warehouse, model: Any, previous: Any, parent: Any, reason: str | None,
    warm: int,
) -> dict:
    """Record which published rows changed since ``previous`` (the saved published model, for the
    outputs that merge), or say why everything is new; the metadata."""
    name = model_name(context.asset_key)
    if previous is None:
        context.log.info(f"{name}: full fit ({reason})")
        return {"refresh": "full", "full_refresh_reason": reason}
    users, new_users, moved = _changed_rows(previous.users, previous.user_factors, model.users, model.user_factors)
    # customers seen only in held-out lines follow today's holdout rows, so they can change index: outputs
    # keyed by row index (LanceDB ids) must rewrite them too
    users = np.union1d(users, moved)
    items, new_items, _ = _changed_rows(previous.items, previous.item_factors, model.items, model.item_factors)
    if warm or len(items) > new_items:  # a known product moved: outputs keyed by products are rebuilt
        items = np.arange(len(model.items))
    customers, products = pa.array(model.users.values[users]), pa.array(model.items.values[items])
    record_changes(warehouse, name, context.run.run_id, customers, products, parent)
    return {"refresh": "incremental", "customers_refreshed": len(customers), "new_customers": new_users,
            "customers_moved": len(moved),
            "new_products": new_items, "warm_iterations": warm}  # fmt: skip


def _changed_rows(old_labels: Any, old: np.ndarray, labels: Any, new: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Rows of ``new`` (by ``labels``) that are new or differ from ``old``'s row of the same label; how
    many are new; the known rows whose label had another row index in ``old_labels``."""
    from rusket_core.factorization.foldin import _lookup

    idx = _lookup(old_labels, labels.values)
    known = idx >= 0
    differs = ~known
    differs[known] = (new[known] != old[idx[known]]).any(axis=1)
    moved = np.flatnonzero(known & (idx != np.arange(len(idx))))
    return np.flatnonzero(differs), int((~known).sum()), moved
