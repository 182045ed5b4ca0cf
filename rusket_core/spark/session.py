"""Start or join a Spark session whose Python workers run this interpreter (and so see numba and pyarrow)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

#: settings for a small local session: few shuffle partitions (adaptive execution merges the rest)
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def spark_session(
    master: str = "local[2]",
    remote: str | None = None,
    conf: Mapping[str, Any] | None = None,
    app_name: str = "rusket",
) -> Any:
    """A ``SparkSession`` on ``master`` or, with ``remote`` (``sc://host:port``, or ``local[2]`` for a
    local Spark Connect server), a Spark Connect session; ``conf`` adds or overrides settings."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise RuntimeError('the Spark engine needs pyspark: pip install "rusket-pipeline[spark]"') from exc
    # workers must run an interpreter with numpy/numba/pyarrow: this one, unless set explicitly
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    builder = builder.remote(remote) if remote else builder.master(master)
    defaults = {k: v for k, v in DEFAULT_CONF.items() if not (remote and k.startswith("spark.ui."))}  # static there
    for key, value in {**defaults, **(conf or {})}.items():
        builder = builder.config(key, str(value))
    return builder.getOrCreate()


def session_of(df: Any) -> Any:
    """The session a DataFrame belongs to (classic or Spark Connect)."""
    return df.sparkSession


def is_classic(spark: Any) -> bool:
    """Whether the driver runs in this process (a classic session), not behind Spark Connect."""
    try:
        spark.sparkContext  # noqa: B018 (Spark Connect sessions raise here)
    except Exception:
        return False
    return True


def default_parallelism(spark: Any, fallback: int = 2) -> int:
    """Task slots of the session (``spark.default.parallelism`` when the session cannot say)."""
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        return int(spark.conf.get("spark.default.parallelism", str(fallback)))


def executor_cores(spark: Any) -> int:
    """Cores of one executor: every slot in local mode, else ``spark.executor.cores`` (default 1)."""
    try:
        if spark.sparkContext.master.startswith("local"):
            return default_parallelism(spark)
    except Exception:  # Spark Connect has no SparkContext
        pass
    return int(spark.conf.get("spark.executor.cores", "1"))


def shipped(spark: Any, value: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """``(get, release)``: ``get()`` returns ``value`` inside tasks, from a broadcast variable on a classic
    session (sent once per executor) or from the task's closure on Spark Connect; ``release()`` frees it."""
    try:
        handle = spark.sparkContext.broadcast(value)
    except Exception:  # Spark Connect: no SparkContext, closures travel with the plan
        return (lambda: value), (lambda: None)
    return (lambda: handle.value), handle.destroy
