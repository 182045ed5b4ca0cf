"""Holdout splits, ranking metrics (precision/recall/ndcg/MAP@k, coverage) and a popularity baseline.

``evaluate(model, train, test, k)`` scores any fitted factor model (ALS, BPR, PopularityRecommender)
on held-out interactions so that model quality can be compared and gated against popularity.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.topk import csr_rows, topk
from rusket_core.frames import column, from_arrow, input_format, to_arrow_table

# ---------------------------------------------------------------------------------------------
# popularity baseline


class PopularityRecommender(FactorModel):
    """Recommends the items bought by the most users, the same list for everyone.

    A one-factor model (every user 1, every item its user count), so it shares the whole
    recommend / batch / export / save API of ALS and BPR.
    """

    def __init__(self, num_threads: int | None = None) -> None:
        super().__init__(num_threads)

    def _fit(self, interactions: Encoded) -> None:
        self.user_factors = np.ones((interactions.n_rows, 1), dtype=np.float32)
        self.item_factors = interactions.item_counts().astype(np.float32).reshape(-1, 1)


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
    return _split(data, table, test_pair[pair])


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
    model: FactorModel,
    train: Any = None,
    test: Any = None,
    k: int = 10,
    user_col: str | None = None,
    item_col: str | None = None,
) -> dict[str, float]:
    """Ranking metrics of ``model``'s top-k on held-out ``test`` interactions.

    ``train`` holds the items excluded from each user's recommendations (default: the model's
    own training interactions); ``train`` and ``test`` are frames with the model's user/item
    columns (or ``user_col``/``item_col``) or scipy matrices in the model's index space. Test
    users unknown to the model are skipped (counted in ``n_users_skipped``); test items unknown
    to the model count as relevant but can never be hit. Returns precision, recall, ndcg, map,
    coverage (distinct recommended items / catalogue), k, n_users, n_users_skipped.
    """
    if test is None:
        raise ValueError("evaluate() needs the held-out test interactions")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model._check_fitted()
    user_col = user_col or model.user_col
    item_col = item_col or model.item_col
    t_users, t_items, skipped = _pairs_in_model_space(model, test, user_col, item_col, "test", strict=False)
    if train is None:
        seen_ptr, seen_ind = model.user_items.indptr, model.user_items.indices
    else:
        s_users, s_items, _ = _pairs_in_model_space(model, train, user_col, item_col, "train", strict=True)
        seen_ptr, seen_ind = _csr(s_users, s_items, len(model.users))
    known = t_users >= 0
    t_users, t_items = t_users[known], t_items[known]
    eval_users = np.unique(t_users)
    # relevant items per evaluated user (unknown items kept as -1 placeholders, one per pair)
    keys = np.unique(t_users * (len(model.items) + 1) + (t_items + 1))
    rel_user = keys // (len(model.items) + 1)
    rel_item = keys % (len(model.items) + 1) - 1
    n_relevant = np.bincount(np.searchsorted(eval_users, rel_user), minlength=len(eval_users))
    ptr, ind = csr_rows(seen_ptr, seen_ind, eval_users)
    idx, _ = topk(model.user_factors[eval_users], model.item_factors, k, ptr, ind)
    hits = np.zeros((len(eval_users), k), dtype=bool)
    if idx.size:
        known_keys = rel_user[rel_item >= 0] * len(model.items) + rel_item[rel_item >= 0]
        rec_keys = eval_users[:, None] * len(model.items) + idx.astype(np.int64)
        pos = np.minimum(np.searchsorted(known_keys, rec_keys), max(len(known_keys) - 1, 0))
        found = (known_keys[pos] == rec_keys) if len(known_keys) else np.zeros_like(rec_keys, bool)
        hits[:, : idx.shape[1]] = found & (idx >= 0)
    metrics = _ranking_metrics(hits, n_relevant, k)
    recommended = idx[idx >= 0]
    metrics["coverage"] = float(np.unique(recommended).size / max(len(model.items), 1))
    metrics["k"] = k
    metrics["n_users"] = int(len(eval_users))
    metrics["n_users_skipped"] = int(skipped)
    return metrics


def _pairs_in_model_space(
    model: FactorModel, data: Any, user_col: str | None, item_col: str | None, what: str, strict: bool
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
    if strict:
        return model.users.indices_of(users), model.items.indices_of(items), 0
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


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    keys = np.unique(rows * (int(cols.max(initial=0)) + 1) + cols)
    width = int(cols.max(initial=0)) + 1
    r, c = keys // width, keys % width
    ptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=ptr[1:])
    return ptr, c.astype(np.int32)


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
