"""Tables computed on Spark: written by the executors as parquet under the lakehouse directory, and
published in the DuckDB warehouse as a view over those files, so downstream SQL works unchanged.

Each materialisation writes a fresh version directory ``<root>/<schema>/<table>/<version>``; only
after Spark's write succeeded does one DuckDB transaction replace the table or view ``schema.table``
with a view over the new files. Readers see the old rows or the new ones; a failed write leaves the
previous version current. The previous version is kept one round longer (a reader, or the published
warehouse snapshot, may still point at it); older ones are removed.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rusket_assets.tables import drop_relation, quote, transaction


@dataclass
class SparkTable:
    """An asset's output computed on Spark: the DataFrame to write, where, and extra Dagster metadata."""

    frame: Any
    root: str | None = None
    metadata: Callable[[], dict[str, Any]] | None = None


def default_root(warehouse_path: str) -> Path:
    """The lakehouse directory beside a DuckDB file: ``warehouse.duckdb`` -> ``warehouse.lakehouse/``."""
    path = Path(warehouse_path).resolve()
    return path.with_name(path.stem + ".lakehouse")


def current_files(con: Any, schema: str, table: str) -> str | None:
    """The parquet glob the view ``schema.table`` reads now (None if it is not such a view)."""
    rows = con.execute(
        "select sql from duckdb_views() where schema_name = ? and view_name = ?", [schema, table]
    ).fetchall()
    if not rows:
        return None
    sql = rows[0][0]
    start = sql.find("read_parquet('")
    return sql[start + len("read_parquet('") : sql.index("'", start + len("read_parquet('"))] if start >= 0 else None


def write_parquet_view(warehouse: Any, schema: str, table: str, output: SparkTable) -> Path:
    """Write ``output.frame`` as parquet (on the executors), then swap ``schema.table`` to a view over it."""
    root = Path(output.root) if output.root else default_root(warehouse.path)
    home = root / schema / table
    version = home / uuid.uuid4().hex[:12]
    try:
        output.frame.write.parquet(str(version))
        files = str(version / "*.parquet").replace("'", "''")
        with warehouse.connect() as con:
            con.execute(f"create schema if not exists {quote(schema)}")
            previous = current_files(con, schema, table)
            with transaction(con):
                drop_relation(con, schema, table)
                con.execute(f"create view {quote(schema)}.{quote(table)} as select * from read_parquet('{files}')")
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    keep = {version.name, Path(previous).parent.name if previous else None}
    for old in home.iterdir():
        if old.is_dir() and old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return version
