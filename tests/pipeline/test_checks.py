"""The blocking gate: the published recommendations must beat popularity on precision and ndcg."""

from __future__ import annotations

import pytest

from rusket_assets.checks import beats_popularity


def test_gate_compares_precision_and_ndcg_with_popularity():
    rows = {
        "popularity": {"model": "popularity", "precision": 0.10, "ndcg": 0.20, "k": 10},
        "published": {"model": "published", "precision": 0.12, "ndcg": 0.19, "k": 10},  # planted: worse ndcg
        "bpr": {"model": "bpr", "precision": 0.11, "ndcg": 0.21, "k": 10},
    }
    passed, figures = beats_popularity(rows, "published")
    assert passed is False and figures["ndcg@10 published"] == pytest.approx(0.19)
    assert beats_popularity(rows, "bpr")[0] is True
