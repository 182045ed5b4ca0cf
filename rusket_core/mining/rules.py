"""Association rules from frequent itemsets: generation (numba) and the rules frame (metrics in ``metrics.py``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Labels
from rusket_core.frames import input_format, list_column, make_frame, resolve_format, to_arrow_table
from rusket_core.mining.kernels import rules_kernel
from rusket_core.mining.metrics import METRICS, metric_code, rule_metrics

RULE_COLUMNS: tuple[str, ...] = ("antecedents", "consequents", *METRICS)


@dataclass
class RuleArrays:
    """Rules as CSR antecedent/consequent item ids plus the three supports each metric derives from."""

    ant_offsets: np.ndarray
    ant_items: np.ndarray
    con_offsets: np.ndarray
    con_items: np.ndarray
    antecedent_support: np.ndarray
    consequent_support: np.ndarray
    support: np.ndarray

    def __len__(self) -> int:
        return len(self.support)


def _check_threshold(min_threshold: float) -> float:
    """The threshold as a float; NaN or non-numbers are refused (a NaN filter would keep nothing)."""
    if isinstance(min_threshold, bool) or not isinstance(min_threshold, int | float | np.number):
        raise ValueError(f"min_threshold must be a number, got {min_threshold!r}")
    if math.isnan(min_threshold):
        raise ValueError("min_threshold must not be NaN")
    return float(min_threshold)


def rule_arrays(
    offsets: np.ndarray,
    items: np.ndarray,
    support: np.ndarray,
    metric: str = "confidence",
    min_threshold: float = 0.8,
    max_consequent: int = 0,
    describe: Any = None,
) -> RuleArrays:
    """Generate rules from CSR itemsets (ids sorted within each itemset, supports as fractions).

    ``describe(i)`` renders itemset ``i`` for error messages.
    """
    code = metric_code(metric)
    threshold = _check_threshold(min_threshold)
    # writable copies where needed: read-only (arrow-backed) arrays are another numba signature
    status, ant_off, ant, con_off, con, s_a, s_c, s_ac = rules_kernel(
        np.require(offsets, np.int64, "CW"),
        np.require(items, np.int64, "CW"),
        np.require(support, np.float64, "CW"),
        code,
        threshold,
        max_consequent,
    )
    show = describe or (lambda i: f"#{i}")
    n = len(offsets) - 1
    if status == -(2 + n):
        raise ValueError("itemsets longer than 30 items are not supported for rule generation")
    if status > 0:
        raise ValueError(f"itemset {show(status - 1)} is listed more than once")
    if status < 0:
        raise ValueError(
            f"the itemsets do not include every subset of {show(-status - 1)}; rules need the support "
            "of each antecedent and consequent (mine without max_len cuts below the rule length)"
        )
    return RuleArrays(ant_off, ant, con_off, con, s_a, s_c, s_ac)


def rules_frame(rules: RuleArrays, labels: Labels, format: str) -> Any:
    """The rules as a frame: label lists for antecedents/consequents and one column per metric."""
    values = labels.to_arrow()
    columns: dict[str, Any] = {
        "antecedents": list_column(rules.ant_offsets, values.take(pa.array(rules.ant_items))),
        "consequents": list_column(rules.con_offsets, values.take(pa.array(rules.con_items))),
    }
    columns.update(
        rule_metrics(rules.antecedent_support, rules.consequent_support, rules.support)
    )
    return make_frame(columns, format)


def itemsets_from_frame(
    frequent_itemsets: Any, num_transactions: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Labels]:
    """Read an itemsets frame (``itemsets`` lists + ``support``, or ``count`` with ``num_transactions``)
    into CSR offsets, sorted item ids, supports and the item labels."""
    if input_format(frequent_itemsets) == "pandas":
        frequent_itemsets = _pandas_sets_to_lists(frequent_itemsets)
    table = to_arrow_table(frequent_itemsets)
    if "itemsets" not in table.column_names:
        raise ValueError(f"column 'itemsets' not found; available columns: {table.column_names}")
    if "support" in table.column_names:
        support = _numeric(table.column("support"), "support")
    elif "count" in table.column_names and num_transactions is not None:
        if num_transactions < 1:
            raise ValueError(f"num_transactions must be >= 1, got {num_transactions}")
        support = _numeric(table.column("count"), "count") / float(num_transactions)
    else:
        raise ValueError(
            "column 'support' not found (or give a 'count' column with num_transactions); "
            f"available columns: {table.column_names}"
        )
    if ((support <= 0) | (support > 1)).any():
        bad = support[(support <= 0) | (support > 1)][0]
        raise ValueError(f"column 'support' must hold fractions in (0, 1], found {bad}")
    sets = table.column("itemsets").combine_chunks()
    if table.num_rows == 0:
        return np.zeros(1, np.int64), np.empty(0, np.int64), support, Labels(np.empty(0, np.int64))
    if not (pa.types.is_list(sets.type) or pa.types.is_large_list(sets.type)):
        raise ValueError(f"column 'itemsets' must hold lists of items, got {sets.type}")
    if sets.null_count:
        raise ValueError(f"column 'itemsets' has {sets.null_count} null values")
    offsets = sets.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    flat = sets.flatten()
    if flat.null_count:
        raise ValueError(f"column 'itemsets' has {flat.null_count} null items")
    if (np.diff(offsets) == 0).any():
        raise ValueError("column 'itemsets' has an empty itemset")
    labels = Labels.from_values(flat) if len(flat) else Labels(np.empty(0, np.int64))
    ids = labels.indices_of(flat) if len(flat) else np.empty(0, np.int64)
    seg = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    ids = ids[np.lexsort((ids, seg))]
    repeated = (ids[1:] == ids[:-1]) & (seg[1:] == seg[:-1])
    if repeated.any():
        row = int(seg[1:][repeated][0])
        raise ValueError(f"itemset {labels.take(ids[offsets[row]:offsets[row + 1]]).tolist()} repeats an item")
    return offsets, ids, support, labels


def _numeric(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """A numeric column as float64 without nulls/NaN."""
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise ValueError(f"column {name!r} must be numeric, got {col.type}")
    if col.null_count:
        raise ValueError(f"column {name!r} has {col.null_count} null values")
    values = pc.cast(col, pa.float64()).to_numpy()
    if np.isnan(values).any():
        raise ValueError(f"column {name!r} has {int(np.isnan(values).sum())} NaN values")
    return values


def _pandas_sets_to_lists(df: Any) -> Any:
    """mlxtend-style frames hold frozensets; arrow needs lists (one pass over the itemsets column)."""
    if "itemsets" not in df.columns or len(df) == 0:
        return df
    first = df["itemsets"].iloc[0]
    if isinstance(first, frozenset | set | tuple):
        df = df.assign(itemsets=[list(s) for s in df["itemsets"]])
    return df


def association_rules(
    frequent_itemsets: Any,
    num_transactions: int | None = None,
    metric: str = "confidence",
    min_threshold: float = 0.8,
    format: str | None = None,
) -> Any:
    """Rules A -> C from an itemsets frame (pandas/polars/arrow with ``itemsets`` and ``support``).

    Every non-empty proper subset A of each itemset S gives a candidate A -> S \\ A; the rules whose
    ``metric`` >= ``min_threshold`` are returned with all metric columns (mlxtend's definitions;
    conviction is inf when confidence is 1, zhangs_metric and certainty are 0 where their
    denominator is 0).  ``num_transactions`` is only needed when the frame has ``count`` but no
    ``support``.  Every subset of a listed itemset must be listed as well.
    """
    metric_code(metric)
    out_format = resolve_format(format, like=frequent_itemsets)
    offsets, ids, support, labels = itemsets_from_frame(frequent_itemsets, num_transactions)

    def describe(i: int) -> str:
        return str(labels.take(ids[offsets[i]:offsets[i + 1]]).tolist())

    rules = rule_arrays(offsets, ids, support, metric, min_threshold, describe=describe)
    return rules_frame(rules, labels, out_format)
