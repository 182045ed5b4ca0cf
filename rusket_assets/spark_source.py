"""The configured source of order lines read and validated by Spark (engine=spark): parquet, CSV or a
catalog table in, the standard columns out as a Spark DataFrame, never through the driver.

The checks and their messages are the local engine's (rusket_assets.source): missing mapped columns,
null ids, text in numeric columns, an empty filter result, the returns policy (fail, drop, or net
returns against the same customer's purchases, most recent first) with the same counts.
"""

from __future__ import annotations

from typing import Any

from rusket_assets.resources import TransactionSource
from rusket_assets.source import (
    ID_ROLES,
    NUMERIC_ROLES,
    RETURN_POLICIES,
    STANDARD_COLUMNS,
    SourceError,
    _date,
    _source_files,
    check_mapping,
    check_rows,
    field,
    filter_statement,
    returns_error,
)

#: source kinds Spark reads itself; the others (synthetic, duckdb) are read by DuckDB as on the local engine
SPARK_KINDS = ("parquet", "csv", "catalog")
_SPARK_TYPES = {"INTEGER": "int", "BIGINT": "bigint", "DOUBLE": "double", "VARCHAR": "string", "TIMESTAMP": "timestamp_ntz"}


def read_source(spark: Any, source: TransactionSource) -> tuple[Any, str]:
    """(Spark DataFrame of the source's rows, description used in messages)."""
    location = source.location
    kind = location.kind.lower()
    try:
        if kind == "catalog":
            if not location.table:
                raise SourceError(f"source kind 'catalog' needs {field('table')} (a table of the Spark catalog)")
            description = f"Spark table {location.table}"
            return spark.table(location.table), description
        files = _source_files(kind, location.path)
        description = f"{kind} {location.path}"
        if kind == "parquet":
            return spark.read.option("mergeSchema", "true").parquet(*files), description
        return spark.read.csv(files, header=True, inferSchema=True), description
    except SourceError:
        raise
    except Exception as exc:  # AnalysisException: a missing table, an unreadable file
        raise SourceError(f"cannot read {location.kind} source: {exc}") from exc


def _filtered(df: Any, source: TransactionSource, roles: dict[str, str], description: str) -> Any:
    """``df`` with the user's ``where`` (checked as one expression, as locally) and the structured filters."""
    from pyspark.sql import functions as F

    where = source.location.where
    if where:
        filter_statement(where)  # the same rule as locally: one expression, no subquery or statement
        try:
            df = df.filter(F.expr(where))
            df.schema  # noqa: B018 (resolves the expression now)
        except Exception as exc:
            raise SourceError(f"{field('where')} {where!r} cannot be applied to {description}: {exc}") from exc
    for name, op in (("date_from", ">="), ("date_to", "<")):
        value = getattr(source.location, name)
        if value:
            if "ordered_at" not in roles:
                raise SourceError(f"{field(name)} needs the timestamp column mapped ({field('timestamp_col')})")
            ts, bound = df[roles["ordered_at"]].cast("timestamp_ntz"), F.lit(_date(name, value)).cast("timestamp_ntz")
            df = df.filter(ts >= bound if op == ">=" else ts < bound)
    if source.location.min_quantity is not None:
        if "quantity" not in roles:
            raise SourceError(f"{field('min_quantity')} needs the quantity column mapped ({field('quantity_col')})")
        df = df.filter(df[roles["quantity"]] >= float(source.location.min_quantity))
    return df


def _check_numbers(df: Any, roles: dict[str, str], n_rows: int, description: str) -> None:
    """SourceError naming each numeric/timestamp role whose text column holds values that are not numbers/times."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in df.schema.fields}
    checks = []
    for role in (*NUMERIC_ROLES, "ordered_at"):
        col = roles.get(role)
        if col is None or not isinstance(fields[col], T.StringType):
            continue
        target = "TIMESTAMP" if role == "ordered_at" else "DOUBLE"
        bad = df[col].isNotNull() & F.expr(f"try_cast(`{col.replace('`', '``')}` as {target})").isNull()
        checks.append((role, col, target, bad))
    if not checks:
        return
    aggs = []
    for i, (_, col, _, bad) in enumerate(checks):
        aggs += [F.count_if(bad).alias(f"n{i}"), F.first(F.when(bad, df[col]), ignorenulls=True).alias(f"e{i}")]
    stats = df.agg(*aggs).collect()[0]
    problems = [
        f"column {col!r} ({role}) has {stats[f'n{i}']} values in {n_rows} rows that are not "
        f"{'a timestamp' if target == 'TIMESTAMP' else 'a number'} (e.g. {stats[f'e{i}']!r})"
        for i, (role, col, target, _) in enumerate(checks)
        if stats[f"n{i}"]
    ]
    if problems:
        raise SourceError(f"bad source data in {description}: " + "; ".join(problems))


def _standard(df: Any, roles: dict[str, str]) -> Any:
    """The standard columns (the local engine's names and casts)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = {f.name: f.dataType for f in df.schema.fields}
    select = []
    for role, fallback in STANDARD_COLUMNS.items():
        if role in roles:
            expr = df[roles[role]]
            if role == "ordered_at":
                expr = expr.cast("timestamp_ntz")
            elif role in NUMERIC_ROLES and isinstance(fields[roles[role]], T.StringType):
                expr = expr.cast("bigint" if role == "quantity" else "double")
        elif role == "quantity":
            expr = F.lit(1).cast("int")
        elif role == "revenue" and "price" in roles:
            quantity = df[roles["quantity"]].cast("double") if "quantity" in roles else F.lit(1.0)
            expr = df[roles["price"]].cast("double") * quantity
        else:
            expr = F.lit(None).cast(_SPARK_TYPES[fallback])
        select.append(expr.alias(role))
    return df.select(*select)


def _apply_returns(lines: Any, policy: str, roles: dict[str, str], n_rows: int, description: str) -> tuple[Any, dict[str, int]]:
    """(lines after the returns policy, counts of the lines it touched): rusket_assets.source's rules."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    is_return = (F.col("quantity") < 0) | (F.col("revenue") < 0)
    stats = lines.agg(
        F.count_if(is_return).alias("returns"),
        F.count_if(F.col("quantity") < 0).alias("quantity"),
        F.count_if(F.col("revenue") < 0).alias("revenue"),
    ).collect()[0]
    n_returns = int(stats["returns"])
    if n_returns and policy == "fail":
        raise returns_error(roles, {r: int(stats[r]) for r in ("quantity", "revenue")}, n_rows, description)
    if n_returns == 0:
        return lines, {"return_lines": 0}
    purchases = lines.filter(~is_return)
    if policy == "drop":
        return purchases, {"return_lines": n_returns, "return_lines_dropped": n_returns}
    keys = ["customer_id", "product_id"]
    returned = lines.filter(is_return).groupBy(*keys).agg(F.sum(F.abs("quantity")).alias("units"))
    newest_first = Window.partitionBy(*keys).orderBy(
        F.col("ordered_at").desc_nulls_last(), F.col("basket_id").desc(), F.col("quantity").desc(), F.col("revenue").desc()
    ).rowsBetween(Window.unboundedPreceding, -1)
    netted = (
        purchases.join(returned, on=keys, how="left")
        .withColumn("units", F.coalesce("units", F.lit(0)))
        .withColumn("later", F.coalesce(F.sum("quantity").over(newest_first), F.lit(0)))
        .withColumn("kept", F.col("quantity") - F.least(F.col("quantity"), F.greatest(F.col("units") - F.col("later"), F.lit(0))))
    )  # fmt: skip
    kept, quantity = F.col("kept"), F.col("quantity")
    counted = netted.agg(
        F.count_if((kept < quantity) & (kept > 0)).alias("reduced"),
        F.count_if((kept == 0) & (quantity > 0)).alias("removed"),
        F.coalesce(F.sum(quantity - kept), F.lit(0)).alias("taken"),
    ).collect()[0]
    total_units = returned.agg(F.coalesce(F.sum("units"), F.lit(0))).collect()[0][0]
    quantity_type = dict(lines.dtypes)["quantity"]
    out = netted.filter((kept > 0) | (quantity == 0)).select(
        *[
            kept.cast(quantity_type).alias("quantity") if c == "quantity"
            else F.when(quantity == 0, F.col("revenue")).otherwise(F.col("revenue") * kept / quantity).alias("revenue")
            if c == "revenue" else F.col(c)
            for c in STANDARD_COLUMNS
        ]
    )  # fmt: skip
    return out, {
        "return_lines": n_returns,
        "purchase_lines_reduced": int(counted["reduced"]),
        "purchase_lines_removed": int(counted["removed"]),
        "returned_units_without_purchase": int(total_units) - int(counted["taken"]),
    }


def spark_transactions(spark: Any, source: TransactionSource) -> tuple[Any, dict[str, int]]:
    """(Spark DataFrame of the standard columns, returns counts): read, validated and returns applied by
    Spark with the local engine's rules and messages. Raises SourceError naming the field or column at fault."""
    from pyspark.sql import functions as F

    roles = source.roles()
    policy = source.returns.lower()
    if policy not in RETURN_POLICIES:
        raise SourceError(f"source.returns must be one of {', '.join(RETURN_POLICIES)}, got {source.returns!r}")
    df, description = read_source(spark, source)
    check_mapping(roles, list(df.columns), description)
    df = _filtered(df, source, roles, description)
    stats = df.agg(F.count(F.lit(1)), *[F.count_if(df[roles[r]].isNull()) for r in ID_ROLES]).collect()[0]
    n_rows, nulls = int(stats[0]), [int(n) for n in stats[1:]]
    check_rows(source, roles, n_rows, nulls, description)
    _check_numbers(df, roles, n_rows, description)
    return _apply_returns(_standard(df, roles), policy, roles, n_rows, description)
