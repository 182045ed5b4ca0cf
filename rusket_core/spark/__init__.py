"""Spark engine: the project's numba kernels run inside Spark tasks (pyspark is optional and imported lazily).

``spark_session`` starts or joins a session; ``encode`` validates and encodes ids on Spark;
``frequent_itemsets`` is parallel FP-growth; ``fit_als`` trains ALS; ``batch_recommend`` and
``batch_similar_items`` score on Spark; ``recommend_for_users`` runs the hybrid Recommender per partition. Every result equals the local engine's.
"""

from rusket_core.spark.als import fit_als
from rusket_core.spark.encoding import SparkEncoded, encode
from rusket_core.spark.fpgrowth import SparkItemsets, frequent_itemsets
from rusket_core.spark.hybrid import recommend_for_users
from rusket_core.spark.scoring import batch_recommend, batch_similar_items
from rusket_core.spark.session import spark_session

__all__ = [
    "SparkEncoded",
    "SparkItemsets",
    "batch_recommend",
    "batch_similar_items",
    "encode",
    "fit_als",
    "frequent_itemsets",
    "recommend_for_users",
    "spark_session",
]
