"""Seeded IBM-Quest-like synthetic baskets: correlated "potentially large" patterns, corrupted.

Follows the shape of Agrawal & Srikant's generator (patterns with exponential weights, each
sharing a fraction of its items with the previous one, items dropped by a per-pattern
corruption level) plus a Zipf-distributed noise share, fully vectorised so that 10M rows take
seconds.  Returns long-format ``(basket, item)`` int64 arrays without duplicate pairs.
"""

from __future__ import annotations

import numpy as np


def _patterns(rng: np.random.Generator, n_patterns: int, n_items: int, avg_len: float, corr: float):
    """Pattern item lists (CSR) where each pattern reuses ~``corr`` of the previous one's items."""
    sizes = np.maximum(1, rng.poisson(avg_len, n_patterns))
    items: list[np.ndarray] = []
    prev = rng.choice(n_items, size=min(sizes[0], n_items), replace=False)
    items.append(prev)
    for k in range(1, n_patterns):
        size = min(int(sizes[k]), n_items)
        n_keep = min(len(prev), int(round(size * min(1.0, rng.exponential(corr)))))
        kept = rng.choice(prev, size=n_keep, replace=False) if n_keep else prev[:0]
        fresh = rng.choice(n_items, size=size, replace=False)
        pat = np.unique(np.concatenate([kept, fresh]))[:size] if n_keep else np.unique(fresh)
        items.append(pat)
        prev = pat
    ptr = np.zeros(n_patterns + 1, np.int64)
    ptr[1:] = np.cumsum([len(p) for p in items])
    return ptr, np.concatenate(items).astype(np.int64)


def quest_baskets(
    n_baskets: int,
    n_items: int,
    avg_len: float = 10.0,
    n_patterns: int | None = None,
    avg_pattern_len: float = 4.0,
    corr: float = 0.5,
    noise: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(basket_id, item_id)`` rows (int64, sorted by basket) with ~``avg_len`` items per basket."""
    rng = np.random.default_rng(seed)
    n_patterns = n_patterns or max(10, n_items)
    ptr, pat_items = _patterns(rng, n_patterns, n_items, avg_pattern_len, corr)
    weight = rng.exponential(1.0, n_patterns)
    weight /= weight.sum()
    corruption = np.clip(rng.normal(0.25, 0.1, n_patterns), 0.0, 0.9)

    # pattern part: each basket draws about (1 - noise) * avg_len / avg_pattern_len patterns
    lam = max((1.0 - noise) * avg_len / (avg_pattern_len * 0.75), 0.1)  # 0.75 = mean kept share
    n_pat = rng.poisson(lam, n_baskets)
    pat_basket = np.repeat(np.arange(n_baskets, dtype=np.int64), n_pat)
    pat_id = rng.choice(n_patterns, size=pat_basket.shape[0], p=weight)
    lens = ptr[pat_id + 1] - ptr[pat_id]
    starts = np.repeat(ptr[pat_id] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
    rows_b = np.repeat(pat_basket, lens)
    rows_i = pat_items[starts]
    keep = rng.random(rows_i.shape[0]) >= np.repeat(corruption[pat_id], lens)
    rows_b, rows_i = rows_b[keep], rows_i[keep]

    # noise part: Zipf-popular single items
    n_noise = rng.poisson(noise * avg_len, n_baskets)
    noise_b = np.repeat(np.arange(n_baskets, dtype=np.int64), n_noise)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = popularity[rng.permutation(n_items)]
    popularity /= popularity.sum()
    noise_i = rng.choice(n_items, size=noise_b.shape[0], p=popularity)

    key = np.unique(np.concatenate([rows_b, noise_b]) * n_items + np.concatenate([rows_i, noise_i]))
    return key // n_items, key % n_items
