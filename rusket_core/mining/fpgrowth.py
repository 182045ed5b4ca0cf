"""``FPGrowth``: exact frequent-itemset mining, association rules and basket add-ons over the user's labels."""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Encoded, encode, encode_transactions
from rusket_core.frames import input_format, list_column, make_frame, resolve_format
from rusket_core.mining.kernels import mine_tree
from rusket_core.mining.rules import RuleArrays, rule_arrays, rules_frame

logger = logging.getLogger(__name__)


def min_count_for(min_support: Any, n_rows: int) -> int:
    """Absolute count threshold for ``min_support``: a fraction in (0, 1] or an int count >= 1."""
    if isinstance(min_support, bool | np.bool_):
        raise ValueError(f"min_support must be a fraction in (0, 1] or an integer count >= 1, got {min_support!r}")
    if isinstance(min_support, numbers.Integral):
        if min_support < 1:
            raise ValueError(f"min_support as a count must be >= 1, got {min_support}")
        return int(min_support)
    if isinstance(min_support, numbers.Real):
        ms = float(min_support)
        if math.isnan(ms) or not 0.0 < ms <= 1.0:
            raise ValueError(f"min_support as a fraction must be in (0, 1], got {min_support!r}")
        if n_rows <= 0:
            return 1
        # smallest count c with c / n >= ms, immune to rounding in ms * n
        c = max(1, math.ceil(ms * n_rows))
        while c > 1 and (c - 1) / n_rows >= ms:
            c -= 1
        while c / n_rows < ms:
            c += 1
        return c
    raise ValueError(f"min_support must be a fraction in (0, 1] or an integer count >= 1, got {min_support!r}")


def _check_max_len(max_len: Any) -> int:
    """``max_len`` as the kernel's int (0 = no limit)."""
    if max_len is None:
        return 0
    if isinstance(max_len, bool | np.bool_) or not isinstance(max_len, numbers.Integral) or max_len < 1:
        raise ValueError(f"max_len must be None or an integer >= 1, got {max_len!r}")
    return int(max_len)


def mine_csr(
    indptr: np.ndarray,
    indices: np.ndarray,
    n_items: int,
    min_count: int,
    max_len: int = 0,
    item_counts: np.ndarray | None = None,
    roots: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact frequent itemsets of a CSR basket matrix: ``(offsets, item ids sorted per itemset, counts)``
    ordered by count descending, then length, then discovery order.

    Parallel FP-growth mines a projected part of the baskets: ``item_counts`` are then the counts
    over all baskets (they fix the item order) and ``roots`` the items whose itemsets (those with
    no less frequent item) this part holds completely; only those itemsets are returned."""
    counts = np.bincount(indices, minlength=n_items).astype(np.int64) if item_counts is None else item_counts
    frequent = np.flatnonzero(counts >= min_count)
    by_rank = frequent[np.lexsort((frequent, counts[frequent]))]  # ascending count
    rank_of = np.full(n_items, -1, np.int32)
    rank_of[by_rank] = np.arange(len(by_rank), dtype=np.int32)
    parent, rank, count = mine_tree(
        np.ascontiguousarray(indptr, dtype=np.int64),
        np.ascontiguousarray(indices, dtype=np.int32),
        rank_of,
        counts[by_rank],
        int(min_count),
        int(max_len),
        None if roots is None else rank_of[np.asarray(roots, np.int64)],
    )
    # expand the prefix tree into flat itemsets (one vectorised step per tree level)
    n = len(parent)
    length = np.ones(n, np.int64)
    cur = parent.copy()
    alive = np.flatnonzero(cur >= 0)
    while len(alive):
        length[alive] += 1
        cur[alive] = parent[cur[alive]]
        alive = alive[cur[alive] >= 0]
    order = np.lexsort((length, -count))
    length = length[order]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    flat = np.empty(offsets[-1], np.int64)
    pos = offsets[1:] - 1
    cur = order.copy()
    alive = np.arange(n)
    while len(alive):
        flat[pos[alive]] = by_rank[rank[cur[alive]]]
        pos[alive] -= 1
        cur[alive] = parent[cur[alive]]
        alive = alive[cur[alive] >= 0]
    seg = np.repeat(np.arange(n), length)
    flat = flat[np.lexsort((flat, seg))]
    return offsets, flat, count[order]


class FPGrowth:
    """Frequent itemsets (exact, numba pattern growth), association rules and add-on recommendations.

    ``data`` is anything :func:`rusket_core.encoding.encode` accepts (one-hot frame, scipy sparse
    matrix, 0/1 array, list of baskets, ``Encoded``); use :meth:`from_transactions` for long format.
    ``min_support`` is a fraction of baskets in (0, 1] or an absolute count (int >= 1).
    Outputs follow the input's library (pandas for lists, scipy and ``Encoded``) unless ``format=``.
    """

    def __init__(
        self,
        data: Any,
        min_support: float | int = 0.5,
        max_len: int | None = None,
        item_names: Iterable[Any] | None = None,
    ) -> None:
        min_count_for(min_support, 1)  # refuse bad parameters before encoding anything
        self._max_len = _check_max_len(max_len)
        self.encoded: Encoded = encode(data, item_names=None if item_names is None else list(item_names))
        try:
            self._format = input_format(data)
        except TypeError:
            self._format = "pandas"
        self.min_support = min_support
        self.max_len = max_len
        self.min_count = min_count_for(min_support, self.encoded.n_rows)
        self._itemsets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._addon_rules: RuleArrays | None = None

    @classmethod
    def from_transactions(
        cls,
        data: Any,
        transaction_col: str,
        item_col: str,
        min_support: float | int = 0.5,
        max_len: int | None = None,
    ) -> FPGrowth:
        """Build from long format (one row per basket × item) in pandas, polars or pyarrow."""
        min_count_for(min_support, 1)
        _check_max_len(max_len)
        model = cls(encode_transactions(data, transaction_col, item_col), min_support, max_len)
        model._format = input_format(data)
        return model

    @property
    def n_transactions(self) -> int:
        """Number of baskets the supports are fractions of."""
        return self.encoded.n_rows

    def fit(self) -> FPGrowth:
        """Mine the frequent itemsets once (later calls reuse them)."""
        if self._itemsets is None:
            enc = self.encoded
            logger.info("mining itemsets: %d baskets, %d items, in at least %d baskets, up to %s items",
                        enc.n_rows, enc.n_items, self.min_count, self._max_len or "any number of")  # fmt: skip
            start = time.perf_counter()
            self._itemsets = mine_csr(enc.indptr, enc.indices, enc.n_items, self.min_count, self._max_len)
            logger.info("mined %d itemsets in %.1f s", len(self._itemsets[2]), time.perf_counter() - start)
        return self

    def mine(self, format: str | None = None) -> Any:
        """Frequent itemsets: ``support`` (fraction), ``count`` and ``itemsets`` (lists of labels),
        sorted by support descending (ties: shorter first)."""
        offsets, ids, counts = self.fit()._itemsets
        values = self.encoded.items.to_arrow().take(pa.array(ids))
        return make_frame(
            {
                "support": counts / float(self.n_transactions),
                "count": counts,
                "itemsets": list_column(offsets, values),
            },
            resolve_format(format, default=self._format),
        )

    def association_rules(
        self, metric: str = "confidence", min_threshold: float = 0.8, format: str | None = None
    ) -> Any:
        """Rules A -> C from the mined itemsets (no re-mining); columns as in :func:`association_rules`."""
        offsets, ids, counts = self.fit()._itemsets
        rules = rule_arrays(offsets, ids, counts / float(self.n_transactions), metric, min_threshold)
        return rules_frame(rules, self.encoded.items, resolve_format(format, default=self._format))

    def recommend_items(self, basket: Iterable[Any], n: int = 5) -> list[Any]:
        """Up to ``n`` add-on labels for ``basket``, best first.

        Uses every rule A -> {j} of the mined itemsets (confidence > 0, so no threshold) with
        A a subset of the basket and j not in it; an item scores its best rule by confidence,
        then lift, then support (ties: label order).  Single-item consequents suffice: a rule
        A -> C never has a higher confidence than A -> {j} for j in C.  Basket items unknown
        to the model match no antecedent.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if isinstance(basket, str | bytes):
            raise ValueError("basket must be a collection of item labels, not a single string")
        items = self.encoded.items
        known = []
        for label in basket:
            try:
                known.append(items.index_of(label))
            except KeyError:
                continue
        if self._addon_rules is None:
            offsets, ids, counts = self.fit()._itemsets
            self._addon_rules = rule_arrays(
                offsets, ids, counts / float(self.n_transactions), "confidence", 0.0, max_consequent=1
            )
        rules = self._addon_rules
        if n == 0 or not known or len(rules) == 0:
            return []
        in_basket = np.zeros(items.__len__(), bool)
        in_basket[np.asarray(known, np.int64)] = True
        ant_len = np.diff(rules.ant_offsets)
        hits = np.add.reduceat(in_basket[rules.ant_items].astype(np.int64), rules.ant_offsets[:-1])
        cons = rules.con_items
        ok = np.flatnonzero((hits == ant_len) & ~in_basket[cons])
        if len(ok) == 0:
            return []
        conf = rules.support[ok] / rules.antecedent_support[ok]
        lift = conf / rules.consequent_support[ok]
        order = ok[np.lexsort((cons[ok], -rules.support[ok], -lift, -conf))]
        _, first = np.unique(cons[order], return_index=True)
        best = order[np.sort(first)][:n]
        return items.take(cons[best]).tolist()
