"""Incremental refresh: fold the changed customers into the previous models, merge their recommendations.

A run tagged ``rusket/refresh=incremental`` (the ``refresh_incremental`` job) updates ALS and BPR from
their last saved version instead of refitting: the interactions encoded from today's history are
compared with the ones the saved model was trained on; customers whose rows grew are folded in with
``partial_fit`` of the difference (new customers and new products added), customers whose
rows shrank are re-solved from their whole rows (``partial_fit_users(replace=True)``), and an optional
warm pass (``fit(init=model)``) follows. The customers whose model rows changed are written to
``personalization.refreshed_customers``; ``user_recommendations`` recomputes only theirs and merges
them into its table in one transaction. Anything the fold-in cannot express falls back to a full fit,
saying why in the metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.tables import quote, transaction

REFRESH_TAG = "rusket/refresh"
MODES = ("full", "incremental")
CHANGES_TABLE = ("personalization", "refreshed_customers")
# relative tolerance when comparing summed weights (the models keep them as float32)
TOLERANCE = 1e-5


def refresh_mode(context: dg.AssetExecutionContext) -> str:
    """The run's refresh mode from its ``rusket/refresh`` tag: "full" (default) or "incremental"."""
    mode = context.run.tags.get(REFRESH_TAG, "full")
    if mode not in MODES:
        raise ValueError(f"run tag {REFRESH_TAG} must be one of {MODES}, got {mode!r}")
    return mode


@dataclass
class Diff:
    """How today's interactions differ from a model's: lines to add, customers to re-solve, what is new."""

    grown: pa.Table  # (user, item, added weight) for pairs whose weight went up or that are new
    shrunk: pa.Table  # today's whole rows of customers with a pair whose weight went down or vanished
    changed: pa.Array  # customers whose training rows differ
    new_customers: int
    new_products: int
    vanished_customers: int  # in the model, absent from today's history


def _pairs(enc: Any, user_col: str, item_col: str) -> Any:
    """An encoded interaction matrix as a polars frame (user label, item label, weight)."""
    import polars as pl

    rows = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
    weight = np.ones(len(enc.indices)) if enc.data is None else enc.data.astype(np.float64)
    return pl.from_arrow(
        pa.table({user_col: pa.array(enc.rows.values[rows]), item_col: pa.array(enc.items.values[enc.indices]), "w": weight})
    )


def diff_interactions(previous: Any, current: Any) -> Diff:
    """Compare the interactions ``previous`` (a fitted model) was trained on with ``current``'s
    (an unfitted model of the same columns over today's history)."""
    import polars as pl

    user_col, item_col, rating_col = previous._columns()
    old = _pairs(previous.user_items, user_col, item_col).rename({"w": "w_old"})
    new = _pairs(current.user_items, user_col, item_col)
    old = old.with_columns(old[user_col].cast(new.schema[user_col]), old[item_col].cast(new.schema[item_col]))
    both = new.join(old, on=[user_col, item_col], how="full", coalesce=True).with_columns(
        pl.col("w").fill_null(0.0), pl.col("w_old").fill_null(0.0)
    )
    gap = pl.col("w") - pl.col("w_old")
    tol = TOLERANCE * pl.max_horizontal(pl.lit(1.0), pl.col("w").abs())
    grown = both.filter(gap > tol).select(user_col, item_col, gap.alias(rating_col or "w"))
    shrunk_users = both.filter(gap < -tol)[user_col].unique()
    shrunk = new.filter(pl.col(user_col).is_in(shrunk_users.implode())).rename({"w": rating_col or "w"})
    changed = pl.concat([grown[user_col], shrunk_users]).unique().sort()
    old_users, new_users = old[user_col].unique(), new[user_col].unique()
    if rating_col is None:
        grown, shrunk = grown.drop("w"), shrunk.drop("w")
    return Diff(
        grown=grown.to_arrow(),
        shrunk=shrunk.to_arrow(),
        changed=changed.to_arrow(),
        new_customers=int((~new_users.is_in(old_users.implode())).sum()),
        new_products=int((~new[item_col].unique().is_in(old[item_col].unique().implode())).sum()),
        vanished_customers=int((~old_users.is_in(new_users.implode())).sum()),
    )


def _fallback_reason(previous: Any, current: Any, diff: Diff) -> str | None:
    """Why the fold-in cannot reproduce today's training data exactly (None when it can)."""
    if diff.vanished_customers:
        return f"{diff.vanished_customers} customers of the saved model are no longer in the history"
    return None


def update_model(previous: Any, current: Any, warm_iterations: int) -> tuple[Any, Diff, str | None]:
    """``previous`` updated to ``current``'s interactions by fold-in (+ ``warm_iterations`` of a warm
    pass), with the diff; or (None, diff, reason) when a full fit is needed."""
    diff = diff_interactions(previous, current)
    reason = _fallback_reason(previous, current, diff)
    if reason is not None:
        return None, diff, reason
    if diff.grown.num_rows:
        previous.partial_fit(diff.grown)
    if diff.shrunk.num_rows:
        previous.partial_fit_users(diff.shrunk, replace=True)
    if warm_iterations:
        iterations = previous.iterations
        previous.iterations = warm_iterations
        try:
            previous.fit(init=previous)
        finally:
            previous.iterations = iterations
    return previous, diff, None


def model_name(key: dg.AssetKey) -> str:
    """The model store's name for an asset (as :class:`~rusket_assets.io.ModelIOManager` saves it)."""
    return "__".join(key.path)


@dataclass
class Refresh:
    """A model to publish, how it was obtained (metadata) and, after an update, whose rows changed."""

    model: Any
    metadata: dict
    changed: pa.Array | None  # None after a full fit


def refresh(
    incremental: bool, models: ModelStore, name: str, build: Callable[[], Any], fit: Callable[[], Any], warm_iterations: int
) -> Refresh:
    """Saved model ``name`` updated to the interactions of ``build()`` (an unfitted model over today's
    data) when ``incremental`` and possible, else ``fit()`` (the full fit), the reason in the metadata."""
    from rusket_assets.io import load_model

    reason = None
    if not incremental:
        reason = "full refresh"
    else:
        try:
            previous = load_model(models.path, name)
        except FileNotFoundError:
            reason = "no saved model yet"
        else:
            current = build()
            if previous.get_params() != current.get_params():
                changed = sorted(k for k, v in current.get_params().items() if previous.get_params().get(k) != v)
                reason = f"parameters changed since the saved model: {', '.join(changed)}"
    if reason is None:
        updated, diff, reason = update_model(previous, current, warm_iterations)
        if updated is not None:
            customers = pa.array(updated.users.values) if warm_iterations else diff.changed
            metadata = {
                "refresh": "incremental",
                "customers_refreshed": len(customers),
                "customers_with_new_lines": len(diff.changed),
                "new_customers": diff.new_customers,
                "new_products": diff.new_products,
                "warm_iterations": warm_iterations,
            }
            return Refresh(updated, metadata, customers)
    return Refresh(fit(), {"refresh": "full", "full_refresh_reason": reason}, None)


def refresh_model(
    context: dg.AssetExecutionContext,
    build: Callable[[], Any],
    fit: Callable[[], Any],
    models: ModelStore,
    warehouse: Warehouse,
    warm_iterations: int,
) -> Any:
    """The model to publish: in an incremental run, the saved model updated to the interactions of
    ``build()`` (an unfitted model over today's history); otherwise, or when that is not possible,
    ``fit()`` (the full fit). Records the customers whose rows changed and what changed in the metadata."""
    name = model_name(context.asset_key)
    result = refresh(refresh_mode(context) == "incremental", models, name, build, fit, warm_iterations)
    if result.changed is not None:
        record_changes(warehouse, name, context.run.run_id, result.changed)
    else:
        context.log.info(f"{name}: full fit ({result.metadata['full_refresh_reason']})")
    context.add_output_metadata(result.metadata)
    return result.model


def record_changes(warehouse: Warehouse, model: str, run_id: str, customers: pa.Array) -> None:
    """Replace ``model``'s rows of ``personalization.refreshed_customers`` with this run's changed
    customers (ids as text; a row with a null id records a run that changed nobody)."""
    schema, table = CHANGES_TABLE
    target = f"{quote(schema)}.{quote(table)}"
    ids = customers.cast(pa.string()) if len(customers) else pa.nulls(1, pa.string())
    rows = pa.table({"model": [model] * len(ids), "run_id": [run_id] * len(ids), "customer_id": ids})
    with warehouse.connect() as con:
        con.execute(f"create schema if not exists {quote(schema)}")
        con.execute(f"create table if not exists {target} (model VARCHAR, run_id VARCHAR, customer_id VARCHAR)")
        view = f"__rusket_changes_{uuid.uuid4().hex}"
        con.register(view, rows)
        in_transaction(con, [(f"delete from {target} where model = ?", [model]), (f"insert into {target} select * from {view}", None)])
        con.unregister(view)


def in_transaction(con: Any, statements: list[tuple[str, list | None]]) -> None:
    """Run ``statements`` in one transaction: all of them or, on an error, none."""
    with transaction(con):
        for sql, params in statements:
            con.execute(sql, params)


def changed_customers(context: dg.AssetExecutionContext, warehouse: Warehouse, model_keys: list[dg.AssetKey]) -> pa.Array | None:
    """Customers (as text) whose rows changed in this run's incremental updates of ``model_keys``;
    None when any of them was fully refitted or not materialised in this run (recompute everyone)."""
    schema, table = CHANGES_TABLE
    if refresh_mode(context) == "full" or not warehouse.has_table(schema, table):
        return None
    names = [model_name(k) for k in model_keys]
    rows = warehouse.query(
        f"select model, list(customer_id) filter (where customer_id is not null) as ids "
        f"from {quote(schema)}.{quote(table)} where run_id = ? group by model",
        [context.run.run_id],
    ).to_pylist()
    by_model = {r["model"]: r for r in rows}
    if any(n not in by_model for n in names):
        return None
    return pa.array(sorted({c for n in names for c in by_model[n]["ids"] or []}), pa.string())


def changed_rows(context: dg.AssetExecutionContext, warehouse: Warehouse, model: Any, model_key: dg.AssetKey) -> np.ndarray | None:
    """Row indices in ``model`` (the published model of ``model_key``) of the customers whose rows
    changed in this run's incremental update; None (rewrite everything) in a full run, when the model
    was refitted, or when every customer changed (a warm pass)."""
    import pyarrow.compute as pc

    changed = changed_customers(context, warehouse, [model_key])
    if changed is None:
        return None
    labels = pa.array(model.users.values).cast(pa.string())
    rows = np.flatnonzero(pc.is_in(labels, value_set=changed).to_numpy(zero_copy_only=False))
    return None if len(rows) == len(labels) else rows


def merge_rows(warehouse: Warehouse, schema: str, table: str, key_col: str, keys: pa.Array, rows: pa.Table) -> int:
    """Replace the rows of ``schema.table`` whose ``key_col`` (compared as text) is in ``keys`` with
    ``rows``, in one transaction; the other rows are untouched. Returns the number of rows deleted."""
    target = f"{quote(schema)}.{quote(table)}"
    keys_view, rows_view = f"__rusket_keys_{uuid.uuid4().hex}", f"__rusket_rows_{uuid.uuid4().hex}"
    with warehouse.connect() as con:
        con.register(keys_view, pa.table({"k": keys.cast(pa.string())}))
        con.register(rows_view, rows)
        try:
            deleted = con.sql(
                f"select count(*) from {target} where cast({quote(key_col)} as VARCHAR) in (select k from {keys_view})"
            ).fetchall()[0][0]
            in_transaction(
                con,
                [
                    (f"delete from {target} where cast({quote(key_col)} as VARCHAR) in (select k from {keys_view})", None),
                    (f"insert into {target} by name select * from {rows_view}", None),
                ],
            )
        finally:
            con.unregister(keys_view)
            con.unregister(rows_view)
    return int(deleted)
