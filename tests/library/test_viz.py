"""Product graph: to_networkx edges and attributes, weighted pagerank, communities and gateways."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import polars as pl
import pytest

from rusket_core.viz import product_communities, to_networkx


def _rules() -> pd.DataFrame:
    # cluster {a, b, c}: a<->b strong (lift 10), a<->c weak (lift 0.1); cluster {d, e}; one 2-item rule
    return pd.DataFrame(
        {
            "antecedents": [["a"], ["b"], ["a"], ["c"], ["d"], ["e"], ["a", "b"]],
            "consequents": [["b"], ["a"], ["c"], ["a"], ["e"], ["d"], ["c"]],
            "antecedent support": [0.5, 0.4, 0.5, 0.3, 0.2, 0.2, 0.2],
            "consequent support": [0.4, 0.5, 0.3, 0.5, 0.2, 0.2, 0.3],
            "support": [0.2, 0.2, 0.015, 0.015, 0.1, 0.1, 0.01],
            "confidence": [0.4, 0.5, 0.03, 0.05, 0.5, 0.5, 0.05],
            "lift": [10.0, 10.0, 0.1, 0.1, 2.5, 2.5, 1.0],
        }
    )


def test_to_networkx_edges_nodes_and_skipped_rules():
    G = to_networkx(_rules(), edge_attr="lift")
    assert isinstance(G, nx.DiGraph)
    assert set(G.edges) == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("d", "e"), ("e", "d")}
    assert G.edges["a", "c"] == {
        "antecedent support": 0.5,
        "consequent support": 0.3,
        "support": 0.015,
        "confidence": 0.03,
        "lift": 0.1,
    }
    assert dict(G.nodes(data="support")) == {"a": 0.5, "b": 0.4, "c": 0.3, "d": 0.2, "e": 0.2}
    assert G.graph["skipped_rules"] == 1 and G.graph["edge_attr"] == "lift"
    with pytest.raises(ValueError, match="edge_attr 'weight'"):
        to_networkx(_rules(), edge_attr="weight")


def _pagerank_reference(G: nx.DiGraph, weight: str | None, d: float = 0.85) -> dict:
    """Closed-form pagerank for a graph where every node has out-edges: solve (I - d Pᵀ) r = (1-d)/n."""
    nodes = list(G)
    A = nx.to_numpy_array(G, nodelist=nodes, weight=weight)
    P = A / A.sum(axis=1, keepdims=True)
    n = len(nodes)
    r = np.linalg.solve(np.eye(n) - d * P.T, np.full(n, (1 - d) / n))
    return dict(zip(nodes, r, strict=True))


def test_weighted_pagerank_differs_from_unweighted():
    G = to_networkx(_rules(), edge_attr="lift")
    weighted = nx.pagerank(G, weight="lift", tol=1e-11, max_iter=2000)
    unweighted = nx.pagerank(G, weight=None, tol=1e-11, max_iter=2000)
    for node, value in _pagerank_reference(G, "lift").items():
        assert weighted[node] == pytest.approx(value, abs=1e-9)
    for node, value in _pagerank_reference(G, None).items():
        assert unweighted[node] == pytest.approx(value, abs=1e-9)
    # a sends almost all its mass to b when weighted by lift, half when not
    assert unweighted["b"] == pytest.approx(unweighted["c"])
    assert weighted["b"] > 5 * weighted["c"]


def test_product_communities_and_gateways():
    out = product_communities(pl.from_pandas(_rules()), weight="lift", random_state=0)
    assert isinstance(out, pl.DataFrame)
    assert out["item"].to_list() == ["a", "b", "c", "d", "e"]
    assert out["community"].to_list() == [0, 0, 0, 1, 1]
    assert out["community_size"].to_list() == [3, 3, 3, 2, 2]
    assert out["rank_in_community"].to_list() == [1, 2, 3, 1, 2]  # d, e tie on pagerank: label order
    assert out["is_gateway"].to_list() == [True, False, False, True, False]
    assert out["support"].to_list() == [0.5, 0.4, 0.3, 0.2, 0.2]
    G = to_networkx(_rules())
    expected = nx.pagerank(G, weight="lift")
    assert out["pagerank"].to_list() == pytest.approx([expected[x] for x in "abcde"])
    assert product_communities(G).equals(product_communities(_rules()))  # graph input, pandas out
    empty = product_communities(_rules().iloc[6:])
    assert empty.empty and list(empty.columns)[:2] == ["item", "community"]
