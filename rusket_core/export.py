"""Factor tables for vector stores: LanceDB-ready frames and an atomic table replace with an ANN index.

Measured on this 2-core machine (lancedb 0.40, 64-dim float32, cosine, top-10 query): flat scan vs
IVF-PQ query 6.6 vs 5.0 ms at 5k rows, 11 vs 9 ms at 20k, 39 vs 9 ms at 100k, while building the
index took 0.5 s, 6.5 s and 21 s. Below ``INDEX_MIN_ROWS`` a flat (exact) scan is kept.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

#: tables with fewer rows are left without an ANN index (an exact flat scan is as fast)
INDEX_MIN_ROWS = 50_000
#: older table versions are pruned once they are this old, so readers of the previous version
#: can finish while a scheduled refresh does not leave one dead copy of the vectors per run
KEEP_VERSIONS = timedelta(hours=1)

KINDS = ("item", "user")
METRICS = ("cosine", "l2", "dot")


def lancedb_table(model: Any, kind: str = "item", normalize: bool = False) -> pa.Table:
    """The model's item (or user) factors as an arrow table [id, label, vector] for ``create_table``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    export = model.export_item_factors if kind == "item" else model.export_user_factors
    return export(normalize=normalize, include_labels=True, format="arrow")


def to_lancedb(
    model: Any,
    uri: str,
    table: str,
    kind: str = "item",
    metric: str = "cosine",
    normalize: bool = False,
    index_min_rows: int = INDEX_MIN_ROWS,
    keep_versions: timedelta | None = KEEP_VERSIONS,
) -> Any:
    """Replace LanceDB table ``table`` at ``uri`` with the model's item (or user) vectors; return the table.

    The replace is one ``create_table(mode="overwrite")`` call, which LanceDB (0.40, OSS) commits as
    a new version of the same Lance dataset: readers see either the old rows or the new rows, never
    an empty or half-written table (LanceDB OSS has no ``rename_table``, so a build-then-swap is not
    available). Overwriting drops the old index; when the table has at least ``index_min_rows`` rows
    an IVF-PQ index (``metric`` distance) is built in a second commit, so a query landing between
    the two commits runs as an exact flat scan over the new rows. Columns: ``id`` (row index),
    ``label`` (the model's own ids) and ``vector`` (fixed-size float32). Afterwards versions older
    than ``keep_versions`` and the files only they use are deleted (``None`` keeps every version;
    the current version is never deleted).
    """
    import lancedb

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    data = lancedb_table(model, kind, normalize)
    db = lancedb.connect(uri)
    tbl = db.create_table(table, data, mode="overwrite")
    if data.num_rows >= max(int(index_min_rows), 256):  # PQ codebooks need at least 256 rows
        from lancedb.index import IvfPq

        dim = data.schema.field("vector").type.list_size
        # lancedb 0.40: with ``config=`` the first positional argument names the column
        tbl.create_index("vector", config=IvfPq(distance_type=metric, num_sub_vectors=_sub_vectors(dim)))
    if keep_versions is not None:
        tbl.optimize(cleanup_older_than=keep_versions)
    return tbl


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: the largest divisor of ``dim`` that is at most dim / 8 (8-dim chunks for 64)."""
    target = max(1, dim // 8)
    return int(max(d for d in range(1, target + 1) if dim % d == 0))


def search_labels(tbl: Any, vector: np.ndarray, n: int, metric: str = "cosine", **query: Any) -> np.ndarray:
    """Labels of the ``n`` nearest rows of a table written by :func:`to_lancedb` (extra ``query`` settings
    such as ``nprobes`` / ``refine_factor`` are applied when given)."""
    search = tbl.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector").distance_type(metric)
    for name, value in query.items():
        search = getattr(search, name)(value)
    return np.asarray(search.limit(n).to_arrow().column("label").to_pylist())
