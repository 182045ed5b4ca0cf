"""Spark Connect: ``SparkSession.builder.remote("local[2]")`` starts a local Spark Connect server and
the client talks gRPC to it (the path a remote ``sc://`` cluster uses). One classic session per
process, so this runs in a fresh process (start-up: tens of seconds). Batch scoring, the hybrid
customer recommendations and the ALS fit run over Connect and equal the local results."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from rusket_core import ALS
from rusket_core.hybrid import Recommender
from tests.conftest import ROOT
from tests.library.test_chunked_recommend import _assert_same, _rules

pyspark = pytest.importorskip("pyspark")
for _module in ("grpc", "grpc_status", "google.rpc", "zstandard"):  # pyspark[connect]'s client needs
    pytest.importorskip(_module, reason=f"Spark Connect's client needs {_module} (pip install 'pyspark[connect]')")
if not list((Path(pyspark.__file__).parent / "jars").glob("spark-connect_*.jar")):
    pytest.skip("this pyspark wheel ships no Spark Connect server jar", allow_module_level=True)

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from pyspark.sql import SparkSession
    from rusket_core import ALS
    from rusket_core.spark import batch_recommend, fit_als, recommend_for_users
    from tests.library.test_spark_connect import hybrid

    out = sys.argv[1]
    pdf = pd.read_parquet(out + "/lines.parquet")
    spark = SparkSession.builder.remote("local[2]").getOrCreate()
    assert type(spark).__module__.startswith("pyspark.sql.connect"), type(spark)
    local = ALS.from_transactions(pdf, "user", "item", factors=4, iterations=1, random_state=3).fit()
    pq.write_table(batch_recommend(local, n=3, spark=spark, num_partitions=2).toArrow(), out + "/recs.parquet")
    hybrid_recs = recommend_for_users(hybrid(local), n=4, spark=spark, num_partitions=3, chunk_size=7)
    pq.write_table(hybrid_recs.toArrow(), out + "/hybrid.parquet")
    remote = fit_als(spark.createDataFrame(pdf), "user", "item", factors=4, iterations=1, random_state=3)
    np.save(out + "/item_factors.npy", remote.item_factors)
    spark.stop()
    """
)


def hybrid(model: ALS) -> Recommender:
    """A hybrid Recommender over ``model``: seeded rules, embeddings for most items and a few carts."""
    rng = np.random.default_rng(5)
    universe = model.items.values
    carts = {u: sorted(rng.choice(universe, 2, replace=False).tolist()) for u in model.users.values[:10]}
    labels = universe[rng.permutation(len(universe))[: len(universe) - 3]]
    embeddings = pd.DataFrame({"label": labels, "vector": list(rng.normal(size=(len(labels), 4)).astype(np.float32))})
    return Recommender(model, rules_df=_rules(rng, universe, 30), item_embeddings=embeddings, carts=carts,
                       alpha=0.6, rules_weight=0.35)  # fmt: skip


def test_local_spark_connect_server_runs_scoring_and_als(tmp_path):
    rng = np.random.default_rng(0)
    pdf = pd.DataFrame({"user": [f"u{u}" for u in rng.integers(0, 40, 400)], "item": rng.integers(0, 25, 400)})
    pdf.to_parquet(tmp_path / "lines.parquet")
    # SPARK_TESTING: the local server takes a free port and the client asks the JVM which (pyspark's own tests)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable, "SPARK_TESTING": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "recs.parquet").exists(), done.stderr[-3000:]  # pyspark exits 0 without grpc: check output
    local = ALS.from_transactions(pdf, "user", "item", factors=4, iterations=1, random_state=3).fit()
    key = ["user_id", "score", "item_id"]
    got = pd.read_parquet(tmp_path / "recs.parquet").sort_values(key, ascending=[True, False, True])
    expected = local.batch_recommend(n=3).sort_values(key, ascending=[True, False, True])
    assert len(got) == 3 * len(local.users)
    assert list(zip(got["user_id"], got["item_id"], strict=True)) == list(
        zip(expected["user_id"], expected["item_id"], strict=True)
    )
    np.testing.assert_allclose(got["score"], expected["score"], rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "item_factors.npy"), local.item_factors, atol=1e-4)
    want = hybrid(local).recommend_for_users(n=4, format="arrow")
    assert "model+rules" in set(want["source"].to_pylist())
    got = pq.read_table(tmp_path / "hybrid.parquet")
    _assert_same(got.take(pc.sort_indices(got, [("user_id", "ascending"), ("rank", "ascending")])).cast(want.schema), want)
