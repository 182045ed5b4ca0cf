"""ALS and BPR speed and quality: this project vs implicit vs rusket, same data, same thread count.

Each (library, model, dataset) runs in its own subprocess with every thread pool capped at
``--threads`` (numba, OpenMP, OpenBLAS, rayon), after a small warm-up fit so JIT compilation and
cache loading are not timed. Measured per run: fit wall time; for ALS also batch top-10 for all
users (each library's own batch API) and 10 similar items for every item; precision@10 and
ndcg@10 on the 80/20 per-user holdout, computed for every library by the same code
(``rusket_core.evaluation.evaluate`` on the library's factors, training items excluded); and the
worker's peak RSS. Results go to ``benchmarks/_out/factorization.json`` and a markdown table.

    .venv/bin/python benchmarks/bench_factorization.py                 # 100k and 1m, 2 threads
    .venv/bin/python benchmarks/bench_factorization.py --sizes 100k --libs project implicit
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

ALS_PARAMS = {"factors": 64, "iterations": 15, "alpha": 40.0, "regularization": 0.01}
BPR_PARAMS = {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": 100}
LIBS = ("project", "implicit", "rusket")
SIMILAR_SAMPLE = 2000  # rusket has no batch similar-items call: time this many single calls and scale


# ---------------------------------------------------------------------------------------------
# worker (one library, one model, one dataset)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _quality(encoded, test, user_factors, item_factors) -> dict:
    """precision@10 / ndcg@10 of any library's factors with the project's evaluation code."""
    from rusket_core.evaluation import evaluate
    from rusket_core.factorization import FactorModel

    holder = FactorModel.from_factors(user_factors, item_factors, user_items=encoded)
    metrics = evaluate(holder, None, test, k=10, user_col="user_id", item_col="item_id")
    return {"precision@10": metrics["precision"], "ndcg@10": metrics["ndcg"]}


def worker(lib: str, model: str, size: str, threads: int) -> dict:
    import scipy.sparse as sp
    from interactions import dataset

    from rusket_core.encoding import encode_transactions

    importlib.import_module({"project": "rusket_core.factorization", "implicit": "implicit.cpu.als",
                             "rusket": "rusket"}[lib])  # fmt: skip  (imports stay out of the RSS delta)
    train, test = dataset(size)
    encoded = encode_transactions(train, "user_id", "item_id")
    csr = sp.csr_matrix(encoded.to_scipy())
    tiny = csr[:200]
    rss_data = _peak_rss_mb()
    out: dict = {"lib": lib, "model": model, "size": size, "threads": threads,
                 "users": csr.shape[0], "items": csr.shape[1], "nnz": int(csr.nnz)}  # fmt: skip
    params = ALS_PARAMS if model == "als" else BPR_PARAMS

    if lib == "project":
        from rusket_core.factorization import ALS, BPR

        cls = ALS if model == "als" else BPR
        warm = cls(**{**params, "iterations": 1}).fit(tiny)
        warm.batch_recommend(n=10, format="polars")
        warm.batch_similar_items(n=10, format="polars")
        fitted, out["fit_s"] = _timed(lambda: cls(**params, random_state=0).fit(csr))
        U, V = fitted.user_factors, fitted.item_factors
        if model == "als":
            _, out["batch_top10_s"] = _timed(lambda: fitted.batch_recommend(n=10, format="polars"))
            _, out["similar_all_s"] = _timed(lambda: fitted.batch_similar_items(n=10, format="polars"))
    elif lib == "implicit":
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        def make():
            if model == "als":
                return AlternatingLeastSquares(**params, num_threads=threads, random_state=0)
            return BayesianPersonalizedRanking(**params, num_threads=threads, random_state=0)

        warm = make()
        warm.iterations = 1
        warm.fit(tiny, show_progress=False)
        fitted = make()
        _, out["fit_s"] = _timed(lambda: fitted.fit(csr, show_progress=False))
        U, V = fitted.user_factors, fitted.item_factors
        if model == "als":
            users = np.arange(csr.shape[0])
            warm.recommend(np.arange(10), tiny[:10], N=10, filter_already_liked_items=True)
            _, out["batch_top10_s"] = _timed(
                lambda: fitted.recommend(users, csr, N=10, filter_already_liked_items=True)
            )
            items = np.arange(csr.shape[1])
            _, out["similar_all_s"] = _timed(lambda: fitted.similar_items(items, N=11))  # includes self
    elif lib == "rusket":
        import rusket

        cls = rusket.ALS if model == "als" else rusket.BPR
        warm = cls(**{**params, "iterations": 1}, seed=0).fit(tiny)
        fitted, out["fit_s"] = _timed(lambda: cls(**params, seed=0).fit(csr))
        U, V = np.asarray(fitted.user_factors), np.asarray(fitted.item_factors)
        if model == "als":
            warm.batch_recommend(n=10, format="polars")
            _, out["batch_top10_s"] = _timed(lambda: fitted.batch_recommend(n=10, format="polars"))
            sample = np.arange(min(SIMILAR_SAMPLE, csr.shape[1]))
            fitted.similar_items(0, n=10)

            def loop():
                for i in sample:
                    fitted.similar_items(int(i), n=10)

            _, elapsed = _timed(loop)
            out["similar_all_s"] = elapsed * csr.shape[1] / len(sample)
            out["similar_all_extrapolated"] = len(sample) < csr.shape[1]
    else:
        raise ValueError(f"unknown library {lib!r}")
    out["peak_rss_mb"] = _peak_rss_mb()
    out["data_rss_mb"] = rss_data
    out.update(_quality(encoded, test, U, V))
    return out


# ---------------------------------------------------------------------------------------------
# driver


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = "1"  # library threads come from numba / OpenMP / rayon
    env.setdefault("NUMBA_CACHE_DIR", str(HERE.parent / ".venv" / "numba_cache"))
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "scipy", "numba", "implicit", "rusket"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores visible, {meta['threads']} threads per library; "
        f"load average at start {meta['load_start']}, at end {meta['load_end']} (shared machine).",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        f"Command: `{meta['command']}` (median of {meta['repeat']} runs per cell, libraries interleaved; quality from the last run).",
        "",
    ]
    for size in dict.fromkeys(r["size"] for r in results):
        rows = [r for r in results if r["size"] == size]
        first = rows[0]
        lines += [
            f"### {size}: {first['users']:,} users × {first['items']:,} items, {first['nnz']:,} training pairs",
            "",
            "| library | model | fit s | batch top-10 s | similar items s | precision@10 | ndcg@10 | peak RSS MB | RSS over data MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            sim = _fmt(r.get("similar_all_s"))
            if r.get("similar_all_extrapolated"):
                sim += "*"
            lines.append(
                f"| {r['lib']} | {r['model'].upper()} | {_fmt(r['fit_s'])} | {_fmt(r.get('batch_top10_s'))} | "
                f"{sim} | {r['precision@10']:.4f} | {r['ndcg@10']:.4f} | {r['peak_rss_mb']:.0f} | "
                f"{r['peak_rss_mb'] - r['data_rss_mb']:.0f} |"
            )
        lines.append("")
        ours = {r["model"]: r for r in rows if r["lib"] == "project"}
        for r in rows:
            if r["lib"] == "project" or r["model"] not in ours:
                continue
            mine = ours[r["model"]]
            parts = [f"fit {r['fit_s'] / mine['fit_s']:.2f}×"]
            for key, name in (("batch_top10_s", "batch top-10"), ("similar_all_s", "similar items")):
                if r.get(key) and mine.get(key):
                    parts.append(f"{name} {r[key] / mine[key]:.2f}×")
            lines.append(f"- {r['model'].upper()} {r['lib']} / project time: " + ", ".join(parts))
        lines.append("")
    if any(r.get("similar_all_extrapolated") for r in results):
        lines.append(f"\\* rusket: {SIMILAR_SAMPLE} single `similar_items` calls timed and scaled to all items.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100k", "1m"])
    parser.add_argument("--libs", nargs="+", default=list(LIBS))
    parser.add_argument("--models", nargs="+", default=["als", "bpr"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "_out" / "factorization.json"))
    parser.add_argument("--baseline", metavar="DIR", help="also run the project as checked out in DIR "
                        "(e.g. `git worktree add DIR main`), as library 'baseline', interleaved with the rest")
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(*args.worker, threads=args.threads)))
        return

    from interactions import dataset

    for size in args.sizes:
        dataset(size)  # build and cache once, outside the timed workers
    meta = {
        "cpu": _cpu(), "cores": os.cpu_count(), "threads": args.threads, "repeat": args.repeat,
        "versions": _versions(), "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "python benchmarks/bench_factorization.py " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    results = []
    keys = ("fit_s", "batch_top10_s", "similar_all_s")
    for size in args.sizes:
        for model in args.models:
            libs = [*args.libs, *(["baseline"] if args.baseline else [])]
            runs: dict[str, list[dict]] = {lib: [] for lib in libs}
            for _ in range(args.repeat):  # libraries interleaved, so load changes hit all of them alike
                for lib in libs:
                    script, as_lib = (__file__, lib) if lib != "baseline" else (
                        str(Path(args.baseline) / "benchmarks" / Path(__file__).name), "project")
                    cmd = [sys.executable, script, "--threads", str(args.threads), "--worker", as_lib, model, size]
                    proc = subprocess.run(cmd, env=_env(args.threads), capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"{lib} {model} {size} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                        continue
                    runs[lib].append({**json.loads(proc.stdout.strip().splitlines()[-1]), "lib": lib})
            for done in runs.values():
                if not done:
                    continue
                row = dict(done[-1])
                for key in keys:
                    if key in row:
                        values = [r[key] for r in done]
                        row[key] = float(np.median(values))
                        row[key + "_runs"] = values
                print(json.dumps(row), flush=True)
                results.append(row)
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print()
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
