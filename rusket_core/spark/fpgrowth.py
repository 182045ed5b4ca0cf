"""Parallel FP-growth on Spark: item counts on the cluster, frequent items split into groups by rank,
each basket sends each group the suffix it needs, and each group is mined by the local numba kernel.

Items are ranked by ascending count as the local miner does; the kernel grows an itemset from its
lowest-ranked (least frequent) item towards higher ranks. Group ``g`` owns the ranks ``[lo, hi)``:
a basket holding a rank in that range sends the group its ranks ``>= lo``, which contain every
item any itemset rooted in ``[lo, hi)`` can extend with. So each group counts its itemsets over all
the baskets that hold them, and the union over groups is exactly the local result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Labels, _factorize
from rusket_core.frames import list_column, make_frame
from rusket_core.mining.fpgrowth import _check_max_len, min_count_for, mine_csr
from rusket_core.mining.rules import rule_arrays, rules_frame
from rusket_core.spark.encoding import validate, with_codes
from rusket_core.spark.session import default_parallelism


class SparkItemsets:
    """Frequent itemsets mined on Spark, with the same outputs as :class:`~rusket_core.FPGrowth`."""

    def __init__(self, offsets, ids, counts, items: Labels, n_transactions: int, min_count: int, n_groups: int) -> None:
        self.offsets, self.ids, self.counts = offsets, ids, counts
        self.items = items
        self.n_transactions = n_transactions
        self.min_count = min_count
        self.n_groups = n_groups

    def mine(self, format: str = "pandas") -> Any:
        """Frequent itemsets: ``support``, ``count`` and ``itemsets`` (label lists), as ``FPGrowth.mine``."""
        values = self.items.to_arrow().take(pa.array(self.ids))
        columns = {
            "support": self.counts / float(self.n_transactions),
            "count": self.counts,
            "itemsets": list_column(self.offsets, values),
        }
        return make_frame(columns, format)

    def association_rules(self, metric: str = "confidence", min_threshold: float = 0.8, format: str = "pandas") -> Any:
        """Rules A -> C from the itemsets, as ``FPGrowth.association_rules``."""
        support = self.counts / float(self.n_transactions)
        rules = rule_arrays(self.offsets, self.ids, support, metric, min_threshold)
        return rules_frame(rules, self.items, format)


def rank_groups(rank_count: np.ndarray, n_rows: int, n_groups: int) -> np.ndarray:
    """Bounds of ``n_groups`` contiguous rank ranges of about equal estimated mining work.

    A root's work grows with its count times the chance of more frequent items beside it; the
    estimate assumes items independent (an estimate only: it balances, never changes results).
    """
    n = len(rank_count)
    above = np.cumsum(rank_count[::-1])[::-1] - rank_count  # total count of higher ranks
    cost = rank_count * (1.0 + above / max(n_rows, 1))
    cum = np.concatenate([[0.0], np.cumsum(cost)])
    bounds = np.searchsorted(cum, np.linspace(0.0, cum[-1], max(1, n_groups) + 1))
    bounds[0], bounds[-1] = 0, n
    return np.unique(bounds).astype(np.int64)


def project_for_groups(offsets: np.ndarray, ranks: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-group suffixes of baskets given as rank lists: ``(group, offsets, ranks)`` rows.

    A basket sends group ``[lo, hi)`` its ranks ``>= lo`` when it holds one in the range and that
    suffix has at least two items (single items are counted on the driver).
    """
    n = len(offsets) - 1
    row = np.repeat(np.arange(n), np.diff(offsets))
    order = np.lexsort((ranks, row))
    vals = ranks[order]
    groups, lengths, parts = [], [], []
    for g in range(len(bounds) - 1):
        lo, hi = bounds[g], bounds[g + 1]
        holds = np.bincount(row[(vals >= lo) & (vals < hi)], minlength=n) > 0
        keep = (vals >= lo) & holds[row]
        cnt = np.bincount(row[keep], minlength=n)
        ok = cnt >= 2
        keep &= ok[row]
        groups.append(np.full(int(ok.sum()), g, np.int32))
        lengths.append(cnt[ok])
        parts.append(vals[keep])
    lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    out_offsets = np.zeros(len(lengths_all) + 1, np.int64)
    np.cumsum(lengths_all, out=out_offsets[1:])
    flat = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    return np.concatenate(groups) if groups else np.zeros(0, np.int32), out_offsets, flat


def _list_parts(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a list column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def _one_thread() -> None:
    """Spark runs one task per core: numba kernels inside a task use one thread."""
    import numba

    numba.set_num_threads(1)


def frequent_itemsets(
    df: Any,
    transaction_col: str,
    item_col: str,
    min_support: float | int = 0.5,
    max_len: int | None = None,
    n_groups: int | None = None,
) -> SparkItemsets:
    """Exact frequent itemsets of long-format baskets in a Spark DataFrame (parallel FP-growth).

    Same parameters and results as ``FPGrowth.from_transactions(...).mine()``; ``n_groups``
    (default: twice the session's task slots) sets how many mining tasks share the work.
    """

    min_count_for(min_support, 1)
    kernel_max_len = _check_max_len(max_len)
    ids = [(transaction_col, "transaction column"), (item_col, "item column")]
    n_rows = validate(df, ids, distinct_col=transaction_col)  # ids are checked first: no null transaction
    spark = df.sparkSession
    lines = df.select(transaction_col, item_col).dropDuplicates().persist()
    try:
        stats = lines.groupBy(item_col).count().toArrow()
        codes, items = _factorize(stats.column(0), item_col)
        counts = np.zeros(len(items), np.int64)
        counts[codes] = stats.column(1).to_numpy()
        min_count = min_count_for(min_support, n_rows)
        frequent = np.flatnonzero(counts >= min_count)
        by_rank = frequent[np.lexsort((frequent, counts[frequent]))]  # as mine_csr ranks them
        rank_count = counts[by_rank]
        groups = n_groups or 2 * default_parallelism(spark)
        bounds = rank_groups(rank_count, n_rows, groups)
        mined = _mine_groups(lines, transaction_col, item_col, items, by_rank, rank_count, bounds, min_count, kernel_max_len)
    finally:
        lines.unpersist()
    # single items come from the counts; longer itemsets from the groups (as ranks)
    m_offsets, m_ranks = _list_parts(mined.column("ranks"))
    lengths = np.concatenate([np.ones(len(by_rank), np.int64), np.diff(m_offsets)])
    flat = by_rank[np.concatenate([np.arange(len(by_rank)), m_ranks.astype(np.int64)])]
    all_counts = np.concatenate([rank_count, mined.column("count").to_numpy().astype(np.int64)])
    offsets, flat, all_counts = _canonical(lengths, flat, all_counts)
    return SparkItemsets(offsets, flat, all_counts, items, int(n_rows), min_count, len(bounds) - 1)


def _mine_groups(lines, transaction_col, item_col, items, by_rank, rank_count, bounds, min_count, max_len) -> pa.Table:
    """Ship baskets (as rank lists) to their groups and mine each group with the numba kernel."""
    from pyspark.sql import functions as F

    n_freq = len(rank_count)
    if n_freq < 2 or max_len == 1:
        return pa.table({"ranks": pa.array([], pa.list_(pa.int32())), "count": pa.array([], pa.int64())})
    rank_labels = Labels(items.to_arrow().take(pa.array(by_rank)))
    ranked = with_codes(lines, rank_labels, item_col, "rank")  # labels map to ranks; rare items drop
    baskets = ranked.groupBy(transaction_col).agg(F.collect_list("rank").alias("ranks")).select("ranks")

    def project(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            offsets, ranks = _list_parts(batch.column(0))
            g, out_offsets, flat = project_for_groups(offsets, ranks.astype(np.int64), bounds)
            yield pa.RecordBatch.from_arrays(
                [pa.array(g), list_column(out_offsets, pa.array(flat, pa.int32()))], names=["g", "ranks"]
            )

    def mine(key: tuple, table: pa.Table) -> pa.Table:
        _one_thread()
        g = int(key[0].as_py() if hasattr(key[0], "as_py") else key[0])
        offsets, ranks = _list_parts(table.column("ranks"))
        roots = np.arange(bounds[g], bounds[g + 1])
        off, ids, cnt = mine_csr(offsets, ranks.astype(np.int32), n_freq, min_count, max_len, rank_count, roots)
        keep = np.diff(off) >= 2  # single items are counted on the driver
        lengths = np.diff(off)[keep]
        seg = np.repeat(keep, np.diff(off))
        new_off = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=new_off[1:])
        return pa.table({"ranks": list_column(new_off, pa.array(ids[seg], pa.int32())), "count": pa.array(cnt[keep])})

    projected = baskets.mapInArrow(project, "g int, ranks array<int>")
    return projected.groupBy("g").applyInArrow(mine, "ranks array<int>, count long").toArrow()


def _canonical(lengths: np.ndarray, flat: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Itemsets with sorted items, ordered by count descending, then length, then items."""
    n = len(lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    seg = np.repeat(np.arange(n), lengths)
    flat = flat[np.lexsort((flat, seg))]
    width = int(lengths.max()) if n else 0
    padded = np.full((n, width), -1, np.int64)
    padded[seg, np.arange(len(flat)) - offsets[seg]] = flat
    order = np.lexsort((*padded.T[::-1], lengths, -counts))
    new_len = lengths[order]
    new_off = np.zeros(n + 1, np.int64)
    np.cumsum(new_len, out=new_off[1:])
    starts = np.repeat(offsets[order], new_len)
    pos = starts + np.arange(new_off[-1]) - np.repeat(new_off[:-1], new_len)
    return new_off, flat[pos], counts[order]
