"""Names shared by the asset modules, and the decorator that sets each group's asset defaults once.

Each asset's run configuration (a ``dg.Config``) sits next to it in its group's module. Every closed
choice there is a Literal, so the launchpad autocompletes it and rejects a bad value before the run
starts; value ranges (ge/gt) are checked for the whole run at the start of its first step
(:func:`check_run_config`), so nothing is written either; every field carries a one-line description.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import inspect
import logging
import textwrap
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import dagster as dg

from rusket_assets.streaming import TableStream

# Every step that opens the DuckDB file runs in this pool; dagster_home/dagster.yaml limits it to one.
POOL = "duckdb"
TABLE_IO = "warehouse_io"
MODEL_IO = "model_io"
OWNERS = ["team:data-science"]
# Business domain of each group (the `domain` tag, filterable in the Catalog).
DOMAINS = {
    "ingest": "sales-data",
    "baskets": "market-basket",
    "personalization": "recommendations",
    "analytics": "customer-analytics",
    "vectors": "recommendations",
}
# The graph is refreshed daily (schedules.py): warn when a table misses one refresh, fail after two.
DAILY = dg.FreshnessPolicy.time_window(warn_window=timedelta(hours=25), fail_window=timedelta(hours=49))


def code_version(fn: Callable[..., Any]) -> str:
    """Hash of the asset function's code without its docstring: changes when its logic does (the UI marks it stale)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    node = tree.body[0]
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body  # type: ignore[attr-defined]
    node.body = body  # type: ignore[attr-defined]
    node.decorator_list, node.name = [], "_"  # type: ignore[attr-defined]
    return hashlib.sha256(ast.dump(node).encode()).hexdigest()[:12]


class _ToRunLog(logging.Handler):
    """Forwards rusket_core log records to the run's log (`context.log`) at their level."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.log(record.levelno, f"{record.name}: {record.getMessage()}")


@contextmanager
def library_logs_to(log: Any) -> Iterator[None]:
    """While active, rusket_core progress (fits, mining, scoring, numba compiles) goes to `log`."""
    import rusket_core.progress  # noqa: F401  (registers the compile notices)

    library = logging.getLogger("rusket_core")
    handler, level = _ToRunLog(log), library.level
    library.addHandler(handler)
    if library.getEffectiveLevel() > logging.INFO:
        library.setLevel(logging.INFO)
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(level)


def _logged_chunks(chunks: Any, log: Any) -> Iterator[Any]:
    """A stream's chunks, each produced with the library's progress forwarded to ``log``."""
    iterator = iter(chunks)
    while True:
        with library_logs_to(log):
            try:
                chunk = next(iterator)
            except StopIteration:
                return
        yield chunk


# Op name -> its Config class, filled by `group_asset` (every asset of the graph).
CONFIGS: dict[str, type[dg.Config]] = {}


def check_run_config(run_config: dict[str, Any]) -> None:
    """Validate every asset's config in the run (ranges as well as types) before any asset writes.

    The launchpad checks types and choices; value constraints (e.g. a negative regularization) are
    checked here, at the start of every step, so the run's first step fails and nothing is replaced.
    """
    errors = []
    for op, values in (run_config or {}).get("ops", {}).items():
        cls = CONFIGS.get(op)
        if cls is None:
            continue
        try:
            cls(**(values or {}).get("config", {}))
        except Exception as exc:  # pydantic's ValidationError names the field and the rule
            errors.append(f"{op}: {exc}")
    if errors:
        raise ValueError("invalid run config, nothing was run:\n" + "\n".join(errors))


def group_asset(group: str, io_manager_key: str | None = TABLE_IO) -> Callable[..., Any]:
    """The `@asset` decorator of one group: key prefix, group, IO manager, DuckDB pool, owners, domain
    tag, daily freshness and a code version, so each asset only states its inputs and kinds. The
    library's progress logging is forwarded to the run log while the asset runs."""

    def asset(**kwargs: Any) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        def wrap(fn: Callable[..., Any]) -> dg.AssetsDefinition:
            @functools.wraps(fn)
            def run(*args: Any, **kw: Any) -> Any:
                context = dg.AssetExecutionContext.get()
                check_run_config(context.run.run_config)
                # the step's many small warehouse queries share one open database (Warehouse.held)
                held = next((v.held() for v in kw.values() if callable(getattr(v, "held", None))), contextlib.nullcontext())
                with held, library_logs_to(context.log):
                    out = fn(*args, **kw)
                if isinstance(out, TableStream):  # its chunks are computed later, while the IO manager writes them
                    out.chunks = _logged_chunks(out.chunks, context.log)
                return out

            config = typing.get_type_hints(fn).get("config")
            if config is not None:
                CONFIGS[f"{group}__{fn.__name__}"] = config

            defaults = {
                "key_prefix": group, "group_name": group, "io_manager_key": io_manager_key, "pool": POOL,
                "owners": OWNERS, "tags": {"domain": DOMAINS[group]}, "freshness_policy": DAILY,
                "code_version": code_version(fn),
            }  # fmt: skip
            return dg.asset(**{**defaults, **kwargs})(run)

        return wrap

    return asset


def upstream(group: str, name: str) -> dg.AssetIn:
    """Input from the asset ``group/name``."""
    return dg.AssetIn(key=dg.AssetKey([group, name]))


def key(group: str, name: str) -> dg.AssetKey:
    """Asset key ``group/name`` (the DuckDB table ``group.name``)."""
    return dg.AssetKey([group, name])


def with_rank(table, group_col: str):
    """Add ``rank`` (1 = best) to a table whose rows come grouped by ``group_col``, best first."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return table.append_column("rank", pa.array([], pa.int32()))
    col = table[group_col].combine_chunks()
    change = np.ones(n, dtype=bool)
    change[1:] = pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, n))
    rank = np.arange(n) - np.repeat(starts, lengths) + 1
    return table.append_column("rank", pa.array(rank.astype(np.int32)))


def lookup(keys, table, key_col: str, value_cols: list[str]) -> dict:
    """Columns ``value_cols`` of ``table`` for each of ``keys`` (matched on ``key_col``; null when absent)."""
    import pyarrow.compute as pc

    position = pc.index_in(keys, value_set=table[key_col].combine_chunks())
    return {name: table[name].combine_chunks().take(position) for name in value_cols}


# Assets whose blocking checks (finite factors, the quality gate on model_evaluation) must pass before
# anything built from the ALS model is published: every consumer-facing output lists them in `deps`,
# so Dagster skips it, leaving the previous table or vectors in place, when one of those checks fails.
ALS_GATES = [
    key("personalization", "user_factors"),
    key("personalization", "item_factors"),
    key("personalization", "model_evaluation"),
]
