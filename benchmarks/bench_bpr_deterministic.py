"""Deterministic vs Hogwild BPR on the synthetic store: holdout precision@10 and fit time.

Usage: python benchmarks/bench_bpr_deterministic.py N_LINES N_CUSTOMERS N_PRODUCTS det,hog
(pipeline BPRConfig parameters, seeded 80/20 holdout of the distinct customer-product pairs).
"""

from __future__ import annotations

import sys
import time

import polars as pl

from rusket_assets.sample_data import generate_store
from rusket_core.evaluation import evaluate, train_test_split
from rusket_core.factorization import BPR


def main(n_lines: int, n_customers: int, n_products: int, modes: list[str]) -> None:
    """Fit BPR in each mode on one store and print precision@10 and fit seconds."""
    spec = dict(n_lines=n_lines, n_customers=n_customers, n_products=n_products)
    table = pl.from_arrow(generate_store(**spec))
    user = next(c for c in table.columns if "customer" in c)
    item = next(c for c in table.columns if "product" in c)
    pairs = table.select(user, item).unique(maintain_order=True).to_pandas()
    train, test = train_test_split(pairs, user, item, 0.2, random_state=0)
    for mode in modes:
        start = time.perf_counter()
        model = BPR.from_transactions(
            train, user, item, factors=64, iterations=100, learning_rate=0.05, regularization=0.01,
            loss="logistic", schedule="linear", random_state=42, deterministic=mode == "det",
        ).fit()  # fmt: skip
        fit = time.perf_counter() - start
        print(
            spec,
            mode,
            f"precision@10 {evaluate(model, None, test, k=10)['precision']:.4f} fit {fit:.1f}s",
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","))
