"""Incremental refresh: fold the changed customers into the previous models, merge their recommendations.

A run tagged ``rusket/refresh=incremental`` (the ``refresh_incremental`` job) updates ALS and BPR from
their last saved version instead of refitting: today's lines are compared in DuckDB with the pairs
the saved model was trained on (only the customers of the days appended since, when the per-day
marks of the lines it was trained on show no other day changed); customers whose rows grew are folded in with
``partial_fit`` of the difference (new customers and new products added), customers whose
rows shrank are re-solved from their whole rows (``partial_fit_users(replace=True)``), and an optional
warm pass (``fit(init=model)``) follows. The customers and products whose model rows changed, and
the saved model version the update started from, are written to ``personalization.refreshed_customers``;
the outputs built from the model recompute only those rows and merge them into their table when the
table was built from that same version (else they rewrite it: a skipped or failed run in between
must not leave rows of two model generations mixed). Anything the fold-in cannot express falls back
to a full fit, saying why in the metadata.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    scope: str = "every line"  # what was compared


def _pairs(enc: Any, user_col: str, item_col: str) -> Any:
    """An encoded interaction matrix as a polars frame (user label, item label, weight)."""
    import polars as pl

    rows = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
    weight = np.ones(len(enc.indices)) if enc.data is None else enc.data.astype(np.float64)
    return pl.from_arrow(
        pa.table({user_col: pa.array(enc.rows.values[rows]), item_col: pa.array(enc.items.values[enc.indices]), "w": weight})
    )


def day_marks(con: Any, table: str, where: str, columns: list[str]) -> tuple[dict[str, list[str]], int]:
    """Per day of ``ordered_at`` ("" for lines without one): how many lines of ``table`` match
    ``where`` and the sum of a hash of their ``columns``, as text (equal marks: the same lines that
    day; days without such lines left out); and how many lines the table has (the same scan)."""
    marks, lines = days_marks(con, table, [where], columns)
    return marks[0], lines


def days_marks(con: Any, table: str, wheres: list[str], columns: list[str]) -> tuple[list[dict[str, list[str]]], int]:
    """:func:`day_marks` of each condition of ``wheres``, all in one scan of ``table``."""
    digest = f"hash({', '.join(quote(c) for c in columns)})::HUGEINT"
    parts = ", ".join(f"count(*) filter (where {w}) as n{k}, sum({digest}) filter (where {w}) as h{k}" for k, w in enumerate(wheres))
    rows = con.sql(
        f"select coalesce(cast(cast(ordered_at as DATE) as VARCHAR), '') as d, {parts}, count(*) as lines from {table} group by 1"
    ).fetchall()
    marks = [{r[0]: [str(r[1 + 2 * k]), str(r[2 + 2 * k])] for r in rows if r[1 + 2 * k]} for k in range(len(wheres))]
    return marks, sum(r[-1] for r in rows)


def added_days(recorded: dict | None, today: dict[str, list[str]]) -> list[str] | None:
    """The days of ``today``'s :func:`day_marks` that ``recorded`` (the marks of the lines a model was
    trained on) lacks, when every recorded day is unchanged; None when a recorded day changed or
    vanished, or nothing was recorded (the diff must then compare every line)."""
    if recorded is None or any(today.get(day) != mark for day, mark in recorded.items()):
        return None
    return sorted(set(today) - set(recorded))


def customers_of_days(table: str, where: str, user_col: str, days: list[str]) -> str:
    """SQL: the customers with lines of ``table`` matching ``where`` on ``days`` (keys of :func:`day_marks`)."""
    listed = ", ".join("'" + d.replace("'", "''") + "'" for d in days) or "null"
    return (f"select distinct {quote(user_col)} from {table} where ({where}) and "
            f"coalesce(cast(cast(ordered_at as DATE) as VARCHAR), '') in ({listed})")  # fmt: skip


def diff_lines(con: Any, source: str, previous: Any, customers: str | None = None) -> Diff:
    """How today's lines ``source`` (SQL of a query over the model's user, item[, rating] columns, on
    connection ``con``) differ from the interactions ``previous`` (a fitted model) was trained on: its
    pairs joined with them in DuckDB, so that only the differing pairs and the rows to re-solve reach
    Python, not today's encoded history.
    ``customers`` (SQL of a query of one column of customer ids) restricts the comparison to them: exact
    when nobody else's lines changed (e.g. the customers of days appended since, :func:`added_days`)."""
    user_col, item_col, rating_col = previous._columns()
    u, i = quote(user_col), quote(item_col)
    types = con.sql(f"select {u}, {i} from ({source}) limit 0").arrow().schema
    enc = previous.user_items
    keys = None
    if customers is not None:
        keys = pa.table({"u": con.sql(f"select distinct * from ({customers})").arrow().read_all().column(0).cast(types.field(0).type)})
        rows = _lookup_labels(enc.rows, keys["u"].combine_chunks())
        enc = enc.take_rows(rows[rows >= 0])
    rows = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
    old = pa.table({"u": pa.array(enc.rows.values[rows]).cast(types.field(0).type),
                    "i": pa.array(enc.items.values[enc.indices]).cast(types.field(1).type),
                    "w": np.ones(len(rows)) if enc.data is None else enc.data.astype(np.float64)})  # fmt: skip
    w = f"sum(cast({quote(rating_col)} as DOUBLE))" if rating_col is not None else "1.0::DOUBLE"
    only = ""
    view, keys_view = f"__rusket_old_pairs_{uuid.uuid4().hex}", f"__rusket_keys_{uuid.uuid4().hex}"
    if keys is not None:
        con.register(keys_view, keys)
        only = f" where {u} in (select u from {keys_view})"
    new = f"select {u} as u, {i} as i, {w} as w from ({source}){only} group by all"
    con.register(view, old)
    try:
        differs = con.sql(
            f"""with new as ({new})
            select coalesce(n.u, o.u) as u, coalesce(n.i, o.i) as i, coalesce(n.w, 0) - coalesce(o.w, 0) as gap
            from new n full join {view} o on n.u = o.u and n.i = o.i
            where abs(coalesce(n.w, 0) - coalesce(o.w, 0)) > {TOLERANCE} * greatest(1.0, abs(coalesce(n.w, 0)))"""
        ).arrow().read_all()
        gap = differs["gap"].to_numpy()
        grown = differs.filter(pa.array(gap > 0))
        grown = pa.table({user_col: grown["u"], item_col: grown["i"], **({rating_col: grown["gap"]} if rating_col else {})})
        shrunk_users = pc.unique(differs.filter(pa.array(gap < 0))["u"])
        shrunk_keys = f"__rusket_shrunk_{uuid.uuid4().hex}"
        con.register(shrunk_keys, pa.table({"u": shrunk_users}))
        try:  # today's whole rows of the customers who lost weight (none: an empty, typed frame)
            shrunk = con.sql(f"select * from ({new}) where u in (select u from {shrunk_keys})").arrow().read_all()
        finally:
            con.unregister(shrunk_keys)
    finally:
        con.unregister(view)
        if keys is not None:
            con.unregister(keys_view)
    shrunk = pa.table({user_col: shrunk["u"], item_col: shrunk["i"], **({rating_col: shrunk["w"]} if rating_col else {})})
    changed = pc.unique(differs["u"])
    changed = changed.take(pc.sort_indices(changed))
    return Diff(
        grown=grown,
        shrunk=shrunk,
        changed=changed,
        new_customers=int((_lookup_labels(previous.users, changed) < 0).sum()),
        new_products=int((_lookup_labels(previous.items, pc.unique(differs["i"])) < 0).sum()),
        vanished_customers=len(shrunk_users) - len(pc.unique(shrunk[user_col])),
        scope="every line" if keys is None else f"the lines of {keys.num_rows} customers of the days appended",
    )


def _lookup_labels(labels: Any, values: pa.Array) -> np.ndarray:
    """Positions of ``values`` in a model's labels (-1 when absent)."""
    from rusket_core.factorization.foldin import _lookup

    return _lookup(labels, values.to_numpy(zero_copy_only=False)) if len(values) else np.empty(0, np.int64)


def _fallback_reason(diff: Diff) -> str | None:
    """Why the fold-in cannot reproduce today's training data exactly (None when it can)."""
    if diff.vanished_customers:
        return f"{diff.vanished_customers} customers of the saved model are no longer in the history"
    return None


def update_model(previous: Any, diff: Diff, warm_iterations: int) -> tuple[Any, Diff, str | None]:
    """``previous`` updated by fold-in of ``diff`` (its :func:`diff_lines` to today's lines) plus
    ``warm_iterations`` of a warm pass; or (None, diff, reason) when a full fit is needed."""
    reason = _fallback_reason(diff)
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
    products: pa.Array | None = None  # products whose rows changed (new ones; all after a warm pass)
    parent: str | None = None  # the saved model version that was updated


def refresh(
    incremental: bool, models: ModelStore, name: str, build: Callable[[], Any], fit: Callable[[], Any], warm_iterations: int,
    diff: Callable[[Any], Diff],
) -> Refresh:  # fmt: skip
    """Saved model ``name`` updated by ``diff(saved model)`` (today's changes from it, e.g.
    :func:`diff_lines`) when ``incremental`` and possible, else ``fit()`` (the full fit), the reason in
    the metadata. ``build()``: an unfitted model with today's parameters (over any of today's lines)."""
    from rusket_assets.io import load_model_version

    reason = None
    if not incremental:
        reason = "full refresh"
    else:
        try:
            previous, parent = load_model_version(models.path, name)
        except FileNotFoundError:
            reason = "no saved model yet"
        else:
            current = build()
            if previous.get_params() != current.get_params():
                changed = sorted(k for k, v in current.get_params().items() if previous.get_params().get(k) != v)
                reason = f"parameters changed since the saved model: {', '.join(changed)}"
    if reason is None:
        updated = apply_update(previous, diff(previous), warm_iterations, parent)
        if isinstance(updated, Refresh):
            return updated
        reason = updated
    return Refresh(fit(), {"refresh": "full", "full_refresh_reason": reason}, None)


def apply_update(previous: Any, diff: Diff, warm_iterations: int, parent: str | None) -> Refresh | str:
    """``previous`` (saved as version ``parent``) updated by :func:`update_model`, with what changed;
    or why a full fit is needed instead (``previous`` then left as it was)."""
    n_items = len(previous.items)
    updated, changes, reason = update_model(previous, diff, warm_iterations)
    if updated is None:
        return reason
    customers = pa.array(updated.users.values) if warm_iterations else changes.changed
    # the fold-in leaves known products' rows as they were and appends the new ones
    products = pa.array(updated.items.values[0 if warm_iterations else n_items :])
    metadata = {
        "refresh": "incremental",
        "customers_refreshed": len(customers),
        "customers_with_new_lines": len(changes.changed),
        "new_customers": changes.new_customers,
        "new_products": changes.new_products,
        "warm_iterations": warm_iterations,
        "diff_scope": changes.scope,
    }
    return Refresh(updated, metadata, customers, products, parent)


def refresh_model(
    context: dg.AssetExecutionContext,
    build: Callable[[], Any],
    fit: Callable[[], Any],
    models: ModelStore,
    warehouse: Warehouse,
    warm_iterations: int,
    diff: Callable[[Any], Diff],
) -> Any:
    """The model to publish: in an incremental run, the saved model updated by ``diff`` (see
    :func:`refresh`); otherwise, or when that is not possible, ``fit()`` (the full fit). Records the
    customers whose rows changed and what changed in the metadata."""
    name = model_name(context.asset_key)
    result = refresh(refresh_mode(context) == "incremental", models, name, build, fit, warm_iterations, diff)
    if result.changed is not None:
        record_changes(warehouse, name, context.run.run_id, result.changed, result.products, result.parent)
    else:
        context.log.info(f"{name}: full fit ({result.metadata['full_refresh_reason']})")
    context.add_output_metadata(result.metadata)
    return result.model


CHANGES_COLUMNS = {"model": "VARCHAR", "run_id": "VARCHAR", "parent_version": "VARCHAR", "side": "VARCHAR", "id": "VARCHAR"}


def record_changes(
    warehouse: Warehouse, model: str, run_id: str, customers: pa.Array, products: pa.Array, parent: str | None
) -> None:
    """Replace ``model``'s rows of ``personalization.refreshed_customers`` with this run's changed
    customers and products (``side``; ids as text; a row with a null id records a side that changed
    nobody) and the saved model version the update started from."""
    schema, table = CHANGES_TABLE
    target = f"{quote(schema)}.{quote(table)}"
    sides = [("customer", customers), ("product", products)]
    ids = pa.concat_arrays([(a.cast(pa.string()) if len(a) else pa.nulls(1, pa.string())) for _, a in sides])
    side = [name for name, a in sides for _ in range(max(len(a), 1))]
    n = len(ids)
    rows = pa.table({"model": [model] * n, "run_id": [run_id] * n, "parent_version": pa.array([parent] * n, pa.string()),
                     "side": side, "id": ids})  # fmt: skip
    columns = ", ".join(f"{c} {t}" for c, t in CHANGES_COLUMNS.items())
    with warehouse.connect() as con:
        con.execute(f"create schema if not exists {quote(schema)}")
        have = [r[0] for r in con.execute(
            "select column_name from information_schema.columns where table_schema = ? and table_name = ? order by ordinal_position",
            [schema, table]).fetchall()]  # fmt: skip
        if have and have != list(CHANGES_COLUMNS):  # written by an older version: this run's rows are all that matter
            con.execute(f"drop table {target}")
        con.execute(f"create table if not exists {target} ({columns})")
        view = f"__rusket_changes_{uuid.uuid4().hex}"
        con.register(view, rows)
        in_transaction(con, [(f"delete from {target} where model = ?", [model]), (f"insert into {target} select * from {view}", None)])
        con.unregister(view)


def in_transaction(con: Any, statements: list[tuple[str, list | None]]) -> None:
    """Run ``statements`` in one transaction: all of them or, on an error, none."""
    with transaction(con):
        for sql, params in statements:
            con.execute(sql, params)


@dataclass
class Changes:
    """What this run's incremental update of a model changed: customers and products (ids as text)
    and the saved model version it started from."""

    customers: pa.Array
    products: pa.Array
    parent: str | None


def run_changes(context: dg.AssetExecutionContext, warehouse: Warehouse, model_keys: list[dg.AssetKey]) -> dict[str, Changes] | None:
    """This run's :class:`Changes` of each of ``model_keys`` (by model name); None when the run is a
    full one or any of them was fully refitted or not materialised in this run (recompute everything)."""
    schema, table = CHANGES_TABLE
    if refresh_mode(context) == "full" or not warehouse.has_table(schema, table):
        return None
    names = [model_name(k) for k in model_keys]
    if [c for c in warehouse.query(f"select * from {quote(schema)}.{quote(table)} limit 0").column_names] != list(CHANGES_COLUMNS):
        return None
    rows = warehouse.query(
        f"select model, side, any_value(parent_version) as parent, list(id) filter (where id is not null) as ids "
        f"from {quote(schema)}.{quote(table)} where run_id = ? group by model, side",
        [context.run.run_id],
    ).to_pylist()
    found: dict[str, dict] = {}
    for r in rows:
        found.setdefault(r["model"], {"parent": r["parent"]})[r["side"]] = sorted(r["ids"] or [])
    if any(n not in found for n in names):
        return None
    return {
        n: Changes(pa.array(found[n].get("customer", []), pa.string()), pa.array(found[n].get("product", []), pa.string()),
                   found[n]["parent"])  # fmt: skip
        for n in names
    }


def changed_customers(context: dg.AssetExecutionContext, warehouse: Warehouse, model_keys: list[dg.AssetKey]) -> pa.Array | None:
    """Customers (as text) whose rows changed in this run's incremental updates of ``model_keys``;
    None when any of them was fully refitted or not materialised in this run (recompute everyone)."""
    changes = run_changes(context, warehouse, model_keys)
    if changes is None:
        return None
    return pa.array(sorted({c for ch in changes.values() for c in ch.customers.to_pylist()}), pa.string())


BUILT_FROM = "built_from "  # + model name: output metadata naming the saved model version an output was built from


def built_from(models: ModelStore, model_keys: list[dg.AssetKey]) -> dict[str, str]:
    """Output metadata naming the current saved version of each of ``model_keys`` (the models this
    run's output is built from); :func:`mergeable` compares it with the next update's parent."""
    from rusket_assets.io import model_version

    return {BUILT_FROM + model_name(k): str(model_version(models.path, model_name(k))) for k in model_keys}


def mergeable(
    context: dg.AssetExecutionContext, warehouse: Warehouse, model_keys: list[dg.AssetKey], same: dict[str, Any] | None = None
) -> dict[str, Changes] | None:
    """This run's :func:`run_changes` of ``model_keys`` when the asset's current table was built (its
    last materialisation's :func:`built_from`) from exactly the model versions this run updated and
    with the same ``same`` metadata values (e.g. settings); None otherwise (a full run, a refit, a
    table from another model generation or other settings: rewrite it)."""
    changes = run_changes(context, warehouse, model_keys)
    if changes is None:
        return None
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None or event.asset_materialization is None:
        return None
    recorded = event.asset_materialization.metadata
    for name, value in (same or {}).items():
        if name not in recorded or recorded[name].value != value:
            return None
    for name, change in changes.items():
        value = recorded.get(BUILT_FROM + name)
        if change.parent is None or value is None or value.value != change.parent:
            return None
    return changes


def rows_of(labels: np.ndarray, ids: pa.Array) -> np.ndarray:
    """Positions in ``labels`` (a model's user or item labels) of ``ids`` (compared as text)."""
    import pyarrow.compute as pc

    text = pa.array(labels).cast(pa.string())
    return np.flatnonzero(pc.is_in(text, value_set=ids.cast(pa.string())).to_numpy(zero_copy_only=False))


def merge_rows(
    warehouse: Warehouse, schema: str, table: str, key_col: str, keys: pa.Array, rows: pa.Table,
    then: list[tuple[str, list | None]] = (),
) -> int:  # fmt: skip
    """Replace the rows of ``schema.table`` whose ``key_col`` (compared as text) is in ``keys`` with
    ``rows`` (columns matched by name, missing ones null), then run the statements ``then`` (e.g.
    columns derived from every row), in one transaction; the other rows are untouched. Returns the
    number of rows deleted."""
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
                    *then,
                ],
            )
        finally:
            con.unregister(keys_view)
            con.unregister(rows_view)
    return int(deleted)


def reached(warehouse: Warehouse, schema: str, table: str, key_col: str, labels: np.ndarray, best: np.ndarray, n: int) -> np.ndarray:
    """For top-``n`` lists stored in ``schema.table`` (a ``score`` per row, keyed by ``key_col``):
    whether a new candidate scoring ``best[i]`` can enter the list of ``labels[i]``, i.e. the list has
    fewer than ``n`` rows (or none) or ``best[i]`` is at least its lowest score (less a margin for float
    rounding). Lists a new candidate cannot reach are unchanged by it."""
    import pyarrow.compute as pc

    stored = warehouse.query(
        f"select cast({quote(key_col)} as VARCHAR) as k, min(score) as s, count(*) as c from {quote(schema)}.{quote(table)} group by 1"
    )
    position = pc.index_in(pa.array(labels).cast(pa.string()), value_set=stored["k"])
    listed = pc.is_valid(position).to_numpy(zero_copy_only=False)
    pos = position.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    full = listed & (stored["c"].to_numpy()[pos] >= n) if stored.num_rows else np.zeros(len(labels), dtype=bool)
    threshold = np.where(full, stored["s"].to_numpy()[pos] if stored.num_rows else 0.0, -np.inf)
    return best >= threshold - 1e-5 * np.maximum(1.0, np.abs(threshold))

