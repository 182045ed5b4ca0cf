"""Cross-sell analytics: propensity for target items or categories, substitute pairs, customer saturation.

Rules frames are the ones ``association_rules`` returns (``antecedents`` / ``consequents`` as lists of
labels plus the support columns); pandas, polars and pyarrow frames are accepted, and mlxtend-style
frozensets in a pandas frame are read as lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Labels, encode_transactions
from rusket_core.frames import column, input_format, make_frame, resolve_format, to_arrow_table

RULE_COLUMNS = ("antecedents", "consequents", "antecedent support", "consequent support", "support")

#: largest (users × targets) output ``score_potential`` builds without ``top_n``
MAX_POTENTIAL_ROWS = 200_000_000


# ---------------------------------------------------------------------------------------------------------
# rules frames


def rules_table(rules_df: Any, required: tuple[str, ...] = RULE_COLUMNS) -> pa.Table:
    """Read a rules frame as a pyarrow Table, checking the columns in ``required`` are present."""
    if input_format(rules_df) == "pandas":
        rules_df = _sets_to_lists(rules_df)
    table = to_arrow_table(rules_df)
    for name in required:
        column(table, name, "rules column")
    for name in ("antecedents", "consequents"):
        if name in table.column_names and not _is_list(table.column(name).type):
            raise ValueError(f"rules column {name!r} must hold lists of item labels, got {table.column(name).type}")
    return table


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t)


def _sets_to_lists(df: Any) -> Any:
    """Turn mlxtend-style frozenset/tuple cells of a pandas rules frame into sorted lists (arrow cannot read sets)."""
    out = df
    for name in ("antecedents", "consequents"):
        if name in df.columns and len(df) and isinstance(df[name].iloc[0], set | frozenset | tuple):
            if out is df:
                out = df.copy()
            out[name] = [sorted(v) for v in df[name]]
    return out


def single_item_rules(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a rules table with one antecedent and one consequent item: (row positions, antecedents, consequents)."""
    ant = table.column("antecedents").combine_chunks()
    con = table.column("consequents").combine_chunks()
    mask = pc.and_(pc.equal(pc.list_value_length(ant), 1), pc.equal(pc.list_value_length(con), 1))
    mask = pc.fill_null(mask, False)
    rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    ant_items = pc.list_flatten(ant.filter(mask)).to_numpy(zero_copy_only=False)
    con_items = pc.list_flatten(con.filter(mask)).to_numpy(zero_copy_only=False)
    return rows, ant_items, con_items


def numeric_column(table: pa.Table, name: str, rows: np.ndarray | None = None) -> np.ndarray:
    """A float64 numpy view of a numeric rules column (optionally at ``rows``); nulls are an error."""
    col = column(table, name, "rules column")
    if col.null_count:
        raise ValueError(f"rules column {name!r} has {col.null_count} null values")
    values = col.to_numpy().astype(np.float64, copy=False)
    return values if rows is None else values[rows]


# ---------------------------------------------------------------------------------------------------------
# substitutes


def find_substitutes(rules_df: Any, max_lift: float = 0.8, format: str | None = None) -> Any:
    """Pairs of products bought together less often than chance (lift < ``max_lift``), weakest first.

    Only one-item → one-item rules describe a product pair; rules with several items on a side are
    skipped. ``A → B`` and ``B → A`` collapse to one row per unordered pair with ``item_a`` the smaller
    label. Metrics are recomputed from the three supports so both directions agree: ``support_a``,
    ``support_b``, ``support`` (of the pair), ``lift``, ``leverage``, ``jaccard``, ``kulczynski`` and the
    directional ``confidence_a_to_b`` / ``confidence_b_to_a``. Sorted by lift ascending (ties by
    ``item_a``, ``item_b``). Substitutes only appear if the rules were mined at a support low enough
    for the pair to be frequent and not filtered at lift >= 1.
    """
    if not np.isfinite(max_lift) or max_lift <= 0:
        raise ValueError(f"max_lift must be a positive number, got {max_lift!r}")
    out_format = resolve_format(format, like=rules_df)
    table = rules_table(rules_df)
    rows, ant, con = single_item_rules(table)
    s_ant = numeric_column(table, "antecedent support", rows)
    s_con = numeric_column(table, "consequent support", rows)
    s_ab = numeric_column(table, "support", rows)
    if len(rows):
        vocab = Labels.from_values(np.concatenate([ant, con]))
        ia, ic = vocab.indices_of(ant), vocab.indices_of(con)
    else:
        vocab, ia, ic = Labels(np.empty(0, dtype=np.int64)), np.empty(0, np.int64), np.empty(0, np.int64)
    swap = ia > ic
    lo, hi = np.where(swap, ic, ia), np.where(swap, ia, ic)
    s_lo, s_hi = np.where(swap, s_con, s_ant), np.where(swap, s_ant, s_con)
    key = lo * max(len(vocab), 1) + hi
    _, first = np.unique(key, return_index=True)
    lo, hi, s_lo, s_hi, s_ab = lo[first], hi[first], s_lo[first], s_hi[first], s_ab[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = s_ab / (s_lo * s_hi)
    keep = lift < max_lift
    lo, hi, s_lo, s_hi, s_ab, lift = lo[keep], hi[keep], s_lo[keep], s_hi[keep], s_ab[keep], lift[keep]
    order = np.lexsort((hi, lo, lift))
    lo, hi, s_lo, s_hi, s_ab, lift = lo[order], hi[order], s_lo[order], s_hi[order], s_ab[order], lift[order]
    return make_frame(
        {
            "item_a": _label_array(vocab, lo),
            "item_b": _label_array(vocab, hi),
            "support_a": s_lo,
            "support_b": s_hi,
            "support": s_ab,
            "lift": lift,
            "leverage": s_ab - s_lo * s_hi,
            "jaccard": s_ab / (s_lo + s_hi - s_ab),
            "kulczynski": 0.5 * (s_ab / s_lo + s_ab / s_hi),
            "confidence_a_to_b": s_ab / s_lo,
            "confidence_b_to_a": s_ab / s_hi,
        },
        out_format,
    )


def _label_array(labels: Labels, idx: np.ndarray) -> pa.Array:
    """Labels at ``idx`` as a pyarrow array keeping the label type (also when ``idx`` is empty)."""
    return labels.to_arrow().take(pa.array(np.asarray(idx, dtype=np.int64)))


# ---------------------------------------------------------------------------------------------------------
# saturation


def customer_saturation(
    df: Any,
    user_col: str,
    category_col: str | None = None,
    item_col: str | None = None,
    format: str | None = None,
) -> Any:
    """How much of the range each customer already buys: distinct categories (or items), share of all, decile.

    Give exactly one of ``category_col`` / ``item_col``. Columns: ``user_col``, ``n_distinct`` (distinct
    categories or items the customer bought), ``share`` (= n_distinct / distinct values in ``df``) and
    ``decile`` (1 = most saturated, 10 = least). Tie rule: decile = 1 + floor(10 * g / n_customers),
    where g counts customers with strictly more distinct values, so equal counts always share a decile
    and a single customer is in decile 1. Sorted by n_distinct descending, then customer label.
    """
    if (category_col is None) == (item_col is None):
        raise ValueError("give exactly one of category_col or item_col")
    value_col = category_col if category_col is not None else item_col
    out_format = resolve_format(format, like=df)
    enc = encode_transactions(df, user_col, value_col)
    counts = np.diff(enc.indptr)
    n_users = len(counts)
    # customers with strictly more distinct values = position of the first equal count in descending order
    desc = np.sort(counts)[::-1]
    greater = np.searchsorted(-desc, -counts, side="left")
    decile = 1 + (10 * greater) // n_users
    order = np.lexsort((np.arange(n_users), -counts))
    return make_frame(
        {
            user_col: _label_array(enc.rows, order),
            "n_distinct": counts[order].astype(np.int64),
            "share": counts[order] / enc.n_items,
            "decile": decile[order].astype(np.int64),
        },
        out_format,
    )
