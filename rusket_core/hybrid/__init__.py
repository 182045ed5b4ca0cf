"""Hybrid recommender: a factor model's CF scores, association rules for carts, and item embeddings.

``Recommender`` works over any fitted :class:`~rusket_core.factorization.base.FactorModel` (ALS, BPR)
and implements the :class:`~rusket_core.recommender.RecommenderBase` contract, so evaluation scores
the blend exactly as it is published. Its pieces: ``rule_index`` (rules over an item vocabulary),
``embeddings`` (item vectors in any form), ``blend`` (the per-user CF + cosine blend on the shared
top-k driver), ``carts`` (reading carts, rules → similar → popular add-ons) and ``merge`` (users'
blend merged with their cart's rule add-ons).
"""

from rusket_core.hybrid.blend import strongest_items
from rusket_core.hybrid.carts import SOURCES
from rusket_core.hybrid.recommender import Recommender

__all__ = ["SOURCES", "Recommender", "strongest_items"]
