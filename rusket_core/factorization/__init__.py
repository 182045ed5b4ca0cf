"""Factor recommenders (ALS, BPR) on numba kernels; the shared top-k kernel is in ``.topk``."""

from rusket_core.factorization.als import ALS
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.bpr import BPR

__all__ = ["ALS", "BPR", "FactorModel"]
