"""Names shared by the asset modules."""

from __future__ import annotations

import dagster as dg

# Every step that opens the DuckDB file runs in this pool; dagster_home/dagster.yaml limits it to one.
POOL = "duckdb"
TABLE_IO = "warehouse_io"
MODEL_IO = "model_io"


def upstream(group: str, name: str) -> dg.AssetIn:
    """Input from the asset ``group/name``."""
    return dg.AssetIn(key=dg.AssetKey([group, name]))


def key(group: str, name: str) -> dg.AssetKey:
    """Asset key ``group/name`` (the DuckDB table ``group.name``)."""
    return dg.AssetKey([group, name])
