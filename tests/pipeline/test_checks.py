"""The blocking gate: the published recommendations must beat popularity on precision and ndcg."""

from __future__ import annotations

import pytest

from rusket_assets.checks import beats_popularity, seen_recommendations
from rusket_assets.resources import Warehouse


def test_gate_compares_precision_and_ndcg_with_popularity():
    rows = {
        "popularity": {"model": "popularity", "precision": 0.10, "ndcg": 0.20, "k": 10},
        "published": {"model": "published", "precision": 0.12, "ndcg": 0.19, "k": 10},  # planted: worse ndcg
        "bpr": {"model": "bpr", "precision": 0.11, "ndcg": 0.21, "k": 10},
    }
    passed, figures = beats_popularity(rows, "published")
    assert passed is False and figures["ndcg@10 published"] == pytest.approx(0.19)
    assert beats_popularity(rows, "bpr")[0] is True


def test_seen_recommendations_counts_each_bought_recommendation_once(tmp_path):
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"), publish_snapshot=False)
    with warehouse.connect() as con:
        con.execute("create schema ingest; create schema personalization")
        # customer 1 bought product 10 on two lines; customer 2 bought 10 but is recommended 11
        con.execute("create table ingest.raw_transactions as select * from (values (1, 10), (1, 10), (2, 10), (1, 12)) "
                    "t(customer_id, product_id)")
        con.execute("create table personalization.user_recommendations as select * from (values (1, 10), (1, 11), (2, 11), "
                    "(2, 12), (3, 10)) t(customer_id, product_id)")
    assert seen_recommendations(warehouse) == (1, 5)
