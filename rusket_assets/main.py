"""Main job: materialise the whole asset graph on the configured data, then show where it landed.

Run as ``python -m rusket_assets.main`` (``./dev run``). Runs are recorded in the project's Dagster
instance (``DAGSTER_HOME``, default ``<repo>/dagster_home``), so they show up in ``dagster dev``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from rusket_assets.instance import project_instance, step_seconds
from rusket_assets.runs import process_tags

SAMPLE_QUERY = """\
select r.rank, r.product_id, p.product_name, p.category, round(r.score, 4) as score, r.source
from personalization.user_recommendations r
join ingest.products p using (product_id)
where r.customer_id = (
    select customer_id from ingest.raw_transactions group by customer_id order by count(*) desc, customer_id limit 1
)
order by r.rank"""


ROLES = {
    "basket": "basket_col",
    "customer": "customer_col",
    "product": "product_col",
    "quantity": "quantity_col",
    "revenue": "revenue_col",
    "category": "category_col",
    "timestamp": "timestamp_col",
    "product_name": "product_name_col",
    "price": "price_col",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="Dagster console log level (DEBUG shows every event)")
    parser.add_argument(
        "--no-warm-up", action="store_true",
        help="do not compile the model/rules/recommendation kernels in a background process meanwhile",
    )  # fmt: skip
    parser.add_argument("--source-kind", choices=["synthetic", "parquet", "csv", "duckdb"], help="default: synthetic")
    parser.add_argument("--source-path", help="parquet/CSV file or glob, or the DuckDB database file")
    parser.add_argument("--source-table", help="table in the DuckDB database (kind duckdb)")
    parser.add_argument("--where", help="filter: one SQL expression over the source's columns, e.g. \"Country = 'France'\"")
    parser.add_argument("--date-from", help="keep lines ordered on or after this ISO date (needs the timestamp role)")
    parser.add_argument("--date-to", help="keep lines ordered before this ISO date (needs the timestamp role)")
    parser.add_argument("--min-quantity", type=float, help="keep lines with at least this quantity")
    parser.add_argument(
        "--returns", choices=["fail", "drop", "net"],
        help="return lines (negative quantity or revenue): fail the ingest, drop them, or net them "
        "against the customer's purchases of the product (default: net)",
    )  # fmt: skip
    parser.add_argument(
        "--map", action="append", default=[], metavar="ROLE=COLUMN",
        help=f"source column for a role ({', '.join(ROLES)}); ROLE= leaves an optional role unmapped",
    )  # fmt: skip
    return parser.parse_args(argv)


def source_config(args: argparse.Namespace) -> dict:
    """Run-config overrides of the ``source`` resource from the command line (its nested shape:
    ``location``, ``columns``, ``returns``)."""
    from rusket_assets.source import SourceError, filter_statement

    location = {
        "kind": args.source_kind, "path": args.source_path, "table": args.source_table, "where": args.where,
        "date_from": args.date_from, "date_to": args.date_to, "min_quantity": args.min_quantity,
    }  # fmt: skip
    location = {name: value for name, value in location.items() if value is not None}
    if args.where is not None:
        try:
            filter_statement(args.where)
        except SourceError as exc:
            raise SystemExit(f"error: {exc}") from None
    if args.source_kind == "duckdb" and args.source_path:
        location["database"] = location.pop("path")
    columns = {}
    for item in args.map:
        role, sep, column = item.partition("=")
        if not sep or role not in ROLES:
            raise SystemExit(f"--map expects ROLE=COLUMN with ROLE one of {', '.join(ROLES)}; got {item!r}")
        columns[ROLES[role]] = column
    config: dict = {"location": location, "columns": columns, "returns": args.returns}
    return {part: value for part, value in config.items() if value}


def materialise_all(
    log_level: str = "INFO", defs=None, instance=None, source: dict | None = None
) -> tuple[bool, dict[str, float]]:
    """Run the refresh job in this process; return success and per-step seconds.

    Uses the project's Dagster instance (DAGSTER_HOME) unless ``instance`` is given.
    """
    from rusket_assets.schedules import refresh_job

    if defs is None:
        from rusket_assets.definitions import defs
    job = defs.resolve_job_def(refresh_job.name)
    run_config: dict = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if source:
        run_config["resources"] = {"source": {"config": source}}
    with project_instance(instance) as instance:
        tags = {"rusket/launcher": "main", **process_tags()}
        result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False, tags=tags)
        timings = step_seconds(instance, result.run_id)
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            cause = error.message.strip()
            if error.cls_name == "DagsterExecutionInterruptedError":
                cause = "interrupted (Ctrl-C or SIGTERM); the run is marked failed"
            print(f"FAILED {event.step_key}: {cause}", file=sys.stderr)
    if not result.success and not any(e.is_step_failure for e in result.all_events):
        print(f"FAILED: run {result.run_id} ended before its steps ran (interrupted, or see the log above)", file=sys.stderr)
    return result.success, timings


def show_results(defs=None) -> None:
    """Print the storage locations, a sample SQL query with its result and a vector search."""
    if defs is None:
        from rusket_assets.definitions import defs

    warehouse = defs.resources["warehouse"]
    vectors = defs.resources["vectors"]
    print(f"\nDuckDB warehouse : {warehouse.path}")
    if warehouse.publish_snapshot:
        print(f"Read-only copy   : {warehouse.snapshot_path} (keep this one open in notebooks and BI tools)")
    print(f"LanceDB vectors  : {vectors.uri}")
    print(f"\nSample query (duckdb {warehouse.path}):\n{SAMPLE_QUERY}\n")
    with warehouse.connect() as con:
        if con.sql(
            "select count(*) from information_schema.tables where table_schema = 'personalization' and table_name = 'user_recommendations'"
        ).fetchall()[0][0]:
            con.sql(SAMPLE_QUERY).show(max_width=140)
        else:
            print("(personalization.user_recommendations was not materialised)")
            return
        product = con.sql(SAMPLE_QUERY).fetchall()[0][1]
    show_neighbours(vectors.uri, product)


def show_neighbours(uri: str, product) -> None:
    """Print a LanceDB nearest-neighbour query for ``product`` and its result."""
    from pathlib import Path

    if not (Path(uri) / "item_vectors.lance").exists():
        print("(vectors/item_vectors was not materialised)")
        return
    import lancedb

    label = "'" + product.replace("'", "''") + "'" if isinstance(product, str) else str(product)
    code = (
        f"tbl = lancedb.connect({uri!r}).open_table('item_vectors')\n"
        f"vec = tbl.search().where(\"label = {label}\").limit(1).to_arrow()['vector'][0].as_py()\n"
        "tbl.search(vec).distance_type('cosine').limit(5).select(['label', 'product_name', 'category', '_distance'])"
    )
    print(f"\nNearest products in LanceDB (python, `import lancedb`):\n{code}\n")
    tbl = lancedb.connect(uri).open_table("item_vectors")
    vec = tbl.search().where(f"label = {label}").limit(1).to_arrow()["vector"][0].as_py()
    hits = tbl.search(vec).distance_type("cosine").limit(5)
    for row in hits.select(["label", "product_name", "category", "_distance"]).to_arrow().to_pylist():
        print(f"  {row['label']!s:12} {row['product_name']!s:30} {row['category']!s:14} distance {row['_distance']:.4f}")


def start_warm_up() -> subprocess.Popen:
    """Warm the numba kernels the later assets use in a second process (see ``rusket_core.warmup``).

    numba compiles on one core per process: while this process ingests and mines, the other one
    compiles (or, once cached, just loads) the factor-model, rules, recommendation and analytics
    kernels into the shared on-disk cache, where this process then finds them.
    """
    code = "from rusket_core.warmup import warm_up; warm_up()"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_warm_up(warmer: subprocess.Popen | None) -> None:
    """End the warm-up process if it is still running: only a cache warmer, nothing of it is needed now."""
    if warmer is not None and warmer.poll() is None:
        warmer.terminate()
        warmer.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = source_config(args)
    print(f"Materialising every asset from {source.get('location', {}).get('kind', 'synthetic')} data ...")
    start = time.perf_counter()
    warmer = None if args.no_warm_up else start_warm_up()
    try:
        ok, timings = materialise_all(args.log_level.upper(), source=source)
    finally:
        stop_warm_up(warmer)
    for step, seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        print(f"{seconds:7.2f} s  {step}")
    print(f"\nMaterialised the asset graph in {time.perf_counter() - start:.1f} s: {'success' if ok else 'FAILED'}")
    if not ok:
        from rusket_assets.definitions import defs

        print(
            f"This run failed (cause above); tables it did not replace are unchanged in {defs.resources['warehouse'].path}.",
            file=sys.stderr,
        )
        return 1
    show_results()
    return 0


if __name__ == "__main__":
    sys.exit(main())
