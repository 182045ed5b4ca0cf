"""LanceDB vectors written from Spark partitions: every task writes its rows' Arrow batches as Lance
fragments (uncommitted files), the driver commits them all as ONE new version of the table.

Readers see the old table or the new one, never a partial one: the fragments are invisible until the
single ``Overwrite`` commit, and a failed task fails the job before it (its siblings' files are then
unreferenced and removed by the next prune). The rows are :func:`rusket_core.export.write_lancedb`'s
(the same batch builder); the index and version pruning after the commit are shared with it too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.chunks import chunk_bounds
from rusket_core.export import (
    CHUNK_ROWS,
    INDEX_MIN_ROWS,
    KEEP_VERSIONS,
    KINDS,
    METRICS,
    _index_and_prune,
    _rows_batch,
    _versioned,
)
from rusket_core.spark.session import default_parallelism, shipped


def dataset_path(uri: str, table: str) -> str:
    """Where LanceDB (OSS) keeps table ``table`` of the database at ``uri``."""
    return f"{uri.rstrip('/')}/{table}.lance"


def write_lancedb(
    spark: Any,
    model: Any,
    uri: str,
    table: str,
    kind: str = "item",
    metric: str = "cosine",
    normalize: bool = False,
    index_min_rows: int = INDEX_MIN_ROWS,
    keep_versions: timedelta | None = KEEP_VERSIONS,
    chunk_rows: int = CHUNK_ROWS,
    version: str | None = None,
    extra: pa.Table | None = None,
    num_partitions: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """:func:`rusket_core.export.write_lancedb` with the rows written by Spark tasks; (table, index facts).

    The factors and labels (and ``extra``: more columns, one row per model row, e.g. product names)
    are broadcast; the model's rows are cut in ``chunk_rows`` batches spread over ``num_partitions``
    tasks (default: the session's slots), each writing its batches with ``lance.fragment.write_fragments``.
    Needs ``pylance`` (the ``lancedb[pylance]`` extra) on the executors."""
    import lance
    import lancedb
    from lance.fragment import FragmentMetadata

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    factors = np.ascontiguousarray(getattr(model, f"{kind}_factors"), np.float32)
    labels = (model.items if kind == "item" else model.users).values
    if extra is not None and extra.num_rows != len(factors):
        raise ValueError(f"extra has {extra.num_rows} rows for {len(factors)} {kind} vectors")
    path = dataset_path(uri, table)
    try:
        current = lance.dataset(path)
        read_version, storage = current.version, current.data_storage_version
    except (ValueError, FileNotFoundError, OSError):  # no table yet: the commit creates it
        read_version, storage = None, None
    schema = _schema(factors, labels, normalize, extra, version)
    bounds = list(chunk_bounds(len(factors), chunk_rows))
    parts = max(1, min(num_partitions or default_parallelism(spark), len(bounds)))
    spans = [[bounds[j] for j in group] for group in np.array_split(np.arange(len(bounds)), parts)]  # contiguous
    get, release = shipped(spark, (factors, labels, extra))

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from lance.fragment import write_fragments

        factors, labels, extra = get()
        for p in (int(p) for batch in batches for p in batch.column(0).to_pylist()):

            def rows(p: int = p) -> Iterator[pa.RecordBatch]:
                for start, stop in spans[p]:
                    yield _batch(factors, labels, extra, np.arange(start, stop, dtype=np.int64), normalize, schema)

            written = write_fragments(pa.RecordBatchReader.from_batches(schema, rows()), path, schema=schema,
                                      data_storage_version=storage)  # fmt: skip
            fragments = [json.dumps(f.to_json()) for f in written]
            yield pa.RecordBatch.from_pydict({"task": [p] * len(fragments), "fragment": fragments},
                                             schema=pa.schema([("task", pa.int64()), ("fragment", pa.string())]))  # fmt: skip

    try:  # one row per task (spark.range cuts evenly): task p writes span p
        got = spark.range(0, parts, 1, parts).mapInArrow(task, "task long, fragment string").toArrow()
    finally:
        release()
    got = got.sort_by("task")  # the rows in the model's order, as the local write
    fragments = [FragmentMetadata.from_json(f) for f in got.column("fragment").to_pylist()]
    lance.LanceDataset.commit(path, lance.LanceOperation.Overwrite(schema, fragments), read_version=read_version)
    tbl = lancedb.connect(uri).open_table(table)
    return tbl, _index_and_prune(tbl, schema.field("vector").type.list_size, metric, index_min_rows, keep_versions)


def _batch(factors, labels, extra: pa.Table | None, rows: np.ndarray, normalize: bool, schema: pa.Schema) -> pa.RecordBatch:
    """Rows ``rows`` as :func:`rusket_core.export.write_lancedb` writes them, plus ``extra``'s columns."""
    columns = list(_rows_batch(factors, labels, rows, normalize).columns)
    if extra is not None:
        columns += [extra.column(c).take(pa.array(rows)).combine_chunks() for c in extra.column_names]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _schema(factors, labels, normalize: bool, extra: pa.Table | None, version: str | None) -> pa.Schema:
    """The table's schema: the export's columns (the version in the vector field's metadata), then ``extra``'s."""
    schema = _rows_batch(factors, labels, np.arange(min(1, len(factors)), dtype=np.int64), normalize).schema
    if version is not None:
        schema = _versioned(schema, version)
    for field in extra.schema if extra is not None else []:
        schema = schema.append(field)
    return schema
