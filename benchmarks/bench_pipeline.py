"""Whole-graph materialisation time on the default (bundled synthetic) data: cold and warm numba cache.

Each run is a fresh Python process (like ``./dev run``) writing to a fresh temporary DuckDB file,
LanceDB directory and model store, with an ephemeral Dagster instance:

- cold: an empty ``NUMBA_CACHE_DIR``, so every kernel is compiled during the run;
- warm: the cache the cold run left behind (kernels load from disk).

Like ``./dev run``, each run starts the background kernel warm-up (``rusket_core.warmup``) first;
one extra cold run without it (``--no-warm-up`` of ``./dev run``) shows what it saves.

Prints per-step seconds and writes ``benchmarks/results_pipeline.md``.
Usage: ``python benchmarks/bench_pipeline.py [--warm-runs 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results_pipeline.md"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from rusket_assets.main import start_warm_up, stop_warm_up
warmer = start_warm_up() if sys.argv[1] == "warm-up" else None
import dagster as dg
from rusket_assets.definitions import defs
from rusket_assets.main import materialise_all
t1 = time.perf_counter()
with dg.DagsterInstance.ephemeral() as instance:
    ok, steps = materialise_all("ERROR", defs=defs, instance=instance)
t2 = time.perf_counter()
stop_warm_up(warmer)
rows = defs.resources["warehouse"].query(
    "select schema_name || '.' || table_name as t, estimated_size as n from duckdb_tables() order by t"
).to_pylist()
quality = defs.resources["warehouse"].query(
    "select model, precision, ndcg, coverage, fit_seconds from personalization.model_evaluation"
).to_pylist()
print(json.dumps({"ok": ok, "import": t1 - t0, "run": t2 - t1, "steps": steps,
                  "tables": {r["t"]: r["n"] for r in rows}, "quality": quality}))
"""


def run_once(cache_dir: Path, data_dir: Path, warm_up: bool = True) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "RUSKET_DATA_DIR": str(data_dir)}
    start = time.perf_counter()
    mode = "warm-up" if warm_up else "none"
    out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"materialisation failed:\n{out.stderr[-4000:]}")
    result["wall"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not rewrite results_pipeline.md")
    args = parser.parse_args()
    runs: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        result = run_once(Path(tmp) / "numba_cache_plain", Path(tmp) / "data_plain", warm_up=False)
        runs.append(("cold, no warm-up", result))
        print(f"cold, no warm-up: wall {result['wall']:6.1f} s  (imports {result['import']:.1f} s, "
              f"materialisation {result['run']:.1f} s)", flush=True)  # fmt: skip
        cache = Path(tmp) / "numba_cache"
        for i in range(1 + args.warm_runs):
            label = "cold" if i == 0 else f"warm {i}"
            result = run_once(cache, Path(tmp) / f"data_{i}")
            runs.append((label, result))
            print(f"{label:7s} wall {result['wall']:6.1f} s  (imports {result['import']:.1f} s, "
                  f"materialisation {result['run']:.1f} s)", flush=True)  # fmt: skip
    steps = sorted(runs[-1][1]["steps"], key=lambda s: -runs[-1][1]["steps"][s])
    print("\nper-step seconds (" + ", ".join(label for label, _ in runs) + ")")
    for step in steps:
        print(f"  {step:60s} " + " ".join(f"{r['steps'].get(step, float('nan')):6.2f}" for _, r in runs))
    if not args.no_write:
        write_results(runs, steps)


def write_results(runs: list[tuple[str, dict]], steps: list[str]) -> None:
    cpu = os.cpu_count()
    lines = [
        "# Pipeline benchmark: whole asset graph on the default data",
        "",
        f"Command: `python benchmarks/bench_pipeline.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.python_implementation()} {platform.python_version()}, {cpu} cores, machine shared with other jobs).",
        "",
        "Default data: the bundled synthetic store (20k customers, 2k products in 40 categories, ~300k order",
        "lines over 90 days). Each run is a fresh process writing a fresh DuckDB file, LanceDB directory and",
        "model store (in-process executor, ephemeral Dagster instance). *cold* starts with an empty numba",
        "cache (every kernel compiles); *warm* reuses the cache the cold run wrote. Like `./dev run`, each run",
        "starts the background kernel warm-up first, except *cold, no warm-up*.",
        "",
        "| run | wall (s) | imports (s) | materialisation (s) |",
        "|---|---:|---:|---:|",
    ]
    for label, r in runs:
        lines.append(f"| {label} | {r['wall']:.1f} | {r['import']:.1f} | {r['run']:.1f} |")
    lines += ["", "Per step (seconds; asset checks included):", "",
              "| step | " + " | ".join(label for label, _ in runs) + " |",
              "|---|" + "---:|" * len(runs)]  # fmt: skip
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(f"{r['steps'].get(step, float('nan')):.2f}" for _, r in runs) + " |")
    lines += ["", "Holdout quality (model_evaluation, last run; 20% of each customer's products held out, k = 10):",
              "", "| model | precision@10 | ndcg@10 | coverage | refit on train (s) |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for q in runs[-1][1]["quality"]:
        lines.append(f"| {q['model']} | {q['precision']:.4f} | {q['ndcg']:.4f} | {q['coverage']:.3f} | {q['fit_seconds']:.2f} |")
    lines += ["", "Table sizes (rows, last run):", "", "| table | rows |", "|---|---:|"]
    for table, n in runs[-1][1]["tables"].items():
        lines.append(f"| {table} | {n} |")
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
