"""Progress of long steps through `logging`: rate-limited counters and notices of numba compiles.

The library never prints. Long loops report through a `Progress` on their module's logger
(`rusket_core.factorization.als`, ...) at INFO, at most once per `every` seconds plus the last
step; kernels compiled on first use (no numba cache yet) are announced on `rusket_core.jit` with
their signature and compile time. Attach a handler to the `rusket_core` logger to see them (the
Dagster assets forward them to the run log).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from numba.core import event

__all__ = ["Progress"]

jit_logger = logging.getLogger("rusket_core.jit")


class Progress:
    """Log "<what> <done> of <total> <unit>" at most every `every` seconds, always at the end."""

    def __init__(self, logger: logging.Logger, what: str, total: int, unit: str = "", every: float = 5.0) -> None:
        self.logger, self.what, self.total, self.unit, self.every = logger, what, int(total), unit, every
        self._last = time.monotonic()
        self._start = self._last

    def due(self, done: int) -> bool:
        """Whether `update(done)` would log (lets callers skip computing extra figures)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return False
        return done >= self.total or time.monotonic() - self._last >= self.every

    def update(self, done: int, **figures: float) -> None:
        """Report `done` steps of `total` (with optional figures such as loss) when due."""
        if not self.due(done):
            return
        self._last = time.monotonic()
        extra = "".join(f", {name} {value:.6g}" for name, value in figures.items())
        unit = f" {self.unit}" if self.unit else ""
        self.logger.info(
            "%s: %d of %d%s (%.1f s)%s", self.what, done, self.total, unit, self._last - self._start, extra
        )


class _CompileNotices(event.Listener):
    """Announce each rusket_core kernel numba compiles (cache misses only), with its argument types."""

    def __init__(self) -> None:
        self._started: list[float] = []

    @staticmethod
    def _name(ev: Any) -> str | None:
        func = getattr(ev.data["dispatcher"], "py_func", None)
        module = getattr(func, "__module__", "") or ""
        return f"{module}.{func.__qualname__}" if module.startswith("rusket_core") else None

    def on_start(self, ev: Any) -> None:
        self._started.append(time.perf_counter())
        name = self._name(ev)
        if name is not None:
            args = ", ".join(str(a) for a in ev.data["args"])
            jit_logger.info("compiling %s(%s): first use on this machine, cached for later runs", name, args)

    def on_end(self, ev: Any) -> None:
        start = self._started.pop() if self._started else time.perf_counter()
        name = self._name(ev)
        if name is not None:
            jit_logger.info("compiled %s in %.1f s", name, time.perf_counter() - start)


_LISTENER = _CompileNotices()
event.register("numba:compile", _LISTENER)
