"""Compile the library's numba kernels ahead of their first real use (or load them from the cache).

Each family calls its public entry points once on a tiny input whose arrays have the types a real
call passes to the kernels, so numba compiles, and with ``cache=True`` stores, the very signatures
the real call needs (``tests/pipeline/test_warmup.py`` checks this against the whole asset graph). Families
warmed in another process overlap their compile time with that process's work:
``python -m rusket_assets.main`` warms the model, rules, recommendation and analytics kernels in a
background process while it ingests and mines (the encoding and mining kernels it needs first it
compiles itself), since numba compiles on one core per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["FAMILIES", "warm_up"]


def _interactions() -> Any:
    """Six customers × eight products as a scipy CSR matrix of float32 quantities.

    Models fitted on it skip the encoding kernel, which the asset graph compiles first anyway
    (ingest), so the warm-up process spends its time on the kernels needed later.
    """
    from scipy import sparse

    rows = np.repeat(np.arange(6), 4)
    cols = np.array([(c * 3 + j) % 8 for c in range(6) for j in range(4)])
    return sparse.csr_array((np.arange(1, 25, dtype=np.float32) % 3 + 1, (rows, cols)), shape=(6, 8))


def _rules() -> pa.Table:
    """A rules table over products 0..2 with both orders of one pair (for ``find_substitutes``)."""
    return pa.table(
        {
            "antecedents": [[0], [1], [0, 1]],
            "consequents": [[1], [0], [2]],
            "antecedent support": [0.5, 0.5, 0.3],
            "consequent support": [0.5, 0.5, 0.4],
            "support": [0.3, 0.3, 0.2],
            "confidence": [0.6, 0.6, 0.66],
            "lift": [1.2, 1.2, 1.6],
        }
    )


def _als() -> Any:
    from rusket_core.factorization import ALS

    als = ALS(factors=4, iterations=1).fit(_interactions())
    als.training_loss()
    return als


def _bpr() -> Any:
    from rusket_core.factorization import BPR

    BPR(factors=4, iterations=1).fit(_interactions())  # Hogwild threads (the library's default)
    return BPR(factors=4, iterations=1, deterministic=True).fit(_interactions())  # the pipeline's mode


def _fold_in() -> None:
    """The incremental refresh's kernels: user and item fold-in of ALS and BPR (a new customer buying a new product)."""
    day = pa.table({"user_id": pa.array([0, 6, 6], pa.int64()), "item_id": pa.array([1, 1, 8], pa.int64()),
                    "rating": pa.array([1.0, 2.0, 1.0])})  # fmt: skip
    _als().partial_fit(day)
    _bpr().partial_fit(day)


def _top_k() -> None:
    als = _als()
    als.batch_recommend(n=3, format="arrow")
    als.batch_similar_items(n=3, format="arrow")


def _rules_kernels() -> None:
    from rusket_core.mining.rules import association_rules

    itemsets = pa.table({"support": [0.5, 0.5, 0.3], "itemsets": [[0], [1], [0, 1]]})
    association_rules(itemsets, metric="lift", min_threshold=0.0, format="arrow")


def _recommendations() -> None:
    from rusket_core.hybrid import Recommender

    embeddings = _bpr().export_item_factors(format="arrow").select(["label", "vector"])
    recommender = Recommender(_als(), rules_df=_rules(), item_embeddings=embeddings)
    carts = pa.table({"customer": pa.array([0, 0, 3], pa.int64()), "item": pa.array([0, 1, 5], pa.int64())})
    recommender.recommend_for_users(n=3, carts=carts, cart_col="customer", item_col="item", format="arrow")
    recommender.recommend_for_carts(carts, n=3, cart_col="customer", item_col="item", format="arrow")


def _analytics() -> None:
    from rusket_core.analytics import find_substitutes, score_potential

    categories = pa.table({"product_id": pa.array(np.arange(8), pa.int64()), "category": ["a", "b"] * 4})
    score_potential(None, _als(), categories, n=2, format="arrow")
    find_substitutes(_rules(), max_lift=2.0, format="arrow")


#: warm-up families, each a callable that runs the family's kernels once on tiny inputs, in the
#: order the asset graph first needs them
FAMILIES: dict[str, Callable[[], object]] = {
    "als": _als,
    "bpr": _bpr,
    "analytics": _analytics,
    "top_k": _top_k,
    "rules": _rules_kernels,
    "recommendations": _recommendations,
    "fold_in": _fold_in,
}


def warm_up(families: Iterable[str] | None = None) -> dict[str, float]:
    """Run the named families (all by default); return the seconds each took (compile or cache load)."""
    names = list(FAMILIES) if families is None else list(families)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown warm-up families {unknown}; choose from {sorted(FAMILIES)}")
    seconds = {}
    for name in names:
        start = time.perf_counter()
        FAMILIES[name]()
        seconds[name] = time.perf_counter() - start
    return seconds


if __name__ == "__main__":
    import sys

    for family, took in warm_up(sys.argv[1:] or None).items():
        print(f"{took:7.2f} s  {family}")
