"""Thread budgets of the kernels: numba's pool and the BLAS pool must not both use every core at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numba

_blas_controller: list = []  # the threadpoolctl controller, made at first use (None: no threadpoolctl)


def _controller() -> Any:
    if not _blas_controller:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - optional
            _blas_controller.append(None)
        else:
            # the BLAS numba's np.dot calls (scipy's), loaded now: the controller only sees the
            # libraries loaded when it is made, and numba loads it at a kernel's first call, later
            import scipy.linalg.cython_blas  # noqa: F401

            _blas_controller.append(ThreadpoolController())
    return _blas_controller[0]


@contextmanager
def single_threaded_blas(active: bool = True) -> Iterator[None]:
    """Limit BLAS to one thread while numba threads each run their own products, or while BLAS calls
    alternate with numba parallel regions (the ALS fit).

    Without it the two pools oversubscribe the cores (likely: OpenBLAS's threads keep spinning for a while
    after each call, on the cores numba needs next); the ALS fit at 7.4M entries measured 5.5–5.9 s with the
    BLAS default and 4.0–4.2 s limited (benchmarks/RESULTS.md, "The ALS fit with BLAS pinned to one thread").
    The limit is the library's, for the whole process, and each exit restores the counts its entry
    found: entries overlapping from several threads can leave the wrong count behind (and OpenBLAS 0.3.30
    did not apply a count set from another thread in every case here). Needs threadpoolctl (a dependency;
    without it BLAS keeps its default).
    """
    controller = _controller() if active else None
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@contextmanager
def one_thread_if(small: bool) -> Iterator[None]:
    """One numba thread while ``small``: starting a parallel region wakes the other threads, which
    on a busy machine costs more than a small kernel's whole computation (the kernels that use
    this give the same result at any thread count)."""
    previous = numba.get_num_threads()
    if not small or previous == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
