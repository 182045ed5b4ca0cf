"""This project's Spark path vs Spark MLlib (FPGrowth, ALS) on the same Spark session, data and parameters,
and vs the local engine; the Spark path at 2, 4 and 8 partitions; Spark's fixed overhead on a tiny input.

    .venv/bin/python benchmarks/bench_spark.py [--baskets 20000] [--items 500] [--min-support 0.005]
                                               [--als 100k[,3m,10m]] [--factors 32] [--iterations 10]
                                               [--repeat 3] [--mllib-timeout 420] [--no-job-path] [--driver-memory 6g]

Results go to stdout and ``benchmarks/_out/bench_spark_<parts>.json`` (``--only als`` runs one part). local[2].
``--als`` takes one size of ``benchmarks/interactions.py`` or several, comma-separated (e.g. ``1m,3m,10m``:
0.70M, 2.16M and 7.39M distinct training pairs of the same generator), each run in the same session.
The inputs are written as parquet under ``benchmarks/_out`` and read (and cached) by Spark, as a cluster
reads them; an MLlib fit still running after ``--mllib-timeout`` seconds is cancelled and reported as ``> T``.
ALS: ours and MLlib each get one warm fit, then ``--repeat`` timed fits (medians and every run reported; the
2 / 4 / 8 partition columns are one run each). MLlib: implicit, same rank / iterations / regParam / alpha / seed,
2 user and 2 item blocks (one per slot), its input cached, no checkpoint directory (no checkpointing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interactions import dataset  # noqa: E402
from quest import quest_baskets  # noqa: E402

from rusket_core import ALS, FPGrowth  # noqa: E402
from rusket_core.evaluation import precision_at_k  # noqa: E402
from rusket_core.factorization.topk import topk  # noqa: E402
from rusket_core.spark import fit_als, frequent_itemsets, spark_session  # noqa: E402

OUT = Path(__file__).parent / "_out"


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def with_timeout(spark, fn, seconds: float):
    """(seconds, value) of ``fn()``, or (None, None) when its Spark jobs were cancelled after ``seconds``."""
    sc, group, box = spark.sparkContext, f"bench-{time.monotonic_ns()}", {}

    def run():
        sc.setJobGroup(group, "timed MLlib fit", interruptOnCancel=True)
        try:
            box["result"] = timed(fn)
        except Exception as exc:  # cancelled, or a real failure (re-raised below unless timed out)
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        sc.cancelJobGroup(group)
        thread.join(60)
        return None, None
    if "error" in box:
        raise box["error"]
    return box["result"]


def spark_input(spark, pdf: pd.DataFrame, name: str):
    """``pdf`` written as parquet under benchmarks/_out and read back by Spark, cached."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"spark_input_{name}.parquet"
    pdf.to_parquet(path, index=False)
    df = spark.read.parquet(str(path)).cache()
    df.count()
    return df


def precision10(user_factors, item_factors, users, items, train: pd.DataFrame, test: pd.DataFrame) -> float:
    """precision@10 on the held-out pairs, training items excluded, for factors indexed like ``users``/``items``."""
    u_index = {u: i for i, u in enumerate(users)}
    i_index = {it: i for i, it in enumerate(items)}
    tr = train.drop_duplicates(["user_id", "item_id"])
    rows = tr["user_id"].map(u_index).to_numpy()
    cols = tr["item_id"].map(i_index).to_numpy()
    order = np.lexsort((cols, rows))
    indptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=len(users)), out=indptr[1:])
    idx, _ = topk(user_factors, item_factors, 10, indptr, cols[order].astype(np.int32))
    relevant = test.groupby("user_id")["item_id"].apply(set)
    recs = [list(np.asarray(items)[idx[u_index[u]]]) for u in relevant.index if u in u_index]
    rel = [relevant[u] for u in relevant.index if u in u_index]
    return precision_at_k(recs, rel, 10)


def bench_fim(spark, args, results):
    b, i = quest_baskets(args.baskets, args.items, seed=0)
    pdf = pd.DataFrame({"basket": b, "item": i})
    df = spark_input(spark, pdf, f"fim_{args.baskets}_{args.items}")
    t_local, local = timed(lambda: FPGrowth.from_transactions(pdf, "basket", "item", args.min_support).mine())
    t_local2, local = timed(lambda: FPGrowth.from_transactions(pdf, "basket", "item", args.min_support).mine())
    expected = {(frozenset(s), int(c)) for s, c in zip(local["itemsets"], local["count"], strict=True)}
    row = {"rows": len(pdf), "baskets": args.baskets, "items": args.items, "min_support": args.min_support,
           "itemsets": len(local), "local_s": min(t_local, t_local2)}  # fmt: skip
    frequent_itemsets(df, "basket", "item", args.min_support, n_groups=2)  # warm the Python workers
    for parts in (2, 4, 8):
        d = df.repartition(parts).cache()
        d.count()
        t, res = timed(lambda d=d, parts=parts: frequent_itemsets(d, "basket", "item", args.min_support, n_groups=parts))
        got = res.mine()
        assert {(frozenset(s), int(c)) for s, c in zip(got["itemsets"], got["count"], strict=True)} == expected
        row[f"ours_spark_{parts}p_s"] = t
        d.unpersist()
    from pyspark.ml.fpm import FPGrowth as MLFPGrowth
    from pyspark.sql import functions as F

    def mllib():
        baskets = df.groupBy("basket").agg(F.collect_set("item").alias("items"))
        model = MLFPGrowth(itemsCol="items", minSupport=args.min_support, minConfidence=1.0).fit(baskets)
        return model.freqItemsets.toPandas()

    t, ml = with_timeout(spark, mllib, args.mllib_timeout)
    row["mllib_s"] = t if t is not None else f"> {args.mllib_timeout:g}"
    if ml is not None:
        row["mllib_itemsets"] = len(ml)
        assert {(frozenset(s), int(c)) for s, c in zip(ml["items"], ml["freq"], strict=True)} == expected
    results["fim"] = row
    df.unpersist()


def bench_als(spark, args, results):
    for size in args.als.split(","):
        bench_als_size(spark, args, size, results)
        results[f"loadavg_after_als_{size}"] = os.getloadavg()


def bench_als_size(spark, args, size, results):
    train, test = dataset(size)
    params = {"factors": args.factors, "iterations": args.iterations, "alpha": 10.0, "regularization": 0.05,
              "solver": "cg", "random_state": 0}  # fmt: skip
    pairs = train.drop_duplicates(["user_id", "item_id"])[["user_id", "item_id"]]
    df = spark_input(spark, pairs, f"als_{size}")
    t_local, local = timed(lambda: ALS.from_transactions(pairs, "user_id", "item_id", **params).fit())
    t_local, local = timed(lambda: ALS.from_transactions(pairs, "user_id", "item_id", **params).fit())
    users, items = local.users.take(np.arange(len(local.users))), local.items.take(np.arange(len(local.items)))
    row = {"interactions": len(pairs), "users": len(users), "items": len(items), **params, "local_s": t_local,
           "local_p10": precision10(local.user_factors, local.item_factors, users, items, pairs, test)}  # fmt: skip
    fit_als(df, "user_id", "item_id", **{**params, "iterations": 1})  # warm the workers
    # the input as read (its parquet partitions; fewer than the 2 slots: one task, both slots' threads)
    row["input_partitions"] = df.rdd.getNumPartitions()
    runs = [timed(lambda: fit_als(df, "user_id", "item_id", **params)) for _ in range(args.repeat)]
    row["ours_spark_runs_s"] = [t for t, _ in runs]
    row["ours_spark_s"], model = float(np.median(row["ours_spark_runs_s"])), runs[-1][1]
    row["ours_spark_max_diff"] = float(np.abs(model.item_factors - local.item_factors).max())
    row["ours_spark_p10"] = precision10(model.user_factors, model.item_factors, users, items, pairs, test)
    t0, _ = timed(lambda: fit_als(df, "user_id", "item_id", **{**params, "iterations": 0}))
    row["ours_spark_0_iterations_s"] = t0  # reading, dictionaries, routing and CSR in the one job, no solve
    for parts in (2, 4, 8):  # the input cached in 2 / 4 / 8 partitions: 2 barrier tasks (4 and 8 shuffled to 2)
        d = df.repartition(parts).cache()
        d.count()
        t, model = timed(lambda d=d: fit_als(d, "user_id", "item_id", **params))
        row[f"ours_spark_{parts}p_s"] = t
        row[f"ours_spark_{parts}p_max_diff"] = float(np.abs(model.item_factors - local.item_factors).max())
        d.unpersist()
    d = df.repartition(2).cache()  # one single-thread task per slot exchanging rows (gather=False: a cluster's layout)
    d.count()
    t, model = timed(lambda: fit_als(d, "user_id", "item_id", gather=False, **params))
    row["ours_spark_tasks_2p_s"] = t
    row["ours_spark_tasks_2p_max_diff"] = float(np.abs(model.item_factors - local.item_factors).max())
    d.unpersist()
    for parts in () if args.no_job_path else (2, 4, 8):  # one job per half-iteration (the barrier=False path)
        t, model = timed(lambda p=parts: fit_als(df, "user_id", "item_id", num_partitions=p, barrier=False, **params))
        row[f"ours_jobs_{parts}p_s"] = t
        row[f"ours_jobs_{parts}p_max_diff"] = float(np.abs(model.item_factors - local.item_factors).max())
    from pyspark.ml.recommendation import ALS as MLALS
    from pyspark.sql import functions as F

    rated = df.withColumn("rating", F.lit(1.0))
    est = MLALS(rank=args.factors, maxIter=args.iterations, regParam=params["regularization"], alpha=params["alpha"],
                implicitPrefs=True, userCol="user_id", itemCol="item_id", ratingCol="rating", seed=0,
                numUserBlocks=2, numItemBlocks=2)  # fmt: skip

    def mllib(est=est):
        model = est.fit(rated)
        return model, model.userFactors.toPandas(), model.itemFactors.toPandas()

    # one warm fit first, as ours gets (JIT, MLlib's classes), then the median of --repeat timed fits
    with_timeout(spark, lambda: mllib(est.copy({est.maxIter: 1})), args.mllib_timeout)
    row["mllib_runs_s"] = []
    for _ in range(args.repeat):
        t, fitted = with_timeout(spark, mllib, args.mllib_timeout)
        row["mllib_runs_s"].append(t if t is not None else f"> {args.mllib_timeout:g}")
        if fitted is None:
            row["mllib_s"] = row["mllib_runs_s"][-1]
            results[f"als_{size}"] = row
            df.unpersist()
            return
    t = row["mllib_s"] = float(np.median(row["mllib_runs_s"]))
    model, uf, itf = fitted
    U = np.zeros((len(users), args.factors), np.float32)
    V = np.zeros((len(items), args.factors), np.float32)
    U[local.users.indices_of(uf["id"].to_numpy())] = np.stack(uf["features"].to_numpy())
    V[local.items.indices_of(itf["id"].to_numpy())] = np.stack(itf["features"].to_numpy())
    row["mllib_p10"] = precision10(U, V, users, items, pairs, test)
    row["mllib_over_ours"] = t / row["ours_spark_s"]  # medians
    row["mllib_over_ours_range"] = [min(row["mllib_runs_s"]) / max(row["ours_spark_runs_s"]),
                                    max(row["mllib_runs_s"]) / min(row["ours_spark_runs_s"])]  # fmt: skip
    for parts in (2, 4, 8):  # how many times faster than MLlib
        row[f"mllib_over_ours_{parts}p"] = t / row[f"ours_spark_{parts}p_s"]
    results[f"als_{size}"] = row
    df.unpersist()


def bench_overhead(spark, args, results):
    pdf = pd.DataFrame({"basket": [1, 1, 2, 2, 3], "item": [1, 2, 1, 2, 3]})
    df = spark.createDataFrame(pdf)
    results["overhead"] = {
        "tiny_fim_spark_s": min(timed(lambda: frequent_itemsets(df, "basket", "item", 2))[0] for _ in range(3)),
        "tiny_fim_local_s": min(timed(lambda: FPGrowth.from_transactions(pdf, "basket", "item", 2).mine())[0] for _ in range(3)),
        "tiny_als_spark_s": min(timed(lambda: fit_als(df, "basket", "item", factors=4, iterations=5))[0] for _ in range(3)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baskets", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=500)
    ap.add_argument("--min-support", type=float, default=0.005)
    ap.add_argument("--als", default="100k", help="interaction set size(s), comma-separated: 100k, 1m, 3m, 10m")
    ap.add_argument("--factors", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--only", default="overhead,fim,als", help="comma-separated parts to run")
    ap.add_argument("--repeat", type=int, default=3, help="timed ALS fits, ours (input as read) and MLlib's: the median")
    ap.add_argument("--mllib-timeout", type=float, default=420.0, help="cancel an MLlib fit after this many seconds")
    ap.add_argument("--no-job-path", action="store_true", help="skip the barrier=False ALS runs (slow at scale)")
    ap.add_argument("--driver-memory", default="6g", help="local[2] runs in the driver JVM: its heap")
    args = ap.parse_args()
    parts = args.only.split(",")
    import pyspark

    t_start, spark = timed(lambda: spark_session("local[2]", conf={"spark.driver.memory": args.driver_memory}))
    results = {"session_start_s": t_start, "pyspark": pyspark.__version__, "python": platform.python_version(),
               "java": spark.sparkContext._jvm.java.lang.System.getProperty("java.version")}  # fmt: skip
    results["loadavg_start"] = os.getloadavg()
    for name, run in (("overhead", bench_overhead), ("fim", bench_fim), ("als", bench_als)):
        if name in parts:
            run(spark, args, results)
            results[f"loadavg_after_{name}"] = os.getloadavg()  # 1/5/15-minute load averages
    OUT.mkdir(exist_ok=True)
    (OUT / f"bench_spark_{'_'.join(parts)}_{args.baskets}_{args.als}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
