"""Benchmark: frequent itemsets + rules on this project, rusket and mlxtend, same workloads, one run.

Each (library, workload) runs in its own subprocess so that peak RSS is measured fairly: "data
MB" is the worker's RSS after loading the long-format frame, "peak MB" the largest RSS of the
worker sampled from the parent every 5 ms (loading + encoding + mining + rules).  ``ru_maxrss``
is not used: Linux carries a parent's high-water mark across fork/exec.  For this project
the first subprocess starts with an empty numba cache ("cold": JIT compilation included), the
second reuses the cache ("cache": compiled code loaded from disk) and then repeats the whole
pipeline in-process ("warm": the median of the repeats, ``--repeat`` runs in all).  rusket needs
no compilation: its first run is "cold", the median of its repeats in the same process "warm";
mlxtend runs once.  "rules s" builds a pandas frame (Python
lists of labels, as the peers do); "rules->arrow s" (this project only) is the same rule
generation returned as an Arrow table.

    .venv/bin/python benchmarks/bench_mining.py                    # all workloads, all libraries
    .venv/bin/python benchmarks/bench_mining.py --workloads retail quest100k --libs ours rusket
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "_out"
RETAIL = ROOT / "tests" / "data" / "online_retail_II_sample.parquet"

# name: (description, min_support, rules min confidence, mlxtend feasible)
WORKLOADS: dict[str, tuple[str, float, float, bool]] = {
    "retail": ("online retail sample (1,000 invoices, 21,574 rows)", 0.01, 0.5, True),
    "quest100k": ("Quest-like 100k baskets x 1k items (~1M rows)", 0.001, 0.5, True),
    "quest1m": ("Quest-like 1M baskets x 10k items (~10M rows)", 0.0003, 0.5, False),
    "rules100k": ("Quest-like 100k baskets x 1k items, min_support 0.00025 (>100k itemsets)", 0.00025, 0.5, False),
}
LIBS = ("ours", "rusket", "mlxtend")


def data_path(workload: str) -> Path:
    """Parquet file with the workload's long-format rows (basket, item), generated once."""
    if workload == "retail":
        return RETAIL
    path = OUT / f"{workload}.parquet"
    if not path.exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        sys.path.insert(0, str(HERE))
        from quest import quest_baskets

        n_baskets, n_items = {"quest100k": (100_000, 1_000), "rules100k": (100_000, 1_000)}.get(
            workload, (1_000_000, 10_000)
        )
        basket, item = quest_baskets(n_baskets, n_items, seed=7)
        OUT.mkdir(exist_ok=True)
        pq.write_table(pa.table({"basket": basket, "item": item}), path)
    return path


def load(workload: str):
    """The workload as a pandas long-format frame and its (basket, item) column names."""
    import pandas as pd

    if workload == "retail":
        return pd.read_parquet(RETAIL, columns=["Invoice", "StockCode"]), "Invoice", "StockCode"
    return pd.read_parquet(data_path(workload)), "basket", "item"


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (default: this one) in MB."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def run_ours(df, tcol, icol, min_support, min_conf):
    from rusket_core.mining import FPGrowth

    t0 = time.perf_counter()
    model = FPGrowth.from_transactions(df, transaction_col=tcol, item_col=icol, min_support=min_support)
    t1 = time.perf_counter()
    itemsets = model.mine()
    t2 = time.perf_counter()
    rules = model.association_rules(metric="confidence", min_threshold=min_conf)
    t3 = time.perf_counter()
    model.association_rules(metric="confidence", min_threshold=min_conf, format="arrow")
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(itemsets), len(rules), t4 - t3


def run_rusket(df, tcol, icol, min_support, min_conf):
    import rusket

    t0 = time.perf_counter()
    model = rusket.FPGrowth.from_transactions(df, transaction_col=tcol, item_col=icol, min_support=min_support)
    t1 = time.perf_counter()
    itemsets = model.mine()
    t2 = time.perf_counter()
    rules = rusket.association_rules(
        itemsets, num_itemsets=df[tcol].nunique(), metric="confidence", min_threshold=min_conf
    )
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(itemsets), len(rules)


def run_mlxtend(df, tcol, icol, min_support, min_conf):
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    t0 = time.perf_counter()
    pairs = df[[tcol, icol]].drop_duplicates()
    rows = pd.factorize(pairs[tcol])[0]
    cols, names = pd.factorize(pairs[icol])
    dense = np.zeros((rows.max() + 1, len(names)), dtype=bool)
    dense[rows, cols] = True
    onehot = pd.DataFrame(dense, columns=[str(n) for n in names])
    t1 = time.perf_counter()
    itemsets = fpgrowth(onehot, min_support=min_support, use_colnames=True)
    t2 = time.perf_counter()
    rules = association_rules(itemsets, num_itemsets=len(onehot), metric="confidence", min_threshold=min_conf)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(itemsets), len(rules)


def worker(lib: str, workload: str, repeat: int) -> None:
    """Run one library on one workload (in this process) and print one JSON line."""
    _, min_support, min_conf, _ = WORKLOADS[workload]
    import gc

    df, tcol, icol = load(workload)
    gc.collect()
    base = rss_mb()
    fn = {"ours": run_ours, "rusket": run_rusket, "mlxtend": run_mlxtend}[lib]
    runs = [fn(df, tcol, icol, min_support, min_conf) for _ in range(repeat)]
    print(json.dumps({"lib": lib, "workload": workload, "runs": runs, "base_mb": base}))


def spawn(lib: str, workload: str, repeat: int, env: dict, timeout: float) -> dict:
    """Run a worker, sampling its RSS from here every 5 ms (independent of the worker's GIL)."""
    import psutil

    cmd = [sys.executable, __file__, "--worker", lib, workload, "--repeat", str(repeat)]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True, cwd=ROOT)
        watched = psutil.Process(proc.pid)
        peak = 0.0
        start = time.perf_counter()
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss / 2**20)
            if time.perf_counter() - start > timeout:
                proc.kill()
                proc.wait()
                return {"lib": lib, "workload": workload, "error": f"timeout after {timeout:.0f}s"}
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"lib": lib, "workload": workload, "error": (stderr or "no output").strip().splitlines()[-1]}
    return {**json.loads(lines[-1]), "peak_mb": peak}


def warm_median(runs: list) -> list:
    """Per column, the median over the repeats after the first (the first pays compilation or cache loads)."""
    rest = runs[1:] or runs
    return [statistics.median(col) for col in zip(*rest, strict=True)]


def fmt(x: float) -> str:
    return f"{x:8.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "WORKLOAD"))
    ap.add_argument("--generate", metavar="WORKLOAD")
    ap.add_argument("--repeat", type=int, default=4, help="runs per worker; warm = median of all but the first")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per library and workload")
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.repeat)
        return
    if args.generate:
        data_path(args.generate)
        return

    results = []
    for workload in args.workloads:
        desc, min_support, min_conf, mlx_ok = WORKLOADS[workload]
        # generate data in a child so that this parent stays small (workers fork from it)
        subprocess.run([sys.executable, __file__, "--generate", workload], check=True, cwd=ROOT)
        print(f"\n== {workload}: {desc}; min_support={min_support}, rules: confidence >= {min_conf}")
        print(f"{'library':<16}{'encode s':>9}{'mine s':>9}{'rules s':>9}{'itemsets':>10}{'rules':>10}"
              f"{'data MB':>9}{'peak MB':>9}{'rules->arrow s':>16}")
        rows = {}
        for lib in args.libs:
            if lib == "mlxtend" and not mlx_ok:
                print(f"{'mlxtend':<16} skipped: the dense one-hot frame would not fit / finish")
                continue
            env = dict(os.environ)
            if lib == "ours":
                cache = tempfile.mkdtemp(prefix="numba_cache_bench_")
                env["NUMBA_CACHE_DIR"] = cache
                cold = spawn(lib, workload, 1, env, args.timeout)
                warm = spawn(lib, workload, max(args.repeat, 2), env, args.timeout)
                shutil.rmtree(cache, ignore_errors=True)
                entries = [("ours cold", cold, 0), ("ours cache", warm, 0), ("ours warm", warm, -1)]
            elif lib == "mlxtend":  # pure Python/numpy: nothing to warm up, one run is enough
                res = spawn(lib, workload, 1, env, args.timeout)
                entries = [("mlxtend", res, 0)]
            else:
                res = spawn(lib, workload, max(args.repeat, 2), env, args.timeout)
                entries = [(f"{lib} cold", res, 0), (f"{lib} warm", res, -1)]
            for label, res, k in entries:
                if "error" in res:
                    print(f"{label:<16} {res['error']}")
                    continue
                run = res["runs"][0] if k == 0 else warm_median(res["runs"])
                enc, mine, rules, n_sets, n_rules = run[:5]
                rows[label] = run
                arrow = f"{run[5]:16.3f}" if len(run) > 5 else ""
                print(f"{label:<16}{fmt(enc):>9}{fmt(mine):>9}{fmt(rules):>9}{n_sets:>10}{n_rules:>10}"
                      f"{res['base_mb']:>9.0f}{res['peak_mb']:>9.0f}{arrow}")
            results.append({"workload": workload, "lib": lib, "runs": [[lbl, r] for lbl, r, _ in entries], "warm": "median of runs after the first"})
        counts = {label: (r[3], r[4]) for label, r in rows.items()}
        if len(set(counts.values())) > 1:
            print(f"!! itemset/rule counts differ: {counts}")
        elif counts:
            print(f"itemset and rule counts agree across all runs: {next(iter(counts.values()))}")
        if "ours warm" in rows:
            for other in ("rusket warm", "mlxtend"):
                if other in rows:
                    o, r = rows["ours warm"], rows[other]
                    print(f"{other.split()[0]} / ours (warm): encode x{r[0] / o[0]:.1f}, mine x{r[1] / o[1]:.1f}, "
                          f"rules x{r[2] / max(o[2], 1e-9):.1f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_mining.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
