"""Numba kernels for exact frequent-itemset mining and association-rule generation.

Mining is a depth-first pattern growth with occurrence delivery (the scheme LCM uses):
items are renumbered by ascending support, each basket becomes a sorted run of ranks
ended by a ``-1`` sentinel, and an itemset is represented by the positions just after
its last item in every basket that holds it.  Extending an itemset only scans those
suffixes, so no candidate is ever generated that does not occur.  The subtrees rooted
at different first items are independent and run in parallel (dynamic scheduling).

Each task returns its itemsets as a prefix tree (parent, item, count): an itemset is
its parent's itemset plus one item, which keeps the output small; ``expand_tree``
turns it into flat item lists.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

METRICS: tuple[str, ...] = (
    "antecedent support",
    "consequent support",
    "support",
    "confidence",
    "lift",
    "leverage",
    "conviction",
    "zhangs_metric",
    "jaccard",
    "certainty",
    "kulczynski",
)


@njit(cache=True)
def _grow_i64(a, used, need):
    """Return ``a`` or a larger copy holding its first ``used`` values, with room for ``need``."""
    if need <= a.shape[0]:
        return a
    size = max(need, 2 * a.shape[0] + 16)
    b = np.empty(size, np.int64)
    b[:used] = a[:used]
    return b


def mine_tree(indptr, indices, rank_of, rank_count, min_count, max_len):
    """Mine all itemsets with count >= ``min_count`` (and length <= ``max_len``; 0 = no limit).

    ``rank_of[item]`` is the item's rank by ascending count (-1 when infrequent) and
    ``rank_count[rank]`` its count.  Returns the prefix tree ``(parent, rank, count)``
    where ``parent`` is -1 for single items; parents always precede their children.
    """
    items, occ_ptr, occ, order = project(indptr, indices, rank_of, rank_count.shape[0])
    # subtrees differ widely in size: hand them out one at a time
    old = numba.set_parallel_chunksize(1)
    try:
        return grow(items, occ_ptr, occ, order, rank_count, min_count, max_len)
    finally:
        numba.set_parallel_chunksize(old)


@njit(cache=True, parallel=True)
def project(indptr, indices, rank_of, n_freq):
    """Baskets as sorted rank runs ended by -1 (only baskets with >= 2 frequent items), plus
    for each rank the positions just after it (CSR ``occ_ptr``/``occ``) and the ranks
    ordered by estimated subtree cost, largest first."""
    n_rows = indptr.shape[0] - 1

    # 1. Project baskets on frequent items, as rank runs + sentinel; drop baskets with < 2.
    row_len = np.zeros(n_rows, np.int64)
    for r in prange(n_rows):
        m = 0
        for p in range(indptr[r], indptr[r + 1]):
            if rank_of[indices[p]] >= 0:
                m += 1
        if m >= 2:
            row_len[r] = m + 1
    row_ptr = np.empty(n_rows + 1, np.int64)
    row_ptr[0] = 0
    for r in range(n_rows):
        row_ptr[r + 1] = row_ptr[r] + row_len[r]
    nnz = row_ptr[n_rows]
    items = np.empty(nnz + 1, np.int32)
    items[nnz] = -1
    for r in prange(n_rows):
        if row_len[r] == 0:
            continue
        q = row_ptr[r]
        for p in range(indptr[r], indptr[r + 1]):
            k = rank_of[indices[p]]
            if k >= 0:
                items[q] = k
                q += 1
        items[row_ptr[r]:q] = np.sort(items[row_ptr[r]:q])
        items[q] = -1

    # 2. Top-level occurrences: for each rank, the suffix starts after it (non-empty suffixes).
    occ_ptr = np.zeros(n_freq + 1, np.int64)
    cost = np.zeros(n_freq, np.int64)
    for r in range(n_rows):
        if row_len[r] == 0:
            continue
        end = row_ptr[r] + row_len[r] - 1
        for p in range(row_ptr[r], end - 1):
            occ_ptr[items[p] + 1] += 1
            cost[items[p]] += end - p
    for k in range(n_freq):
        occ_ptr[k + 1] += occ_ptr[k]
    occ = np.empty(occ_ptr[n_freq], np.int64)
    fill = occ_ptr[:n_freq].copy()
    for r in range(n_rows):
        if row_len[r] == 0:
            continue
        end = row_ptr[r] + row_len[r] - 1
        for p in range(row_ptr[r], end - 1):
            occ[fill[items[p]]] = p + 1
            fill[items[p]] += 1
    order = np.argsort(-cost)  # biggest subtrees first for better balance
    return items, occ_ptr, occ, order


@njit(cache=True)
def _search(items, occ, a0, b0, root, rank_count, min_count, max_len):
    """Depth-first search of the itemsets whose first item is ``root``; returns its prefix
    tree ``(parent, rank, count)`` with the node of ``{root}`` first.

    A node is expanded by counting the items in its suffixes, then (database reduction)
    copying those suffixes restricted to its frequent extensions into a local stack and
    delivering, for each extension, the positions just after it in that copy.
    """
    n_freq = rank_count.shape[0]
    nd_parent = np.empty(64, np.int64)
    nd_item = np.empty(64, np.int32)
    nd_count = np.empty(64, np.int64)
    nd_parent[0] = -1
    nd_item[0] = root
    nd_count[0] = rank_count[root]
    n_nodes = 1
    if (max_len != 0 and max_len < 2) or b0 - a0 < min_count:
        return nd_parent[:1].copy(), nd_item[:1].copy(), nd_count[:1].copy()
    cnt = np.zeros(n_freq, np.int64)
    slot = np.zeros(n_freq, np.int64)  # 1 + extension index while delivering, else 0
    touched = np.empty(n_freq, np.int32)
    db = np.empty(64, np.int32)  # reduced databases, one per open frame
    d_top = 0
    ostk = np.empty(64, np.int64)  # occurrence lists, one slice per extension
    o_top = 0
    e_node = np.empty(64, np.int64)  # extensions: tree node and occurrence slice
    e_beg = np.empty(64, np.int64)
    e_end = np.empty(64, np.int64)
    e_top = 0
    f_beg = np.empty(64, np.int64)  # frames: extension range, cursor, stack marks
    f_cur = np.empty(64, np.int64)
    f_end = np.empty(64, np.int64)
    f_omark = np.empty(64, np.int64)
    f_dmark = np.empty(64, np.int64)
    n_frames = 0
    # the node to expand: suffixes start at src[a:b] in arr
    arr = items
    src = occ
    a = a0
    b = b0
    node = 0
    depth = 1
    while True:
        # ---- count the items in the suffixes
        n_t = 0
        visits = 0
        for i in range(a, b):
            q = src[i]
            v = arr[q]
            while v >= 0:
                if cnt[v] == 0:
                    touched[n_t] = v
                    n_t += 1
                cnt[v] += 1
                q += 1
                v = arr[q]
            visits += q - src[i]
        go_deeper = max_len == 0 or depth + 1 < max_len
        n_ext = 0
        need = 0
        for k in range(n_t):
            if cnt[touched[k]] >= min_count:
                n_ext += 1
                need += cnt[touched[k]]
        if n_ext > 0:
            nd_parent = _grow_i64(nd_parent, n_nodes, n_nodes + n_ext)
            nd_count = _grow_i64(nd_count, n_nodes, n_nodes + n_ext)
            if nd_item.shape[0] < nd_parent.shape[0]:
                grown = np.empty(nd_parent.shape[0], np.int32)
                grown[:n_nodes] = nd_item[:n_nodes]
                nd_item = grown
            e_first = e_top
            if go_deeper:
                ostk = _grow_i64(ostk, o_top, o_top + need)
                e_node = _grow_i64(e_node, e_top, e_top + n_ext)
                e_beg = _grow_i64(e_beg, e_top, e_top + n_ext)
                e_end = _grow_i64(e_end, e_top, e_top + n_ext)
                f_beg = _grow_i64(f_beg, n_frames, n_frames + 1)
                f_cur = _grow_i64(f_cur, n_frames, n_frames + 1)
                f_end = _grow_i64(f_end, n_frames, n_frames + 1)
                f_omark = _grow_i64(f_omark, n_frames, n_frames + 1)
                f_dmark = _grow_i64(f_dmark, n_frames, n_frames + 1)
                if d_top + visits + (b - a) > db.shape[0]:
                    grown = np.empty(max(d_top + visits + (b - a), 2 * db.shape[0]), np.int32)
                    grown[:d_top] = db[:d_top]
                    db = grown
                    if depth > 1:
                        arr = db
            o_mark = o_top
            for k in range(n_t):
                v = touched[k]
                if cnt[v] >= min_count:
                    nd_parent[n_nodes] = node
                    nd_item[n_nodes] = v
                    nd_count[n_nodes] = cnt[v]
                    if go_deeper:
                        e_node[e_top] = n_nodes
                        e_beg[e_top] = o_top
                        e_end[e_top] = o_top
                        e_top += 1
                        slot[v] = e_top
                        o_top += cnt[v]
                    n_nodes += 1
            if go_deeper:
                # reduced database: suffixes restricted to the extensions, >= 2 items each
                d_mark = d_top
                for i in range(a, b):
                    q = src[i]
                    v = arr[q]
                    start = d_top
                    while v >= 0:
                        if slot[v] > 0:
                            db[d_top] = v
                            d_top += 1
                        q += 1
                        v = arr[q]
                    if d_top - start >= 2:
                        db[d_top] = -1
                        d_top += 1
                    else:
                        d_top = start
                # deliver the position after each item that has a non-empty suffix
                for q in range(d_mark, d_top - 1):
                    v = db[q]
                    if v >= 0 and db[q + 1] >= 0:
                        s = slot[v] - 1
                        ostk[e_end[s]] = q + 1
                        e_end[s] += 1
                for k in range(e_first, e_top):
                    slot[nd_item[e_node[k]]] = 0
                f_beg[n_frames] = e_first
                f_cur[n_frames] = e_first
                f_end[n_frames] = e_top
                f_omark[n_frames] = o_mark
                f_dmark[n_frames] = d_mark
                n_frames += 1
        for k in range(n_t):
            cnt[touched[k]] = 0
        # ---- next node: the next extension on the deepest open frame with enough support
        found = False
        while n_frames > 0:
            fr = n_frames - 1
            while f_cur[fr] < f_end[fr]:
                k = f_cur[fr]
                f_cur[fr] += 1
                if e_end[k] - e_beg[k] >= min_count:
                    found = True
                    arr = db
                    src = ostk
                    a = e_beg[k]
                    b = e_end[k]
                    node = e_node[k]
                    depth = fr + 2
                    break
            if found:
                break
            o_top = f_omark[fr]
            e_top = f_beg[fr]
            d_top = f_dmark[fr]
            n_frames -= 1
        if not found:
            break
    return nd_parent[:n_nodes].copy(), nd_item[:n_nodes].copy(), nd_count[:n_nodes].copy()


@njit(cache=True, parallel=True)
def grow(items, occ_ptr, occ, order, rank_count, min_count, max_len):
    """Depth-first occurrence-delivery search, one parallel task per first item; returns
    the concatenated prefix tree ``(parent, rank, count)``."""
    n_freq = rank_count.shape[0]
    # 3. One independent depth-first search per first item.
    t_parent = [np.empty(0, np.int64) for _ in range(n_freq)]
    t_item = [np.empty(0, np.int32) for _ in range(n_freq)]
    t_count = [np.empty(0, np.int64) for _ in range(n_freq)]
    for t in prange(n_freq):
        root = order[t]
        tp, ti, tc = _search(
            items, occ, occ_ptr[root], occ_ptr[root + 1], root, rank_count, min_count, max_len
        )
        t_parent[t] = tp
        t_item[t] = ti
        t_count[t] = tc

    # 4. Concatenate the task trees (parents shifted to global ids).
    start = np.zeros(n_freq + 1, np.int64)
    for t in range(n_freq):
        start[t + 1] = start[t] + t_parent[t].shape[0]
    total = start[n_freq]
    parent = np.empty(total, np.int64)
    item = np.empty(total, np.int32)
    count = np.empty(total, np.int64)
    for t in prange(n_freq):
        s0 = start[t]
        tp = t_parent[t]
        for i in range(tp.shape[0]):
            parent[s0 + i] = tp[i] + s0 if tp[i] >= 0 else -1
            item[s0 + i] = t_item[t][i]
            count[s0 + i] = t_count[t][i]
    return parent, item, count


# ---------------------------------------------------------------------------------------------
# association rules

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@njit(cache=True)
def _hash_items(buf, m):
    """FNV-1a style hash of the sorted item ids ``buf[:m]``."""
    h = _FNV_OFFSET
    for p in range(m):
        h = (h ^ np.uint64(buf[p] + 1)) * _FNV_PRIME
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def _lookup(table, offsets, items, buf, m):
    """Index of the itemset equal to ``buf[:m]`` in the open-addressing ``table``, or -1."""
    mask = np.uint64(table.shape[0] - 1)
    h = _hash_items(buf, m) & mask
    while True:
        s = table[h]
        if s < 0:
            return -1
        a = offsets[s]
        if offsets[s + 1] - a == m:
            same = True
            for p in range(m):
                if items[a + p] != buf[p]:
                    same = False
                    break
            if same:
                return s
        h = (h + np.uint64(1)) & mask


@njit(cache=True, error_model="numpy")
def _metric(code, s_ac, s_a, s_c):
    """One rule metric (see ``METRICS``) with mlxtend's conventions for the degenerate cases."""
    if code == 0:
        return s_a
    if code == 1:
        return s_c
    if code == 2:
        return s_ac
    conf = s_ac / s_a
    if code == 3:
        return conf
    if code == 4:
        return conf / s_c
    if code == 5:
        return s_ac - s_a * s_c
    if code == 6:
        return (1.0 - s_c) / (1.0 - conf) if conf < 1.0 else np.inf
    if code == 7:
        den = max(s_ac * (1.0 - s_a), s_a * (s_c - s_ac))
        return 0.0 if den == 0.0 else (s_ac - s_a * s_c) / den
    if code == 8:
        return s_ac / (s_a + s_c - s_ac)
    if code == 9:
        return 0.0 if 1.0 - s_c == 0.0 else (conf - s_c) / (1.0 - s_c)
    return (conf + s_ac / s_c) / 2.0


@njit(cache=True)
def _subset_support(table, offsets, items, support, s):
    """Supports of every subset of itemset ``s`` indexed by bit mask (-1 where not listed)."""
    a = offsets[s]
    k = offsets[s + 1] - a
    sub = np.full(1 << k, -1.0)
    buf = np.empty(k, np.int64)
    for mask in range(1, 1 << k):
        m = 0
        for p in range(k):
            if (mask >> p) & 1:
                buf[m] = items[a + p]
                m += 1
        hit = _lookup(table, offsets, items, buf, m)
        if hit >= 0:
            sub[mask] = support[hit]
    return sub


@njit(cache=True, parallel=True, error_model="numpy")
def rules_kernel(offsets, items, support, metric, min_threshold, max_consequent):
    """All rules A -> C (A, C non-empty, A | C a listed itemset) whose ``metric`` >= ``min_threshold``.

    Itemsets are CSR ``offsets``/``items`` (ids sorted within each), ``support`` fractions;
    ``max_consequent`` > 0 limits the consequent size.  Returns ``status`` (0 ok; 1 + i when
    itemset i is listed twice; -(1 + i) when a subset of itemset i is missing; -(2 + n) when
    an itemset has over 30 items) and the rules as CSR antecedents/consequents plus supports.
    """
    n = offsets.shape[0] - 1
    size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, np.int64)
    status = 0
    buf = np.empty(64, np.int64)
    for s in range(n):
        m = offsets[s + 1] - offsets[s]
        if m > 30:
            status = -(2 + n)
            break
        for p in range(m):
            buf[p] = items[offsets[s] + p]
        h = _hash_items(buf, m) & np.uint64(size - 1)
        while table[h] >= 0:
            t = table[h]
            if offsets[t + 1] - offsets[t] == m:
                same = True
                for p in range(m):
                    if items[offsets[t] + p] != buf[p]:
                        same = False
                        break
                if same:
                    status = 1 + s
                    break
            h = (h + np.uint64(1)) & np.uint64(size - 1)
        if status != 0:
            break
        table[h] = s
    n_rules = np.zeros(n + 1, np.int64)
    n_ant = np.zeros(n + 1, np.int64)
    n_con = np.zeros(n + 1, np.int64)
    missing = np.zeros(n, np.int64)
    if status == 0:
        for s in prange(n):
            k = offsets[s + 1] - offsets[s]
            if k < 2:
                continue
            sub = _subset_support(table, offsets, items, support, s)
            full = (1 << k) - 1
            s_ac = support[s]
            for mask in range(1, full):
                na = 0
                for p in range(k):
                    na += (mask >> p) & 1
                if max_consequent > 0 and k - na > max_consequent:
                    continue
                s_a = sub[mask]
                s_c = sub[full ^ mask]
                if s_a < 0.0 or s_c < 0.0:
                    missing[s] = 1
                    continue
                if _metric(metric, s_ac, s_a, s_c) >= min_threshold:
                    n_rules[s + 1] += 1
                    n_ant[s + 1] += na
                    n_con[s + 1] += k - na
        for s in range(n):
            if missing[s]:
                status = -(1 + s)
                break
    for s in range(n):
        n_rules[s + 1] += n_rules[s]
        n_ant[s + 1] += n_ant[s]
        n_con[s + 1] += n_con[s]
    total = n_rules[n] if status == 0 else 0
    ant_off = np.zeros(total + 1, np.int64)
    con_off = np.zeros(total + 1, np.int64)
    ant = np.empty(n_ant[n] if status == 0 else 0, np.int64)
    con = np.empty(n_con[n] if status == 0 else 0, np.int64)
    s_a_out = np.empty(total)
    s_c_out = np.empty(total)
    s_ac_out = np.empty(total)
    if status == 0:
        for s in prange(n):
            k = offsets[s + 1] - offsets[s]
            if k < 2 or n_rules[s + 1] == n_rules[s]:
                continue
            a0 = offsets[s]
            sub = _subset_support(table, offsets, items, support, s)
            full = (1 << k) - 1
            s_ac = support[s]
            r = n_rules[s]
            pa_ = n_ant[s]
            pc_ = n_con[s]
            for mask in range(1, full):
                na = 0
                for p in range(k):
                    na += (mask >> p) & 1
                if max_consequent > 0 and k - na > max_consequent:
                    continue
                s_a = sub[mask]
                s_c = sub[full ^ mask]
                if _metric(metric, s_ac, s_a, s_c) >= min_threshold:
                    for p in range(k):
                        if (mask >> p) & 1:
                            ant[pa_] = items[a0 + p]
                            pa_ += 1
                        else:
                            con[pc_] = items[a0 + p]
                            pc_ += 1
                    ant_off[r + 1] = pa_
                    con_off[r + 1] = pc_
                    s_a_out[r] = s_a
                    s_c_out[r] = s_c
                    s_ac_out[r] = s_ac
                    r += 1
    return status, ant_off, ant, con_off, con, s_a_out, s_c_out, s_ac_out
