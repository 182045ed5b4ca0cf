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


def with_rank(table, group_col: str):
    """Add ``rank`` (1 = best) to a table whose rows come grouped by ``group_col``, best first."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return table.append_column("rank", pa.array([], pa.int32()))
    col = table[group_col].combine_chunks()
    change = np.ones(n, dtype=bool)
    change[1:] = pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, n))
    rank = np.arange(n) - np.repeat(starts, lengths) + 1
    return table.append_column("rank", pa.array(rank.astype(np.int32)))


def lookup(keys, table, key_col: str, value_cols: list[str]) -> dict:
    """Columns ``value_cols`` of ``table`` for each of ``keys`` (matched on ``key_col``; null when absent)."""
    import pyarrow.compute as pc

    position = pc.index_in(keys, value_set=table[key_col].combine_chunks())
    return {name: table[name].combine_chunks().take(position) for name in value_cols}
