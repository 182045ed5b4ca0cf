"""All-gather between the tasks of one barrier job, relayed by the driver over TCP.

Spark's own ``BarrierTaskContext.allGather`` polls once a second, so every exchange costs about 1 s;
iterative fits (ALS) exchange twice per iteration. Here each task keeps one socket to a small
server on the driver (the pattern XGBoost's and Horovod's Spark integrations use): per round every
task sends its bytes, the driver waits for all and sends every task the concatenation
(``all_gather``), or routes each task's per-destination messages to their destinations
(``all_to_all``: a shuffle that moves each byte through the driver once). Tasks prove
themselves with a per-job secret. A barrier stage runs all its tasks at once (so no task waits for
one that is not scheduled) and restarts them all on failure; the relay then starts over.

Bulk data (a task's lines, a fitted model) can skip the sockets: a relay made with ``spill=True`` makes a
directory holding a file with its secret (POSIX only); a task that can read that file (it runs where
the driver runs, as in local mode, or shares its file system) writes its parts there and sends only
their paths (:meth:`Peer.put`; :func:`take` reads them back, memory-mapped). Any other task sends them
inline, through the relay, as before. A part meant for another task may go through the files only when
that task sees them too (:func:`~rusket_core.spark.als._fit_gathered` spills lines only when every task
runs on one executor).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
from typing import Any

import numpy as np
import pyarrow as pa

_LEN = struct.Struct("!Q")
_GATHER, _ROUTE = b"G", b"R"  # the round's kind, first byte of every task's message (all tasks agree)
_OUTPUT = b"O"  # a task's result for the driver (outside the rounds): kept in Relay.outputs, acknowledged
_INLINE, _FILES = b"I", b"F"  # first byte of a :meth:`Peer.put` message: its parts, or their files' paths
_TOKEN = "token"  # the file in a spill directory that holds the relay's secret


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_LEN.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("relay peer closed the connection")
        got += k
    return bytes(buf)


def _recv(sock: socket.socket) -> bytes:
    return _recv_exact(sock, _LEN.unpack(_recv_exact(sock, _LEN.size))[0])


def pack(messages: list[bytes]) -> bytes:
    """Length-prefixed concatenation (the relay's reply)."""
    return b"".join(_LEN.pack(len(m)) + m for m in messages)


def unpack(blob: bytes) -> list[bytes]:
    """The messages of :func:`pack`."""
    out, pos = [], 0
    while pos < len(blob):
        (n,) = _LEN.unpack_from(blob, pos)
        out.append(blob[pos + _LEN.size : pos + _LEN.size + n])
        pos += _LEN.size + n
    return out


class Relay:
    """The driver side: ``address`` and ``secret`` go to the tasks (see :class:`Peer`); use as a context."""

    def __init__(self, host: str, spill: bool = False) -> None:
        self.secret = secrets.token_hex(16)
        self._server = socket.create_server((host, 0))
        self._server.settimeout(0.2)  # accept() wakes up to notice close
        self.address = (host, self._server.getsockname()[1])
        #: a directory for the tasks' bulk data (see the module docstring), removed on exit; None without
        #: ``spill`` and off POSIX (there a file still mapped cannot be removed)
        self.spill_dir: str | None = None
        if spill and os.name == "posix":
            self.spill_dir = tempfile.mkdtemp(prefix="rusket-relay-")
            with open(os.path.join(self.spill_dir, _TOKEN), "w") as f:
                f.write(self.secret)
        self._closed = False
        #: what each task sent with :meth:`Peer.deliver`, by partition (a restarted attempt overwrites)
        self.outputs: dict[int, bytes] = {}
        self._thread = threading.Thread(target=self._serve, name="rusket-relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed = True
        # wake the accept() the serving thread is blocked in now, not at its next timeout (0.15 s a fit);
        # where shutdown is refused, the timeout still ends the wait
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def _serve(self) -> None:
        while not self._closed:
            conns: dict[int, socket.socket] = {}
            try:
                n = None
                while n is None or len(conns) < n:
                    try:
                        sock, _ = self._server.accept()
                    except TimeoutError:
                        if self._closed:
                            return
                        continue
                    sock.settimeout(30.0)
                    hello = _recv(sock).decode().split()
                    sock.settimeout(None)
                    if len(hello) != 3 or not secrets.compare_digest(hello[0], self.secret):
                        sock.close()
                        continue
                    part, n = int(hello[1]), int(hello[2])
                    if part in conns:  # a restarted attempt: the old connection is dead
                        conns.pop(part).close()
                    conns[part] = sock
                while True:
                    got = [self._next(conns[p], p) for p in range(n)]
                    if got[0][:1] == _ROUTE:  # message q of task p goes to task q
                        sent = [unpack(g[1:]) for g in got]
                        for q in range(n):
                            _send(conns[q], pack([sent[p][q] for p in range(n)]))
                        continue
                    blob = pack([g[1:] for g in got])
                    for p in range(n):
                        _send(conns[p], blob)
            except OSError:  # tasks finished (or failed: their restart reconnects) or the relay closed
                pass
            finally:
                for sock in conns.values():
                    sock.close()


    def _next(self, sock: socket.socket, part: int) -> bytes:
        """The task's next round message; a result it delivers first is kept and acknowledged."""
        while (message := _recv(sock))[:1] == _OUTPUT:
            self.outputs[part] = message[1:]
            _send(sock, b"")
        return message


class Peer:
    """The task side: ``all_gather(bytes)`` returns every task's bytes, in partition order; ``all_to_all``
    exchanges one message per pair of tasks. Every task makes the same calls in the same order."""

    def __init__(
        self, address: tuple[str, int], secret: str, partition: int, n_tasks: int, spill_dir: str | None = None
    ) -> None:
        self._sock = socket.create_connection(address)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _send(self._sock, f"{secret} {partition} {n_tasks}".encode())
        self._partition = partition
        #: the relay's spill directory when this task can read its secret there (same host or file system)
        self.spill_dir = spill_dir if spill_dir is not None and _holds(spill_dir, secret) else None

    def put(self, name: str, parts: list[Any], spill: bool = True) -> bytes:
        """A message carrying ``parts`` (numpy arrays, Arrow tables or bytes) for :func:`take`: as files in the
        spill directory when this task sees it and ``spill`` (the reader sees it too; files named ``name``,
        unique per task and attempt), else (or when a file cannot be written) inline."""
        if spill and self.spill_dir is not None:
            attempt = secrets.token_hex(4)  # a restarted attempt never rewrites a file another one has mapped
            paths = [os.path.join(self.spill_dir, f"{name}-{self._partition}-{attempt}-{j}") for j in range(len(parts))]
            try:
                sizes = [_write(part, path) for part, path in zip(parts, paths, strict=True)]
                return _FILES + pack([f"{size} {path}".encode() for size, path in zip(sizes, paths, strict=True)])
            except OSError:  # e.g. the temp disk is full: the sockets still work
                for path in paths:
                    with contextlib.suppress(OSError):
                        os.remove(path)
        return _INLINE + pack([_raw(p) for p in parts])

    def all_gather(self, payload: bytes) -> list[bytes]:
        _send(self._sock, _GATHER + payload)
        return unpack(_recv(self._sock))

    def all_to_all(self, messages: list[bytes]) -> list[bytes]:
        """Send ``messages[q]`` to task ``q``; returns what every task sent this one, in partition order."""
        _send(self._sock, _ROUTE + pack(messages))
        return unpack(_recv(self._sock))

    def deliver(self, payload: bytes) -> None:
        """Hand ``payload`` to the driver (``Relay.outputs[partition]``), bypassing Spark's result path (no
        Arrow-to-row conversions); returns once the relay holds it, so the driver has it when the job ends."""
        _send(self._sock, _OUTPUT + payload)
        _recv(self._sock)

    def close(self) -> None:
        self._sock.close()


def _holds(directory: str, secret: str) -> bool:
    try:
        with open(os.path.join(directory, _TOKEN), "rb") as f:
            return secrets.compare_digest(f.read(), secret.encode())
    except OSError:
        return False


def table_bytes(table: pa.Table) -> bytes:
    """``table`` as Arrow IPC stream bytes (``pa.ipc.open_stream`` reads it back)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _raw(part: Any) -> bytes:
    if isinstance(part, pa.Table):
        return table_bytes(part)
    return part if isinstance(part, bytes) else np.ascontiguousarray(part).tobytes()


def _write(part: Any, path: str) -> int:
    """``part`` written to ``path``; its size in bytes. Every write error raises (``ndarray.tofile`` would
    not report one at close, e.g. a full disk)."""
    if isinstance(part, pa.Table):
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        return os.path.getsize(path)
    raw = part if isinstance(part, bytes) else memoryview(np.ascontiguousarray(part)).cast("B")
    with open(path, "wb") as f:
        f.write(raw)
    return len(raw)


def take(message: bytes) -> list[Any]:
    """The parts of a :meth:`Peer.put` message as buffers (``bytes``, or read-only memory maps of the spill
    files, which stay valid after the relay removes its directory: POSIX); an Arrow table part reads back
    with ``pa.ipc.open_stream``, an array part with ``np.frombuffer``. A spill file of another size than
    written raises."""
    parts = unpack(message[1:])
    if message[:1] == _INLINE:
        return parts
    out = []
    for part in parts:
        size, path = part.decode().split(" ", 1)
        if os.path.getsize(path) != int(size):
            raise OSError(f"spill file {path} holds {os.path.getsize(path)} bytes, {size} were written")
        out.append(pa.memory_map(path).read_buffer() if int(size) else b"")
    return out


class Solo:
    """A :class:`Peer` for a job of one task: every exchange returns what it sent, no socket."""

    def all_gather(self, payload: bytes) -> list[bytes]:
        return [payload]

    def all_to_all(self, messages: list[bytes]) -> list[bytes]:
        return messages

    def close(self) -> None:
        pass
