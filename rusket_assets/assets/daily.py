"""Daily partitions of order lines: ``ingest.daily_orders``, one day replaced at a time.

Each partition reads one day (a file of the daily folder for that day, else the configured source
filtered to it with ``date_from``/``date_to``), validates it like ``raw_transactions`` and replaces
that day's rows of ``ingest.daily_orders`` in one transaction: re-running a day, or backfilling a
range, never duplicates a line. The history table feeds the rest of the graph as any DuckDB source
(``kind=duckdb, table=ingest.daily_orders, basket_col=basket_id``), so the unpartitioned graph stays
as it is.
"""


import os
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import DOMAINS, POOL, key
from rusket_assets.incremental import in_transaction
from rusket_assets.io import describe_table
from rusket_assets.resources import DATA_DIR, TransactionSource, Warehouse
from rusket_assets.source import SourceError, read_transactions
from rusket_assets.tables import quote

GROUP = "ingest"
START_ENV = "RUSKET_START_DATE"
DEFAULT_START = "2025-10-01"  # the synthetic store's first day (sample_data.START)
DAILY_DIR_ENV = "RUSKET_DAILY_DIR"
TABLE = ("ingest", "daily_orders")
DAY_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
KINDS = {".parquet": "parquet", ".csv": "csv"}

daily_partitions = dg.DailyPartitionsDefinition(start_date=os.environ.get(START_ENV, DEFAULT_START))
# the history table as a source for the unpartitioned graph (raw_transactions)
HISTORY_SOURCE = {"location": {"kind": "duckdb", "table": "ingest.daily_orders"}, "columns": {"basket_col": "basket_id"}}


class DailyFiles(dg.ConfigurableResource):
    """A folder of daily order-line files (parquet or CSV), each named with its ISO day, e.g.
    ``orders-2025-10-03.parquet``; columns as mapped by the ``source`` resource."""

    path: str = Field(
        default=os.environ.get(DAILY_DIR_ENV, str(DATA_DIR / "daily")),
        description="Folder of daily files (a name holds its day, e.g. orders-2025-10-03.parquet).",
    )

    def files(self) -> dict[str, str]:
        """Every daily file of the folder -> its day (``YYYY-MM-DD``)."""
        folder = Path(self.path)
        if not folder.is_dir():
            return {}
        found = {}
        for f in sorted(folder.iterdir()):
            day = DAY_IN_NAME.search(f.name)
            if f.is_file() and f.suffix.lower() in KINDS and day and not f.name.startswith("."):
                found[str(f)] = day.group(1)
        return found

    def for_day(self, day: str) -> list[str]:
        """The files of ``day``."""
        return [f for f, d in self.files().items() if d == day]


def day_source(source: TransactionSource, files: list[str], day: str) -> TransactionSource:
    """The source restricted to one day: its file of the daily folder, else the configured source
    with ``date_from``/``date_to`` set to the day (the mappings and returns policy kept)."""
    location = source.location.model_dump()
    if files:
        kinds = {KINDS[Path(f).suffix.lower()] for f in files}
        if len(kinds) > 1:
            raise SourceError(f"day {day} has files of several kinds in the daily folder: {files}")
        if len(files) > 1:
            raise SourceError(f"day {day} has {len(files)} files in the daily folder, expected one: {files}")
        location.update(kind=kinds.pop(), path=files[0], where="", date_from="", date_to="")
    else:
        end = (datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat()
        location.update(date_from=day, date_to=end)
    return TransactionSource(location=location, columns=source.columns, store=source.store, returns=source.returns)


def replace_day(warehouse: Warehouse, lines: pa.Table, day: str) -> dict[str, int]:
    """Replace ``day``'s rows of ``ingest.daily_orders`` with ``lines`` in one transaction; returns
    the rows deleted, the day's new customers and products (not in the table's other days) and the
    table's metadata."""
    schema, table = TABLE
    target = f"{quote(schema)}.{quote(table)}"
    start = datetime.fromisoformat(day)
    end = start + timedelta(days=1)
    view = f"__rusket_day_{uuid.uuid4().hex}"
    day_rows = "ordered_at >= ? and ordered_at < ?"
    with warehouse.connect() as con:
        con.execute(f"create schema if not exists {quote(schema)}")
        con.register(view, lines)
        try:
            con.execute(f"create table if not exists {target} as select * from {view} limit 0")
            counts = con.sql(
                f"""select (select count(*) from {target} where {day_rows}),
                           (select count(distinct customer_id) from {view} where customer_id not in
                               (select customer_id from {target} where not ({day_rows}))),
                           (select count(distinct product_id) from {view} where product_id not in
                               (select product_id from {target} where not ({day_rows})))""",
                params=[start, end] * 3,
            ).fetchall()[0]
            in_transaction(
                con,
                [(f"delete from {target} where {day_rows}", [start, end]),
                 (f"insert into {target} by name select * from {view}", None)],
            )  # fmt: skip
            table_metadata = describe_table(con, schema, table)  # row count, column schema, preview
        finally:
            con.unregister(view)
    return {"rows_replaced": int(counts[0]), "new_customers": int(counts[1]), "new_products": int(counts[2]),
            **table_metadata}  # fmt: skip


def ingest_day(source: TransactionSource, daily_files: DailyFiles, warehouse: Warehouse, day: str) -> dict:
    """Read one day (its file, else the source filtered to it), check every line falls on it and
    replace the day in the history table; returns what changed."""
    files = daily_files.for_day(day)
    lines, returns = read_transactions(day_source(source, files, day), warehouse)
    stamps = lines["ordered_at"]
    start = datetime.fromisoformat(day)
    outside = pc.sum(pc.invert(pc.and_(
        pc.greater_equal(stamps, pa.scalar(start, stamps.type)),
        pc.less(stamps, pa.scalar(start + timedelta(days=1), stamps.type)),
    )).cast(pa.int64())).as_py() or 0  # fmt: skip
    if stamps.null_count or outside:
        where = files[0] if files else "the source"
        raise SourceError(
            f"{stamps.null_count + outside} of {lines.num_rows} lines from {where} are not ordered on {day} "
            f"(column ordered_at, source.columns.timestamp_col); a partition holds exactly its day"
        )
    changes = replace_day(warehouse, lines, day)
    return {"from": files[0] if files else f"{source.location.kind} source", "lines": lines.num_rows,
            "customers": len(pc.unique(lines["customer_id"])), **changes, **returns}  # fmt: skip


DAILY_ORDERS = key(GROUP, "daily_orders")


@dg.op(pool=POOL, tags={"domain": DOMAINS[GROUP]}, out={})
def load_days(context: dg.OpExecutionContext, source: TransactionSource, daily_files: DailyFiles, warehouse: Warehouse):
    """Load the run's day(s) into ingest.daily_orders, one transaction per day; each day is reported
    as a materialisation of the ingest/daily_orders partition."""
    days = context.partition_keys if context.has_partition_key_range else [context.partition_key]
    for day in days:
        done = ingest_day(source, daily_files, warehouse, day)
        context.log.info(f"day {day}: {done['lines']} lines from {done['from']}, {done['rows_replaced']} rows replaced")
        yield dg.AssetMaterialization(asset_key=DAILY_ORDERS, partition=day, metadata={"day": day, **done})


@dg.job(partitions_def=daily_partitions, executor_def=dg.in_process_executor, tags={"domain": DOMAINS[GROUP]})
def daily_ingest():
    """Days of order lines into the history table ingest.daily_orders (standard columns).

    Each day comes from its file in the daily folder when there is one, else from the configured
    source filtered to the day. Re-running a day replaces its rows (delete + insert in one
    transaction): backfills never duplicate. Every line must fall on the partition's day. A job,
    not an asset: a partitioned asset beside the unpartitioned graph would stop "Materialize all".
    """
    load_days()
