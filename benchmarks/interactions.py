"""Seeded synthetic interaction sets for the factorization benchmark (planted clusters, power-law popularity).

``dataset("1m")`` is 1,000,000 interactions of 50,000 users × 20,000 items; ``dataset("100k")``
is 100,000 interactions of 5,000 users × 2,000 items; ``dataset("ml100k")`` is 100,000 interactions
of 943 users × 1,682 items (MovieLens-100k's shape). All are split 80/20 per user
(``rusket_core.evaluation.train_test_split``, seed 0) and cached as parquet under
``benchmarks/_out/`` so every library in a run sees exactly the same rows.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rusket_core.evaluation import planted_interactions, train_test_split

SIZES = {
    "100k": {"n_users": 5_000, "n_items": 2_000, "n_interactions": 100_000},
    "1m": {"n_users": 50_000, "n_items": 20_000, "n_interactions": 1_000_000},
    "3m": {"n_users": 150_000, "n_items": 40_000, "n_interactions": 3_000_000},
    "10m": {"n_users": 500_000, "n_items": 100_000, "n_interactions": 10_000_000},
    # MovieLens-100k's shape (943 users x 1,682 items, ~100 per user): small input, dense rows
    "ml100k": {"n_users": 943, "n_items": 1_682, "n_interactions": 100_000, "in_cluster": 0.6, "popularity_exponent": 1.0},
}
STRUCTURE = {"n_clusters": 20, "in_cluster": 0.8, "popularity_exponent": 0.8}
OUT = Path(__file__).parent / "_out"


def dataset(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) frames with user_id, item_id, timestamp for the named size, built once and cached."""
    train_path = OUT / f"interactions_{name}_s{seed}_train.parquet"
    test_path = OUT / f"interactions_{name}_s{seed}_test.parquet"
    if train_path.exists() and test_path.exists():
        return pd.read_parquet(train_path), pd.read_parquet(test_path)
    df = planted_interactions(**{**STRUCTURE, **SIZES[name]}, random_state=seed)
    train, test = train_test_split(df, "user_id", "item_id", test_fraction=0.2, random_state=seed)
    OUT.mkdir(parents=True, exist_ok=True)
    train.to_parquet(train_path, index=False)
    test.to_parquet(test_path, index=False)
    return train.reset_index(drop=True), test.reset_index(drop=True)


if __name__ == "__main__":
    for size in SIZES:
        tr, te = dataset(size)
        print(size, len(tr), "train rows", len(te), "test rows", tr.user_id.nunique(), "users")
