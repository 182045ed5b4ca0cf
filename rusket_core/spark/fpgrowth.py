"""Parallel FP-growth on Spark: item counts on the cluster, frequent items split into groups by rank,
each basket sends each group the suffix it needs, and each group is mined by the local numba kernel.

Items are ranked by ascending count as the local miner does; the kernel grows an itemset from its
lowest-ranked (least frequent) item towards higher ranks. Group ``g`` owns the ranks ``[lo, hi)``:
a basket holding a rank in that range sends the group its ranks ``>= lo``, which contain every
item any itemset rooted in ``[lo, hi)`` can extend with. So each group counts its itemsets over all
the baskets that hold them, and the union over groups is exactly the local result.

Data flow: one shuffle puts each basket's lines in one partition; each partition packs its baskets
(its own item dictionary, code lists, item counts) into a few binary rows, cached; the driver sums
the counts; the projection and the per-group mining then move only packed bytes, not Spark rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Labels, _factorize
from rusket_core.frames import list_column, make_frame
from rusket_core.mining.fpgrowth import _check_max_len, min_count_for, mine_csr
from rusket_core.mining.rules import rule_arrays, rules_frame
from rusket_core.spark.encoding import check_columns, refused_lines, validate
from rusket_core.spark.relay import table_bytes
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
    order = np.argsort(row * (int(ranks.max(initial=0)) + 1) + ranks, kind="stable")  # by row, then rank
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
    check_columns(df, ids)  # the ids are checked by the packing tasks (no job of its own)
    groups = n_groups or 2 * default_parallelism(df.sparkSession)
    # one shuffle brings every basket's lines together; from then on each partition is a few packed rows
    lines = df.select(transaction_col, item_col).repartition(groups, transaction_col)
    packed = lines.mapInArrow(_pack_baskets, PACKED_SCHEMA).persist()
    try:
        heads = packed.select("labels", "counts", "baskets").toArrow().to_pylist()
        if not heads or any(h["baskets"] < 0 for h in heads):  # no line, or a line the local encoder refuses
            validate(df, ids)  # raises the local engine's message
            raise RuntimeError("the Spark miner refused its input but validation found no bad line")
        labels = [_from_ipc(h["labels"]) for h in heads if h["labels"]]
        codes, items = _factorize(pa.chunked_array(labels, labels[0].type) if labels else pa.array([]), item_col)
        part_counts = np.concatenate([np.zeros(0, np.int64), *(np.frombuffer(h["counts"], np.int64) for h in heads)])
        counts = np.bincount(codes, weights=part_counts, minlength=len(items)).astype(np.int64)
        n_rows = sum(h["baskets"] for h in heads)  # baskets never span partitions
        min_count = min_count_for(min_support, n_rows)
        frequent = np.flatnonzero(counts >= min_count)
        by_rank = frequent[np.lexsort((frequent, counts[frequent]))]  # as mine_csr ranks them
        rank_count = counts[by_rank]
        bounds = rank_groups(rank_count, n_rows, groups)
        mined = _mine_groups(packed, items.to_arrow().take(pa.array(by_rank)), rank_count, bounds, min_count, kernel_max_len)
    finally:
        packed.unpersist()
    # single items come from the counts; longer itemsets from the groups (as ranks)
    m_offsets, m_ranks = _list_parts(mined.column("ranks"))
    lengths = np.concatenate([np.ones(len(by_rank), np.int64), np.diff(m_offsets)])
    flat = by_rank[np.concatenate([np.arange(len(by_rank)), m_ranks.astype(np.int64)])]
    all_counts = np.concatenate([rank_count, mined.column("count").to_numpy().astype(np.int64)])
    offsets, flat, all_counts = _canonical(lengths, flat, all_counts)
    return SparkItemsets(offsets, flat, all_counts, items, int(n_rows), min_count, len(bounds) - 1)


#: a partition's baskets as packed rows: its item labels (Arrow IPC), their basket counts and its basket
#: count in the first row; every row a block of baskets as offsets and local item codes
PACKED_SCHEMA = "labels binary, counts binary, baskets long, offsets binary, codes binary"
#: baskets per packed row (keeps every binary value far below Arrow's 2 GiB)
PACKED_BASKETS = 1 << 20
_PACKED = pa.schema([(n, pa.binary()) for n in ("labels", "counts")] + [("baskets", pa.int64())]
                    + [(n, pa.binary()) for n in ("offsets", "codes")])  # fmt: skip
_PROJECTED = pa.schema([("g", pa.int32()), ("offsets", pa.binary()), ("ranks", pa.binary())])


def _to_ipc(values: pa.Array) -> bytes:
    return table_bytes(pa.table({"v": values}))


def _from_ipc(blob: bytes) -> pa.Array:
    return pa.ipc.open_stream(blob).read_all().column(0).combine_chunks()


def _pack_baskets(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A partition's [transaction, item] lines (whole baskets) as packed rows (:data:`PACKED_SCHEMA`):
    items coded by the partition's own dictionary, each basket's codes sorted, repeats once; one row
    with ``baskets = -1`` when a line has a null or NaN id."""
    batches = list(batches)
    if not batches:
        return
    table = pa.Table.from_batches(batches).combine_chunks()
    if refused_lines(table):  # flagged; the driver re-validates for the message
        yield pa.RecordBatch.from_arrays([pa.array([v]) for v in (b"", b"", -1, b"", b"")], schema=_PACKED)
        return
    tx = pc.dictionary_encode(table.column(0)).combine_chunks()
    it = pc.dictionary_encode(table.column(1)).combine_chunks()
    n_items, n_baskets = len(it.dictionary), len(tx.dictionary)
    key = np.sort(tx.indices.to_numpy().astype(np.int64) * n_items + it.indices.to_numpy())
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]  # np.unique is ~100x slower here (numpy 2.4)
    basket, code = key // n_items, (key % n_items).astype(np.int32)
    offsets = np.zeros(n_baskets + 1, np.int64)
    np.cumsum(np.bincount(basket, minlength=n_baskets), out=offsets[1:])
    for lo in range(0, n_baskets, PACKED_BASKETS):
        hi = min(lo + PACKED_BASKETS, n_baskets)
        first = lo == 0
        row = [_to_ipc(it.dictionary) if first else b"", np.bincount(code, minlength=n_items).tobytes() if first else b"",
               n_baskets if first else 0, (offsets[lo : hi + 1] - offsets[lo]).tobytes(), code[offsets[lo] : offsets[hi]].tobytes()]  # fmt: skip
        yield pa.RecordBatch.from_arrays([pa.array([v]) for v in row], schema=_PACKED)


def _mine_groups(packed, rank_labels, rank_count, bounds, min_count, max_len) -> pa.Table:
    """Ship baskets (as rank lists) to their groups and mine each group with the numba kernel."""
    n_freq = len(rank_count)
    if n_freq < 2 or max_len == 1:
        return pa.table({"ranks": pa.array([], pa.list_(pa.int32())), "count": pa.array([], pa.int64())})

    def project(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rank_of = np.zeros(0, np.int64)
        for r in (row for batch in batches for row in batch.to_pylist()):
            if r["labels"]:  # the partition's first row: its dictionary, as ranks (-1: not frequent)
                labels = _from_ipc(r["labels"])
                rank_of = pc.index_in(labels, value_set=rank_labels.cast(labels.type)).fill_null(-1).to_numpy()
            offsets, codes = np.frombuffer(r["offsets"], np.int64), np.frombuffer(r["codes"], np.int32)
            ranks = rank_of[codes]
            keep = ranks >= 0
            row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            kept = np.zeros(len(offsets), np.int64)
            np.cumsum(np.bincount(row[keep], minlength=len(offsets) - 1), out=kept[1:])
            g, out_offsets, flat = project_for_groups(kept, ranks[keep].astype(np.int64), bounds)
            cuts = np.searchsorted(g, np.arange(len(bounds)))  # rows come grouped by g
            for gi in range(len(bounds) - 1):
                a, b = cuts[gi], cuts[gi + 1]
                if b > a:
                    blobs = [(out_offsets[a : b + 1] - out_offsets[a]).tobytes(), flat[out_offsets[a] : out_offsets[b]].tobytes()]
                    yield pa.RecordBatch.from_pylist([dict(zip(_PROJECTED.names, [gi, *blobs], strict=True))], schema=_PROJECTED)

    def mine(key: tuple, table: pa.Table) -> pa.Table:
        _one_thread()
        g = int(key[0].as_py() if hasattr(key[0], "as_py") else key[0])
        blocks = [(np.frombuffer(o, np.int64), np.frombuffer(r, np.int32))
                  for o, r in zip(table.column("offsets").to_pylist(), table.column("ranks").to_pylist(), strict=True)]  # fmt: skip
        lengths = np.concatenate([np.diff(o) for o, _ in blocks])
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ranks = np.concatenate([r for _, r in blocks])
        roots = np.arange(bounds[g], bounds[g + 1])
        off, ids, cnt = mine_csr(offsets, ranks.astype(np.int32), n_freq, min_count, max_len, rank_count, roots)
        keep = np.diff(off) >= 2  # single items are counted on the driver
        lengths = np.diff(off)[keep]
        seg = np.repeat(keep, np.diff(off))
        new_off = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=new_off[1:])
        return pa.table({"ranks": list_column(new_off, pa.array(ids[seg], pa.int32())), "count": pa.array(cnt[keep])})

    projected = packed.mapInArrow(project, "g int, offsets binary, ranks binary")
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
