"""The one contract every recommender implements (factor models, popularity, the hybrid).

Evaluation, the pipeline's quality gate and users rely only on this contract, so any recommender
(ALS, BPR, :class:`~rusket_core.popularity.PopularityRecommender`, the hybrid
:class:`~rusket_core.hybrid.Recommender`) is scored by the same code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from rusket_core.encoding import Encoded, Labels

#: columns of every ``batch_recommend`` frame, in order
BATCH_COLUMNS = ("user_id", "item_id", "score")


class RecommenderBase(ABC):
    """A fitted recommender: top-``n`` unseen items for a batch of users, by the users' own labels.

    Implementations provide ``users`` (the users they can answer for), ``items`` (the catalogue they
    can recommend from), ``user_items`` (the interactions treated as seen, users × items in those
    label spaces) and :meth:`batch_recommend`. ``user_col`` / ``item_col`` name the columns of the
    frames it was built from (None when it was not), the defaults of evaluation frames.
    """

    user_col: str | None = None
    item_col: str | None = None

    @property
    @abstractmethod
    def users(self) -> Labels:
        """Labels of the users this recommender answers for."""

    @property
    @abstractmethod
    def items(self) -> Labels:
        """Labels of every item it may recommend (the catalogue for coverage)."""

    @property
    @abstractmethod
    def user_items(self) -> Encoded:
        """The interactions excluded with ``exclude_seen`` (rows: ``users``)."""

    @abstractmethod
    def batch_recommend(
        self, n: int = 10, users: Any = None, exclude_seen: bool = True, format: str | None = None
    ) -> Any:
        """[user_id, item_id, score] rows: the best ``n`` items of every user (or ``users``).

        Rows come grouped by user in request order, best first; with ``exclude_seen`` no item of
        the user's ``user_items`` row appears. Labels are the caller's own ids; ``format`` picks the
        frame library ("pandas", "polars", "arrow", "spark"). Unknown users are a ``KeyError``.
        """
