"""ALS on Spark with the local numba row solver. Same seed, same initial factors and same row solves as
:class:`~rusket_core.ALS`, so the factors equal the local fit's to float tolerance.

Default (``barrier=True``): the whole fit is ONE Spark job over the raw lines, with no Spark shuffle.
When one executor holds every task slot (local mode; ``gather``), the other tasks send their lines to
task 0 through a relay on the driver (:mod:`rusket_core.spark.relay`), and task 0 encodes and fits
them with the local encoder and ALS on all the executor's cores, then hands the result to the relay:
the local engine's code and factors inside one Spark task, no per-half-iteration exchange. Otherwise
(``gather=False``, a cluster's executors) the tasks agree on the label dictionaries, route every
coded line to the task holding its user and to the one holding its item through the relay, build their CSR with numpy, per half-iteration solve their rows against the fixed side and
exchange the new rows through the same relay: no job, broadcast or collect per iteration.
Factors and the users' lists come back as packed bytes, not Arrow lists. A barrier stage needs
one free slot per task, so the partitions are capped at the session's task slots (a larger input is
shuffled into that many). An input with fewer partitions is not shuffled (a barrier stage cannot re-cut
partitions without a shuffle, which costs more than the whole fit at a million lines): its tasks run
their row solves on the idle slots' threads; a single task exchanges nothing. ``barrier=False``
runs one job per half-iteration instead (the driver broadcasts the fixed side and collects the solved
rows; about 1 s per job on local[2]): for Spark Connect clients (the driver is remote, no relay) and
clusters where barrier stages cannot run (dynamic allocation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Encoded, Labels, _factorize, encode_transactions
from rusket_core.factorization.als import (
    ALS,
    _balanced_bounds,
    eigenbasis,
    gram,
    init_factors,
    rotate,
)
from rusket_core.factorization.kernels import als_update, gather_cap
from rusket_core.frames import list_column
from rusket_core.spark.encoding import check_schema, encode, refused_lines, validate
from rusket_core.spark.fpgrowth import _from_ipc, _list_parts, _one_thread, _to_ipc
from rusket_core.spark.relay import Peer, Relay, Solo, pack, take, unpack
from rusket_core.spark.session import default_parallelism, executor_cores, is_classic, shipped

OUT_SCHEMA = "side int, ids binary, f binary, lens binary, idx binary, w binary"
#: rows per output record of the barrier job (keeps every binary value far below Arrow's 2 GiB)
OUT_ROWS = 1 << 20


def csr_of(key: np.ndarray, other: np.ndarray, w: np.ndarray, add: bool) -> tuple[np.ndarray, ...]:
    """``(ids, offsets, idx, w)``: the entries grouped by ``key`` (sorted) with sorted ``other``; repeated
    (key, other) merge as the encoder merges lines (weights ``add``-ed, else counted once)."""
    if len(key) == 0:
        return np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    order = np.argsort(key * (int(other.max()) + 1) + other, kind="stable")  # by key, then other
    key, other, w = key[order], other[order], w[order]
    new = np.ones(len(key), bool)
    new[1:] = (key[1:] != key[:-1]) | (other[1:] != other[:-1])
    starts = np.flatnonzero(new)
    w = (np.add if add else np.maximum).reduceat(w, starts)
    key, other = key[starts], other[starts]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    offsets = np.append(np.flatnonzero(first), len(key)).astype(np.int64)
    return key[first].astype(np.int64), offsets, other.astype(np.int32), w.astype(np.float32)


def _sorted_csr(ids: np.ndarray, lens: np.ndarray, idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(indptr, indices, data)`` of rows given in any order (``ids``, row lengths ``lens``), rows by id."""
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    if np.all(ids[1:] > ids[:-1]):  # already in order (one task sent every row): no copy
        return offsets, idx, w
    order = np.argsort(ids, kind="stable")
    new_len = lens[order].astype(np.int64)
    indptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(new_len, out=indptr[1:])
    pos = np.repeat(offsets[:-1][order] - indptr[:-1], new_len) + np.arange(indptr[-1])
    return indptr, idx[pos], w[pos]


def interaction_rows(pairs: Any, key: str, other: str) -> Any:
    """One Spark row per ``key`` code: ``id``, its sorted ``other`` codes ``idx`` and their weights ``w``."""
    from pyspark.sql import functions as F

    entries = F.sort_array(F.collect_list(F.struct(F.col(other).alias("i"), F.col("weight").cast("float").alias("w"))))
    return (
        pairs.groupBy(key)
        .agg(entries.alias("e"))
        .select(F.col(key).alias("id"), F.col("e.i").alias("idx"), F.col("e.w").alias("w"))
    )


def _fixed(Y: np.ndarray, model: ALS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The fixed side ready for :func:`_solve`: ``(Y', lam, G64, P)``. CG works in the eigenbasis of
    ``Y^T Y + reg*I`` (``Y' = Y @ P``, the matrix is ``diag(lam)``), as the local fit does; Cholesky in
    the original basis with ``G64 = Y^T Y + reg*I`` (``P`` is None)."""
    k = Y.shape[1]
    if model.solver == "cholesky":
        return Y, np.zeros(0, np.float32), gram(Y) + model.regularization * np.eye(k), None
    lam, P = eigenbasis(Y, model.regularization)
    Y = Y.copy()
    rotate(Y, P)
    return Y, lam, np.zeros((0, 0)), P


def _solve(ids: np.ndarray, offsets, idx, w, X: np.ndarray, fixed: tuple, model: ALS) -> np.ndarray:
    """The new rows ``ids`` of ``X`` (entries ``offsets/idx/w``) against the fixed side (:func:`_fixed`), one thread."""
    Y, lam, G64, P = fixed
    x = np.ascontiguousarray(X[ids])
    if P is not None:
        rotate(x, P)
    als_update(
        offsets, idx, w, x, Y, lam, G64, model.alpha, model.cg_steps, model.solver == "cholesky",
        _balanced_bounds(offsets, X.shape[1]), gather_cap(Y),
    )  # fmt: skip
    if P is not None:
        rotate(x, P.T)
    return x


def _csr_parts(batch: pa.RecordBatch | pa.Table, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, offsets, idx, w) of the columns ``first..first+2`` (id, idx, w) as kernel-ready arrays."""
    ids = batch.column(first).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets, idx = _list_parts(batch.column(first + 1))
    _, w = _list_parts(batch.column(first + 2))
    return ids, offsets, idx.astype(np.int32), w.astype(np.float32)


def _vectors(x: np.ndarray) -> pa.Array:
    n, k = x.shape
    return list_column(np.arange(n + 1, dtype=np.int64) * k, pa.array(np.ascontiguousarray(x).reshape(-1)))


def _gather(peer: Peer, ids: np.ndarray, x: np.ndarray, full: np.ndarray) -> np.ndarray:
    """``full`` with every task's solved rows (``ids``, ``x``) written in."""
    k = full.shape[1]
    out = full.copy()
    for raw in peer.all_gather(ids.astype(np.int32).tobytes() + np.ascontiguousarray(x, np.float32).tobytes()):
        m = len(raw) // (4 * (k + 1))
        got = np.frombuffer(raw, np.int32, m)
        out[got] = np.frombuffer(raw, np.float32, m * k, offset=4 * m).reshape(m, k)
    return out


def _ipc(values: Any) -> bytes:
    """Arrow values as IPC bytes (:func:`~rusket_core.spark.fpgrowth._to_ipc`); b"" when empty."""
    return _to_ipc(values) if len(values) else b""


def _split_by_owner(owner: np.ndarray, n: int, columns: list[np.ndarray]) -> list[list[np.ndarray]]:
    """``columns`` cut into ``n`` groups of rows by ``owner`` (row order kept within a group)."""
    order = np.argsort(owner, kind="stable")
    cuts = np.cumsum(np.bincount(owner, minlength=n))[:-1]
    return [list(group) for group in zip(*(np.split(c[order], cuts) for c in columns), strict=True)]


def _fit_barrier(df: Any, weighted: bool, model: ALS, threads: int = 1) -> tuple[Any, ...] | None:
    """The whole fit in one barrier job over the raw [user, item(, weight)] lines, one task per partition:
    ``(users, items, U, V, indptr, indices, data)``, or None when the input has a line the local encoder
    refuses (or none at all; the caller re-validates for the message).

    Each task checks its lines and sends its distinct labels to every task (relay all-gather); every
    task then knows the sorted label dictionaries, codes its lines exactly as the local encoder does,
    and sends each line to the task owning its user (code mod tasks) and to the one owning its item
    (relay all-to-all: one pass, no Spark shuffle, dictionary job or join). Each task builds its users'
    and items' CSR with numpy and solves its rows per half-iteration, exchanging them through the relay.
    """
    k, iterations = model.factors, model.iterations
    names = df.columns[:2]
    spark = df.sparkSession
    relay = Relay(spark.conf.get("spark.driver.host"))
    address, secret = relay.address, relay.secret

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numba
        from pyspark import BarrierTaskContext

        numba.set_num_threads(threads)
        context = BarrierTaskContext.get()
        n, me = len(context.getTaskInfos()), context.partitionId()
        got = list(batches)
        table = pa.Table.from_batches(got) if got else None
        peer = Peer(address, secret, me, n) if n > 1 else Solo()
        try:
            refused = table is not None and refused_lines(table, weighted)
            mine = [b"", b""] if table is None or refused else [_ipc(pc.unique(table.column(c))) for c in (0, 1)]
            everyone = [unpack(m) for m in peer.all_gather(pack([bytes([refused]), *mine]))]
            if any(m[0] != b"\x00" for m in everyone) or not any(m[1] for m in everyone):
                return  # every task sees the same: all stop, the driver re-validates
            codes, labels = [], []
            for c in (0, 1):
                own = table.column(c).chunks if table is not None else []
                chunks = [_from_ipc(m[1 + c]) for m in everyone if m[1 + c]]
                code, lab = _factorize(pa.chunked_array(chunks + own, chunks[0].type), names[c])
                codes.append(code[len(code) - sum(len(o) for o in own) :].astype(np.int32))
                labels.append(lab)
            u, i = codes
            w = [pc.cast(table.column(2), pa.float64()).to_numpy()] if weighted and table is not None else []
            to_users = _split_by_owner(u % n, n, [u, i, *w])  # side 0: lines by user, to the user's owner
            to_items = _split_by_owner(i % n, n, [i, u, *w])  # side 1: lines by item (weights only when given)
            sent = [pack([a.tobytes() for a in (*to_users[q], *to_items[q])]) for q in range(n)]
            received = [unpack(m) for m in peer.all_to_all(sent)]

            def cat(j: int, dtype: type) -> np.ndarray:
                return np.concatenate([np.frombuffer(r[j], dtype) for r in received])

            def side(first: int) -> tuple[np.ndarray, ...]:
                key, other = cat(first, np.int32), cat(first + 1, np.int32)
                w = cat(first + 2, np.float64) if weighted else np.ones(len(key))
                return csr_of(key.astype(np.int64), other, w, weighted)

            per_side = 3 if weighted else 2
            u_parts, i_parts = side(0), side(per_side)
            X, Y = init_factors(len(labels[0]), len(labels[1]), k, model.random_state, model.init_scale)
            for _ in range(iterations):
                X = _gather(peer, u_parts[0], _solve(*u_parts, X, _fixed(Y, model), model), X)
                Y = _gather(peer, i_parts[0], _solve(*i_parts, Y, _fixed(X, model), model), Y)
        finally:
            peer.close()
        if me == 0:  # the label dictionaries, once
            yield _out_row(2, [labels[0].to_arrow(), labels[1].to_arrow()], ipc=True)
        yield from _result_rows(0, u_parts[0], X, u_parts[1:])
        yield from _result_rows(1, i_parts[0], Y)

    with relay:
        out = df.mapInArrow(task, OUT_SCHEMA, barrier=True).toArrow().to_pylist()
    return _assemble(out, k)


def _fit_gathered(df: Any, weighted: bool, model: ALS, threads: int) -> tuple[Any, ...] | None:
    """The whole fit in one barrier job whose tasks all run on one executor (local mode): every other task
    sends its lines to task 0 (one relay all-to-all; none with a single task), which encodes them with the
    local encoder and fits with the local ALS on ``threads`` numba threads (the executor's cores), so the
    labels, lists and factors are the local engine's. The result goes to the driver through the relay
    (:meth:`~rusket_core.spark.relay.Peer.deliver`). As :func:`_fit_barrier` (None when the local encoder
    refuses the lines), without single-thread tasks exchanging rows every half-iteration. Where the tasks
    run on the driver's host (local mode) the lines and the result go through the relay's spill files,
    memory-mapped, instead of its sockets (at 7.4M lines: 6.8–7.4 s → 5.1–5.5 s; benchmarks/RESULTS.md)."""
    names = df.columns
    relay = Relay(df.sparkSession.conf.get("spark.driver.host"), spill=True)
    address, secret, spill_dir = relay.address, relay.secret, relay.spill_dir

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import numba
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        infos = context.getTaskInfos()
        n, me = len(infos), context.partitionId()
        tables = [pa.Table.from_batches(got)] if (got := list(batches)) else []
        peer = Peer(address, secret, me, n, spill_dir)
        one_executor = len({info.address for info in infos}) == 1  # then task 0 sees the spill files too
        try:
            if n > 1:  # everything to task 0, which keeps its own lines
                mine = peer.put("lines", tables, spill=one_executor) if me != 0 and tables else b""
                sent = peer.all_to_all([mine] + [b""] * (n - 1))
                if me != 0:
                    return
                tables += [pa.ipc.open_stream(part).read_all() for m in sent if m for part in take(m)]
            if not tables:
                return  # no line at all: the driver validates (the local message)
            try:
                enc = encode_transactions(pa.concat_tables(tables), *names[:2], names[2] if weighted else None)
            except ValueError:  # the driver re-validates for the message
                return
            numba.set_num_threads(threads)
            fitted = model.fit(enc)  # this task's copy of the unfitted model
            parts = [pa.table({"v": lab.to_arrow()}) for lab in (enc.rows, enc.items)]
            parts += [np.ascontiguousarray(a, t) for a, t in ((fitted.user_factors, np.float32),
                      (fitted.item_factors, np.float32), (enc.indptr, np.int64), (enc.indices, np.int32),
                      (enc.weights(), np.float32))]  # fmt: skip
            peer.deliver(peer.put("result", parts))
        finally:
            peer.close()
        yield from ()

    with relay:
        df.mapInArrow(task, "unused int", barrier=True).collect()
        if 0 not in relay.outputs:
            return None
        users, items, U, V, indptr, indices, data = take(relay.outputs[0])
    k = model.factors
    return (
        *(Labels(_from_ipc(b)) for b in (users, items)),
        *(np.frombuffer(b, np.float32).reshape(-1, k) for b in (U, V)),
        np.frombuffer(indptr, np.int64), np.frombuffer(indices, np.int32), np.frombuffer(data, np.float32),
    )  # fmt: skip


def _result_rows(side: int, ids: np.ndarray, F: np.ndarray, csr: tuple | None = None) -> Iterator[pa.RecordBatch]:
    """Output records of the rows ``ids`` of factors ``F`` (and of the users' lists ``csr`` = (offsets, idx,
    w), one entry per id): packed bytes, not Arrow lists (cheap on both ends), OUT_ROWS rows each."""
    for lo in range(0, len(ids), OUT_ROWS):
        hi = min(lo + OUT_ROWS, len(ids))
        values = [ids[lo:hi].astype(np.int32), F[ids[lo:hi]]]
        if csr is not None:
            offsets, idx, w = csr
            a, b = offsets[lo], offsets[hi]
            values += [np.diff(offsets[lo : hi + 1]).astype(np.int32), idx[a:b], w[a:b]]
        yield _out_row(side, values)


def _assemble(out: list[dict], k: int) -> tuple[Any, ...] | None:
    """``(users, items, U, V, indptr, indices, data)`` from the barrier job's output records (None: no dictionaries)."""
    dictionaries = [r for r in out if r["side"] == 2]
    if not dictionaries:
        return None
    users, items = (Labels(_from_ipc(dictionaries[0][c])) for c in ("ids", "f"))
    U, V = np.empty((len(users), k), np.float32), np.empty((len(items), k), np.float32)  # every row is overwritten
    for r in out:
        if r["side"] < 2:
            ids = np.frombuffer(r["ids"], np.int32)
            (U if r["side"] == 0 else V)[ids] = np.frombuffer(r["f"], np.float32).reshape(len(ids), k)
    user_rows = [r for r in out if r["side"] == 0]

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.zeros(0, dtype), *(np.frombuffer(r[name], dtype) for r in user_rows)])

    csr = _sorted_csr(cat("ids", np.int32), cat("lens", np.int32), cat("idx", np.int32), cat("w", np.float32))
    return users, items, U, V, *csr


def _out_row(side: int, values: list, ipc: bool = False) -> pa.RecordBatch:
    """One output record of the barrier job: ``values`` packed as raw bytes (or Arrow IPC) in OUT_SCHEMA's columns."""
    raw = [_ipc(v) if ipc else np.ascontiguousarray(v).tobytes() for v in values]
    raw += [b""] * (5 - len(raw))
    return pa.RecordBatch.from_arrays(
        [pa.array([side], pa.int32()), *(pa.array([r], pa.binary()) for r in raw)],
        names=["side", "ids", "f", "lens", "idx", "w"],
    )


def solve_rows(rows: Any, X: np.ndarray, Y: np.ndarray, model: ALS) -> np.ndarray:
    """One Spark job: re-solve the rows of ``X`` held by the Spark rows against fixed ``Y``; returns the new ``X``."""
    k = X.shape[1]
    arrays, release = shipped(rows.sparkSession, (X, *_fixed(Y, model)))

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _one_thread()
        X, *fixed = arrays()
        for batch in batches:
            ids, offsets, idx, w = _csr_parts(batch, 0)
            x = _solve(ids, offsets, idx, w, X, tuple(fixed), model)
            yield pa.RecordBatch.from_arrays([pa.array(ids.astype(np.int32)), _vectors(x)], names=["id", "f"])

    try:
        out = rows.mapInArrow(task, "id int, f array<float>").toArrow()
    finally:
        release()
    new = X.copy()
    new[out.column("id").to_numpy().astype(np.int64)] = _list_parts(out.column("f"))[1].reshape(-1, k)
    return new


def _fit_jobs(user_rows: Any, item_rows: Any, U: np.ndarray, V: np.ndarray, model: ALS) -> tuple[np.ndarray, ...]:
    """The fit as one Spark job per half-iteration (rows cached on the executors); as :func:`_fit_barrier`."""
    user_rows, item_rows = user_rows.persist(), item_rows.persist()
    try:
        for _ in range(model.iterations):
            U = solve_rows(user_rows, U, V, model)
            V = solve_rows(item_rows, V, U, model)
        users = user_rows.toArrow()
    finally:
        user_rows.unpersist()
        item_rows.unpersist()
    offsets, idx = _list_parts(users.column("idx"))
    ids = users.column("id").to_numpy().astype(np.int64)
    w = _list_parts(users.column("w"))[1].astype(np.float32)
    return U, V, *_sorted_csr(ids, np.diff(offsets), idx.astype(np.int32), w)


def fit_als(
    df: Any,
    user_col: str,
    item_col: str,
    rating_col: str | None = None,
    num_partitions: int | None = None,
    barrier: bool | None = None,
    gather: bool | None = None,
    **params: Any,
) -> ALS:
    """Train :class:`~rusket_core.ALS` on a Spark DataFrame of interactions; returns a fitted local model.

    ``params`` are ALS's (factors, iterations, alpha, regularization, solver, cg_steps,
    random_state, init_scale). The fitted model holds the labels and the training interactions (needed to
    exclude seen items), so every local method works on it. ``num_partitions`` (default and, with
    ``barrier``, at most: the session's task slots) splits the row solves (with ``barrier``, an input in
    fewer partitions keeps them and its tasks share the slots' threads); ``barrier`` picks one job
    for the whole fit or one per half-iteration (see the module docstring); by default one job on a
    classic session, one per half-iteration on Spark Connect. ``gather`` (barrier only; default: when one
    executor holds every slot, as in local mode) fits in ONE task on all that executor's cores with the
    local encoder and ALS (:func:`_fit_gathered`) instead of one single-thread task per slot exchanging
    rows every half-iteration.
    """
    model = ALS(**params)
    slots = default_parallelism(df.sparkSession)
    barrier = is_classic(df.sparkSession) if barrier is None else barrier
    parts = min(num_partitions or slots, slots) if barrier else (num_partitions or slots)
    if barrier:
        ids = [(user_col, "transaction column"), (item_col, "item column")]
        check_schema(df, ids, rating_col)
        lines = df.select(user_col, item_col, *([rating_col] if rating_col else []))
        tasks = lines.rdd.getNumPartitions()
        if tasks > parts:  # one barrier task per partition, at most one per slot
            lines, tasks = lines.repartition(parts), parts
        # fewer partitions than slots: no shuffle (a barrier stage cannot re-cut them without one); the
        # tasks run the row solves on the idle slots' threads instead
        cores = executor_cores(df.sparkSession)
        gather = cores >= slots if gather is None else gather
        threads = min(slots, cores) if gather else max(1, min(parts // max(tasks, 1), cores))
        fit = _fit_gathered if gather else _fit_barrier
        try:
            fitted = fit(lines, rating_col is not None, model, threads)
        except Exception as exc:  # e.g. a coalesced input: a barrier stage refuses it, the shuffle does not
            if "BarrierJobUnsupportedRDDChain" not in str(exc):
                raise
            fitted = fit(lines.repartition(parts), rating_col is not None, model, threads if gather else 1)
        if fitted is None:
            validate(df, ids, rating_col)  # raises the local engine's message
            raise RuntimeError("the Spark fit refused its input but validation found no bad line")
        users, items, U, V, indptr, indices, data = fitted
    else:
        enc = encode(df, user_col, item_col, rating_col)
        users, items = enc.rows, enc.items
        U, V = init_factors(len(users), len(items), model.factors, model.random_state, model.init_scale)
        user_rows = interaction_rows(enc.pairs, "row", "item").repartition(parts)
        item_rows = interaction_rows(enc.pairs, "item", "row").repartition(parts)
        U, V, indptr, indices, data = _fit_jobs(user_rows, item_rows, U, V, model)
    if len(indptr) != len(users) + 1:
        raise RuntimeError(f"the Spark fit returned {len(indptr) - 1} user rows for {len(users)} users")
    encoded = Encoded(indptr, indices, data if rating_col is not None else None, users, items)
    model._set_interactions(encoded)
    model.user_factors, model.item_factors = U, V
    model.user_col, model.item_col, model.rating_col = user_col, item_col, rating_col
    model._format = "pandas"
    return model
