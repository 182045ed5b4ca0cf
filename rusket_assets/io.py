"""IO managers: typed DuckDB tables replaced atomically, and rusket_core model files.

The stock dagster-duckdb IO managers delete then insert outside one transaction (readers can see an
empty table, a changed column set fails) and their polars loader calls an API duckdb 2.x removed.
Here a table is written to a staging table and swapped in inside one transaction, and read back
with ``connection.sql(...)``.
"""

import importlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from rusket_assets.columns import column_description
from rusket_assets.interactions import WarehouseTable
from rusket_assets.lakehouse import SparkTable, write_parquet_view
from rusket_assets.resources import ModelStore, Warehouse
from rusket_assets.streaming import QueryOutput, is_stream, replace_table_stream
from rusket_assets.tables import quote, replace_table

PREVIEW_ROWS = 10


def table_location(asset_key: dg.AssetKey) -> tuple[str, str]:
    """DuckDB (schema, table) for an asset key: the key prefix is the schema (group)."""
    path = asset_key.path
    return (path[-2], path[-1]) if len(path) >= 2 else ("main", path[-1])


def markdown_table(table: pa.Table, max_rows: int = PREVIEW_ROWS, max_width: int = 60) -> str:
    """Render the first rows of ``table`` as a markdown table (no extra dependencies)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, list) and value and isinstance(value[0], float):
            head = ", ".join(f"{v:.3f}" for v in value[:4])
            text = f"[{head}{', …' if len(value) > 4 else ''}] ({len(value)})"
        else:
            text = str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    rows = table.slice(0, max_rows).to_pylist()
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(cell(row[n]) for n in names) + " |" for row in rows]
    return "\n".join(lines)


def describe_table(con: Any, schema: str, table: str) -> dict[str, Any]:
    """Dagster metadata for a stored table: row count, DuckDB column types and a preview."""
    target = f"{quote(schema)}.{quote(table)}"
    n_rows = con.sql(f"select count(*) from {target}").fetchall()[0][0]
    columns = con.sql(f"describe {target}").fetchall()
    preview = con.sql(f"select * from {target} limit {PREVIEW_ROWS}").to_arrow_table()
    return {
        "dagster/row_count": dg.MetadataValue.int(int(n_rows)),
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn(name=name, type=str(kind), description=column_description(f"{schema}.{table}", name))
                for name, kind, *_ in columns
            ]
        ),
        "dagster/table_name": f"{schema}.{table}",
        "preview": dg.MetadataValue.md(markdown_table(preview)),
    }


def _as_arrow(obj: Any) -> pa.Table:
    from rusket_core.frames import to_arrow_table

    return to_arrow_table(obj)


class DuckDBTableIOManager(dg.ConfigurableIOManager):
    """Stores pandas/polars/pyarrow outputs as typed DuckDB tables ``<group>.<asset>``, replaced atomically;
    a :class:`~rusket_assets.lakehouse.SparkTable` becomes parquet files and a view over them.

    Inputs load as the annotated type (polars or pandas DataFrame), else as a pyarrow Table.
    """

    warehouse: Warehouse

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        schema, table = table_location(context.asset_key)
        if isinstance(obj, SparkTable):  # written by Spark as parquet, published as a view (rusket_assets.lakehouse)
            path = write_parquet_view(self.warehouse, schema, table, obj)
            with self.warehouse.connect() as con:
                context.add_output_metadata(describe_table(con, schema, table) | {"parquet": dg.MetadataValue.path(str(path))})
            if obj.metadata is not None:
                context.add_output_metadata(obj.metadata())
            return
        if isinstance(obj, QueryOutput):  # computed inside the warehouse by one query (rusket_assets.streaming)
            obj.write(schema, table)
            with self.warehouse.connect() as con:
                context.add_output_metadata(describe_table(con, schema, table) | obj.written)
            if obj.metadata is not None:
                context.add_output_metadata(obj.metadata())
            return
        if is_stream(obj):  # chunks appended as they are produced (rusket_assets.streaming)
            with self.warehouse.connect() as con:
                replace_table_stream(con, schema, table, obj)
                context.add_output_metadata(describe_table(con, schema, table))
            if getattr(obj, "metadata", None) is not None:
                context.add_output_metadata(obj.metadata())
            return
        data = _as_arrow(obj)
        with self.warehouse.connect() as con:
            replace_table(con, schema, table, data)
            metadata = describe_table(con, schema, table)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> Any:
        schema, table = table_location(context.asset_key)
        if not self.warehouse.has_table(schema, table):
            raise FileNotFoundError(
                f"table {schema}.{table} is not in {self.warehouse.path}: materialise {context.asset_key.to_user_string()} first"
            )
        kind = getattr(context.dagster_type, "typing_type", None)
        if kind is WarehouseTable:  # the asset queries the columns it needs itself
            return WarehouseTable(self.warehouse, schema, table)
        data = self.warehouse.query(f"select * from {quote(schema)}.{quote(table)}")
        module = getattr(kind, "__module__", "") or ""
        if module.startswith("polars"):
            from rusket_core.frames import from_arrow

            return from_arrow(data, "polars")
        if module.startswith("pandas"):
            from rusket_core.frames import from_arrow

            return from_arrow(data, "pandas")
        return data


def save_model(model: Any, directory: str | Path, name: str) -> Path:
    """Save ``model`` under ``directory/name`` and publish it by atomically replacing a pointer file.

    The model is written to a fresh version directory with ``model.save``; the pointer
    ``name.json`` (class and version) is swapped in with ``os.replace``, so a reader, or a failed
    save, never leaves a half-written model current. Older versions are removed afterwards.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cls = type(model)
    if not cls.__module__.startswith("rusket_core"):
        raise TypeError(f"only rusket_core models can be stored, got {cls.__module__}.{cls.__name__}")
    version = f"{name}-{uuid.uuid4().hex[:12]}"
    pointer = directory / f"{name}.json"
    tmp = directory / f".{name}.{uuid.uuid4().hex}.json"
    try:
        (directory / version).mkdir()
        model.save(str(directory / version / "model"))
        previous = json.loads(pointer.read_text())["version"] if pointer.exists() else None
        tmp.write_text(json.dumps({"class": f"{cls.__module__}:{cls.__qualname__}", "version": version}))
        os.replace(tmp, pointer)
    except BaseException as exc:
        # nothing half-written stays behind; the previous version stays current
        shutil.rmtree(directory / version, ignore_errors=True)
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"saving model {name} in {directory} failed: {exc.strerror or exc}") from exc
        raise
    # Keep the previous version one round longer: a reader may have just read the old pointer.
    for old in directory.glob(f"{name}-*"):
        if old.name not in (version, previous):
            shutil.rmtree(old, ignore_errors=True)
    return directory / version


def load_model(directory: str | Path, name: str) -> Any:
    """Load the current version of model ``name`` saved by :func:`save_model`."""
    return load_model_version(directory, name)[0]


def load_model_version(directory: str | Path, name: str) -> tuple[Any, str]:
    """The current version of model ``name`` and its version id (new at every save: what a table
    written from the model records, see ``rusket_assets.incremental``)."""
    pointer = Path(directory) / f"{name}.json"
    if not pointer.exists():
        raise FileNotFoundError(f"no saved model {name!r} in {directory}: materialise it first")
    info = json.loads(pointer.read_text())
    module, _, qualname = info["class"].partition(":")
    if not module.startswith("rusket_core"):
        raise TypeError(f"refusing to load a model class outside rusket_core: {info['class']}")
    cls = getattr(importlib.import_module(module), qualname)
    return cls.load(str(Path(directory) / info["version"] / "model")), info["version"]


def model_version(directory: str | Path, name: str) -> str | None:
    """The version id of the current saved model ``name`` (None before its first save)."""
    pointer = Path(directory) / f"{name}.json"
    return json.loads(pointer.read_text())["version"] if pointer.exists() else None


class ModelIOManager(dg.ConfigurableIOManager):
    """Stores rusket_core models as files (their own ``save``/``load``), one current version per asset."""

    store: ModelStore

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        name = "__".join(context.asset_key.path)
        path = save_model(obj, self.store.path, name)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), "size_bytes": dg.MetadataValue.int(size)}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        return load_model(self.store.path, "__".join(context.asset_key.path))
