"""Numba kernels for exact frequent-itemset mining and association-rule generation.

Mining is a depth-first pattern growth with occurrence delivery and database reduction
(the scheme of LCM): items are renumbered by ascending support, each basket becomes a
sorted run of ranks ended by ``-weight`` (``-1`` for a real basket), and an itemset is
represented by the positions just after its last item in the rows that hold it.  Expanding
an itemset counts the items of those suffixes (so no candidate that does not occur is ever
considered), copies the suffixes restricted to the frequent extensions, merges identical
copies into one weighted row (the big win on dense data) and hands each extension the
positions after it.  The subtrees rooted at different first items are independent and run
in parallel (``prange``, one task at a time, largest first).

Each task returns its itemsets as a prefix tree (parent, item, count): an itemset is its
parent's itemset plus one item, which keeps the output small; ``mine_csr`` in
``fpgrowth.py`` expands it into flat item lists.

Rules: every itemset is put in an open-addressing hash table; an itemset of size k looks
up its 2**k - 2 proper subsets once each and emits the rules A -> S \\ A passing the
threshold (counted, then written, so the output is allocated exactly).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange
from numba.typed import List

from rusket_core.mining.metrics import metric_value

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)



def mine_tree(indptr, indices, rank_of, rank_count, min_count, max_len, roots=None):
    """Mine all itemsets with count >= ``min_count`` (and length <= ``max_len``; 0 = no limit).

    ``rank_of[item]`` is the item's rank by ascending count (-1 when infrequent) and
    ``rank_count[rank]`` its count.  Returns the prefix tree ``(parent, rank, count)``
    where ``parent`` is -1 for single items; parents always precede their children.
    ``roots`` (ranks) limits the search to the itemsets whose lowest rank is one of them.
    """
    items, occ_ptr, occ, cost = project(indptr, indices, rank_of, rank_count.shape[0])
    if roots is None:
        roots = np.arange(len(cost))
    order = roots[np.argsort(-cost[roots], kind="stable")]  # biggest subtrees first for better balance
    # subtrees differ widely in size: hand them out one at a time
    trees = _new_trees(len(order))
    old = numba.set_parallel_chunksize(1)
    try:
        grow(items, occ_ptr, occ, order, rank_count, min_count, max_len, trees)
    finally:
        numba.set_parallel_chunksize(old)
    tree = _concat_trees(trees)
    return tree[:, 0], tree[:, 1], tree[:, 2]


@njit(cache=True)
def project(indptr, indices, rank_of, n_freq):
    """Baskets as sorted rank runs ended by -1 (only baskets with >= 2 frequent items), plus
    for each rank the positions just after it (CSR ``occ_ptr``/``occ``) and an estimate of
    the work below it (total suffix length).  Sequential: a few linear passes."""
    n_rows = indptr.shape[0] - 1

    # 1. Project baskets on frequent items, as rank runs + sentinel; drop baskets with < 2.
    row_len = np.zeros(n_rows, np.int64)
    for r in range(n_rows):
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
    for r in range(n_rows):
        if row_len[r] == 0:
            continue
        lo = row_ptr[r]
        q = lo
        for p in range(indptr[r], indptr[r + 1]):
            k = rank_of[indices[p]]
            if k >= 0:  # insertion sort: baskets are short
                j = q
                while j > lo and items[j - 1] > k:
                    items[j] = items[j - 1]
                    j -= 1
                items[j] = k
                q += 1
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
    return items, occ_ptr, occ, cost


@njit(cache=True)
def _grow(a, used, need):
    """Return ``a`` or a larger copy keeping its first ``used`` values (explicit loop: numba
    compiles slice assignment slowly)."""
    if need <= a.shape[0]:
        return a
    b = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    for i in range(used):
        b[i] = a[i]
    return b


@njit(cache=True)
def _grow_rows(a, used, need):
    """``_grow`` for the rows of a 2-D array."""
    if need <= a.shape[0]:
        return a
    b = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), a.dtype)
    for i in range(used):
        for j in range(a.shape[1]):
            b[i, j] = a[i, j]
    return b


@njit(cache=True)
def _search(items, occ, a0, b0, root, rank_count, min_count, max_len):
    """Depth-first search of the itemsets whose first item is ``root``; returns its prefix
    tree as rows ``(parent, rank, count)`` with the node of ``{root}`` first.

    A node is expanded by counting the items in its suffixes, then (database reduction)
    copying those suffixes restricted to its frequent extensions into a local stack, merging
    identical copies into one weighted row (a row ends with ``-weight``), and delivering, for
    each extension, the positions just after it in that copy.
    """
    n_freq = rank_count.shape[0]
    nodes = np.empty((64, 3), np.int64)
    nodes[0, 0] = -1
    nodes[0, 1] = root
    nodes[0, 2] = rank_count[root]
    # counters passed to helpers start as np.int64: a literal 0/1 would make numba compile the
    # helpers again for Literal[int] arguments while it infers the loop's types
    n_nodes = np.int64(1)
    if (max_len != 0 and max_len < 2) or b0 - a0 < min_count:
        return nodes[:1].copy()
    cnt = np.zeros(n_freq, np.int64)
    slot = np.zeros(n_freq, np.int64)  # 1 + extension index while delivering, else 0
    touched = np.empty(n_freq, np.int64)
    db = np.empty(64, np.int32)  # reduced databases, one per open frame
    d_top = np.int64(0)
    ostk = np.empty(64, np.int64)  # occurrence lists, one slice per extension
    o_top = np.int64(0)
    ext = np.empty((64, 4), np.int64)  # extensions: tree node, occurrence slice, support left
    e_top = np.int64(0)
    frames = np.empty((n_freq + 2, 5), np.int64)  # first ext, next ext, end ext, o_top, d_top
    n_frames = 0
    htab = np.empty(64, np.int64)  # row-merging hash table: row start, valid when hgen == gen
    hgen = np.zeros(64, np.int64)
    gen = 0
    # the node to expand: suffixes start at src[a:b] in arr
    arr = items
    src = occ
    a = a0
    b = b0
    node = 0
    depth = 1
    while True:
        # ---- count the items in the suffixes (each row carries its weight at the end)
        n_t = 0
        visits = 0
        for i in range(a, b):
            q0 = src[i]
            q = q0
            while arr[q] >= 0:
                q += 1
            w = -arr[q]
            for p in range(q0, q):
                v = arr[p]
                if cnt[v] == 0:
                    touched[n_t] = v
                    n_t += 1
                cnt[v] += w
            visits += q - q0
        n_ext = 0
        for k in range(n_t):
            if cnt[touched[k]] >= min_count:
                n_ext += 1
        # children can only grow with the other extensions: none when there is just one
        go_deeper = (max_len == 0 or depth + 1 < max_len) and n_ext >= 2
        if n_ext > 0:
            nodes = _grow_rows(nodes, n_nodes, n_nodes + n_ext)
            e_first = e_top
            o_mark = o_top
            if go_deeper:
                ostk = _grow(ostk, o_top, o_top + visits)
                ext = _grow_rows(ext, e_top, e_top + n_ext)
                db = _grow(db, d_top, d_top + visits + (b - a))
                if depth > 1:
                    arr = db
                size = 64
                while size < 2 * (b - a):
                    size *= 2
                if htab.shape[0] < size:
                    htab = np.empty(size, np.int64)
                    hgen = np.zeros(size, np.int64)
                    gen = 0
                gen += 1
            for k in range(n_t):
                v = touched[k]
                if cnt[v] >= min_count:
                    nodes[n_nodes, 0] = node
                    nodes[n_nodes, 1] = v
                    nodes[n_nodes, 2] = cnt[v]
                    if go_deeper:
                        ext[e_top, 0] = n_nodes
                        ext[e_top, 1] = 0  # occurrences counted first, slices laid out below
                        ext[e_top, 3] = 0
                        e_top += 1
                        slot[v] = e_top
                    n_nodes += 1
            if go_deeper:
                # reduced database: suffixes restricted to the extensions (>= 2 items), merged
                d_mark = d_top
                hmask = np.uint64(size - 1)
                for i in range(a, b):
                    q = src[i]
                    start = d_top
                    h = _FNV_OFFSET
                    while arr[q] >= 0:
                        v = arr[q]
                        if slot[v] > 0:
                            db[d_top] = v
                            d_top += 1
                            h = (h ^ np.uint64(v + 1)) * _FNV_PRIME
                        q += 1
                    w = -arr[q]
                    m = d_top - start
                    if m < 2:
                        d_top = start
                        continue
                    hs = (h ^ (h >> np.uint64(29))) & hmask
                    while True:
                        if hgen[hs] != gen:  # new row: keep it
                            hgen[hs] = gen
                            htab[hs] = start
                            db[d_top] = -w
                            d_top += 1
                            for p in range(start, start + m - 1):
                                ext[slot[db[p]] - 1, 1] += 1
                            break
                        r0 = htab[hs]
                        same = db[r0 + m] < 0
                        if same:
                            for p in range(m):
                                if db[r0 + p] != db[start + p]:
                                    same = False
                                    break
                        if same:  # identical row: add the weight, drop the copy
                            db[r0 + m] -= w
                            d_top = start
                            break
                        hs = (hs + np.uint64(1)) & hmask
                # lay out the occurrence slices, then deliver the position after each item
                for k in range(e_first, e_top):
                    n_occ = ext[k, 1]
                    ext[k, 1] = o_top
                    ext[k, 2] = o_top
                    o_top += n_occ
                q = d_mark
                while q < d_top:
                    e = q
                    while db[e] >= 0:
                        e += 1
                    w = -db[e]
                    for p in range(q, e - 1):
                        s = slot[db[p]] - 1
                        ostk[ext[s, 2]] = p + 1
                        ext[s, 2] += 1
                        ext[s, 3] += w
                    q = e + 1
                for k in range(e_first, e_top):
                    slot[nodes[ext[k, 0], 1]] = 0
                frames[n_frames, 0] = e_first
                frames[n_frames, 1] = e_first
                frames[n_frames, 2] = e_top
                frames[n_frames, 3] = o_mark
                frames[n_frames, 4] = d_mark
                n_frames += 1
        for k in range(n_t):
            cnt[touched[k]] = 0
        # ---- next node: the next extension on the deepest open frame with enough support
        found = False
        while n_frames > 0 and not found:
            fr = n_frames - 1
            while frames[fr, 1] < frames[fr, 2]:
                k = frames[fr, 1]
                frames[fr, 1] += 1
                if ext[k, 3] >= min_count:
                    found = True
                    arr = db
                    src = ostk
                    a = ext[k, 1]
                    b = ext[k, 2]
                    node = ext[k, 0]
                    depth = fr + 2
                    break
            if not found:
                e_top = frames[fr, 0]
                o_top = frames[fr, 3]
                d_top = frames[fr, 4]
                n_frames -= 1
        if not found:
            break
    return nodes[:n_nodes].copy()


@njit(cache=True)
def _new_trees(n):
    """A typed list of ``n`` empty trees for ``grow`` to fill."""
    trees = List()
    for _ in range(n):
        trees.append(np.empty((0, 3), np.int64))
    return trees


@njit(cache=True)
def _concat_trees(trees):
    """Stack the task trees, shifting parent ids to global rows."""
    total = 0
    for t in range(len(trees)):
        total += trees[t].shape[0]
    out = np.empty((total, 3), np.int64)
    s0 = 0
    for t in range(len(trees)):
        tree = trees[t]
        for i in range(tree.shape[0]):
            out[s0 + i, 0] = tree[i, 0] + s0 if tree[i, 0] >= 0 else -1
            out[s0 + i, 1] = tree[i, 1]
            out[s0 + i, 2] = tree[i, 2]
        s0 += tree.shape[0]
    return out


@njit(cache=True, parallel=True)
def grow(items, occ_ptr, occ, order, rank_count, min_count, max_len, trees):
    """Depth-first occurrence-delivery search, one parallel task per first item; task ``t``
    stores its prefix tree (rows ``(parent, rank, count)``) in ``trees[t]``."""
    for t in prange(order.shape[0]):
        root = order[t]
        trees[t] = _search(items, occ, occ_ptr[root], occ_ptr[root + 1], root, rank_count, min_count, max_len)


# ---------------------------------------------------------------------------------------------
# association rules



@njit(cache=True)
def _hash_items(buf, m):
    """FNV-1a style hash of the sorted item ids ``buf[:m]``."""
    h = _FNV_OFFSET
    for p in range(m):
        h = (h ^ np.uint64(buf[p] + 1)) * _FNV_PRIME
    return h ^ (h >> np.uint64(31))


@njit(cache=True)
def _probe(table, offsets, items, buf, m):
    """Slot of the itemset equal to ``buf[:m]`` in the open-addressing ``table``: the slot
    holding it, or the empty slot where it would go."""
    mask = np.uint64(table.shape[0] - 1)
    h = _hash_items(buf, m) & mask
    while True:
        s = table[h]
        if s < 0:
            return h
        a = offsets[s]
        if offsets[s + 1] - a == m:
            same = True
            for p in range(m):
                if items[a + p] != buf[p]:
                    same = False
                    break
            if same:
                return h
        h = (h + np.uint64(1)) & mask


@njit(cache=True, error_model="numpy")
def _count_rules(table, offsets, items, support, s, sub, metric, min_threshold, max_consequent):
    """Fill ``sub[mask]`` with the support of each subset of itemset ``s`` and count its rules
    passing the threshold; returns (rules, antecedent items, consequent items, missing?)."""
    a = offsets[s]
    k = offsets[s + 1] - a
    buf = np.empty(k, np.int64)
    full = (1 << k) - 1
    sub[full] = support[s]
    for mask in range(1, full):
        m = np.int64(0)  # not a literal 0: see _search
        for p in range(k):
            if (mask >> p) & 1:
                buf[m] = items[a + p]
                m += 1
        hit = table[_probe(table, offsets, items, buf, m)]
        sub[mask] = support[hit] if hit >= 0 else -1.0
    n_rules = 0
    n_ant = 0
    missing = 0
    for mask in range(1, full):
        na = 0
        for p in range(k):
            na += (mask >> p) & 1
        if max_consequent > 0 and k - na > max_consequent:
            continue
        if sub[mask] < 0.0 or sub[full ^ mask] < 0.0:
            missing = 1
        elif metric_value(metric, sub[full], sub[mask], sub[full ^ mask]) >= min_threshold:
            n_rules += 1
            n_ant += na
    return n_rules, n_ant, n_rules * k - n_ant, missing


@njit(cache=True, error_model="numpy")
def _write_rules(offsets, items, s, sub, metric, min_threshold, max_consequent, r, pa_, pc_,
                 ant_off, ant, con_off, con, s_a, s_c, s_ac):
    """Write the passing rules of itemset ``s`` from rule ``r`` / item positions ``pa_``, ``pc_`` on."""
    a = offsets[s]
    k = offsets[s + 1] - a
    full = (1 << k) - 1
    for mask in range(1, full):
        na = 0
        for p in range(k):
            na += (mask >> p) & 1
        if max_consequent > 0 and k - na > max_consequent:
            continue
        if metric_value(metric, sub[full], sub[mask], sub[full ^ mask]) >= min_threshold:
            for p in range(k):
                if (mask >> p) & 1:
                    ant[pa_] = items[a + p]
                    pa_ += 1
                else:
                    con[pc_] = items[a + p]
                    pc_ += 1
            ant_off[r + 1] = pa_
            con_off[r + 1] = pc_
            s_a[r] = sub[mask]
            s_c[r] = sub[full ^ mask]
            s_ac[r] = sub[full]
            r += 1


@njit(cache=True)
def rules_kernel(offsets, items, support, metric, min_threshold, max_consequent):
    """All rules A -> C (A, C non-empty, A | C a listed itemset) whose ``metric`` >= ``min_threshold``.

    Itemsets are CSR ``offsets``/``items`` (ids sorted within each), ``support`` fractions;
    ``max_consequent`` > 0 limits the consequent size.  Returns ``status`` (0 ok; 1 + i when
    itemset i is listed twice; -(1 + i) when a subset of itemset i is missing; -(2 + n) when
    an itemset has over 30 items) and the rules as CSR antecedents/consequents plus supports.
    Subset supports come from a hash table of the itemsets, looked up once per subset.
    Sequential on purpose: the work is random hash probes (memory-bound); a ``prange`` version
    gained nothing and doubled the JIT compile time (benchmarks/RESULTS.md).
    """
    n = offsets.shape[0] - 1
    size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, np.int64)
    status = 0
    sub_off = np.zeros(n + 1, np.int64)
    for s in range(n):
        k = offsets[s + 1] - offsets[s]
        if k > 30:
            status = -(2 + n)
            break
        sub_off[s + 1] = sub_off[s] + ((1 << k) if k >= 2 else 0)
        h = _probe(table, offsets, items, items[offsets[s]:offsets[s + 1]], k)
        if table[h] >= 0:
            status = 1 + s
            break
        table[h] = s
    counts = np.zeros((n + 1, 4), np.int64)
    sub = np.empty(sub_off[n] if status == 0 else 0)
    if status == 0:
        for s in range(n):
            if offsets[s + 1] - offsets[s] >= 2:
                nr, na, nc, miss = _count_rules(
                    table, offsets, items, support, s, sub[sub_off[s]:sub_off[s + 1]],
                    metric, min_threshold, max_consequent,
                )
                counts[s + 1, 0] = nr
                counts[s + 1, 1] = na
                counts[s + 1, 2] = nc
                counts[s + 1, 3] = miss
        for s in range(n):
            if counts[s + 1, 3] and status == 0:
                status = -(1 + s)
            for j in range(3):
                counts[s + 1, j] += counts[s, j]
    total = counts[n, 0] if status == 0 else 0
    ant_off = np.zeros(total + 1, np.int64)
    con_off = np.zeros(total + 1, np.int64)
    ant = np.empty(counts[n, 1] if status == 0 else 0, np.int64)
    con = np.empty(counts[n, 2] if status == 0 else 0, np.int64)
    s_a = np.empty(total)
    s_c = np.empty(total)
    s_ac = np.empty(total)
    if status == 0:
        for s in range(n):
            if counts[s + 1, 0] > counts[s, 0]:
                _write_rules(
                    offsets, items, s, sub[sub_off[s]:sub_off[s + 1]], metric, min_threshold,
                    max_consequent, counts[s, 0], counts[s, 1], counts[s, 2],
                    ant_off, ant, con_off, con, s_a, s_c, s_ac,
                )
    return status, ant_off, ant, con_off, con, s_a, s_c, s_ac
