"""Vectors group: ALS product and customer vectors in LanceDB for nearest-neighbour search."""

from datetime import timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from rusket_assets.assets.common import ALS_GATES, group_asset, key, lookup, upstream
from rusket_assets.columns import column_description
from rusket_assets.engine import Engine
from rusket_assets.incremental import model_name, rows_of, run_changes
from rusket_assets.resources import ModelStore, VectorStore, Warehouse


class VectorsConfig(dg.Config):
    """LanceDB export: normalise vectors (cosine search) or keep raw factors."""

    normalize: bool = Field(default=True, description="Store unit-length vectors (cosine search); off keeps raw factors.")
    keep_versions_hours: float = Field(
        default=1.0, ge=0.0, description="Older LanceDB table versions (and their files) are pruned after this long."
    )


GROUP = "vectors"
asset = group_asset(GROUP, io_manager_key=None)
METRIC = "cosine"


class _ItemsWithInfo:
    """A fitted model whose item export also carries product name and category (for ``to_lancedb``)."""

    def __init__(self, model, products: pa.Table) -> None:
        self.model, self.products = model, products

    def export_item_factors(self, **kwargs) -> pa.Table:
        table = self.model.export_item_factors(**{**kwargs, "format": "arrow"})
        for name, values in self.info().items():
            table = table.append_column(name, values)
        return table

    def info(self) -> dict:
        """Name and category of each of the model's products, in model order."""
        return lookup(pa.array(self.model.items.values), self.products, "product_id", ["product_name", "category"])


def _retention(config: VectorsConfig) -> timedelta:
    return timedelta(hours=config.keep_versions_hours)


def _describe(tbl, uri: str) -> dict:
    indices = tbl.list_indices()
    data = tbl.head(5)
    return {
        "uri": dg.MetadataValue.path(uri),
        "table": tbl.name,
        "dagster/row_count": tbl.count_rows(),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=f.name, type=str(f.type), description=column_description(f"{GROUP}.{tbl.name}", f.name))
                for f in tbl.schema
            ]
        ),
        "dimensions": tbl.schema.field("vector").type.list_size,
        "versions_kept": len(tbl.list_versions()),
        "index": ", ".join(str(getattr(i, "index_type", i)) for i in indices) or "none (exact flat scan)",
        "preview": dg.MetadataValue.md(_preview(data)),
    }


def _log_write(context: dg.AssetExecutionContext, name: str, rows: int, dims: int, uri: str) -> None:
    context.log.info(f"writing {rows} vectors of {dims} dimensions to LanceDB table {name} in {uri}")


def _written(context: dg.AssetExecutionContext, tbl, uri: str, index: dict) -> dg.MaterializeResult:
    metadata = _describe(tbl, uri) | index  # index: partitions, sub-vectors, build seconds (when built)
    context.log.info(f"LanceDB table {tbl.name} replaced: {metadata['dagster/row_count']} rows, index {metadata['index']}")
    return dg.MaterializeResult(metadata=metadata)


def _preview(table: pa.Table) -> str:
    from rusket_assets.io import markdown_table

    return markdown_table(table)


ALS = key("personalization", "als_model")


def _upsert(context, config: VectorsConfig, vectors: VectorStore, warehouse: Warehouse, model, version: str | None,
            kind: str, rows_changed, extra: pa.Table | None = None) -> dg.MaterializeResult | None:  # fmt: skip
    """In an incremental run, upsert the rows ``rows_changed(changes)`` of the LanceDB table of ``kind``
    when it was written from the ALS version this run updated; None when it must be rewritten."""
    from rusket_core.export import upsert_lancedb

    changes = run_changes(context, warehouse, [ALS])
    if changes is None:
        return None
    change = changes[model_name(ALS)]
    rows = rows_changed(change)
    if rows is None:
        return None
    table = f"{kind}_vectors"
    try:
        tbl, facts = upsert_lancedb(model, vectors.uri, table, rows, kind=kind, metric=METRIC, normalize=config.normalize,
                                    keep_versions=_retention(config), expected_version=change.parent, version=version,
                                    extra=extra)  # fmt: skip
    except (ValueError, FileNotFoundError) as error:  # no table yet, or another model generation: rewrite it
        context.log.warning(f"{table}: rewriting every row ({error})")
        return None
    context.log.info(f"LanceDB table {table}: {facts['rows_upserted']} rows upserted")
    metadata = _describe(tbl, vectors.uri) | {"refresh": "incremental", "model_version": str(version)} | facts
    return dg.MaterializeResult(metadata=metadata)


@asset(
    kinds={"lancedb"},
    ins={"als_model": upstream("personalization", "als_model"), "products": upstream("ingest", "products")},
    deps=ALS_GATES,
)  # fmt: skip
def item_vectors(
    context: dg.AssetExecutionContext, config: VectorsConfig, vectors: VectorStore, warehouse: Warehouse,
    models: ModelStore, als_model, products: pa.Table, engine: Engine,
) -> dg.MaterializeResult:  # fmt: skip
    """LanceDB table `item_vectors`: ALS product vectors with label, name and category (cosine search).

    In an incremental run only the products whose ALS rows changed (the new ones after a fold-in)
    or whose name or category changed are upserted, when the table was written from the ALS
    version this run updated (recorded in the table); otherwise every row is rewritten.
    """
    import lancedb
    import numpy as np

    from rusket_assets.io import model_version
    from rusket_core.export import write_lancedb

    vectors.connect()  # creates the directory
    items = _ItemsWithInfo(als_model, products)
    version = model_version(models.path, model_name(ALS))
    info = pa.table(items.info())

    def rows_changed(change):
        if len(change.products) == len(als_model.items):  # a warm pass: every row
            return None
        try:
            stored = lancedb.connect(vectors.uri).open_table("item_vectors").to_arrow().select(["id", *info.column_names])
        except (ValueError, FileNotFoundError):
            return None
        stored = stored.take(pc.sort_indices(stored["id"]))
        n = min(stored.num_rows, info.num_rows)
        same = np.ones(n, dtype=bool)
        for name in info.column_names:
            old, new = stored[name].slice(0, n), info[name].slice(0, n)
            equal = pc.equal(old, new).fill_null(False)
            both_null = pc.and_(old.is_null(), new.is_null())
            same &= pc.or_(equal, both_null).to_numpy(zero_copy_only=False)
        return np.union1d(rows_of(als_model.items.values, change.products), np.flatnonzero(~same))

    result = _upsert(context, config, vectors, warehouse, als_model, version, "item", rows_changed, extra=info)
    if result is not None:
        return result
    _log_write(context, "item_vectors", len(als_model.items), als_model.factors, vectors.uri)
    params = {"kind": "item", "metric": METRIC, "normalize": config.normalize, "keep_versions": _retention(config), "version": version}
    if engine.is_spark:  # the Spark tasks write the rows in batches, one commit publishes them
        tbl, index = engine.write_vectors(als_model, vectors.uri, "item_vectors", extra=info, **params)
    else:
        tbl, index = write_lancedb(items, vectors.uri, "item_vectors", **params)
    return _written(context, tbl, vectors.uri, index | {"refresh": "full", "model_version": str(version)} | engine.metadata())


@asset(
    kinds={"lancedb"},
    ins={"als_model": upstream("personalization", "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def user_vectors(
    context: dg.AssetExecutionContext, config: VectorsConfig, vectors: VectorStore, warehouse: Warehouse,
    models: ModelStore, als_model, engine: Engine,
) -> dg.MaterializeResult:  # fmt: skip
    """LanceDB table `user_vectors`: ALS customer vectors with the customer id as label.

    In an incremental run only the customers whose ALS rows changed (fold-in; new ones included) are
    upserted (`rusket_core.export.upsert_lancedb`); the others keep their rows. The table records the
    saved ALS version it was written from: when that is not the version this run updated (e.g. an
    earlier run was blocked before this step), every row is rewritten instead of mixing generations.
    """
    from rusket_assets.io import model_version
    from rusket_core.export import write_lancedb

    vectors.connect()  # creates the directory
    version = model_version(models.path, model_name(ALS))

    def rows_changed(change):
        rows = rows_of(als_model.users.values, change.customers)
        return None if len(rows) == len(als_model.users) else rows  # a warm pass: every row

    result = _upsert(context, config, vectors, warehouse, als_model, version, "user", rows_changed)
    if result is not None:
        return result
    _log_write(context, "user_vectors", len(als_model.users), als_model.factors, vectors.uri)
    params = {"kind": "user", "metric": METRIC, "normalize": config.normalize, "keep_versions": _retention(config), "version": version}
    if engine.is_spark:  # the Spark tasks write the rows in batches, one commit publishes them
        tbl, index = engine.write_vectors(als_model, vectors.uri, "user_vectors", **params)
    else:
        tbl, index = write_lancedb(als_model, vectors.uri, "user_vectors", **params)
    return _written(context, tbl, vectors.uri, index | {"refresh": "full", "model_version": str(version)} | engine.metadata())

