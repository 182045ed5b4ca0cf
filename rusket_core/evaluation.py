"""Holdout splits and ranking metrics (precision/recall/ndcg/MAP@k, coverage).

``evaluate(recommender, train, test, k)`` scores any :class:`~rusket_core.recommender.RecommenderBase`
(ALS, BPR, the popularity baseline, the hybrid ``Recommender``) through its public
``batch_recommend``, so every recommender is compared and gated by the same code.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.frames import column, from_arrow, input_format, to_arrow_table
from rusket_core.popularity import PopularityRecommender
from rusket_core.recommender import RecommenderBase

__all__ = [
    "PopularityRecommender",  # lives in rusket_core.popularity; importable from here as before
    "coverage",
    "evaluate",
    "leave_last_out",
    "map_at_k",
    "ndcg_at_k",
    "planted_interactions",
    "precision_at_k",
    "recall_at_k",
    "train_test_split",
]

# ---------------------------------------------------------------------------------------------
# splits


def train_test_split(
    data: Any,
    user_col: str,
    item_col: str,
    test_fraction: float = 0.2,
    random_state: int = 0,
) -> tuple[Any, Any]:
    """Hold out a random ``test_fraction`` of each user's distinct items (seeded).

    All rows of one (user, item) pair land on the same side, so a test item is never seen in
    training; every user keeps at least one item in training (users with one item have no test
    rows). Returns (train, test) in the input's library.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    table = to_arrow_table(data)
    users = _codes(table, user_col)
    items = _codes(table, item_col)
    pair, pair_user = _pairs(users, items)
    return _split(data, table, split_pairs(pair_user, test_fraction, random_state)[pair])


def split_pairs(pair_user: np.ndarray, test_fraction: float, random_state: int = 0) -> np.ndarray:
    """Test mask over distinct (user, item) pairs, given each pair's user code (the core of ``train_test_split``).

    Pairs must come ordered by (user code, item code), codes numbering users and items by first
    appearance, for the same seed to pick the same pairs as ``train_test_split`` on the lines.
    """
    rng = np.random.default_rng(random_state)
    n_pairs = len(pair_user)
    order = np.lexsort((rng.random(n_pairs), pair_user))  # pairs grouped by user, random within
    sizes = np.bincount(pair_user)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sorted_user = pair_user[order]
    rank = np.arange(n_pairs) - starts[sorted_user]
    n_test = np.minimum(np.floor(test_fraction * sizes + 0.5), sizes - 1)
    test_pair = np.zeros(n_pairs, dtype=bool)
    test_pair[order] = rank < n_test[sorted_user]
    return test_pair


def leave_last_out(data: Any, user_col: str, item_col: str, time_col: str) -> tuple[Any, Any]:
    """Hold out each user's latest item by ``time_col`` (ties: the later row of the input).

    Every row of that (user, item) pair goes to test; users with a single distinct item stay
    wholly in training. Returns (train, test) in the input's library.
    """
    table = to_arrow_table(data)
    users = _codes(table, user_col)
    items = _codes(table, item_col)
    times = column(table, time_col, "time column")
    if times.null_count:
        raise ValueError(f"time column {time_col!r} has {times.null_count} nulls")
    t = times.to_numpy()
    pair, pair_user = _pairs(users, items)
    order = np.lexsort((np.arange(len(t)), t, users))
    last = order[np.r_[users[order][1:] != users[order][:-1], True]]  # last row of each user
    distinct = np.bincount(pair_user, minlength=users.max() + 1)
    last = last[distinct[users[last]] > 1]
    test_pair = np.zeros(len(pair_user), dtype=bool)
    test_pair[pair[last]] = True
    return _split(data, table, test_pair[pair])


def _codes(table: pa.Table, name: str) -> np.ndarray:
    if table.num_rows == 0:
        raise ValueError("input is empty: no interactions to split")
    col = column(table, name)
    if col.null_count:
        raise ValueError(f"column {name!r} has {col.null_count} nulls")
    return np.asarray(col.combine_chunks().dictionary_encode().indices, dtype=np.int64)


def _pairs(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair id of each row and user code of each pair."""
    n_items = int(items.max()) + 1 if len(items) else 1
    keys, pair = np.unique(users * n_items + items, return_inverse=True)
    return pair.ravel(), keys // n_items


def _split(data: Any, table: pa.Table, test_mask: np.ndarray) -> tuple[Any, Any]:
    kind = input_format(data)
    if kind == "pandas":
        return data[~test_mask], data[test_mask]
    if kind == "polars":
        import polars as pl

        return data.filter(pl.Series(~test_mask)), data.filter(pl.Series(test_mask))
    return table.filter(pa.array(~test_mask)), table.filter(pa.array(test_mask))


# ---------------------------------------------------------------------------------------------
# metrics


def _ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, float]:
    """Mean precision/recall/ndcg/MAP@k over users with at least one relevant item."""
    keep = n_relevant > 0
    hits = hits[keep, :k].astype(np.float64)
    n_rel = n_relevant[keep].astype(np.float64)
    if len(n_rel) == 0:
        return {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}
    width = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount[:width]
    ideal = np.cumsum(discount)[np.minimum(n_rel, k).astype(np.int64) - 1]
    cum_hits = np.cumsum(hits, axis=1)
    precision_at_i = cum_hits / np.arange(1, width + 1)
    ap = (precision_at_i * hits).sum(axis=1) / np.minimum(n_rel, k)
    n_hits = hits.sum(axis=1)
    return {
        "precision": float(np.mean(n_hits / k)),
        "recall": float(np.mean(n_hits / n_rel)),
        "ndcg": float(np.mean(dcg / ideal)),
        "map": float(np.mean(ap)),
    }


def _hits_from_lists(
    recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    if len(recommended) != len(relevant):
        raise ValueError(
            f"recommended has {len(recommended)} users but relevant has {len(relevant)}"
        )
    hits = np.zeros((len(recommended), k), dtype=bool)
    n_rel = np.zeros(len(recommended), dtype=np.int64)
    for u, (recs, rel) in enumerate(zip(recommended, relevant, strict=True)):
        rel = set(rel)
        n_rel[u] = len(rel)
        for pos, item in enumerate(list(recs)[:k]):
            hits[u, pos] = item in rel
    return hits, n_rel


def precision_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int = 10) -> float:
    """Mean share of the top-k recommendations that are relevant (hits / k), over users with relevant items."""
    return _ranking_metrics(*_hits_from_lists(recommended, relevant, k), k)["precision"]


def recall_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int = 10) -> float:
    """Mean share of each user's relevant items found in the top k (hits / |relevant|)."""
    return _ranking_metrics(*_hits_from_lists(recommended, relevant, k), k)["recall"]


def ndcg_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int = 10) -> float:
    """Mean normalised discounted cumulative gain at k (binary relevance, log2 discount)."""
    return _ranking_metrics(*_hits_from_lists(recommended, relevant, k), k)["ndcg"]


def map_at_k(recommended: Sequence[Sequence[Any]], relevant: Sequence[Collection[Any]], k: int = 10) -> float:
    """Mean average precision at k (sum of precision@i at hits / min(|relevant|, k))."""
    return _ranking_metrics(*_hits_from_lists(recommended, relevant, k), k)["map"]


def coverage(recommended: Sequence[Sequence[Any]], n_items: int) -> float:
    """Catalogue coverage: distinct recommended items / catalogue size."""
    if n_items <= 0:
        raise ValueError(f"n_items must be > 0, got {n_items}")
    distinct = {item for recs in recommended for item in recs}
    return len(distinct) / n_items


# ---------------------------------------------------------------------------------------------
# evaluating a model


def evaluate(
    recommender: RecommenderBase,
    train: Any = None,
    test: Any = None,
    k: int = 10,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """Ranking metrics of ``recommender``'s top-k on held-out ``test`` interactions.

    The top-k come from the public ``batch_recommend(n, users, exclude_seen=True)``, so any
    :class:`~rusket_core.recommender.RecommenderBase` is scored the same way. ``train`` holds items
    excluded from each user's recommendations on top of the recommender's own seen items (default:
    none besides those); ``train`` and ``test`` are frames with the recommender's user/item columns
    (or ``user_col``/``item_col``) or scipy matrices in its index space. Test users unknown to the
    recommender are skipped (counted in ``n_users_skipped``); test items outside its catalogue count
    as relevant but can never be hit. Returns precision, recall, ndcg, map, coverage (distinct
    recommended items / catalogue), k, n_users, n_users_skipped.
    """
    if test is None:
        raise ValueError("evaluate() needs the held-out test interactions")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not isinstance(recommender, RecommenderBase):
        raise TypeError(f"evaluate() takes a RecommenderBase (ALS, BPR, Recommender, ...), got {type(recommender).__name__}")
    users, items = recommender.users, recommender.items
    if users is None or items is None:
        raise RuntimeError(f"{type(recommender).__name__} is not fitted yet: call fit() first")
    n_items = len(items)
    user_col = user_col or recommender.user_col
    item_col = item_col or recommender.item_col
    t_users, t_items, skipped = _pairs_in_model_space(recommender, test, user_col, item_col, "test", strict=False)
    known = t_users >= 0
    t_users, t_items = t_users[known], t_items[known]
    eval_users = np.unique(t_users)
    # relevant items per evaluated user (unknown items kept as -1 placeholders, one per pair)
    keys = np.unique(t_users * (n_items + 1) + (t_items + 1))
    rel_user = keys // (n_items + 1)
    rel_item = keys % (n_items + 1) - 1
    n_relevant = np.bincount(np.searchsorted(eval_users, rel_user), minlength=len(eval_users))
    extra = 0
    excluded = np.empty(0, dtype=np.int64)
    if train is not None:
        s_users, s_items, _ = _pairs_in_model_space(recommender, train, user_col, item_col, "train", strict=True)
        s_users, s_items = s_users[s_items >= 0], s_items[s_items >= 0]
        excluded = np.unique(s_users * n_items + s_items)
        per_user = np.bincount(s_users[np.isin(s_users, eval_users)], minlength=len(users))
        extra = int(per_user.max(initial=0))
    idx = _top_items(recommender, eval_users, k + extra)
    if extra:  # drop the extra training items, then keep the first k of what is left
        rec_keys = eval_users[:, None] * n_items + idx
        idx = np.where(np.isin(rec_keys, excluded), -1, idx)
        order = np.argsort(idx < 0, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
    idx = idx[:, :k]
    hits = np.zeros((len(eval_users), k), dtype=bool)
    if idx.size:
        known_keys = rel_user[rel_item >= 0] * n_items + rel_item[rel_item >= 0]
        rec_keys = eval_users[:, None] * n_items + idx
        hits[:, : idx.shape[1]] = np.isin(rec_keys, known_keys) & (idx >= 0)
    metrics = _ranking_metrics(hits, n_relevant, k)
    metrics["coverage"] = float(np.unique(idx[idx >= 0]).size / max(n_items, 1))
    metrics["k"] = k
    metrics["n_users"] = int(len(eval_users))
    metrics["n_users_skipped"] = int(skipped)
    return metrics


def _top_items(recommender: RecommenderBase, rows: np.ndarray, n: int) -> np.ndarray:
    """(len(rows), n) catalogue indices of ``batch_recommend`` for the users at ``rows``, best first, -1 padded."""
    out = np.full((len(rows), n), -1, dtype=np.int64)
    if not len(rows):
        return out
    frame = to_arrow_table(
        recommender.batch_recommend(n=n, users=recommender.users.take(rows), exclude_seen=True, format="arrow")
    )
    pos = np.searchsorted(rows, recommender.users.indices_of(column(frame, "user_id", "batch_recommend column")))
    item_idx = recommender.items.indices_of(column(frame, "item_id", "batch_recommend column"))
    order = np.argsort(pos, kind="stable")  # rows of one user keep their best-first order
    pos, item_idx = pos[order], item_idx[order]
    starts = np.searchsorted(pos, np.arange(len(rows)))
    rank = np.arange(len(pos)) - starts[pos]
    if len(rank) and rank.max() >= n:
        raise ValueError(f"{type(recommender).__name__}.batch_recommend returned more than n={n} rows for a user")
    out[pos, rank] = item_idx
    return out


def _pairs_in_model_space(
    model: RecommenderBase, data: Any, user_col: str | None, item_col: str | None, what: str, strict: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """(user index, item index) per row of ``data`` and the number of distinct unknown users;
    unknown ids become -1 (or raise ``KeyError`` when ``strict``)."""
    from scipy import sparse

    if sparse.issparse(data):
        coo = sparse.coo_array(data)
        if coo.shape[0] > len(model.users) or coo.shape[1] > len(model.items):
            raise ValueError(
                f"{what} matrix shape {coo.shape} exceeds the model's {len(model.users)} users × "
                f"{len(model.items)} items"
            )
        return coo.row.astype(np.int64), coo.col.astype(np.int64), 0
    if user_col is None or item_col is None:
        raise ValueError(
            f"{what} is a frame: pass user_col= and item_col= (the model was not built from transactions)"
        )
    table = to_arrow_table(data)
    users = column(table, user_col, f"{what} user column")
    items = column(table, item_col, f"{what} item column")
    if strict:  # an unknown user is an error; an item outside the catalogue cannot be recommended anyway
        return model.users.indices_of(users), _lookup(model.items, items), 0
    user_idx = _lookup(model.users, users)
    unknown = users.combine_chunks().filter(pa.array(user_idx < 0))
    return user_idx, _lookup(model.items, items), len(unknown.unique())


def _lookup(labels, values: pa.ChunkedArray) -> np.ndarray:
    """Indices of ``values`` in ``labels``, -1 where unknown."""
    from rusket_core.encoding import _as_numpy_labels

    arr = _as_numpy_labels(values)
    if arr.dtype.kind != labels.values.dtype.kind and not (
        arr.dtype.kind in "iu" and labels.values.dtype.kind in "iu"
    ):
        raise KeyError(f"ids {arr[:1].tolist()} do not match the model's id type {labels.values.dtype}")
    return labels.lookup.get_indexer(arr).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# planted data


def planted_interactions(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    n_clusters: int = 10,
    in_cluster: float = 0.8,
    popularity_exponent: float = 1.0,
    random_state: int = 0,
    format: str = "pandas",
) -> Any:
    """Seeded synthetic interactions with planted structure, for checking that models find it.

    User u belongs to cluster ``u % n_clusters`` and item i to ``i % n_clusters``. Each row picks
    an item from the user's cluster with probability ``in_cluster`` (otherwise from the whole
    catalogue), weighted by a power-law popularity ``(1 + rank) ** -popularity_exponent`` over a
    random ranking of items. User activity is log-normal, at least 2 rows per user. Columns:
    ``user_id``, ``item_id`` (int64), ``timestamp`` (int64, unique). Repeated pairs may occur.
    """
    if n_interactions < 2 * n_users:
        raise ValueError("n_interactions must be at least 2 per user")
    if n_items < n_clusters:
        raise ValueError("n_items must be at least n_clusters")
    rng = np.random.default_rng(random_state)
    activity = rng.lognormal(0.0, 1.0, n_users)
    per_user = 2 + rng.multinomial(n_interactions - 2 * n_users, activity / activity.sum())
    user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    popularity = (1.0 + rng.permutation(n_items)) ** -float(popularity_exponent)
    item = np.empty(n_interactions, dtype=np.int64)
    local = rng.random(n_interactions) < in_cluster
    cluster = user % n_clusters
    all_cdf = np.cumsum(popularity) / popularity.sum()
    wide = ~local
    item[wide] = np.minimum(np.searchsorted(all_cdf, rng.random(int(wide.sum()))), n_items - 1)
    for c in range(n_clusters):
        members = np.arange(c, n_items, n_clusters)
        cdf = np.cumsum(popularity[members]) / popularity[members].sum()
        rows = np.flatnonzero(local & (cluster == c))
        picks = np.minimum(np.searchsorted(cdf, rng.random(len(rows))), len(members) - 1)
        item[rows] = members[picks]
    timestamp = rng.permutation(n_interactions).astype(np.int64)
    table = pa.table({"user_id": user, "item_id": item, "timestamp": timestamp})
    return from_arrow(table, format)
