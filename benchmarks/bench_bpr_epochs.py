"""BPR quality vs cost: holdout precision@10 and fit seconds against epochs, learning rate and schedule.

Each configuration is one fresh fit (the linear schedule depends on the epoch count) with the
pipeline's BPR parameters unless overridden, on a seeded 80/20 per-user holdout scored by
``rusket_core.evaluation.evaluate``. Data: the factorization benchmark's sets (``1m``, ``100k``,
``ml100k``, see ``interactions.py``) or ``store:PATH`` (distinct customer-product pairs of an order
line parquet, e.g. one written by ``bench_scale.py``). One JSON line per fit on stdout.

    .venv/bin/python benchmarks/bench_bpr_epochs.py 1m --epochs 10 25 50 100
    .venv/bin/python benchmarks/bench_bpr_epochs.py store:/work/bench_data/store_3000000.parquet --epochs 25 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PIPELINE = {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "loss": "logistic",
            "schedule": "linear", "random_state": 42, "deterministic": True}  # fmt: skip


def load(name: str):
    """(train, test) frames with user_id / item_id columns."""
    if name.startswith("store:"):
        import duckdb

        from rusket_core.evaluation import train_test_split

        pairs = duckdb.sql(
            f"select distinct customer_id as user_id, product_id as item_id from '{name[6:]}' order by all"
        ).df()
        return train_test_split(pairs, "user_id", "item_id", 0.2, random_state=0)
    from interactions import dataset

    return dataset(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--epochs", type=int, nargs="+", default=[100])
    parser.add_argument("--lr", type=float, nargs="+", default=[PIPELINE["learning_rate"]])
    parser.add_argument("--schedule", nargs="+", default=[PIPELINE["schedule"]])
    parser.add_argument("--loss", nargs="+", default=[PIPELINE["loss"]])
    parser.add_argument("--repeat", type=int, default=1, help="run the whole grid this many times (A B A B ...)")
    parser.add_argument("--hogwild", action="store_true", help="deterministic=False (the library default)")
    parser.add_argument("--extra", default="{}", help="JSON of further BPR keyword arguments")
    args = parser.parse_args()

    import numpy as np

    from rusket_core.encoding import encode_transactions
    from rusket_core.evaluation import evaluate
    from rusket_core.factorization import BPR

    train, test = load(args.data)
    encoded = encode_transactions(train, "user_id", "item_id")
    BPR(iterations=1, deterministic=not args.hogwild).fit(encoded)  # compile / load the cache
    grid = [(s, lr, e, loss) for s in args.schedule for lr in args.lr for e in args.epochs for loss in args.loss]
    for _ in range(args.repeat):
        for schedule, lr, epochs, loss in grid:
            params = {**PIPELINE, "learning_rate": lr, "schedule": schedule, "loss": loss,
                      "deterministic": not args.hogwild, "iterations": epochs, **json.loads(args.extra)}  # fmt: skip
            start = time.perf_counter()
            model = BPR(**params).fit(encoded)
            fit_s = time.perf_counter() - start
            metrics = evaluate(model, None, test, k=10, user_col="user_id", item_col="item_id")
            row = {"data": args.data, **params, "epochs_run": int((model.samples_ > 0).sum()),
                   "fit_s": round(fit_s, 2), "precision@10": round(metrics["precision"], 4),
                   "ndcg@10": round(metrics["ndcg"], 4),
                   "max_item_norm": round(float(np.linalg.norm(model.item_factors, axis=1).max()), 3),
                   "last_ranked_right": round(float(model.ranking_accuracy_[-1]), 4) if epochs else None}  # fmt: skip
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
