"""Product graph from association rules: a networkx DiGraph, Louvain communities and pagerank gateways."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.deprecation import UNSET, renamed
from rusket_core.frames import make_frame, resolve_format
from rusket_core.mining.rules_frame import numeric_column, rules_table, single_item_rules


def to_networkx(rules_df: Any, edge_attr: str = "lift") -> Any:
    """A DiGraph with one edge per one-item → one-item rule, weighted by the rules column ``edge_attr``.

    Edges carry ``edge_attr`` (so ``nx.pagerank(G, weight=edge_attr)`` is weighted) and every other
    numeric column of the rule under its own name; nodes carry ``support`` (from the rules' antecedent /
    consequent support). Rules with more than one item on either side name no single product pair and
    are skipped: their count is in ``G.graph["skipped_rules"]`` (nodes only seen in such rules are
    absent). Node ids are the item labels as Python values.
    """
    import networkx as nx

    table = rules_table(rules_df)
    metrics = [
        name
        for name, typ in zip(table.column_names, table.schema.types, strict=True)
        if name not in ("antecedents", "consequents") and (pa.types.is_integer(typ) or pa.types.is_floating(typ))
    ]
    if edge_attr not in metrics:
        raise ValueError(f"edge_attr {edge_attr!r} is not a numeric rules column; choose one of {metrics}")
    rows, ant, con = single_item_rules(table)
    values = {name: numeric_column(table, name, rows).tolist() for name in metrics}
    ant_list, con_list = ant.tolist(), con.tolist()
    G = nx.DiGraph(edge_attr=edge_attr, skipped_rules=int(table.num_rows - len(rows)))
    support = dict(zip(con_list, values["consequent support"], strict=True))
    support.update(zip(ant_list, values["antecedent support"], strict=True))
    G.add_nodes_from((node, {"support": s}) for node, s in support.items())
    names = list(values)
    columns = [values[name] for name in names]
    G.add_edges_from(
        (a, c, dict(zip(names, attrs, strict=True)))
        for a, c, *attrs in zip(ant_list, con_list, *columns, strict=True)
    )
    return G


def product_communities(
    rules_or_graph: Any,
    weight: str = "lift",
    random_state: int = 0,
    resolution: float = 1.0,
    format: str | None = None,
    *,
    seed: Any = UNSET,
) -> Any:
    """Product communities (seeded Louvain) and gateway products (highest pagerank in each community).

    Accepts a rules frame (turned into a graph with :func:`to_networkx`) or a graph from it; ``weight``
    weights both Louvain and pagerank. One row per product: ``item``, ``community`` (0 = largest; equal
    sizes ordered by their top pagerank), ``community_size``, ``pagerank``, ``support``,
    ``rank_in_community`` (1 = highest pagerank, ties by label order) and ``is_gateway``
    (rank_in_community == 1). Sorted by community, then rank. Output follows a frame input's library
    (pandas for a graph) unless ``format`` says otherwise. ``seed`` is the deprecated name of
    ``random_state``.
    """
    random_state = renamed("seed", seed, "random_state", random_state, default=0)
    import networkx as nx

    if isinstance(rules_or_graph, nx.Graph):
        G, out_format = rules_or_graph, resolve_format(format)
    else:
        G, out_format = to_networkx(rules_or_graph, edge_attr=weight), resolve_format(format, like=rules_or_graph)
    nodes = list(G.nodes)
    n = len(nodes)
    if n == 0:
        return make_frame(
            {
                "item": pa.array([], type=pa.string()),
                "community": np.empty(0, np.int64),
                "community_size": np.empty(0, np.int64),
                "pagerank": np.empty(0),
                "support": np.empty(0),
                "rank_in_community": np.empty(0, np.int64),
                "is_gateway": np.empty(0, bool),
            },
            out_format,
        )
    position = {node: i for i, node in enumerate(nodes)}
    pr = nx.pagerank(G, weight=weight)
    rank = np.array([pr[node] for node in nodes])
    support = np.array([G.nodes[node].get("support", np.nan) for node in nodes], dtype=np.float64)
    raw = np.full(n, -1, dtype=np.int64)
    for c, members in enumerate(nx.community.louvain_communities(G, weight=weight, resolution=resolution, seed=random_state)):
        raw[[position[m] for m in members]] = c
    # label order of nodes (for ties) without comparing Python objects of mixed types
    label_rank = np.argsort(np.argsort(np.asarray(nodes), kind="stable"), kind="stable")
    sizes = np.bincount(raw)
    top = np.full(len(sizes), -np.inf)
    np.maximum.at(top, raw, rank)
    community_order = np.lexsort((-top, -sizes))
    renumber = np.empty_like(community_order)
    renumber[community_order] = np.arange(len(community_order))
    community = renumber[raw]
    order = np.lexsort((label_rank, -rank, community))
    within = np.empty(n, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(community[order])) + 1]
    counts = np.diff(np.r_[starts, n])
    within[order] = np.arange(n) - np.repeat(starts, counts) + 1
    return make_frame(
        {
            "item": pa.array([nodes[i] for i in order]),
            "community": community[order],
            "community_size": sizes[raw][order].astype(np.int64),
            "pagerank": rank[order],
            "support": support[order],
            "rank_in_community": within[order],
            "is_gateway": within[order] == 1,
        },
        out_format,
    )
