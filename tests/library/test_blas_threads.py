"""BLAS thread limits: the blocked top-k driver and the ALS fit run their BLAS products on one thread."""

import subprocess
import sys


def test_single_threaded_blas_limits_numbas_blas_in_a_fresh_process():
    # numba loads scipy's BLAS at a kernel's first call, after the limit is entered: a controller made
    # before that would not see it, and every numba thread would run a multi-threaded BLAS product
    code = (
        "from threadpoolctl import threadpool_info\n"
        "from rusket_core.threads import single_threaded_blas\n"
        "with single_threaded_blas(True):\n"
        "    libs = [(i['filepath'], i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "import scipy.linalg.cython_blas as b, os\n"
        "scipy_libs = [n for p, n in libs if os.sep + 'scipy.libs' + os.sep in p]\n"
        "print(scipy_libs)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]"


def test_the_als_fit_runs_its_blas_products_on_one_thread(monkeypatch):
    # the fit alternates BLAS products (Gram matrix, eigenbasis rotations) with numba regions: a BLAS pool
    # left at its default keeps spinning on the cores numba needs next (30 % of the fit at 7.4M entries)
    import scipy.sparse as sp

    import rusket_core.factorization.als as als_module
    from rusket_core import ALS
    from rusket_core.threads import _controller

    def blas_threads() -> list[int]:  # of the BLAS libraries the limit covers (those loaded when it was made)
        return [lib.num_threads for lib in _controller().lib_controllers if lib.user_api == "blas"]

    if max(blas_threads(), default=1) < 2:
        import pytest

        pytest.skip("BLAS runs on one thread here anyway")
    seen, real_eigenbasis = [], als_module.eigenbasis

    def recording(Y, reg):
        seen.extend(blas_threads())
        return real_eigenbasis(Y, reg)

    monkeypatch.setattr(als_module, "eigenbasis", recording)
    ALS(factors=4, iterations=2, random_state=0).fit(sp.random(30, 20, density=0.3, random_state=0, format="csr"))
    assert seen and set(seen) == {1}
    assert max(blas_threads()) >= 2  # restored after the fit

