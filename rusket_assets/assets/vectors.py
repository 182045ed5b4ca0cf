"""Vectors group: ALS product and customer vectors in LanceDB for nearest-neighbour search."""

from datetime import timedelta

import dagster as dg
import pyarrow as pa
from pydantic import Field

from rusket_assets.assets.common import ALS_GATES, group_asset, key, lookup, upstream
from rusket_assets.columns import column_description
from rusket_assets.incremental import changed_rows
from rusket_assets.resources import VectorStore, Warehouse


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
        info = lookup(table["label"], self.products, "product_id", ["product_name", "category"])
        for name, values in info.items():
            table = table.append_column(name, values)
        return table


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


@asset(
    kinds={"lancedb"},
    ins={"als_model": upstream("personalization", "als_model"), "products": upstream("ingest", "products")},
    deps=ALS_GATES,
)  # fmt: skip
def item_vectors(
    context: dg.AssetExecutionContext, config: VectorsConfig, vectors: VectorStore, als_model, products: pa.Table
) -> dg.MaterializeResult:
    """LanceDB table `item_vectors`: ALS product vectors with label, name and category (cosine search)."""
    from rusket_core.export import write_lancedb

    vectors.connect()  # creates the directory
    _log_write(context, "item_vectors", len(als_model.items), als_model.factors, vectors.uri)
    tbl, index = write_lancedb(_ItemsWithInfo(als_model, products), vectors.uri, "item_vectors", kind="item",
                     metric=METRIC, normalize=config.normalize, keep_versions=_retention(config))  # fmt: skip
    return _written(context, tbl, vectors.uri, index)


@asset(
    kinds={"lancedb"},
    ins={"als_model": upstream("personalization", "als_model")},
    deps=ALS_GATES,
)  # fmt: skip
def user_vectors(
    context: dg.AssetExecutionContext, config: VectorsConfig, vectors: VectorStore, warehouse: Warehouse, als_model
) -> dg.MaterializeResult:
    """LanceDB table `user_vectors`: ALS customer vectors with the customer id as label.

    In an incremental run only the customers whose ALS rows changed (fold-in; new ones included) are
    upserted (`rusket_core.export.upsert_lancedb`); the others keep their rows.
    """
    from rusket_core.export import upsert_lancedb, write_lancedb

    vectors.connect()  # creates the directory
    rows = changed_rows(context, warehouse, als_model, key("personalization", "als_model"))
    if rows is not None:
        try:
            tbl, facts = upsert_lancedb(als_model, vectors.uri, "user_vectors", rows, kind="user", metric=METRIC,
                                        normalize=config.normalize, keep_versions=_retention(config))  # fmt: skip
        except ValueError as error:  # no table yet, or not written from the saved model: rewrite it
            context.log.warning(f"user_vectors: rewriting every row ({error})")
        else:
            context.log.info(f"LanceDB table user_vectors: {facts['rows_upserted']} customers upserted")
            metadata = _describe(tbl, vectors.uri) | {"refresh": "incremental"} | facts
            return dg.MaterializeResult(metadata=metadata)
    _log_write(context, "user_vectors", len(als_model.users), als_model.factors, vectors.uri)
    tbl, index = write_lancedb(als_model, vectors.uri, "user_vectors", kind="user", metric=METRIC,
                     normalize=config.normalize, keep_versions=_retention(config))  # fmt: skip
    return _written(context, tbl, vectors.uri, index | {"refresh": "full"})

