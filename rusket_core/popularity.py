"""The popularity baseline: the items bought by the most users, the same list for everyone."""

from __future__ import annotations

import numpy as np

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel


class PopularityRecommender(FactorModel):
    """Recommends the items bought by the most users (ties: lower item index), the same list for everyone.

    A one-factor model (every user 1, every item its user count), so it shares the whole
    recommend / batch / export / save API of ALS and BPR.
    """

    def __init__(self, num_threads: int | None = None) -> None:
        super().__init__(num_threads)

    def _fit(self, interactions: Encoded) -> None:
        self.user_factors = np.ones((interactions.n_rows, 1), dtype=np.float32)
        self.item_factors = interactions.item_counts().astype(np.float32).reshape(-1, 1)
