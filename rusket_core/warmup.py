"""Compile the library's numba kernels ahead of their first real use (or load them from the cache).

Each family calls its public entry points once on a tiny input of the same column types a real
call uses, so numba compiles, and with ``cache=True`` stores, the very signatures the real call
needs. Families warmed in another process while this one works overlap their compile time with
its work: ``python -m rusket_assets.main`` warms the model, rules and recommendation kernels in
a background process while it ingests and mines, since numba compiles on one core per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa

__all__ = ["FAMILIES", "warm_up"]


def _purchases() -> pa.Table:
    """Six customers × eight products, in the pipeline's column types (int64 ids, string products)."""
    customers = np.repeat(np.arange(6, dtype=np.int64), 4)
    products = np.array([f"p{(c * 3 + j) % 8}" for c in range(6) for j in range(4)], dtype=object)
    return pa.table(
        {
            "customer_id": customers,
            "product_id": pa.array(products, pa.string()),
            "quantity": pa.array(np.arange(1, 25) % 3 + 1, pa.int64()),
        }
    )


def _rules() -> pa.Table:
    """A rules table with both orders of one pair (what ``find_substitutes`` needs) and a 2-item side."""
    return pa.table(
        {
            "antecedents": [["p0"], ["p1"], ["p0", "p1"]],
            "consequents": [["p1"], ["p0"], ["p2"]],
            "antecedent support": [0.5, 0.5, 0.3],
            "consequent support": [0.5, 0.5, 0.4],
            "support": [0.3, 0.3, 0.2],
            "confidence": [0.6, 0.6, 0.66],
            "lift": [1.2, 1.2, 1.6],
        }
    )


def _als() -> None:
    from rusket_core.factorization import ALS

    als = ALS.from_transactions(_purchases(), "customer_id", "product_id", "quantity", factors=4, iterations=1).fit()
    als.training_loss()


def _bpr() -> None:
    from rusket_core.factorization import BPR

    BPR.from_transactions(_purchases(), "customer_id", "product_id", factors=4, iterations=1).fit()


def _top_k() -> None:
    from rusket_core.factorization import ALS

    als = ALS.from_transactions(_purchases(), "customer_id", "product_id", "quantity", factors=4, iterations=1).fit()
    als.batch_recommend(n=3, format="arrow")
    als.batch_similar_items(n=3, format="arrow")


def _rules_kernels() -> None:
    from rusket_core.mining.rules import association_rules

    itemsets = pa.table({"support": [0.5, 0.5, 0.3], "itemsets": [["p0"], ["p1"], ["p0", "p1"]]})
    association_rules(itemsets, metric="lift", min_threshold=0.0, format="arrow")


def _recommendations() -> None:
    from rusket_core.factorization import ALS, BPR
    from rusket_core.hybrid import Recommender

    purchases = _purchases()
    als = ALS.from_transactions(purchases, "customer_id", "product_id", "quantity", factors=4, iterations=1).fit()
    bpr = BPR.from_transactions(purchases, "customer_id", "product_id", factors=4, iterations=1).fit()
    embeddings = bpr.export_item_factors(format="arrow").select(["label", "vector"])
    recommender = Recommender(als, rules_df=_rules(), item_embeddings=embeddings)
    carts = purchases.select(["customer_id", "product_id"]).slice(0, 6)
    recommender.recommend_for_users(n=3, carts=carts, cart_col="customer_id", item_col="product_id", format="arrow")
    recommender.recommend_for_carts(
        pa.table({"cart": pa.array(["p0", "p3"], pa.string()), "item": pa.array(["p0", "p3"], pa.string())}),
        n=3, cart_col="cart", item_col="item", format="arrow",
    )  # fmt: skip


def _analytics() -> None:
    from rusket_core.analytics import find_substitutes, score_potential
    from rusket_core.factorization import ALS

    purchases = _purchases()
    als = ALS.from_transactions(purchases, "customer_id", "product_id", "quantity", factors=4, iterations=1).fit()
    categories = pa.table({"product_id": [f"p{j}" for j in range(8)], "category": ["a", "b"] * 4})
    history = purchases.select(["customer_id", "product_id"])
    score_potential(history, als, categories, "customer_id", "product_id", top_n=2, format="arrow")
    find_substitutes(_rules(), max_lift=2.0, format="arrow")


#: warm-up families, each a callable that runs the family's kernels once on tiny inputs, in the
#: order the asset graph first needs them
FAMILIES: dict[str, Callable[[], None]] = {
    "als": _als,
    "bpr": _bpr,
    "analytics": _analytics,
    "top_k": _top_k,
    "rules": _rules_kernels,
    "recommendations": _recommendations,
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
