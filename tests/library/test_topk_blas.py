"""The BLAS thread limit of the blocked top-k driver covers the BLAS that numba's np.dot calls."""

import subprocess
import sys


def test_single_threaded_blas_limits_numbas_blas_in_a_fresh_process():
    # numba loads scipy's BLAS at a kernel's first call, after the limit is entered: a controller made
    # before that would not see it, and every numba thread would run a multi-threaded BLAS product
    code = (
        "from threadpoolctl import threadpool_info\n"
        "from rusket_core.factorization.topk import _single_threaded_blas\n"
        "with _single_threaded_blas(True):\n"
        "    libs = [(i['filepath'], i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "import scipy.linalg.cython_blas as b, os\n"
        "scipy_libs = [n for p, n in libs if os.sep + 'scipy.libs' + os.sep in p]\n"
        "print(scipy_libs)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[1]"
