"""The ALS fit with BLAS pinned to one thread (as the library runs it) vs BLAS at its default thread count,
in one default process (no thread variables set), alternating, on the factorization benchmark's sets.

    .venv/bin/python benchmarks/bench_blas_pin.py [--sizes 1m,3m,10m] [--repeat 3]

The fit alternates BLAS products (Gram matrix, eigenbasis rotations) with numba parallel regions; OpenBLAS's
threads keep spinning after each product, on the cores numba needs next. Prints one JSON row per size:
median seconds of each mode, their ratio, and whether both modes gave the same factors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interactions import dataset  # noqa: E402

import rusket_core.factorization.als as als_module  # noqa: E402
from rusket_core import ALS  # noqa: E402
from rusket_core.encoding import encode_transactions  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1m,3m,10m")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pinned = als_module.single_threaded_blas
    params = {"factors": 32, "iterations": 10, "alpha": 10.0, "regularization": 0.05, "solver": "cg", "random_state": 0}
    env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    for size in args.sizes.split(","):
        train, _ = dataset(size)
        enc = encode_transactions(train.drop_duplicates(["user_id", "item_id"]), "user_id", "item_id")
        ALS(**{**params, "iterations": 1}).fit(enc)  # compile / load the kernels
        times: dict[str, list[float]] = {"pinned": [], "default": []}
        factors = {}
        for _ in range(args.repeat):
            for mode in ("default", "pinned"):
                als_module.single_threaded_blas = pinned if mode == "pinned" else (lambda *a: contextlib.nullcontext())
                start = time.perf_counter()
                model = ALS(**params).fit(enc)
                times[mode].append(time.perf_counter() - start)
                factors[mode] = model.item_factors
        als_module.single_threaded_blas = pinned
        row = {"size": size, "entries": enc.nnz, **{f"{m}_s": float(np.median(t)) for m, t in times.items()},
               "runs": times, "env": env, "load": os.getloadavg()}  # fmt: skip
        row["default_over_pinned"] = row["default_s"] / row["pinned_s"]
        row["max_factor_diff"] = float(np.abs(factors["pinned"] - factors["default"]).max())
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
