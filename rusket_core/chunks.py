"""Batch outputs in chunks of rows (customers or items): one bounded piece at a time, for streaming writers.

Each generator yields arrow tables whose concatenation equals the unchunked call (same rows, same
order), so a writer can append them to a table as they come and memory holds one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

#: rows (customers or items) per chunk when none is given
CHUNK_ROWS = 50_000


def chunk_bounds(n_rows: int, chunk_size: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive chunks covering ``range(n_rows)``."""
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    for start in range(0, n_rows, int(chunk_size)):
        yield start, min(n_rows, start + int(chunk_size))


def iter_batch_recommend(model: Any, n: int = 10, chunk_size: int = CHUNK_ROWS, exclude_seen: bool = True) -> Iterator[pa.Table]:
    """``model.batch_recommend`` for every user, ``chunk_size`` users at a time (arrow tables)."""
    users = model.users.values
    for start, stop in chunk_bounds(len(users), chunk_size):
        yield model.batch_recommend(n=n, exclude_seen=exclude_seen, users=users[start:stop], format="arrow")


def iter_batch_similar_items(model: Any, n: int = 10, chunk_size: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """``model.batch_similar_items`` for every item, ``chunk_size`` items at a time (arrow tables)."""
    items = model.items.values
    for start, stop in chunk_bounds(len(items), chunk_size):
        yield model.batch_similar_items(n=n, items=items[start:stop], format="arrow")


def iter_score_potential(
    model: Any, target_categories: Any, n: int, chunk_size: int = CHUNK_ROWS, rows: Any = None
) -> Iterator[pa.Table]:
    """``score_potential`` over the model's training interactions, ``chunk_size`` customers at a time
    (only the customers at model rows ``rows`` when given).

    Each chunk is sorted by customer (label order), then score descending: the concatenation is the
    unchunked result in that order.
    """
    from rusket_core.analytics import score_potential

    history = model.user_items
    if history is None:
        raise ValueError("the model holds no training interactions to score cross-sell potential on")
    if rows is not None:
        history = history.take_rows(rows)
    for start, stop in chunk_bounds(history.n_rows, chunk_size):
        table = score_potential(history.row_slice(start, stop), model, target_categories, n=n, format="arrow")
        yield _by_user_then_score(table, history.rows.values[start:stop])


def _by_user_then_score(table: pa.Table, users: Any) -> pa.Table:
    """Rows grouped by user (first column) in ``users`` order (the model's), best score first within a user."""
    import numpy as np
    import pyarrow.compute as pc

    position = pc.index_in(table.column(0), value_set=pa.array(users)).to_numpy(zero_copy_only=False)
    order = np.lexsort((-table["score"].to_numpy(), position), axis=0)
    return table.take(pa.array(order))


def iter_recommend_for_users(
    recommender: Any, n: int = 10, chunk_size: int = CHUNK_ROWS, users: Any = None
) -> Iterator[pa.Table]:
    """``recommender.recommend_for_users`` (the hybrid, with its own carts) for every user (or the
    given ``users``), ``chunk_size`` at a time."""
    users = recommender.users.values if users is None else users
    for start, stop in chunk_bounds(len(users), chunk_size):
        yield recommender.recommend_for_users(users=users[start:stop], n=n, format="arrow")
