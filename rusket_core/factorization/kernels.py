"""Numba kernels for the factor models: ALS row solves (CG and Cholesky), ALS loss, BPR SGD epochs and fold-in.

All kernels are pure functions over CSR arrays (``indptr`` int64, ``indices`` int32, ``data``
float32) and C-contiguous float32 factor matrices, updated in place. The ALS row solvers are
plain ``@njit`` functions (compiled once, linked into the kernel, which keeps its cold compile short);
the BPR sampling helpers are ``inline="always"`` (inlined into the epoch loop). The compile and
speed figures behind both choices are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rusket_core.intrinsics import prefetch_row

# ---------------------------------------------------------------------------------------------
# ALS (Hu, Koren & Volinsky 2008): for row u with observed entries i and ratings r_ui,
#   (YtY + reg*I + sum_i alpha*r_ui * y_i y_i^T) x_u = sum_i (1 + alpha*r_ui) y_i
# ---------------------------------------------------------------------------------------------


@njit(fastmath=True, cache=True)
def _wdot(v, m):
    """``sum(m * v * v)`` in a loop that stores nothing (see ``_cg_row`` on determinism)."""
    s = np.float32(0.0)
    for a in range(v.shape[0]):
        s += m[a] * v[a] * v[a]
    return s


@njit(fastmath=True, cache=True)
def _cg_row(x, indptr, indices, data, u, Y, lam, alpha, cg_steps, r, p, ap, m, G, cg):
    """A few Jacobi-preconditioned conjugate-gradient steps on row u's normal equations, warm-started from x.

    The factors are expressed in the eigenbasis of ``Y^T Y + reg*I`` (see ``als_update``), so that
    matrix is the diagonal ``lam`` and each step costs O(k * entries) instead of O(k^2). In that
    basis the row's matrix ``diag(lam) + sum_i c_i y_i y_i^T`` is dominated by its diagonal, which
    the preconditioner divides out (``m`` holds its inverse): 2 steps reach a lower loss than 3 plain
    CG steps (benchmarks/RESULTS.md, "Factor models").
    The first pass (residual and diagonal) copies the row's first ``len(G)`` (even) factor rows and
    confidences - 1 into the scratch ``G``, ``cg``; the CG steps read them there, contiguous and in
    cache, instead of gathering them again from a ``Y`` far larger than the caches (the item side;
    benchmarks/RESULTS.md, "ALS at scale: session 9"). The same numbers in the same order: the
    result does not depend on ``len(G)``.
    Every reduction runs in a loop that stores nothing, and the scratch rows r, p, ap, m come from one
    block: a loop that both stores and reduces is vectorized behind a run-time alias check (e.g.
    ``p - r < 256`` bytes), so its summation order, hence the result, would depend on where the
    allocator put each scratch array, which differs between threads.
    """
    k = x.shape[0]
    lo, hi = indptr[u], indptr[u + 1]
    held = min(hi - lo, G.shape[0])  # entries whose rows the first pass copies into G
    # r = b - A x, m = diag(A); entries go in pairs (the second of an odd tail weighs 0): one store
    # of r and m per pair halves the store traffic that bounds these loops, and the pair's two dot
    # products are independent
    for a in range(k):
        r[a] = -lam[a] * x[a]
        m[a] = lam[a]
    for e in range(lo, hi, 2):
        y1, y2, c1, c2 = _pair(indices, data, Y, alpha, e, hi)
        s1 = np.float32(0.0)
        s2 = np.float32(0.0)
        for a in range(k):
            s1 += y1[a] * x[a]
            s2 += y2[a] * x[a]
        w1 = (np.float32(1.0) + c1) - c1 * s1
        w2 = ((np.float32(1.0) + c2) - c2 * s2) if e + 1 < hi else np.float32(0.0)
        for a in range(k):
            r[a] += w1 * y1[a] + w2 * y2[a]
            m[a] += c1 * y1[a] * y1[a] + c2 * y2[a] * y2[a]
        j = e - lo
        if j < held:  # G holds an even number of rows, so the pair's second row fits too
            g1 = G[j]
            g2 = G[j + 1]
            for a in range(k):
                g1[a] = y1[a]
                g2[a] = y2[a]
            cg[j] = c1
            cg[j + 1] = c2
    for a in range(k):
        m[a] = np.float32(1.0) / m[a]
    rz_old = _wdot(r, m)
    for a in range(k):
        p[a] = m[a] * r[a]
    if rz_old < 1e-20:
        return
    for _ in range(cg_steps):
        for a in range(k):
            ap[a] = lam[a] * p[a]
        for j in range(0, held, 2):  # the gathered rows, then the rest from Y
            y1 = G[j]
            y2 = G[j + 1]
            c1 = cg[j]
            c2 = cg[j + 1]
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            for a in range(k):
                s1 += y1[a] * p[a]
                s2 += y2[a] * p[a]
            w1 = c1 * s1
            w2 = c2 * s2
            for a in range(k):
                ap[a] += w1 * y1[a] + w2 * y2[a]
        for e in range(lo + (held + 1) // 2 * 2, hi, 2):
            y1, y2, c1, c2 = _pair(indices, data, Y, alpha, e, hi)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            for a in range(k):
                s1 += y1[a] * p[a]
                s2 += y2[a] * p[a]
            w1 = c1 * s1
            w2 = c2 * s2
            for a in range(k):
                ap[a] += w1 * y1[a] + w2 * y2[a]
        pap = np.float32(0.0)
        for a in range(k):
            pap += p[a] * ap[a]
        if pap <= 0.0:
            return
        step = rz_old / pap
        for a in range(k):
            x[a] += step * p[a]
            r[a] -= step * ap[a]
        rz_new = _wdot(r, m)
        if rz_new < 1e-20:
            return
        beta = rz_new / rz_old
        for a in range(k):
            p[a] = m[a] * r[a] + beta * p[a]
        rz_old = rz_new


#: entries ahead whose factor rows ``_pair`` prefetches (benchmarks/RESULTS.md, "ALS fit: session 8")
_AHEAD = 8


@njit(fastmath=True, cache=True)
def _pair(indices, data, Y, alpha, e, hi):
    """Rows and confidences - 1 of entries e and e + 1; past the row's end, entry e again with weight 0.

    Also prefetches the rows of entries ``e + _AHEAD`` and the next, past the row's end too (the
    next row's first entries): the rows of an item's users are scattered over a user table far
    larger than the caches, and the hardware prefetcher cannot guess them.
    """
    if e + _AHEAD + 1 < indices.shape[0]:
        prefetch_row(Y, indices[e + _AHEAD])
        prefetch_row(Y, indices[e + _AHEAD + 1])
    y1 = Y[indices[e]]
    c1 = alpha * data[e]
    if e + 1 < hi:
        return y1, Y[indices[e + 1]], c1, alpha * data[e + 1]
    return y1, y1, c1, np.float32(0.0)


@njit(fastmath=True, cache=True)
def _cholesky_row(x, indptr, indices, data, u, Y, G64, alpha, A, b):
    """Exact solve of row u's normal equations by Cholesky (float64 accumulation)."""
    k = x.shape[0]
    for a in range(k):
        b[a] = 0.0
        for c2 in range(a + 1):
            A[a, c2] = G64[a, c2]
    for e in range(indptr[u], indptr[u + 1]):
        y = Y[indices[e]]
        c = np.float64(alpha) * np.float64(data[e])
        for a in range(k):
            ya = np.float64(y[a])
            b[a] += (1.0 + c) * ya
            cya = c * ya
            for c2 in range(a + 1):
                A[a, c2] += cya * y[c2]
    # in-place lower Cholesky factor
    for j in range(k):
        s = A[j, j]
        for m in range(j):
            s -= A[j, m] * A[j, m]
        floor = 1e-12 * max(1.0, abs(A[j, j]))
        if s < floor:
            s = floor
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, k):
            t = A[i, j]
            for m in range(j):
                t -= A[i, m] * A[j, m]
            A[i, j] = t / d
    # L z = b, then L^T x = z
    for i in range(k):
        t = b[i]
        for m in range(i):
            t -= A[i, m] * b[m]
        b[i] = t / A[i, i]
    for i in range(k - 1, -1, -1):
        t = b[i]
        for m in range(i + 1, k):
            t -= A[m, i] * b[m]
        b[i] = t / A[i, i]
    for a in range(k):
        x[a] = np.float32(b[a])


#: factor rows per thread the CG solve gathers for its steps (``_cg_row``; at 64 factors 16 MiB, half the
#: last-level cache here: even the longest rows stream from it; benchmarks/RESULTS.md, "ALS at scale: session 9")
GATHER = 1 << 16
#: fixed-side factor tables up to this size (bytes; about the last-level cache) stay in cache: no gathering
CACHED_BYTES = 1 << 26


def gather_cap(Y: np.ndarray) -> int:
    """The ``gather`` argument of ``als_update`` against fixed factors Y: copying rows pays only when
    Y does not fit in cache (it cost 5-8 % at 1M entries, where it does)."""
    return GATHER if Y.nbytes > CACHED_BYTES else 0


@njit(parallel=True, fastmath=True, cache=True)
def als_update(indptr, indices, data, X, Y, lam, G64, alpha, cg_steps, cholesky, bounds, gather):
    """Solve every row of X against fixed Y; rows split into cost-balanced chunks ``bounds``.

    ``G64`` is ``Y^T Y + reg*I`` (float64) for the Cholesky solve. The CG solve needs X and Y in
    that matrix's eigenbasis, where it is ``diag(lam)`` (float32; ``als.eigenbasis`` rotates them).
    Each row depends only on its own entries, so the result does not depend on the chunking or
    the thread count. ``gather`` caps the factor rows the CG solve copies per row (``_cg_row``;
    rounded up to even, 0 for none; ``gather_cap`` chooses it); it changes no result.
    """
    k = X.shape[1]
    alpha32 = np.float32(alpha)
    for c in prange(bounds.shape[0] - 1):
        scratch = np.empty((4, k), np.float32)  # one block: fixed distances between r, p, ap, m
        r, p, ap, m = scratch[0], scratch[1], scratch[2], scratch[3]
        longest = 0
        if not cholesky:
            for u in range(bounds[c], bounds[c + 1]):
                longest = max(longest, indptr[u + 1] - indptr[u])
        held = min(longest + 1, gather + 1) // 2 * 2  # even, at most the chunk's longest row rounded up
        G = np.empty((held, k), np.float32)
        cg = np.empty(held, np.float32)
        A = np.empty((k, k), np.float64)
        b = np.empty(k, np.float64)
        for u in range(bounds[c], bounds[c + 1]):
            x = X[u]
            if indptr[u + 1] == indptr[u]:
                # no observations: b = 0, so the solution is exactly zero
                for a in range(k):
                    x[a] = 0.0
            elif cholesky:
                _cholesky_row(x, indptr, indices, data, u, Y, G64, alpha, A, b)
            else:
                _cg_row(x, indptr, indices, data, u, Y, lam, alpha32, cg_steps, r, p, ap, m, G, cg)


@njit(parallel=True, cache=True)
def top_ranks(indptr, indices, rank, depth):
    """For every row, the ``depth`` smallest ``rank`` of its entries' columns, ascending (``len(rank)`` past the row's end)."""
    n_rows = indptr.shape[0] - 1
    out = np.full((n_rows, depth), rank.shape[0], np.int64)
    for u in prange(n_rows):
        top = out[u]
        for e in range(indptr[u], indptr[u + 1]):
            v = rank[indices[e]]
            if v < top[depth - 1]:  # insert into the sorted top
                at = depth - 1
                while at > 0 and top[at - 1] > v:
                    top[at] = top[at - 1]
                    at -= 1
                top[at] = v
    return out


@njit(parallel=True, cache=True)
def take_csr_rows(indptr, indices, data, order):
    """Rows ``order`` of a CSR as a new CSR (indptr, indices, data), copied in parallel without
    temporaries (``Encoded.take_rows`` builds an index array as long as the entries)."""
    n = order.shape[0]
    ptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        ptr[r + 1] = ptr[r] + indptr[order[r] + 1] - indptr[order[r]]
    idx = np.empty(ptr[n], indices.dtype)
    val = np.empty(ptr[n], data.dtype)
    for r in prange(n):
        shift = indptr[order[r]] - ptr[r]
        for e in range(ptr[r], ptr[r + 1]):
            idx[e] = indices[e + shift]
            val[e] = data[e + shift]
    return ptr, idx, val


@njit(cache=True)
def permute_rows(M, order):
    """``M[:] = M[order]`` in place (cycle by cycle, one spare row): no second copy of a large table."""
    n = M.shape[0]
    done = np.zeros(n, np.bool_)
    spare = np.empty(M.shape[1], M.dtype)
    for start in range(n):
        if done[start]:
            continue
        spare[:] = M[start]
        i = start
        while True:
            done[i] = True
            j = order[i]
            if j == start:
                M[i] = spare
                break
            M[i] = M[j]
            i = j


@njit(parallel=True, cache=True)
def als_loss(indptr, indices, data, X, Y, YtY, alpha, reg):
    """Hu et al. objective: sum_all c_ui (p_ui - x_u.y_i)^2 + reg (|X|^2 + |Y|^2), in float64.

    Uses sum_i (x_u.y_i)^2 = x_u^T YtY x_u so that no dense score matrix is formed.
    """
    n_rows, k = X.shape
    total = 0.0
    for u in prange(n_rows):
        x = X[u]
        part = 0.0
        for a in range(k):
            acc = 0.0
            for b in range(k):
                acc += YtY[a, b] * x[b]
            part += acc * x[a] + reg * x[a] * x[a]
        for e in range(indptr[u], indptr[u + 1]):
            y = Y[indices[e]]
            s = 0.0
            for a in range(k):
                s += np.float64(x[a]) * y[a]
            c = 1.0 + alpha * data[e]
            part += c * (1.0 - s) * (1.0 - s) - s * s
        total += part
    for i in range(Y.shape[0]):
        for a in range(k):
            total += reg * np.float64(Y[i, a]) * Y[i, a]
    return total


# ---------------------------------------------------------------------------------------------
# BPR (Rendle et al. 2009): SGD over (u, i, j) triples with j checked against u's row; Hogwild
# threads, or fixed user blocks on private item copies merged per epoch (deterministic).
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _xorshift(s):
    s ^= s << np.uint64(13)
    s ^= s >> np.uint64(7)
    s ^= s << np.uint64(17)
    return s


@njit(inline="always")
def _below(s, n):
    """Map a random 64-bit state to [0, n) by multiply-shift (no division; n < 2**32)."""
    return np.int64(((s >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))


@njit(inline="always")
def _draw_pair(s, indices, start, stop, owner, u, n_items):
    """One (positive, negative) pair for user u: a positive from its row, a negative redrawn until
    ``owner`` (set to u for each of u's items) says it is not one of u's items."""
    s = _xorshift(s)
    i = indices[start + _below(s, stop - start)]
    while True:
        s = _xorshift(s)
        j = _below(s, n_items)
        if owner[j] != u:
            return s, i, j


@njit(inline="always")
def _bpr_user(s, u, steps, indptr, indices, owner, hits, xu, Y, n_items, lr32, shrink, rational):
    """``steps`` SGD steps for user u (factors ``xu``) against item factors ``Y``, counting each item
    row's updates in ``hits``.

    Returns (generator state, steps already ranked right, summed pair loss -ln sigma(z)).
    """
    k = xu.shape[0]
    half = np.float32(0.5)
    one = np.float32(1.0)
    start = indptr[u]
    stop = indptr[u + 1]
    for p in range(start, stop):
        owner[indices[p]] = u
    good = 0
    loss = 0.0
    s, i, j = _draw_pair(s, indices, start, stop, owner, u, n_items)
    for step in range(steps):
        i_next = i
        j_next = j
        if step + 1 < steps:
            s, i_next, j_next = _draw_pair(s, indices, start, stop, owner, u, n_items)
            prefetch_row(Y, i_next)
            prefetch_row(Y, j_next)
        yi = Y[i]
        yj = Y[j]
        hits[i] += 1
        hits[j] += 1
        z = np.float32(0.0)
        for a in range(k):
            z += xu[a] * (yi[a] - yj[a])
        if z > 0.0:
            good += 1
        g = half - half * z / (one + abs(z)) if rational else one / (one + np.exp(z))
        loss -= np.log(max(one - g, np.float32(1e-30)))  # sigma(z) = 1 - g for both losses
        step_g = lr32 * g
        for a in range(k):
            xa = xu[a]
            ia = yi[a]
            ja = yj[a]
            xu[a] = shrink * xa + step_g * (ia - ja)
            yi[a] = shrink * ia + step_g * xa
            yj[a] = shrink * ja - step_g * xa
        i = i_next
        j = j_next
    return s, good, loss


@njit(inline="always")
def _bpr_block(c, n_chunks, s, indptr, indices, users, X, Y, owner, hits, n_samples, lr, reg, rational, r, n_rounds):
    """Round ``r`` of ``n_rounds`` of one epoch of user block ``c`` of ``n_chunks``: the round's
    contiguous share of the block's users each take in turn their share (equal up to one) of the
    block's quota of steps. Returns (state, steps, ranked right, summed loss)."""
    n_users = users.shape[0]
    u0 = c * n_users // n_chunks
    u1 = (c + 1) * n_users // n_chunks
    quota = n_samples * u1 // n_users - n_samples * u0 // n_users
    n_mine = u1 - u0
    lr32 = np.float32(lr)
    shrink = np.float32(1.0 - lr * reg)
    good = 0
    count = 0
    loss = 0.0
    for t in range(r * n_mine // n_rounds, (r + 1) * n_mine // n_rounds):
        steps = (t + 1) * quota // n_mine - t * quota // n_mine
        if steps == 0:
            continue
        u = users[u0 + t]
        s, g, l_u = _bpr_user(s, u, steps, indptr, indices, owner, hits, X[u], Y, Y.shape[0], lr32, shrink, rational)
        good += g
        loss += l_u
        count += steps
    return s, count, good, loss


@njit(parallel=True, fastmath=True, cache=True)
def bpr_epochs(indptr, indices, users, X, Y, lr, reg, n_samples, n_epochs, seeds, rational, decay):
    """``n_epochs`` BPR epochs of exactly ``n_samples`` SGD steps each, every user getting an equal share.

    ``users`` (those with at least one positive and one negative item) are split into
    ``len(seeds)`` contiguous chunks, one per thread, with per-epoch quotas that add up to
    ``n_samples``; within a chunk each user in turn takes its share (equal up to one) of steps, so
    its factors stay in cache. Threads run their epochs without waiting for each other (Hogwild).
    A step draws one of the user's positives uniformly, then a negative item uniformly until it is
    not in the user's row (checked in O(1) against a per-thread owner array marked on the user's
    turn); the next step's item rows are prefetched while the current one is applied.
    The pair weight is 1 - sigma(z) with the logistic sigma, or with the rational
    sigma(z) = 1/2 + z / (2 (1 + |z|)) when ``rational``. The learning rate of epoch e is
    ``lr * (1 - decay * e / n_epochs)``: constant for ``decay`` 0, linear towards 0 for 1.
    Returns (steps done, steps already ranked right, summed pair loss), each (n_epochs, chunks).
    """
    n_chunks = seeds.shape[0]
    done = np.zeros((n_epochs, n_chunks), np.int64)
    correct = np.zeros((n_epochs, n_chunks), np.int64)
    losses = np.zeros((n_epochs, n_chunks), np.float64)
    for c in prange(n_chunks):
        owner = np.full(Y.shape[0], -1, np.int32)  # user rows fit int32 (``users`` is int32)
        hits = np.zeros(Y.shape[0], np.int64)  # unused here
        s = seeds[c]
        for epoch in range(n_epochs):
            rate = lr * (1.0 - decay * epoch / n_epochs)
            s, count, good, loss = _bpr_block(c, n_chunks, s, indptr, indices, users, X, Y, owner, hits,
                                              n_samples, rate, reg, rational, 0, 1)  # fmt: skip
            done[epoch, c] = count
            correct[epoch, c] = good
            losses[epoch, c] = loss
    return done, correct, losses


@njit(parallel=True, fastmath=True, cache=True)
def bpr_epoch_blocks(indptr, indices, users, X, Y, Yb, lr, reg, n_samples, states, rational, n_rounds):
    """One BPR epoch whose result does not depend on thread timing or count (the deterministic mode).

    Users are split into ``len(states)`` fixed blocks, each with its own generator state (advanced
    in place); user rows are disjoint between blocks. The epoch runs in ``n_rounds`` rounds, each
    taking the next contiguous share of every block's users: a block works on its own copy
    ``Yb[b]`` of the item factors taken at the start of the round, and at the end of the round every
    item row becomes its start value plus the blocks' changes, summed in block order and scaled by
    (1 - d^N) / sum_b (1 - d^n_b) (n_b the row's updates in block b, N their sum, d = 1 - lr reg) so
    the merged row decays as one block taking all N updates would (frequent merges keep the copies
    from going stale, which costs ranking quality when blocks are long). A plain sum of many updates
    per block turned the decay 1 - sum_b (1 - d^n_b) below -1 and diverged (benchmarks/RESULTS.md).
    Steps as in ``bpr_epochs``. Returns (steps done, steps already ranked right, summed pair loss)
    per block.
    """
    n_blocks = states.shape[0]
    n_items, k = Y.shape
    done = np.zeros(n_blocks, np.int64)
    correct = np.zeros(n_blocks, np.int64)
    losses = np.zeros(n_blocks, np.float64)
    owners = np.full((n_blocks, n_items), -1, np.int32)  # user ids differ between rounds: no reset needed
    hits = np.zeros((n_blocks, n_items), np.int64)  # updates of each item row by each block in the round
    log_shrink = np.log1p(-lr * reg)
    for b in prange(n_blocks):
        Yb[b] = Y
    for r in range(n_rounds):
        for b in prange(n_blocks):
            s, count, good, loss = _bpr_block(b, n_blocks, states[b], indptr, indices, users, X, Yb[b], owners[b],
                                              hits[b], n_samples, lr, reg, rational, r, n_rounds)  # fmt: skip
            states[b] = s
            done[b] += count
            correct[b] += good
            losses[b] += loss
        refresh = r + 1 < n_rounds
        for i in prange(n_items):  # row by row: merge, then hand the merged row to every copy for the next round
            n_all = 0
            decayed = 0.0  # sum over blocks of 1 - shrink ** n_b
            for b in range(n_blocks):
                n_all += hits[b, i]
                decayed -= np.expm1(hits[b, i] * log_shrink)
                hits[b, i] = 0
            weight = np.float32(1.0)
            if decayed > 0.0:
                weight = np.float32(-np.expm1(n_all * log_shrink) / decayed)
            for a in range(k):
                start = Y[i, a]
                total = np.float32(0.0)
                for b in range(n_blocks):
                    total += Yb[b, i, a] - start
                total = start + weight * total
                Y[i, a] = total
                if refresh:
                    for b in range(n_blocks):
                        Yb[b, i, a] = total
    return done, correct, losses


@njit(inline="always")
def _splitmix(x):
    """SplitMix64 of ``x``: decorrelated, non-zero-in-practice seeds for per-row xorshift streams."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return z if z != 0 else np.uint64(1)


@njit(parallel=True, fastmath=True, cache=True)
def bpr_fold_in(indptr, indices, X, Y, lr, reg, steps, n_epochs, seed, rational, decay, n_chunks):
    """BPR SGD on the rows of X (row u of the CSR is X[u]) with the item factors Y fixed.

    Each row takes ``steps`` steps per epoch, pairs drawn as in ``bpr_epochs`` from its own
    xorshift stream seeded by ``seed`` and the row number; rows do not interact (Y is fixed), so
    the result does not depend on the thread count or ``n_chunks``. Rows that are empty or hold
    every item are left as they are. Learning rate and pair weight as in ``bpr_epochs``.
    """
    n_rows = X.shape[0]
    n_items = Y.shape[0]
    k = X.shape[1]
    half = np.float32(0.5)
    one = np.float32(1.0)
    for c in prange(n_chunks):
        owner = np.full(n_items, -1, np.int32)
        for u in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            start = indptr[u]
            stop = indptr[u + 1]
            if stop == start or stop - start >= n_items:
                continue
            for p in range(start, stop):
                owner[indices[p]] = u
            s = _splitmix(seed + np.uint64(u))
            xu = X[u]
            for epoch in range(n_epochs):
                rate = lr * (1.0 - decay * epoch / n_epochs)
                lr32 = np.float32(rate)
                shrink = np.float32(1.0 - rate * reg)
                for _ in range(steps):
                    s, i, j = _draw_pair(s, indices, start, stop, owner, u, n_items)
                    yi = Y[i]
                    yj = Y[j]
                    z = np.float32(0.0)
                    for a in range(k):
                        z += xu[a] * (yi[a] - yj[a])
                    g = half - half * z / (one + abs(z)) if rational else one / (one + np.exp(z))
                    step_g = lr32 * g
                    for a in range(k):
                        xu[a] = shrink * xu[a] + step_g * (yi[a] - yj[a])


@njit(inline="always")
def _in_sorted(indices, start, stop, x):
    """Whether ``x`` is in the sorted slice ``indices[start:stop]`` (binary search)."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if indices[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo < stop and indices[lo] == x


@njit(parallel=True, fastmath=True, cache=True)
def bpr_item_fold_in(indptr, indices, rows, X, user_indptr, user_indices, Y, lr, reg, steps, n_epochs, seed, rational, decay):
    """BPR SGD on item rows ``rows`` (row r of the item CSR ``indptr``/``indices`` lists its buyers)
    with the user factors X and the item factors Y fixed.

    Each step takes the item as the positive of one of its buyers u against a negative j drawn for u
    (redrawn while in u's sorted row of ``user_indptr``/``user_indices``), then as the negative of a
    user v who did not buy it against one of v's items: the two sides of the item's gradient in
    ``bpr_epochs``. Each row has its own stream seeded by ``seed`` and the row number and reads only
    fixed factors, so results do not depend on the thread count. Rows bought by nobody or by
    everyone are left as they are.
    """
    n_users = X.shape[0]
    n_items = Y.shape[0]
    k = X.shape[1]
    half = np.float32(0.5)
    one = np.float32(1.0)
    for r in prange(rows.shape[0]):
        start = indptr[r]
        stop = indptr[r + 1]
        if stop == start or stop - start >= n_users:
            continue
        s = _splitmix(seed + np.uint64(r))
        y = rows[r]
        for epoch in range(n_epochs):
            rate = lr * (1.0 - decay * epoch / n_epochs)
            lr32 = np.float32(rate)
            shrink = np.float32(1.0 - rate * reg)
            for _ in range(steps):
                s = _xorshift(s)
                u = indices[start + _below(s, stop - start)]
                us = user_indptr[u]
                ue = user_indptr[u + 1]
                if ue - us < n_items:  # a buyer of everything has no negative
                    while True:
                        s = _xorshift(s)
                        j = _below(s, n_items)
                        if not _in_sorted(user_indices, us, ue, j):
                            break
                    xu = X[u]
                    yj = Y[j]
                    z = np.float32(0.0)
                    for a in range(k):
                        z += xu[a] * (y[a] - yj[a])
                    g = lr32 * (half - half * z / (one + abs(z)) if rational else one / (one + np.exp(z)))
                    for a in range(k):
                        y[a] = shrink * y[a] + g * xu[a]
                while True:
                    s = _xorshift(s)
                    v = _below(s, n_users)
                    if not _in_sorted(indices, start, stop, v):
                        break
                vs = user_indptr[v]
                ve = user_indptr[v + 1]
                if ve > vs:
                    s = _xorshift(s)
                    yp = Y[user_indices[vs + _below(s, ve - vs)]]
                    xv = X[v]
                    z = np.float32(0.0)
                    for a in range(k):
                        z += xv[a] * (yp[a] - y[a])
                    g = lr32 * (half - half * z / (one + abs(z)) if rational else one / (one + np.exp(z)))
                    for a in range(k):
                        y[a] = shrink * y[a] - g * xv[a]
