"""Where ALS precision@10 differs from implicit's at the same parameters: one change at a time, several shapes and seeds.

Each variant changes ONE thing in this project's ALS (or in implicit) and is scored with
precision@10 on the seeded 80/20 per-user split (``rusket_core.evaluation.train_test_split``),
by the same evaluation code for both libraries. Seed s draws the data (synthetic sets), the split
and both models' starting factors. Shapes: the bundled Online Retail II sample (customer ×
StockCode, binary or log1p(Quantity)), and planted sets that are sparse (about 10 training items per
user), long-tail (popularity exponent 1.3) and dense (40-50 per user). Rows go to
``benchmarks/_out/als_gap.jsonl``; a markdown summary (mean ± sd, ratio to implicit) is printed.

    .venv/bin/python benchmarks/bench_als_gap.py                       # everything, seeds 0..2, 2 threads
    .venv/bin/python benchmarks/bench_als_gap.py --sets dense --variants ours implicit implicit_start --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PARAMS = {"factors": 64, "iterations": 15, "alpha": 40.0, "regularization": 0.01}
SHAPES = {  # planted_interactions(n_users, n_items, n_interactions, n_clusters, in_cluster, popularity_exponent)
    "planted_sparse": (5000, 2000, 100_000, 20, 0.8, 0.8),
    "longtail": (5000, 5000, 100_000, 50, 0.5, 1.3),
    "dense": (943, 1682, 100_000, 20, 0.6, 1.0),  # MovieLens-100k's shape
    "heavy_users": (800, 3000, 100_000, 10, 0.7, 1.0),
}
SETS = ("retail_binary", "retail_log_qty", *SHAPES)
VARIANTS = {  # name: (library, change); each changes one thing against "ours" or "implicit"
    "ours": ("project", {}),
    "implicit": ("implicit", {}),
    "implicit_start": ("project", {"start": "implicit"}),  # our model from implicit's rand * 0.01
    "implicit_our_start": ("implicit", {"start": "ours"}),  # implicit from our start
    "init_scale_0.01": ("project", {"init_scale": 0.01}),
    "confidence_alpha_r": ("project", {"confidence": "alpha*r"}),  # implicit's c = alpha*r, not 1 + alpha*r
    "cholesky": ("project", {"solver": "cholesky"}),
    "cg_steps_6": ("project", {"cg_steps": 6}),
    "regularization_10": ("project", {"regularization": 10.0}),
    "regularization_30": ("project", {"regularization": 30.0}),
}


def load(name: str, seed: int):
    """(Encoded train, float32 CSR train, test frame) for a named set and seed."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from rusket_core.encoding import encode_transactions
    from rusket_core.evaluation import planted_interactions, train_test_split

    if name.startswith("retail"):
        df = pd.read_parquet(HERE.parent / "tests" / "data" / "online_retail_II_sample.parquet")
        df = df.rename(columns={"Customer_ID": "user_id", "StockCode": "item_id"})[["user_id", "item_id", "Quantity"]]
    else:
        df = planted_interactions(*SHAPES[name], random_state=seed)
    train, test = train_test_split(df, "user_id", "item_id", 0.2, random_state=seed)
    weight = None
    if name == "retail_log_qty":
        train = train.assign(weight=np.log1p(train["Quantity"].astype(float)))
        weight = "weight"
    enc = encode_transactions(train, "user_id", "item_id", weight)
    csr = sp.csr_matrix(enc.to_scipy()).astype(np.float32)
    if weight is None:
        csr.data[:] = 1.0
    return enc, csr, test[["user_id", "item_id"]]


def implicit_start(n_users: int, n_items: int, k: int, random_state: int, scale: float = 1.0):
    """implicit 0.7's starting factors: default_rng(seed).random(...) * 0.01, users then items."""
    import numpy as np

    rng = np.random.default_rng(random_state)
    return (rng.random((n_users, k), dtype=np.float32) * np.float32(0.01),
            rng.random((n_items, k), dtype=np.float32) * np.float32(0.01))  # fmt: skip


def fit(variant: str, csr, seed: int, threads: int):
    """(user factors, item factors, fit seconds) of one variant."""
    import numpy as np

    import rusket_core.factorization.als as als_module

    lib, change = VARIANTS[variant]
    change = dict(change)
    start = change.pop("start", None)
    if lib == "implicit":
        from implicit.cpu.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(**PARAMS, num_threads=threads, random_state=seed)
        if start == "ours":
            model.user_factors, model.item_factors = als_module.init_factors(*csr.shape, PARAMS["factors"], seed)
        t0 = time.perf_counter()
        model.fit(csr, show_progress=False)
        return model.user_factors, model.item_factors, time.perf_counter() - t0
    data = csr
    if change.pop("confidence", None):  # 1 + alpha * (r - 1/alpha) = alpha * r
        data = csr.copy()
        data.data = data.data - np.float32(1.0 / PARAMS["alpha"])
    original = als_module.init_factors
    if start == "implicit":
        als_module.init_factors = implicit_start  # the only way in: ALS draws its start in fit()
    try:
        model = als_module.ALS(**{**PARAMS, **change}, random_state=seed, num_threads=threads)
        t0 = time.perf_counter()
        model.fit(data)
        seconds = time.perf_counter() - t0
    finally:
        als_module.init_factors = original
    return model.user_factors, model.item_factors, seconds


def precision(enc, test, U, V) -> float:
    from rusket_core.evaluation import evaluate
    from rusket_core.factorization import FactorModel

    holder = FactorModel.from_factors(U, V, user_items=enc)
    return evaluate(holder, None, test, k=10, user_col="user_id", item_col="item_id")["precision"]


def summary(rows: list[dict]) -> str:
    """Markdown: per set and variant, precision@10 mean ± sd and the per-seed ratio to implicit."""
    peer = {(r["set"], r["seed"]): r["p10"] for r in rows if r["variant"] == "implicit"}
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r["set"], r["variant"])].append(r)
    lines = ["| set (users × items, nnz) | variant | precision@10 mean ± sd | ÷ implicit, mean [min, max] | fit s (median) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for (name, variant), rs in groups.items():
        p = [r["p10"] for r in rs]
        ratio = [r["p10"] / peer[(name, r["seed"])] for r in rs if (name, r["seed"]) in peer]
        sd = statistics.stdev(p) if len(p) > 1 else 0.0
        ratio_s = f"{statistics.mean(ratio):.3f} [{min(ratio):.3f}, {max(ratio):.3f}]" if ratio else "–"
        shape = f"{name} ({rs[0]['users']} × {rs[0]['items']}, {rs[0]['nnz']})"
        fit_s = statistics.median(r["fit_s"] for r in rs)
        lines.append(f"| {shape} | {variant} | {statistics.mean(p):.4f} ± {sd:.4f} | {ratio_s} | {fit_s:.2f} |")
    return "\n".join(lines)


def pivot(rows: list[dict]) -> str:
    """Markdown: one line per variant, per set the mean ratio of precision@10 to implicit's [min, max over seeds]."""
    peer = {(r["set"], r["seed"]): r["p10"] for r in rows if r["variant"] == "implicit"}
    sets = list(dict.fromkeys(r["set"] for r in rows))
    ratios: dict = defaultdict(list)
    for r in rows:
        if (r["set"], r["seed"]) in peer:
            ratios[(r["variant"], r["set"])].append(r["p10"] / peer[(r["set"], r["seed"])])
    lines = ["| variant | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = [f"{statistics.mean(x):.3f} [{min(x):.3f}, {max(x):.3f}]" if (x := ratios[(variant, s)]) else "–"
                 for s in sets]  # fmt: skip
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", type=Path, help="only print the tables of an earlier run's jsonl")
    args = parser.parse_args()
    if args.report:
        rows = [json.loads(line) for line in args.report.read_text().splitlines()]
        print(summary(rows), pivot(rows), sep="\n\n")
        return
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # set before numpy / numba load their pools

    import numpy as np
    import scipy.sparse as sp

    from rusket_core.factorization import ALS

    ALS(**{**PARAMS, "iterations": 1}).fit(sp.random(50, 40, density=0.2, format="csr", dtype=np.float32))  # JIT
    out = HERE / "_out" / "als_gap.jsonl"
    out.parent.mkdir(exist_ok=True)
    rows = []
    with out.open("w") as fh:
        for name in args.sets:
            for seed in args.seeds:
                enc, csr, test = load(name, seed)
                for variant in args.variants:
                    U, V, seconds = fit(variant, csr, seed, args.threads)
                    row = {"set": name, "seed": seed, "variant": variant, "p10": precision(enc, test, U, V),
                           "fit_s": seconds, "users": csr.shape[0], "items": csr.shape[1], "nnz": int(csr.nnz)}  # fmt: skip
                    rows.append(row)
                    fh.write(json.dumps(row) + "\n")
                    fh.flush()
    print(summary(rows), pivot(rows), sep="\n\n")


if __name__ == "__main__":
    main()
