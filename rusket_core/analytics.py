"""Cross-sell analytics: propensity for target items or categories, substitute pairs, customer saturation.

Rules frames are the ones ``association_rules`` returns, read by :mod:`rusket_core.mining.rules_frame`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from numba import njit, prange

from rusket_core.deprecation import UNSET, renamed
from rusket_core.encoding import Encoded, Labels, encode_baskets, encode_transactions
from rusket_core.factorization.topk import blocked_topk, register_scorer, run_chunk
from rusket_core.frames import make_frame, resolve_format, to_arrow_table
from rusket_core.mining.metrics import rule_metrics
from rusket_core.mining.rules_frame import (
    label_kind,
    numeric_column,
    rules_table,
    single_item_rules,
)

#: largest (users × targets) output ``score_potential`` builds without ``n``
MAX_POTENTIAL_ROWS = 50_000_000


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
    lift = rule_metrics(s_lo, s_hi, s_ab, ("lift",))["lift"]
    keep = lift < max_lift
    lo, hi, s_lo, s_hi, s_ab, lift = lo[keep], hi[keep], s_lo[keep], s_hi[keep], s_ab[keep], lift[keep]
    order = np.lexsort((hi, lo, lift))
    lo, hi, s_lo, s_hi, s_ab = lo[order], hi[order], s_lo[order], s_hi[order], s_ab[order]
    a_to_b = rule_metrics(s_lo, s_hi, s_ab, ("lift", "leverage", "jaccard", "kulczynski", "confidence"))
    b_to_a = rule_metrics(s_hi, s_lo, s_ab, ("confidence",))
    return make_frame(
        {
            "item_a": _label_array(vocab, lo),
            "item_b": _label_array(vocab, hi),
            "support_a": s_lo,
            "support_b": s_hi,
            "support": s_ab,
            "lift": a_to_b["lift"],
            "leverage": a_to_b["leverage"],
            "jaccard": a_to_b["jaccard"],
            "kulczynski": a_to_b["kulczynski"],
            "confidence_a_to_b": a_to_b["confidence"],
            "confidence_b_to_a": b_to_a["confidence"],
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


# ---------------------------------------------------------------------------------------------------------
# cross-sell potential


#: scores per BLAS product of the tiled cross-sell scorer (customers × items of one tile): kept in cache
POTENTIAL_TILE_SCORES = 1 << 16


class PotentialScores(NamedTuple):
    """Driver state of cross-sell potential: each target's best item score, bought targets -inf.

    The targets' items are grouped by target (``group_ptr``; ``item_group`` = each item's target).
    With one item per target and a selection (``direct``) ``items_t`` holds their factors (k,
    n_items) and the score rows are selected from directly. Otherwise ``item_tiles[t]`` is the (k,
    tile) factor block of items ``t * tile ...`` (the last one zero padded), scored ``sub_rows``
    customers at a time. A customer's bought targets are the exclusion CSR. When ``all_scores`` has
    a row per customer the target scores are stored there (no selection).
    """

    query: np.ndarray
    items_t: np.ndarray
    item_tiles: np.ndarray
    sub_rows: int
    n_items: int
    item_group: np.ndarray
    group_ptr: np.ndarray
    direct: bool
    excl_indptr: np.ndarray
    excl_indices: np.ndarray
    all_scores: np.ndarray


def _potential_scores(state, r0, r1, buf, scratch, mask):
    """Target scores of a block of customers. Per tile of items, a BLAS product for ``sub_rows``
    customers at a time is folded into the per-target maximum while it is in cache: no full score
    rows. One item per target with a selection: the full score rows (one product), selected from."""
    if state.direct:
        src = buf[: r1 - r0]
        np.dot(state.query[r0:r1], state.items_t, src)
        return src
    keep_all = state.all_scores.shape[0] > 0
    tiles = state.item_tiles
    tile = tiles.shape[2]
    n_targets = state.group_ptr.shape[0] - 1
    for r in range(r0, r1):
        dst = state.all_scores[r] if keep_all else scratch[r - r0]
        dst[:n_targets] = -np.inf
    part_buf = np.empty((min(state.sub_rows, r1 - r0), tile), np.float32)
    for t in range(tiles.shape[0]):
        c0 = t * tile
        c1 = min(state.n_items, c0 + tile)
        for s0 in range(r0, r1, part_buf.shape[0]):
            s1 = min(r1, s0 + part_buf.shape[0])
            part = part_buf[: s1 - s0]
            np.dot(state.query[s0:s1], tiles[t], part)
            for r in range(s0, s1):
                dst = state.all_scores[r] if keep_all else scratch[r - r0]
                row = part[r - s0]
                c = c0
                while c < c1:  # the targets overlapping this tile, one run of items each
                    g = state.item_group[c]
                    end = min(state.group_ptr[g + 1], c1)
                    best = dst[g]
                    for p in range(c - c0, end - c0):
                        if row[p] > best:
                            best = row[p]
                    dst[g] = best
                    c = end
    for r in range(r0, r1):
        dst = state.all_scores[r] if keep_all else scratch[r - r0]
        for e in range(state.excl_indptr[r], state.excl_indptr[r + 1]):
            dst[state.excl_indices[e]] = -np.inf
    return scratch[: r1 - r0]


register_scorer(PotentialScores, _potential_scores)


@njit(parallel=True, cache=True)
def _potential_kernel(state, excl_indptr, excl_indices, out_idx, out_val, plan):
    """The shared blocked top-k driver over :func:`_potential_scores` (see ``topk.parallel_kernel``)."""
    for c in prange(plan[6]):
        run_chunk(state, c, excl_indptr, excl_indices, out_idx, out_val, plan)


def score_potential(
    user_history: Any,
    model: Any,
    target_categories: Any,
    user_col: str | None = None,
    item_col: str | None = None,
    n: int | None = None,
    format: str | None = None,
    *,
    top_n: Any = UNSET,
) -> Any:
    """Propensity of each customer for each target not yet bought: [user_id, target, score] rows, best first.

    ``user_history``: long-format purchases (pandas/polars/pyarrow; ``user_col`` / ``item_col``
    default to the model's column names, or to the frame's two columns in order), a list with one
    item list per customer in the model's customer order (``model.users``), an ``Encoded``, or None
    for the model's training interactions. Every customer in it must be known to ``model``.
    ``target_categories``: a list of target item labels (score = CF score ``user · item``), or a
    mapping item -> category (a dict, or a two-column frame [item, category]) where the targets are
    the categories and the score is the best CF score among the category's model items. A target
    counts as bought when the customer bought the item (or any item of the category) in
    ``user_history``; bought targets get no row. ``n`` keeps each customer's best n targets (``top_n``
    is its deprecated name). ``target`` is not ``item_id`` because it may be a category.
    The shared blocked top-k driver scores blocks of customers (a single-threaded BLAS product per
    block and thread, the per-target max, the shared row selection); the output (``MAX_POTENTIAL_ROWS`` at most without ``n``) is sorted by score descending,
    ties by customer then target label order.
    """
    n = renamed("top_n", top_n, "n", n)
    for attr in ("user_factors", "item_factors", "users", "items"):
        if getattr(model, attr, None) is None:
            raise ValueError(f"model has no {attr!r}: pass a fitted factor model (ALS, BPR)")
    out_format = resolve_format(format, like=user_history, default=getattr(model, "_format", None) or "pandas")
    users, hist_items = _history(user_history, model, user_col, item_col)
    rows = model.users.indices_of(users.values)
    targets, group_ptr, group_items, item_labels, item_target = _targets(target_categories, model)
    n_targets, m = len(targets), len(users)
    width = n_targets if n is None else max(0, min(int(n), n_targets))
    if n is None and m * n_targets > MAX_POTENTIAL_ROWS:
        raise ValueError(
            f"{m} customers × {n_targets} targets is more than {MAX_POTENTIAL_ROWS} rows; pass n="
        )
    hist_labels = hist_items.items.values
    if len(item_labels) and len(hist_labels) and label_kind(hist_labels) != label_kind(item_labels.values):
        raise KeyError(
            f"history items are {hist_labels.dtype} but the target items are {item_labels.values.dtype}"
        )
    # bought targets per customer (CSR over customers)
    hist_rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(hist_items.indptr))
    pos = item_labels.lookup.get_indexer(hist_labels)[hist_items.indices]
    bought = item_target[np.maximum(pos, 0)] if len(item_target) else np.zeros(len(pos), np.int64)
    ok = (pos >= 0) & (bought >= 0)
    # rows of the history CSR are in customer order already; a target bought twice is harmless
    b_rows, b_targets = hist_rows[ok], np.ascontiguousarray(bought[ok], dtype=np.int32)
    b_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(b_rows, minlength=m), out=b_ptr[1:])
    user_pos, t_idx = np.empty(0, np.int64), np.empty(0, np.int64)
    scores = np.empty(0, np.float32)
    if m and width:
        keep_all = n is None
        direct = not keep_all and bool(np.array_equal(group_ptr, np.arange(n_targets + 1)))
        all_scores = np.empty((m if keep_all else 0, n_targets), dtype=np.float32)
        factors = np.asarray(model.item_factors, dtype=np.float32)[group_items]
        k = factors.shape[1]
        tile = int(min(max(len(group_items), 1), max(8, POTENTIAL_TILE_SCORES // max(k, 1))))
        if direct:
            items_t, tiles = np.ascontiguousarray(factors.T), np.zeros((0, k, tile), np.float32)
        else:
            items_t, tiles = np.zeros((k, 0), np.float32), _tiles(factors, tile)
        state = PotentialScores(
            np.ascontiguousarray(model.user_factors[rows], dtype=np.float32), items_t, tiles,
            max(1, POTENTIAL_TILE_SCORES // tile), len(group_items),
            np.repeat(np.arange(n_targets, dtype=np.int64), np.diff(group_ptr)), group_ptr, direct,
            b_ptr, b_targets, all_scores,
        )  # fmt: skip
        buf_cols, scratch = (len(group_items), 0) if direct else (0, n_targets)
        out_idx, out_val = blocked_topk(
            _potential_kernel, state, m, None if keep_all else width, n_targets, buf_cols, scratch, b_ptr, b_targets,
            scored_cols=len(group_items),
        )  # fmt: skip
        if keep_all:
            user_pos, t_idx = np.nonzero(all_scores > -np.inf)  # bought and empty targets: no row
            scores = all_scores[user_pos, t_idx]
        else:
            keep = out_idx >= 0
            user_pos, t_idx, scores = np.nonzero(keep)[0], out_idx[keep], out_val[keep]
    order = _descending_order(scores)
    return make_frame(
        {
            "user_id": _label_array(users, user_pos[order]),
            "target": _label_array(targets, t_idx[order]),
            "score": scores[order],
        },
        out_format,
    )


def _tiles(factors: np.ndarray, tile: int) -> np.ndarray:
    """(n_tiles, k, tile) C-contiguous: tile ``t`` is the transposed factors of items ``t * tile ...``, zero padded."""
    n, k = factors.shape
    n_tiles = -(-n // tile)
    padded = np.zeros((n_tiles * tile, k), np.float32)
    padded[:n] = factors
    return np.ascontiguousarray(padded.reshape(n_tiles, tile, k).transpose(0, 2, 1))


def _history(user_history: Any, model: Any, user_col: str | None, item_col: str | None) -> tuple[Labels, Encoded]:
    """(customers, their purchases as an Encoded over the history's own item labels)."""
    if user_history is None:
        enc = model.user_items
        if enc is None:
            raise ValueError("user_history=None needs a model holding its training interactions")
        return enc.rows, enc
    if isinstance(user_history, Encoded):
        return user_history.rows, user_history
    if isinstance(user_history, list | tuple):  # the model's customers in order, one item list each
        if len(user_history) != len(model.users):
            raise ValueError(
                f"user_history as a list needs one item list per model customer, in the model's order: "
                f"got {len(user_history)} lists for {len(model.users)} customers"
            )
        enc = encode_baskets([_as_items(items) for items in user_history])
        return model.users, Encoded(enc.indptr, enc.indices, enc.data, model.users, enc.items)
    table = to_arrow_table(user_history)
    if user_col is None and item_col is None:
        names = table.column_names
        if getattr(model, "user_col", None) in names and getattr(model, "item_col", None) in names:
            user_col, item_col = model.user_col, model.item_col
        elif len(names) == 2:
            user_col, item_col = names
        else:
            raise ValueError(f"name the history's columns with user_col= and item_col=; columns: {names}")
    if user_col is None or item_col is None:
        raise ValueError("give both user_col and item_col (or neither)")
    enc = encode_transactions(table, user_col, item_col)
    return enc.rows, enc


def _as_items(items: Any) -> list:
    """One customer's history as a list of item labels (a lone string is one item)."""
    return [items] if isinstance(items, str) or np.isscalar(items) else list(items)


def _targets(target_categories: Any, model: Any) -> tuple[Labels, np.ndarray, np.ndarray, Labels, np.ndarray]:
    """Targets, their scored model items (CSR group_ptr / group_items), and item label -> target index."""
    mapping = None
    if isinstance(target_categories, Mapping):
        mapping = (np.asarray(list(target_categories.keys())), np.asarray(list(target_categories.values())))
    elif _is_frame(target_categories):
        table = to_arrow_table(target_categories)
        if table.num_columns != 2:
            raise ValueError(
                f"a target mapping frame needs exactly two columns [item, category]; got {table.column_names}"
            )
        for name in table.column_names:
            if table.column(name).null_count:
                raise ValueError(f"target mapping column {name!r} has {table.column(name).null_count} null values")
        mapping = (table.column(0).to_numpy(), table.column(1).to_numpy())
    if mapping is None:
        if isinstance(target_categories, pa.Array | pa.ChunkedArray):
            values = np.asarray(target_categories.to_pylist())
        elif hasattr(target_categories, "to_numpy"):  # a pandas or polars Series of item labels
            values = np.asarray(target_categories.to_numpy())
        else:
            values = np.asarray(list(target_categories))
        if values.dtype.kind == "U":
            values = values.astype(object)
        targets = Labels.from_values(values)
        items = model.items.indices_of(targets.values)
        ptr = np.arange(len(targets) + 1, dtype=np.int64)
        return targets, ptr, items, targets, np.arange(len(targets), dtype=np.int64)
    item_values, cat_values = (v.astype(object) if v.dtype.kind == "U" else v for v in mapping)
    item_labels = Labels(item_values)  # an item with two categories is an error, not a silent choice
    targets = Labels.from_values(cat_values)
    item_target = targets.indices_of(cat_values)
    model_pos = model.items.lookup.get_indexer(item_values)
    known = model_pos >= 0
    order = np.lexsort((model_pos[known], item_target[known]))
    group_items = model_pos[known][order]
    ptr = np.zeros(len(targets) + 1, dtype=np.int64)
    np.cumsum(np.bincount(item_target[known], minlength=len(targets)), out=ptr[1:])
    return targets, ptr, group_items.astype(np.int64), item_labels, item_target


def _is_frame(obj: Any) -> bool:
    """A pandas/polars DataFrame or pyarrow Table (a Series is a list of targets, not a mapping)."""
    return isinstance(obj, pa.Table | pa.RecordBatch) or (hasattr(obj, "columns") and hasattr(obj, "shape"))


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Positions sorting float32 ``scores`` descending, equal scores in their original order.

    One ``np.sort`` of 64-bit keys (order-preserving score bits above the position) instead of a
    stable argsort, which is several times slower on tens of millions of rows.
    """
    bits = (np.asarray(scores, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0.0 -> +0.0
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    keys = ((~ascending).astype(np.uint64) << np.uint64(32)) | np.arange(len(bits), dtype=np.uint64)
    keys.sort()
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
