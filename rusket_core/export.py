"""Factor tables for vector stores: LanceDB-ready frames and an atomic table replace with an ANN index.

Below ``INDEX_MIN_ROWS`` rows a flat (exact) scan is kept: there an IVF-PQ index saves little query
time and costs seconds to build (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable
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
#: rows per batch written to LanceDB
CHUNK_ROWS = 50_000
METRICS = ("cosine", "l2", "dot")
#: metadata key of the ``vector`` field naming the model version the table was written from
VERSION_KEY = "rusket:model_version"


def table_version(tbl: Any) -> str | None:
    """The model version recorded in a LanceDB table written by :func:`write_lancedb` or
    :func:`upsert_lancedb` (None when none was given)."""
    metadata = tbl.schema.field("vector").metadata or {}
    value = metadata.get(VERSION_KEY.encode())
    return None if value is None else value.decode()


def lancedb_table(model: Any, kind: str = "item", normalize: bool = False) -> pa.Table:
    """The model's item (or user) factors as an arrow table [id, label, vector] for ``create_table``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    export = model.export_item_factors if kind == "item" else model.export_user_factors
    return export(normalize=normalize, include_labels=True, format="arrow")


def factor_batches(
    model: Any, kind: str = "item", normalize: bool = False, chunk_rows: int = CHUNK_ROWS
) -> pa.RecordBatchReader:
    """:func:`lancedb_table` as record batches of ``chunk_rows`` rows, each built when it is read.

    A model exposing its factors and labels (``user_factors``/``users``) is exported slice by slice,
    so a table of millions of customers never exists whole in arrow; other objects (e.g. an export
    wrapper adding columns) are exported once and cut into batches.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    factors = getattr(model, f"{kind}_factors", None)
    labels = getattr(model, "items" if kind == "item" else "users", None)
    if not isinstance(factors, np.ndarray) or labels is None:
        table = lancedb_table(model, kind, normalize)
        vectors = table.column("vector").combine_chunks()
        _refuse_non_finite(vectors.flatten().to_numpy(), vectors.type.list_size, lambda at: table.column("label")[at].as_py())
        return table.to_reader(max_chunksize=int(chunk_rows))
    from rusket_core.chunks import chunk_bounds

    def batch(start: int, stop: int) -> pa.RecordBatch:
        return _rows_batch(factors, labels.values, np.arange(start, stop, dtype=np.int64), normalize)

    bounds = list(chunk_bounds(len(factors), chunk_rows)) or [(0, 0)]
    first = batch(*bounds[0])
    return pa.RecordBatchReader.from_batches(first.schema, iter([first, *(batch(a, b) for a, b in bounds[1:])]))


def _refuse_non_finite(vectors: np.ndarray, dim: int, label_of: Callable[[int], Any], rows: np.ndarray | None = None) -> None:
    """Raise naming the first row (and its label) whose vector has a NaN or infinity.

    A NaN vector matches nothing and breaks distance search, so no export writes one. ``vectors`` are
    the batch's values (flat or one row per vector), ``rows`` their row ids (default 0..n-1).
    """
    finite = np.isfinite(vectors).reshape(-1, dim).all(axis=1) if dim else np.ones(0, dtype=bool)
    if not finite.all():
        at = int(np.flatnonzero(~finite)[0])
        bad = at if rows is None else int(rows[at])
        raise ValueError(f"vector of row {bad} (label {label_of(bad)!r}) is not finite; fix the model before exporting it")


def _rows_batch(factors: np.ndarray, labels: np.ndarray, rows: np.ndarray, normalize: bool) -> pa.RecordBatch:
    """Rows ``rows`` of ``factors`` as a record batch [id (the row index), label, vector]."""
    from rusket_core.frames import fixed_size_list

    vectors = factors[rows]
    _refuse_non_finite(vectors, factors.shape[1], labels.__getitem__, rows)
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return pa.RecordBatch.from_pydict(
        {"id": pa.array(rows, pa.int64()), "label": pa.array(labels[rows]), "vector": fixed_size_list(vectors)}
    )


def index_config(n_rows: int, dim: int, metric: str = "cosine") -> Any:
    """IVF-PQ settings for ``n_rows`` vectors of ``dim``: about sqrt(n) partitions (at least 256 rows
    each, for k-means), sub-vectors of 8 dimensions."""
    from lancedb.index import IvfPq

    partitions = int(max(1, min(round(np.sqrt(n_rows)), n_rows // 256)))
    return IvfPq(distance_type=metric, num_partitions=partitions, num_sub_vectors=_sub_vectors(dim))


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

    See :func:`write_lancedb` (which also reports the index settings and build time).
    """
    return write_lancedb(model, uri, table, kind, metric, normalize, index_min_rows, keep_versions)[0]


def write_lancedb(
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
) -> tuple[Any, dict[str, Any]]:
    """Replace LanceDB table ``table`` with the model's vectors, written in batches; (table, index facts).

    The replace is one ``create_table(mode="overwrite")`` call fed ``chunk_rows`` rows at a time
    (:func:`factor_batches`), which LanceDB (0.40, OSS) commits as a new version of the same Lance
    dataset: readers see either the old rows or the new rows, never an empty or half-written table
    (LanceDB OSS has no ``rename_table``, so a build-then-swap is not available). Overwriting drops
    the old index; when the table has at least ``index_min_rows`` rows an IVF-PQ index
    (``metric`` distance, :func:`index_config`) is built in a second commit, so a query landing
    between the two commits runs as an exact flat scan over the new rows. Columns: ``id`` (row
    index), ``label`` (the model's own ids) and ``vector`` (fixed-size float32). Afterwards versions
    older than ``keep_versions`` and the files only they use are deleted (``None`` keeps every
    version; the current version is never deleted). ``version`` (e.g. the saved model's version)
    is recorded in the ``vector`` field's metadata in the same commit as the rows
    (:func:`table_version`), so :func:`upsert_lancedb` can refuse a table written from another
    model generation. The facts: ``index_partitions``, ``index_sub_vectors`` and ``index_seconds``
    (absent without an index).
    """
    import lancedb

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    data = factor_batches(model, kind, normalize, chunk_rows)
    dim = data.schema.field("vector").type.list_size
    if version is not None:
        data = _with_version(data, version)
    db = lancedb.connect(uri)
    tbl = db.create_table(table, data, mode="overwrite")
    return tbl, _index_and_prune(tbl, dim, metric, index_min_rows, keep_versions)


def _index_and_prune(tbl: Any, dim: int, metric: str, index_min_rows: int, keep_versions: timedelta | None) -> dict[str, Any]:
    """After a table is replaced: its IVF-PQ index when it is large enough, old versions pruned; the index facts."""
    import time

    n_rows = tbl.count_rows()
    facts: dict[str, Any] = {}
    if n_rows >= max(int(index_min_rows), 256):  # PQ codebooks need at least 256 rows
        config = index_config(n_rows, dim, metric)
        start = time.perf_counter()
        # lancedb 0.40: with ``config=`` the first positional argument names the column
        tbl.create_index("vector", config=config)
        facts = {"index_partitions": config.num_partitions, "index_sub_vectors": config.num_sub_vectors,
                 "index_seconds": time.perf_counter() - start}  # fmt: skip
    if keep_versions is not None:
        tbl.optimize(cleanup_older_than=keep_versions)
    return facts


def upsert_lancedb(
    model: Any,
    uri: str,
    table: str,
    rows: np.ndarray,
    kind: str = "user",
    metric: str = "cosine",
    normalize: bool = False,
    index_min_rows: int = INDEX_MIN_ROWS,
    keep_versions: timedelta | None = KEEP_VERSIONS,
    expected_version: str | None = None,
    version: str | None = None,
    extra: pa.Table | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Update rows ``rows`` (model row indices) of a table written by :func:`write_lancedb` from the
    model, inserting those not there yet; the other rows are left as they are. (table, facts).

    For a model whose labels are only ever appended (fold-in), so a row's ``id`` keeps naming the
    same label: every row past the table's current size must be in ``rows``, else ``ValueError``.
    One ``merge_insert`` on ``id`` (one commit: readers see the old or the new version). An existing
    IVF-PQ index is kept (``extra``: more columns of the table, one row per model row, e.g. product
    names; taken at ``rows``) and the new rows are added to its partitions by ``optimize`` (no k-means
    retraining; rows not yet indexed are found by a flat scan meanwhile); a table that has grown
    past ``index_min_rows`` without an index gets one. ``optimize`` also compacts the small
    fragments of the daily upserts and prunes versions older than ``keep_versions``. The facts:
    ``rows_upserted``, ``rows_inserted`` and ``index`` ("updated", "built" or "none").

    Model generations: with ``expected_version``, a table whose recorded version
    (:func:`table_version`) differs, i.e. written from another model than the one ``rows`` were
    changed from, raises ``ValueError`` (rewrite it with :func:`write_lancedb`) instead of mixing
    rows of two models; ``version`` is then recorded, after the rows (a failure in between leaves
    the old version recorded, which the next upsert refuses: safe)."""
    import lancedb

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    factors = model.item_factors if kind == "item" else model.user_factors
    labels = (model.items if kind == "item" else model.users).values
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= len(factors)):
        raise ValueError(f"rows must be row indices of the model's {len(factors)} {kind} factors")
    tbl = lancedb.connect(uri).open_table(table)
    n_before = tbl.count_rows()
    dim = tbl.schema.field("vector").type.list_size
    if dim != factors.shape[1] or n_before > len(factors):
        raise ValueError(f"LanceDB table {table} ({n_before} rows of {dim} dims) was not written from this model")
    if expected_version is not None and table_version(tbl) != expected_version:
        raise ValueError(
            f"LanceDB table {table} was written from model version {table_version(tbl)!r}, "
            f"not {expected_version!r} (the model these rows were updated from)"
        )
    appended = np.arange(n_before, len(factors))
    if not np.isin(appended, rows).all():
        raise ValueError(f"rows past the {n_before} rows of LanceDB table {table} must all be upserted")
    facts: dict[str, Any] = {"rows_upserted": len(rows), "rows_inserted": len(appended)}
    if len(rows):
        batch = _rows_batch(factors, labels, rows, normalize)
        if extra is not None:
            if extra.num_rows != len(factors):
                raise ValueError(f"extra has {extra.num_rows} rows, the model {len(factors)} {kind} factors")
            taken = extra.take(pa.array(rows))
            for name in taken.column_names:
                batch = batch.append_column(name, taken[name].combine_chunks())
        tbl.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(pa.Table.from_batches([batch]))
    if version is not None:
        tbl.update_field_metadata({"path": "vector", "metadata": {VERSION_KEY: version}})
    indexed = bool(tbl.list_indices())
    if not indexed and len(factors) >= max(int(index_min_rows), 256):
        tbl.create_index("vector", config=index_config(len(factors), dim, metric))
        facts["index"] = "built"
    else:
        facts["index"] = "updated" if indexed else "none"
    tbl.optimize(cleanup_older_than=keep_versions)  # adds the new rows to the index, compacts
    return tbl, facts


def _with_version(data: pa.RecordBatchReader, version: str) -> pa.RecordBatchReader:
    """``data`` with ``version`` in its ``vector`` field's metadata (so it is written with the rows)."""
    schema = _versioned(data.schema, version)
    batches = (pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in data)
    return pa.RecordBatchReader.from_batches(schema, batches)


def _versioned(schema: pa.Schema, version: str) -> pa.Schema:
    """``schema`` with ``version`` in its ``vector`` field's metadata."""
    i = schema.get_field_index("vector")
    field = schema.field(i)
    return schema.set(i, field.with_metadata({**(field.metadata or {}), VERSION_KEY: version}))


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
