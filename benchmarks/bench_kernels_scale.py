"""Factor-model kernels at the 50M-line store's shape: this project vs implicit vs rusket, same matrix, same run.

The matrix is the (customer × product) interaction CSR of the 50M-line synthetic store that
``bench_scale.py`` generates (``sample_data.generate_store`` in parts: about 2M customers, 50k
products, Zipf popularity within categories, segment affinities): DuckDB groups the order lines into
distinct pairs with their line count as the rating, and the CSR is cached under
``benchmarks/_out/``. Kernels only: no Dagster, no DuckDB tables.

Each (library, model) runs in its own subprocess with every thread pool capped at ``--threads``,
after a small warm-up fit (JIT / cache loading not timed). Measured: fit wall time (``--als-iters``
ALS iterations, ``--bpr-epochs`` BPR epochs: full 15 / 100-iteration fits at this size do not finish
within the time budget for every library), for ALS also batch top-10 (seen items excluded) for a
seeded sample of ``--topk-users`` customers and 10 similar items for every product (rusket:
``--similar-sample`` single calls scaled to all products), and the worker's peak RSS after each
stage (``ru_maxrss``) next to its RSS once the matrix is loaded. ``--users`` takes the first N
customers only (a smaller size for a library that cannot run the whole matrix).

    .venv/bin/python benchmarks/bench_kernels_scale.py                       # all libraries, ALS and BPR
    .venv/bin/python benchmarks/bench_kernels_scale.py --libs project implicit --models als --users 500000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

OUT = HERE / "_out"
STORE = Path("/work/bench_data/store_50000000.parquet")
LIBS = ("project", "implicit", "rusket")


def matrix_path(store: Path) -> Path:
    return OUT / f"scale_csr_{store.stem}.npz"


def build_matrix(store: Path) -> Path:
    """Distinct (customer, product) pairs of the store's lines, counted in DuckDB, as a cached CSR npz."""
    path = matrix_path(store)
    if path.exists():
        return path
    if not store.exists():
        from bench_scale import generate

        generate(50_000_000, store, 5_000_000)
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(
        f"""CREATE TEMP TABLE pairs AS
        WITH lines AS (SELECT customer_id, product_id FROM read_parquet('{store}')),
             c AS (SELECT customer_id, (row_number() OVER (ORDER BY customer_id)) - 1 AS u
                   FROM (SELECT DISTINCT customer_id FROM lines)),
             p AS (SELECT product_id, (row_number() OVER (ORDER BY product_id)) - 1 AS i
                   FROM (SELECT DISTINCT product_id FROM lines))
        SELECT c.u::INTEGER AS u, p.i::INTEGER AS i, count(*)::FLOAT AS w
        FROM lines JOIN c USING (customer_id) JOIN p USING (product_id)
        GROUP BY ALL"""
    )
    n_users, n_items = con.execute("SELECT max(u) + 1, max(i) + 1 FROM pairs").fetchall()[0]
    tbl = con.sql("SELECT u, i, w FROM pairs ORDER BY u, i").arrow().read_all()
    u = tbl.column("u").to_numpy()
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
    OUT.mkdir(exist_ok=True)
    np.savez(path, indptr=indptr, indices=tbl.column("i").to_numpy().astype(np.int32),
             data=tbl.column("w").to_numpy().astype(np.float32), shape=np.array([n_users, n_items]))  # fmt: skip
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def worker(lib: str, model: str, args) -> dict:
    import scipy.sparse as sp

    with np.load(matrix_path(Path(args.store))) as z:
        n_users, n_items = (int(v) for v in z["shape"])
        csr = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n_users, n_items))
    if args.users and args.users < n_users:
        csr = csr[: args.users]
    n_users = csr.shape[0]
    sample = np.sort(np.random.default_rng(0).choice(n_users, min(args.topk_users, n_users), replace=False))
    tiny = csr[:200]
    out: dict = {"lib": lib, "model": model, "users": n_users, "items": n_items, "nnz": int(csr.nnz)}
    iters = args.als_iters if model == "als" else args.bpr_epochs
    params = ({"factors": 64, "iterations": iters, "alpha": 40.0, "regularization": 0.01} if model == "als"
              else {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": iters})  # fmt: skip
    if lib == "project":
        from rusket_core.factorization import ALS, BPR

        cls = ALS if model == "als" else BPR
        warm = cls(**{**params, "iterations": 1}).fit(tiny)
        warm.batch_recommend(n=10, format="polars")
        warm.batch_similar_items(n=10, format="polars")
    elif lib == "implicit":
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cls = AlternatingLeastSquares if model == "als" else BayesianPersonalizedRanking
        warm = cls(**{**params, "iterations": 1}, num_threads=args.threads, random_state=0)
        warm.fit(tiny, show_progress=False)
        warm.recommend(np.arange(10), tiny[:10], N=10, filter_already_liked_items=True)
    else:
        import rusket

        cls = rusket.ALS if model == "als" else rusket.BPR
        warm = cls(**{**params, "iterations": 1}, seed=0).fit(tiny)
        if model == "als":
            warm.batch_recommend(n=10, format="polars")
            warm.similar_items(0, n=10)
    out["data_rss_mb"] = _rss_mb()

    if lib == "project":
        fitted, out["fit_s"] = _timed(lambda: cls(**params, random_state=0).fit(csr))
    elif lib == "implicit":
        fitted = cls(**params, num_threads=args.threads, random_state=0)
        _, out["fit_s"] = _timed(lambda: fitted.fit(csr, show_progress=False))
    else:
        fitted, out["fit_s"] = _timed(lambda: cls(**params, seed=0).fit(csr))
    out["fit_rss_mb"] = _rss_mb()
    if model != "als":
        return out

    if lib == "project":
        _, out["topk_s"] = _timed(lambda: fitted.batch_recommend(n=10, users=sample, format="polars"))
        out["topk_rss_mb"] = _rss_mb()
        _, out["similar_s"] = _timed(lambda: fitted.batch_similar_items(n=10, format="polars"))
    elif lib == "implicit":
        _, out["topk_s"] = _timed(lambda: fitted.recommend(sample, csr[sample], N=10, filter_already_liked_items=True))
        out["topk_rss_mb"] = _rss_mb()
        _, out["similar_s"] = _timed(lambda: fitted.similar_items(np.arange(n_items), N=11))  # includes self
    else:
        # rusket's batch_recommend scores every user; time the sample through a scoring-only model on the
        # sample's factors with the sample's seen items as the ``exclude`` mask (its documented path)
        import rusket

        exclude = csr[sample]
        uf = np.asarray(fitted.user_factors)[sample]
        sub = rusket.ALS.from_factors(uf, np.asarray(fitted.item_factors), user_labels=sample)

        def topk():
            return sub.batch_recommend(n=10, exclude=exclude, format="polars")

        _, out["topk_s"] = _timed(topk)
        out["topk_rss_mb"] = _rss_mb()
        items = np.arange(min(args.similar_sample, n_items))
        _, elapsed = _timed(lambda: [fitted.similar_items(int(i), n=10) for i in items])
        out["similar_s"] = elapsed * n_items / len(items)
        out["similar_extrapolated_from"] = len(items)
    out["peak_rss_mb"] = _rss_mb()
    out["topk_users"] = len(sample)
    return out


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env.setdefault("NUMBA_CACHE_DIR", str(HERE.parent / ".venv" / "numba_cache"))
    env["PYTHONWARNINGS"] = "ignore"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=str(STORE))
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    ap.add_argument("--models", nargs="+", default=["als", "bpr"], choices=["als", "bpr"])
    ap.add_argument("--users", type=int, default=0, help="first N customers only (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--als-iters", type=int, default=5)
    ap.add_argument("--bpr-epochs", type=int, default=5)
    ap.add_argument("--topk-users", type=int, default=100_000)
    ap.add_argument("--similar-sample", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per library and model")
    ap.add_argument("--out", default=str(OUT / "kernels_scale.jsonl"))
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_only:
        build_matrix(Path(args.store))
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return

    start = time.perf_counter()  # built in a child: the workers' ru_maxrss must not inherit this process's peak
    subprocess.run([sys.executable, __file__, "--store", args.store, "--build-only"], check=True, env=_env(args.threads))
    print(f"matrix ready in {time.perf_counter() - start:.0f} s: {matrix_path(Path(args.store))}", flush=True)
    passthrough = ["--store", args.store, "--users", str(args.users), "--threads", str(args.threads),
                   "--als-iters", str(args.als_iters), "--bpr-epochs", str(args.bpr_epochs),
                   "--topk-users", str(args.topk_users), "--similar-sample", str(args.similar_sample)]  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        for lib in args.libs:
            load = os.getloadavg()[0]
            cmd = [sys.executable, __file__, *passthrough, "--worker", lib, model]
            try:
                proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                row = {"lib": lib, "model": model, "error": f"timeout after {args.timeout:.0f} s"}
            else:
                if proc.returncode != 0:
                    row = {"lib": lib, "model": model, "error": proc.stderr.strip().splitlines()[-1][:300]}
                else:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(load_before=round(load, 1), load_after=round(os.getloadavg()[0], 1),
                       als_iters=args.als_iters, bpr_epochs=args.bpr_epochs, threads=args.threads)  # fmt: skip
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
