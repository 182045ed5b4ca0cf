"""Whole graph at retailer scale: generated stores written to parquet in chunks, run from the parquet source.

For each size (order lines) the store is generated part by part with the bundled store's structure
(``sample_data.generate_store(spec, part=k)``: same products, customers and affinities in every part)
and appended to one parquet file, so the generator holds one part at a time. Then
``python -m rusket_assets.main --source-kind parquet --source-path <file>`` runs in a fresh process
(fresh DuckDB file, LanceDB directory, model store and Dagster instance under ``--out``), while this
script samples the resident memory of that process and all its children. Recorded: per-asset
seconds (from the run's event log, as ``main`` prints them), peak RSS, and the rows of every table
written. Data stays under ``--out`` (default /tmp/bench_scale).

Usage: ``python benchmarks/bench_scale.py --lines 3000000 [--lines 1000000] [--write-results]``.
``--data DIR`` keeps the generated stores there (``store_<lines>.parquet`` with a ``.json``
description beside it) and reuses them on later runs instead of generating again;
``--generate-only`` just makes them; ``--markdown FILE`` writes the results table to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's rusket_assets, also for the child run (PYTHONPATH below)
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Whole graph at scale (bench_scale.py)"
#: (customers, products, categories) per size, as in issue #10; other sizes scale customers with lines
PRESETS = {1_000_000: (70_000, 10_000, 60), 3_000_000: (200_000, 20_000, 80), 10_000_000: (600_000, 50_000, 80),
           50_000_000: (2_000_000, 50_000, 80)}  # fmt: skip
STEP_LINE = re.compile(r"^\s*([0-9.]+) s  (\S+)$")


def spec_for(lines: int, part_lines: int):
    """The StoreSpec of one part of a store with ``lines`` order lines."""
    from rusket_assets.sample_data import StoreSpec

    customers, products, categories = PRESETS.get(lines, (max(1_000, lines // 15), min(50_000, max(200, lines // 150)), 80))
    return StoreSpec(n_customers=customers, n_products=products, n_categories=categories, n_days=365,
                     n_lines=part_lines, seed=11)  # fmt: skip


def generate(lines: int, path: Path, part_lines: int) -> dict:
    """Write a store of about ``lines`` order lines to ``path`` one part at a time; return what was written."""
    import pyarrow.parquet as pq

    from rusket_assets.sample_data import generate_store

    start = time.perf_counter()
    n_parts = max(1, round(lines / part_lines))
    spec = spec_for(lines, lines // n_parts)
    written = 0
    writer = None
    try:
        for part in range(n_parts):
            table = generate_store(spec, part=part)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=1_000_000)
            written += table.num_rows
            del table
    finally:
        if writer is not None:
            writer.close()
    return {"lines": written, "parts": n_parts, "customers": spec.n_customers, "products": spec.n_products,
            "categories": spec.n_categories, "seconds": time.perf_counter() - start,
            "parquet_mb": path.stat().st_size / 2**20}  # fmt: skip


def store_for(lines: int, parquet: Path, part_lines: int) -> dict:
    """The store of ``lines`` order lines at ``parquet``: reused when its description is beside it, else generated."""
    described = parquet.with_suffix(".json")
    if parquet.exists() and described.exists():
        store = json.loads(described.read_text())
        print(f"reusing {store['lines']:,} lines at {parquet}", flush=True)
        return store
    partial = parquet.with_suffix(".parquet.partial")  # a crashed generation never looks finished
    store = generate(lines, partial, part_lines)
    partial.replace(parquet)
    store["target"] = lines
    described.write_text(json.dumps(store, indent=1))
    print(f"generated {store['lines']:,} lines in {store['seconds']:.0f} s -> {parquet}", flush=True)
    return store


def tree_rss(proc) -> int:
    """Resident bytes of ``proc`` and all its descendants (processes that vanish meanwhile are skipped)."""
    import psutil

    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def run_graph(parquet: Path, work: Path) -> dict:
    """Run ``rusket_assets.main`` on the parquet source in a fresh process; time it and sample its memory."""
    import psutil

    data, home = work / "data", work / "dagster_home"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "RUSKET_DATA_DIR": str(data), "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "rusket_assets.main", "--source-kind", "parquet", "--source-path", str(parquet)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    samples: list[tuple[float, int]] = []  # (unix time, bytes)
    loads: list[float] = []  # the 1-minute load average, sampled every 10 s
    done = threading.Event()

    def sample() -> None:
        k = 0
        while not done.is_set():
            samples.append((time.time(), tree_rss(proc)))
            if k % 50 == 0:
                loads.append(os.getloadavg()[0])
            k += 1
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = child.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    steps = {m.group(2): float(m.group(1)) for m in map(STEP_LINE.match, out.splitlines()) if m}
    peak = max((b for _, b in samples), default=0)
    return {"ok": child.returncode == 0, "wall": wall, "peak_rss_mb": peak / 2**20, "steps": steps,
            "load": [min(loads, default=0.0), max(loads, default=0.0)], "bench_command": " ".join(sys.argv[1:]),
            "step_peak_mb": step_peaks(home, samples), "rows": table_rows(data), "stderr": err[-3000:],
            "command": " ".join(cmd[1:])}  # fmt: skip


def step_peaks(home: Path, samples: list[tuple[float, int]]) -> dict[str, float]:
    """Peak sampled RSS (MB) while each step ran, from the step start/end times in the run's event log."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    spans: dict[str, list[float]] = {}
    with dg.DagsterInstance.get() as instance:
        for run in instance.get_runs(limit=1):
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                if event.event_type == dg.DagsterEventType.STEP_START:
                    spans[event.step_key] = [entry.timestamp, entry.timestamp]
                elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                    spans.setdefault(event.step_key, [entry.timestamp, entry.timestamp])[1] = entry.timestamp
    return {
        step: max((b for t, b in samples if start - 0.2 <= t <= end + 0.2), default=0) / 2**20
        for step, (start, end) in spans.items()
    }


def table_rows(data: Path) -> dict[str, int]:
    """Rows of every DuckDB table and LanceDB table the run wrote."""
    import duckdb

    rows: dict[str, int] = {}
    db = data / "warehouse.duckdb"
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        try:
            for schema, table in con.sql("select schema_name, table_name from duckdb_tables() order by 1, 2").fetchall():
                rows[f"{schema}.{table}"] = con.sql(f'select count(*) from "{schema}"."{table}"').fetchall()[0][0]
        finally:
            con.close()
    lance = data / "lancedb"
    if lance.exists():
        import lancedb

        db = lancedb.connect(str(lance))
        for name in db.list_tables().tables:
            rows[f"lancedb.{name}"] = db.open_table(name).count_rows()
    return rows


def markdown(results: list[dict], commit: str) -> str:
    """The RESULTS.md section for these runs."""
    sizes = [r["store"] for r in results]
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}, {os.cpu_count()} cores "
        f"({_cpu_name()}), {_memory_gb():.0f} GiB RAM, CPython {platform.python_version()}. "
        "1-minute load average during the runs: "
        + ", ".join(("{:.1f}–{:.1f}".format(*r["run"]["load"]) if "load" in r["run"] else "not recorded") for r in results)
        + f" on {os.cpu_count()} cores (above that, other jobs shared the machine: read times as upper bounds).",
        "",
        "Command: `python benchmarks/bench_scale.py " + results[-1]["run"].get("bench_command", "--lines ...") + "`"
        " (stores generated in parts straight to parquet, or reused from --data; then `python -m rusket_assets.main "
        "--source-kind parquet --source-path <file>` in a fresh process; peak RSS sampled every 0.2 s over that "
        "process and its children).",
        "",
        "| store | " + " | ".join(f"{s['lines']:,} lines ({s['customers']:,} customers, {s['products']:,} products)" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
        "| whole run, wall (s) | " + " | ".join(f"{r['run']['wall']:.0f}" for r in results) + " |",
        "| peak RSS incl. children (GB) | " + " | ".join(f"{r['run']['peak_rss_mb'] / 1024:.2f}" for r in results) + " |",
        "| parquet size (MB) / generation (s) | " + " | ".join(f"{s['parquet_mb']:.0f} / {s['seconds']:.0f}" for s in sizes) + " |",
    ]  # fmt: skip
    steps = sorted({k for r in results for k in r["run"]["steps"]}, key=lambda k: -results[-1]["run"]["steps"].get(k, 0))
    lines += ["", "Per step: seconds / peak RSS during the step (MB), slowest first:", "",
              "| step | " + " | ".join(f"{s['lines']:,} lines" for s in sizes) + " |", "|---|" + "---:|" * len(sizes)]  # fmt: skip
    for step in steps:
        cells = [f"{r['run']['steps'].get(step, float('nan')):.1f} / {r['run']['step_peak_mb'].get(step, 0):.0f}" for r in results]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    tables = sorted({k for r in results for k in r["run"]["rows"]})
    lines += ["", "Rows written:", "", "| table | " + " | ".join(f"{s['lines']:,} lines" for s in sizes) + " |",
              "|---|" + "---:|" * len(sizes)]  # fmt: skip
    for table in tables:
        lines.append(f"| {table} | " + " | ".join(f"{r['run']['rows'].get(table, 0):,}" for r in results) + " |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (the architecture elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def _memory_gb() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md."""
    current = RESULTS.read_text()
    if SECTION in current:
        head, _, rest = current.partition(SECTION)
        tail = rest[rest.find("\n## ") :] if "\n## " in rest else ""
        current = head.rstrip("\n") + "\n\n" + text + tail
    else:
        current = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, action="append", default=[], help="order lines (repeatable)")
    parser.add_argument("--from-json", type=Path, help="render the results.json of an earlier run instead of running")
    parser.add_argument("--part-lines", type=int, default=1_000_000, help="order lines generated per part")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_scale"), help="where data and runs go")
    parser.add_argument("--write-results", action="store_true", help=f"replace the section in {RESULTS.name}")
    parser.add_argument("--data", type=Path, help="where the generated stores go (default: --out); a store "
                        "already there with its .json description is reused, not generated again")
    parser.add_argument("--generate-only", action="store_true", help="generate (or find) the stores, run nothing")
    parser.add_argument("--markdown", type=Path, help="also write the results table (markdown) to this file")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    elif not args.lines:
        parser.error("give --lines (or --from-json)")
    else:
        results = []
    data = args.data or args.out
    data.mkdir(parents=True, exist_ok=True)
    for lines in [] if args.from_json else args.lines:
        parquet = data / f"store_{lines}.parquet"
        store = store_for(lines, parquet, args.part_lines)
        if args.generate_only:
            continue
        run = run_graph(parquet, args.out / f"run_{lines}")
        if not run["ok"]:
            raise SystemExit(f"the run on {parquet} failed:\n{run['stderr']}")
        print(f"{lines:,} lines: wall {run['wall']:.0f} s, peak RSS {run['peak_rss_mb']:.0f} MB", flush=True)
        for step, seconds in sorted(run["steps"].items(), key=lambda kv: -kv[1]):
            print(f"  {seconds:8.1f} s  {run['step_peak_mb'].get(step, 0):7.0f} MB  {step}")
        results.append({"store": store, "run": run})
    if args.generate_only:
        return
    if not args.from_json:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if args.markdown:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        args.markdown.write_text(markdown(results, git.stdout.strip() or os.environ.get("BENCH_COMMIT", "unknown")))
        print(f"wrote {args.markdown}")
    if args.write_results:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        commit = git.stdout.strip() or os.environ.get("BENCH_COMMIT", "unknown")  # a `git archive` copy has no .git
        write_section(markdown(results, commit))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
