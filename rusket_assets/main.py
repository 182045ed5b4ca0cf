"""Main job: materialise the whole asset graph on the configured data, then show where it landed.

Run as ``python -m rusket_assets.main`` (``./dev run``). Runs are recorded in the project's Dagster
instance (``DAGSTER_HOME``, default ``<repo>/dagster_home``), so they show up in ``dagster dev``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rusket_assets.resources import PROJECT_ROOT

SAMPLE_QUERY = """\
select r.rank, r.product_id, p.product_name, p.category, round(r.score, 4) as score, r.source
from personalization.user_recommendations r
join ingest.products p using (product_id)
where r.customer_id = (
    select customer_id from ingest.raw_transactions group by customer_id order by count(*) desc, customer_id limit 1
)
order by r.rank"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="only print the summary, not Dagster's log")
    return parser.parse_args(argv)


def materialise_all(quiet: bool = False) -> bool:
    """Run the refresh job in this process against the project's Dagster instance."""
    import logging

    import dagster as dg

    from rusket_assets.definitions import defs
    from rusket_assets.schedules import refresh_job

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    if quiet:
        logging.getLogger("dagster").setLevel(logging.WARNING)
    job = defs.resolve_job_def(refresh_job.name)
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    for event in result.all_events:
        if event.is_step_failure:
            error, messages = event.step_failure_data.error, []
            while error is not None:
                messages.append(error.message.strip())
                error = error.cause
            print(f"FAILED {event.step_key}: {messages[-1]}", file=sys.stderr)
    return result.success


def show_results() -> None:
    """Print the storage locations, a sample SQL query with its result and a vector search."""
    from rusket_assets.definitions import defs

    warehouse = defs.resources["warehouse"]
    vectors = defs.resources["vectors"]
    print(f"\nDuckDB warehouse : {warehouse.path}")
    print(f"LanceDB vectors  : {vectors.uri}")
    print(f"\nSample query (duckdb {warehouse.path}):\n{SAMPLE_QUERY}\n")
    with warehouse.connect() as con:
        if con.sql(
            "select count(*) from information_schema.tables where table_schema = 'personalization' and table_name = 'user_recommendations'"
        ).fetchall()[0][0]:
            con.sql(SAMPLE_QUERY).show(max_width=140)
        else:
            print("(personalization.user_recommendations was not materialised)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    ok = materialise_all(quiet=args.quiet)
    print(f"\nMaterialised the asset graph in {time.perf_counter() - start:.1f} s: {'success' if ok else 'FAILED'}")
    show_results()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
