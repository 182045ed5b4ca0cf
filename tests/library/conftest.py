"""Reference implementations shared by the library tests."""

from __future__ import annotations

import itertools

import pandas as pd


def brute_force(baskets: list[set], min_count: int, max_len: int | None) -> dict[frozenset, int]:
    """Every itemset over the items seen, counted by scanning all baskets."""
    universe = sorted(set().union(*baskets)) if baskets else []
    out: dict[frozenset, int] = {}
    for k in range(1, (max_len or len(universe)) + 1):
        for combo in itertools.combinations(universe, k):
            c = sum(1 for b in baskets if b.issuperset(combo))
            if c >= min_count:
                out[frozenset(combo)] = c
    return out


def mined(frame: pd.DataFrame) -> dict[frozenset, int]:
    return {frozenset(s): int(c) for s, c in zip(frame["itemsets"], frame["count"], strict=True)}
