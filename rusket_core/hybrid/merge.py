"""Merging the user blend with the rule add-ons of each user's cart (``recommend_for_users(carts=...)``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from numba import njit

from rusket_core.encoding import Encoded
from rusket_core.hybrid.carts import EncodedCarts
from rusket_core.hybrid.rule_index import RuleIndex, RuleMatches


def merge_with_rules(
    rows: np.ndarray,
    width: int,
    model_idx: np.ndarray,
    model_scores: np.ndarray,
    carts: EncodedCarts,
    cart_rows: np.ndarray,
    rules: RuleMatches,
    index: RuleIndex,
    seen: Encoded | None,
    rules_weight: float,
) -> dict[str, Any]:
    """Columns [pos, rank, item, score, model_score, rule_score, source] of the merged ranking.

    ``rows``: the requested model user rows (unique); ``model_idx`` / ``model_scores`` their scaled
    model part (model item indices); ``cart_rows`` the model user row of each cart; ``rules`` the
    carts' rule consequents (``RuleIndex.match``; the similar/popular fallbacks are not used here). Items of the user's cart, and of their ``seen`` row
    when given, are dropped; score = (1 - rules_weight) * model + rules_weight * confidence, top
    ``width`` per user. ``pos`` is the position in ``rows``, ``item`` a vocabulary id.
    """
    import polars as pl

    has = model_idx >= 0
    pos_of_row = np.full(int(max(rows.max(initial=-1), cart_rows.max(initial=-1))) + 1, -1, dtype=np.int64)
    pos_of_row[rows] = np.arange(len(rows))
    model_part = pl.DataFrame({
        "pos": pos_of_row[np.repeat(rows, has.sum(axis=1))],
        "item": index.model_to_vocab[model_idx[has]].astype(np.int64),
        "model_score": model_scores[has].astype(np.float64),
    })  # fmt: skip
    in_cart = pl.DataFrame(
        {"pos": pos_of_row[np.repeat(cart_rows, np.diff(carts.indptr))], "item": carts.items.astype(np.int64)}
    )
    is_rule = np.arange(rules.idx.shape[1])[None, :] < rules.count[:, None]
    rules_part = pl.DataFrame({
        "pos": pos_of_row[np.repeat(cart_rows, is_rule.sum(axis=1))],
        "item": rules.idx[is_rule].astype(np.int64),
        "rule_score": rules.conf[is_rule],
    }).filter(pl.col("pos") >= 0)  # fmt: skip  # carts of users not asked for
    if seen is not None:  # rule items the user already has (the model part excludes them itself)
        user_row = rows[rules_part["pos"].to_numpy()]
        model_item = index.vocab_to_model[rules_part["item"].to_numpy()]
        owned = np.zeros(len(rules_part), dtype=bool)
        known = model_item >= 0
        owned[known] = in_rows(seen.indptr, seen.indices, seen.n_items, user_row[known], model_item[known])
        rules_part = rules_part.filter(~pl.Series(owned))
    w = float(rules_weight)
    merged = (
        model_part.join(in_cart, on=["pos", "item"], how="anti")
        .join(rules_part, on=["pos", "item"], how="full", coalesce=True)
        .with_columns(
            score=(1 - w) * pl.col("model_score").fill_null(0.0) + w * pl.col("rule_score").fill_null(0.0),
            source=pl.when(pl.col("model_score").is_not_null() & pl.col("rule_score").is_not_null())
            .then(pl.lit("model+rules"))
            .when(pl.col("rule_score").is_not_null())
            .then(pl.lit("rules"))
            .otherwise(pl.lit("model")),
        )
        .sort(["pos", "score", "item"], descending=[False, True, False])
        .with_columns(rank=pl.int_range(1, pl.len() + 1).over("pos").cast(pl.Int64))
        .filter(pl.col("rank") <= width)
    )
    return {
        "pos": merged["pos"].to_numpy(),
        "rank": merged["rank"].to_numpy(),
        "item": merged["item"].to_numpy(),
        "score": merged["score"].to_numpy(),
        "model_score": merged["model_score"].to_arrow(),
        "rule_score": merged["rule_score"].to_arrow(),
        "source": merged["source"].to_arrow().cast(pa.string()),
    }


def in_rows(indptr: np.ndarray, indices: np.ndarray, n_cols: int, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each (row, item) pair is stored in the CSR matrix with ``n_cols`` columns (sorted
    indices within a row, as ``Encoded`` keeps them; reads only ``rows``)."""
    rows = np.asarray(rows, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if len(items) and (items.min() < 0 or items.max() >= n_cols):
        raise ValueError(f"item indices must be in [0, {n_cols})")
    return _in_rows_kernel(np.asarray(indptr, dtype=np.int64), np.asarray(indices), rows, items)


@njit(cache=True)
def _in_rows_kernel(indptr, indices, rows, items):
    """Binary search of each item in its row's sorted indices."""
    out = np.zeros(len(rows), dtype=np.bool_)
    for p in range(len(rows)):
        lo, hi = indptr[rows[p]], indptr[rows[p] + 1]
        while lo < hi:
            mid = (lo + hi) >> 1
            if indices[mid] < items[p]:
                lo = mid + 1
            else:
                hi = mid
        out[p] = lo < indptr[rows[p] + 1] and indices[lo] == items[p]
    return out
