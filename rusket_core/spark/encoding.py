"""Validation and id encoding on Spark: dense codes on the cluster, only the label dictionaries on the driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Labels, _factorize, check_ids, check_weights
from rusket_core.frames import column


@dataclass
class SparkEncoded:
    """Long-format interactions as dense codes on Spark.

    ``pairs`` has columns ``row`` (int, absent when ``rows`` is None), ``item`` (int) and ``weight``
    (double; 1.0 without a weight column), one row per distinct (row, item) with weights summed.
    Codes index the sorted unique labels ``rows`` / ``items``, exactly as the local encoder's.
    ``lines`` is the coded input before repeats merge (same columns, one row per input line).
    """

    pairs: Any
    rows: Labels | None
    items: Labels
    n_rows: int
    has_weights: bool
    lines: Any = None


def check_columns(df: Any, id_cols: list[tuple[str, str]], weight_col: str | None = None) -> None:
    """The named columns exist (no Spark job), with the local engine's messages."""
    present = pa.table({name: pa.nulls(0) for name in df.columns})
    for name, what in [*id_cols, *([(weight_col, "weight column")] if weight_col else [])]:
        column(present, name, what)


def check_schema(df: Any, id_cols: list[tuple[str, str]], weight_col: str | None = None) -> None:
    """:func:`check_columns`, and the weight column is numeric (no Spark job)."""
    from pyspark.sql import types as T

    check_columns(df, id_cols, weight_col)
    if weight_col:
        dtype = {f.name: f.dataType for f in df.schema.fields}[weight_col]
        if not isinstance(dtype, T.NumericType):
            raise ValueError(f"column {weight_col!r} must be numeric, got {dtype.simpleString()}")


def refused_lines(table: pa.Table, weighted: bool = False) -> bool:
    """Whether the local encoder would refuse these [id, id(, weight)] lines (checked inside a Spark task):
    null or NaN ids, null, non-finite or negative weights. The driver then runs :func:`validate` for the message."""
    for c, col in enumerate(table.columns):
        if col.null_count:
            return True
        if c == 2 and weighted:
            w = pc.cast(col, pa.float64()).to_numpy()
            if not (np.isfinite(w).all() and (w >= 0).all()):
                return True
        elif pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py():
            return True
    return False


def validate(
    df: Any, id_cols: list[tuple[str, str]], weight_col: str | None = None, distinct_col: str | None = None
) -> int:
    """Check columns, ids and weights on Spark (one pass) with the local engine's messages; return the row
    count, or with ``distinct_col`` the number of its distinct values (counted in the same pass)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    check_schema(df, id_cols, weight_col)
    fields = {f.name: f.dataType for f in df.schema.fields}
    aggs = [F.count(F.lit(1)).alias("n")]
    if distinct_col:
        aggs.append(F.count_distinct(distinct_col).alias("distinct"))
    for i, (name, _) in enumerate(id_cols):
        aggs.append(F.sum(F.col(name).isNull().cast("long")).alias(f"null{i}"))
        is_float = isinstance(fields[name], T.FloatType | T.DoubleType)
        aggs.append(F.sum(F.isnan(F.col(name)).cast("long")).alias(f"nan{i}") if is_float else F.lit(0).alias(f"nan{i}"))
    if weight_col:
        w = F.col(weight_col).cast("double")
        aggs += [
            F.sum(w.isNull().cast("long")).alias("w_null"),
            F.sum((F.isnan(w) | (F.abs(w) == float("inf"))).cast("long")).alias("w_bad"),
            F.sum((w < 0).cast("long")).alias("w_neg"),
        ]
    stats = df.agg(*aggs).collect()[0].asDict()
    n = int(stats["n"])
    if n == 0:
        raise ValueError("input is empty: no rows to encode")
    for i, (name, _) in enumerate(id_cols):
        check_ids(name, n, n_null=int(stats[f"null{i}"] or 0), n_nan=int(stats[f"nan{i}"] or 0))
    if weight_col:
        check_weights(weight_col, n, n_null=int(stats["w_null"] or 0))
        check_weights(weight_col, n, n_bad=int(stats["w_bad"] or 0), n_negative=int(stats["w_neg"] or 0))
    return int(stats["distinct"]) if distinct_col else n


def labels_of(df: Any, name: str) -> Labels:
    """The sorted distinct values of column ``name`` (computed on Spark; only they reach the driver)."""
    distinct = df.select(name).distinct().toArrow().column(0)
    return _factorize(distinct, name)[1]


def labels_of_both(df: Any, a: str, b: str, id_cols: list[tuple[str, str]]) -> tuple[Labels, Labels]:
    """The sorted distinct values of columns ``a`` and ``b`` in ONE Spark job (validation included: a null,
    a NaN or no rows re-checks the input with :func:`validate`, which raises the local engine's message)."""
    from pyspark.sql import functions as F

    types = {f.name: f.dataType for f in df.schema.fields}
    tagged = df.select(F.lit(0).alias("s"), F.col(a).alias("a"), F.lit(None).cast(types[b]).alias("b")).unionByName(
        df.select(F.lit(1).alias("s"), F.lit(None).cast(types[a]).alias("a"), F.col(b).alias("b"))
    )  # fmt: skip
    got = tagged.distinct().toArrow()
    side = got.column("s").to_numpy()
    cols = [got.column("a").filter(pa.array(side == 0)), got.column("b").filter(pa.array(side == 1))]

    def bad(col: Any) -> bool:
        return col.null_count > 0 or (pa.types.is_floating(col.type) and bool(pc.any(pc.is_nan(col)).as_py()))

    if len(got) == 0 or any(bad(c) for c in cols):
        validate(df, id_cols)
    return _factorize(cols[0], a)[1], _factorize(cols[1], b)[1]


def code_table(spark: Any, labels: Labels, name: str, code: str) -> Any:
    """A small Spark table [``name``, ``code``] mapping each label to its dense code."""
    table = pa.table({name: labels.to_arrow(), code: pa.array(np.arange(len(labels), dtype=np.int32))})
    return spark.createDataFrame(table)


def with_codes(df: Any, labels: Labels, name: str, code: str) -> Any:
    """``df`` with column ``name`` replaced by its dense code (broadcast join with the label dictionary)."""
    from pyspark.sql import functions as F

    codes = code_table(df.sparkSession, labels, name, "__code")
    dtype = {f.name: f.dataType for f in df.schema.fields}[name]
    codes = codes.withColumn(name, F.col(name).cast(dtype))
    joined = df.join(F.broadcast(codes), on=name, how="inner").drop(name)
    return joined.withColumnRenamed("__code", code)


def encode(
    df: Any,
    row_col: str,
    item_col: str,
    weight_col: str | None = None,
    row_labels: bool = True,
) -> SparkEncoded:
    """Validate and encode a Spark DataFrame of (row, item[, weight]) lines; repeats collapse, weights add.

    With ``row_labels=False`` the row ids stay on Spark (baskets need no dictionary) and
    ``pairs`` keeps ``row_col`` itself instead of a ``row`` code.
    """
    from pyspark.sql import functions as F

    ids = [(row_col, "transaction column"), (item_col, "item column")]
    if weight_col or not row_labels:
        validate(df, ids, weight_col)
    else:  # the ids are checked by the dictionary job itself
        check_columns(df, ids)
    weight = F.col(weight_col).cast("double") if weight_col else F.lit(1.0)
    lines = df.select(row_col, item_col, weight.alias("weight"))
    rows, row_key = None, row_col
    if row_labels:
        rows, items = labels_of_both(lines, row_col, item_col, ids)
    else:
        items = labels_of(lines, item_col)
    lines = with_codes(lines, items, item_col, "item")
    if rows is not None:
        lines = with_codes(lines, rows, row_col, "row")
        row_key = "row"
    # as locally: repeated lines add their weights, or count once without a weight column
    merge = F.sum if weight_col else F.max
    pairs = lines.groupBy(row_key, "item").agg(merge("weight").alias("weight"))
    n_rows = len(rows) if rows is not None else pairs.select(row_key).distinct().count()
    return SparkEncoded(pairs, rows, items, int(n_rows), weight_col is not None, lines)
