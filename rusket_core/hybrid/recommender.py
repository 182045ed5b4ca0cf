"""The hybrid ``Recommender``: the user blend, rule add-ons for carts and their merge, behind one contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from rusket_core.encoding import Encoded, Labels
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.topk import csr_rows
from rusket_core.frames import make_frame, resolve_format, to_arrow_table
from rusket_core.hybrid.blend import UserBlend, check_weight
from rusket_core.hybrid.carts import SOURCES, CartAddOns, EncodedCarts, as_items, encode_carts
from rusket_core.hybrid.embeddings import ItemEmbeddings
from rusket_core.hybrid.merge import merge_with_rules
from rusket_core.hybrid.rule_index import RuleIndex
from rusket_core.recommender import BATCH_COLUMNS, RecommenderBase


class Recommender(RecommenderBase):
    """CF recommendations blended with item-embedding similarity, and rule-based cart add-ons.

    ``model``: a fitted factor model (ALS / BPR). ``rules_df``: an association-rules frame (lists of
    labels in ``antecedents`` / ``consequents`` plus ``confidence`` and ``lift``), multi-item rules
    included; an empty one means cart add-ons fall back to similar and popular items.
    ``item_embeddings``: an (n_items, d) array aligned to ``model.items``, a mapping label -> vector,
    or a frame with a label column (``label``, ``item``, ``item_id`` or ``id``, or the only non-vector
    column) and one vector column (``vector``, or the only list column) — e.g.
    ``export_item_factors()`` of another model. Model items missing from the embeddings get a zero
    vector (cosine 0); their count is ``missing_embeddings``.

    ``alpha``, ``rules_weight`` and ``carts`` (with ``cart_col`` / ``cart_item_col`` for a frame)
    are the defaults of :meth:`recommend_for_users`; :meth:`batch_recommend` (the
    :class:`~rusket_core.recommender.RecommenderBase` contract) uses them, so evaluating this
    object scores exactly the blend it publishes.
    """

    def __init__(
        self,
        model: FactorModel,
        rules_df: Any = None,
        item_embeddings: Any = None,
        *,
        alpha: float = 0.7,
        rules_weight: float = 0.3,
        carts: Any = None,
        cart_col: str | None = None,
        cart_item_col: str | None = None,
    ) -> None:
        if not isinstance(model, FactorModel):
            raise TypeError(f"model must be a fitted factor model (ALS, BPR), got {type(model).__name__}")
        if model.user_factors is None or model.item_factors is None:
            raise ValueError(f"model is not fitted: call {type(model).__name__}.fit() first")
        self.model = model
        self.rules_df = rules_df
        self.user_col, self.item_col = model.user_col, model.item_col
        self._format = resolve_format(None, like=rules_df, default=model.output_format)
        self.alpha = check_weight("alpha", alpha)
        self.rules_weight = check_weight("rules_weight", rules_weight)
        self._index = RuleIndex(rules_df, model.items)
        embeddings = None if item_embeddings is None else ItemEmbeddings(item_embeddings, model.items)
        #: model items without an embedding (cosine 0 for them)
        self.missing_embeddings = 0 if embeddings is None else embeddings.missing
        self._blend = UserBlend(model, embeddings)
        self._add_ons = CartAddOns(model, self._index)
        self._carts = None if carts is None else encode_carts(carts, cart_col, cart_item_col, self._index)
        self._cart_rows: np.ndarray | None = None  # model user row of each of ``self._carts``
        self._seen: Encoded | None = None

    # ------------------------------------------------------------------------------------------
    # the RecommenderBase contract

    @property
    def users(self) -> Labels:
        """The model's users."""
        return self.model.users

    @property
    def items(self) -> Labels:
        """Every recommendable item: the model's items and the items the rules name."""
        return self._index.vocab

    @property
    def user_items(self) -> Encoded:
        """The model's training interactions, with item indices in :attr:`items`."""
        if self._seen is None:
            enc = self.model.user_items
            rows = np.repeat(np.arange(enc.n_rows, dtype=np.int64), np.diff(enc.indptr))
            ids = self._index.model_to_vocab[enc.indices]
            order = np.lexsort((ids, rows))
            data = None if enc.data is None else enc.data[order]
            self._seen = Encoded(enc.indptr, ids[order].astype(np.int32), data, enc.rows, self._index.vocab)
        return self._seen

    @property
    def output_format(self) -> str:
        """The frame library outputs use by default (the rules frame's, else the model's)."""
        return self._format

    def batch_recommend(
        self, n: int = 10, users: Any = None, exclude_seen: bool = True, format: str | None = None
    ) -> Any:
        """[user_id, item_id, score] rows of :meth:`recommend_for_users` with this object's
        ``alpha``, ``rules_weight`` and ``carts``: exactly what it publishes."""
        out = to_arrow_table(self.recommend_for_users(users=users, n=n, format="arrow", exclude_seen=exclude_seen))
        out = out.select(list(BATCH_COLUMNS))
        return make_frame(dict(zip(out.column_names, out.columns, strict=True)), resolve_format(format, default=self._format))

    # ------------------------------------------------------------------------------------------
    # users

    def recommend_for_user(
        self,
        user_id: Any,
        n: int = 10,
        alpha: float | None = None,
        target_item_for_semantic: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``n`` unseen items for one user: (item labels, scores), best first.

        Without ``item_embeddings`` this is the model's CF ranking (``model.recommend_items``, raw
        scores). With them: ``alpha * CF + (1 - alpha) * cosine(item, target)``, each min-max
        normalised over the user's unseen items (scores in [0, 1]). The target is
        ``target_item_for_semantic`` or else the user's strongest interaction (largest summed rating
        in the training data, ties to the first item in label order; the model keeps no timestamps, so
        "most recent" is not available). A user with no interactions and no target gets CF alone.
        """
        rows = self._user_rows([user_id])
        targets = None if target_item_for_semantic is None else [target_item_for_semantic]
        idx, scores = self._blend.topk(rows, n, self.alpha if alpha is None else alpha, targets)
        keep = idx[0] >= 0
        return self.model.items.take(idx[0][keep]), np.ascontiguousarray(scores[0][keep], dtype=np.float32)

    def recommend_for_users(
        self,
        users: Any = None,
        n: int = 10,
        alpha: float | None = None,
        targets: Any = None,
        carts: Any = None,
        rules_weight: float | None = None,
        cart_col: str | None = None,
        item_col: str | None = None,
        format: str | None = None,
        exclude_seen: bool = True,
    ) -> Any:
        """Batch :meth:`recommend_for_user` for every user (or ``users``): [user_id, item_id, score] rows.

        ``alpha``, ``rules_weight`` and ``carts`` default to the ones given to the constructor.
        ``targets`` (optional) gives one semantic target item per requested user (aligned with
        ``users``); by default each user's strongest interaction. Computed block by block (BLAS
        scores, a parallel numba blend and the shared top-k kernel), never a dense users × items matrix.

        ``carts`` adds the rules: each user's current basket (e.g. their last order) as a mapping
        user_id -> items or a long frame with ``cart_col`` (user ids) and ``item_col``. Rule add-ons
        for the basket (as in :meth:`recommend_for_carts`, rules only) are blended with the model
        part, min-max normalised per user: score = (1 - rules_weight) * model + rules_weight *
        confidence, over 2n candidates of each part. The frame is then [user_id, rank, item_id, score,
        model_score, rule_score, source], ``source`` being "model", "rules" or "model+rules" and a
        part's score null where it did not propose the item. Items in the user's training row
        (unless ``exclude_seen=False``) or cart are never returned; a rule item unknown to the model
        can be. A frame of carts sets the output's library unless ``format`` is given.
        """
        alpha = self.alpha if alpha is None else check_weight("alpha", alpha)
        rules_weight = self.rules_weight if rules_weight is None else check_weight("rules_weight", rules_weight)
        rows = np.arange(len(self.model.users), dtype=np.int64) if users is None else self._user_rows(users)
        if targets is not None:
            targets = list(targets)
            if len(targets) != len(rows):
                raise ValueError(f"targets has {len(targets)} entries for {len(rows)} users")
        encoded = self._carts if carts is None else encode_carts(carts, cart_col, item_col, self._index)
        if encoded is not None:
            return self._users_with_rules(rows, n, alpha, targets, encoded, rules_weight, format, exclude_seen)
        idx, scores = self._blend.topk(rows, n, alpha, targets, exclude_seen=exclude_seen)
        keep = idx >= 0
        return make_frame(
            {
                "user_id": self.model.users.take(np.repeat(rows, keep.sum(axis=1))),
                "item_id": self.model.items.take(idx[keep]),
                "score": np.ascontiguousarray(scores[keep], dtype=np.float32),
            },
            resolve_format(format, default=self.model.output_format),
        )

    def _users_with_rules(self, rows, n, alpha, targets, carts: EncodedCarts, rules_weight, format, exclude_seen) -> Any:
        """The model part and the rule add-ons of each user's cart, merged by item (see recommend_for_users)."""
        width = max(0, int(n))
        _, first = np.unique(rows, return_index=True)  # a user asked for twice is answered once
        keep = np.sort(first)
        rows = rows[keep]
        targets = None if targets is None else [targets[i] for i in keep]
        idx, scores = self._blend.topk(rows, 2 * width, alpha, targets, scaled=True, exclude_seen=exclude_seen)
        carts, cart_rows = self._carts_of(carts, rows)
        rules = self._index.match(carts.indptr, carts.items, 2 * width)  # rules only: no similar/popular fill
        seen = self.model.user_items if exclude_seen else None
        merged = merge_with_rules(rows, width, idx, scores, carts, cart_rows, rules, self._index, seen, rules_weight)
        return make_frame(
            {
                "user_id": self.model.users.take(rows[merged["pos"]]),
                "rank": merged["rank"],
                "item_id": self._index.vocab.to_arrow().take(pa.array(merged["item"])),
                **{name: merged[name] for name in ("score", "model_score", "rule_score", "source")},
            },
            resolve_format(format, like=carts.like, default=self.model.output_format),
        )

    def _carts_of(self, carts: EncodedCarts, rows: np.ndarray) -> tuple[EncodedCarts, np.ndarray]:
        """Only the carts of users ``rows`` (model user rows), with each cart's user row: a chunk of
        users scores its own carts, not every cart."""
        if carts is self._carts and self._cart_rows is not None:
            cart_rows = self._cart_rows
        else:
            try:
                cart_rows = self.model.users.indices_of(carts.ids.to_numpy(zero_copy_only=False))
            except KeyError as err:
                raise KeyError(f"carts: {err.args[0]} (carts are keyed by the model's user ids)") from None
            if carts is self._carts:
                self._cart_rows = cart_rows
        wanted = np.zeros(len(self.model.users), dtype=bool)
        wanted[rows] = True
        pick = np.flatnonzero(wanted[cart_rows])
        if len(pick) == len(cart_rows):
            return carts, cart_rows
        indptr, items = csr_rows(carts.indptr, carts.items, pick)
        return EncodedCarts(carts.ids.take(pa.array(pick)), indptr, items.astype(np.int64), carts.like), cart_rows[pick]

    def _user_rows(self, users: Any) -> np.ndarray:
        if np.isscalar(users) or isinstance(users, str):
            users = [users]
        return self.model.users.indices_of(users)

    # ------------------------------------------------------------------------------------------
    # carts

    def recommend_for_cart(self, cart: Any, n: int = 10, format: str | None = None) -> Any:
        """Add-ons for one cart as a frame [item_id, score, source], best first within each source.

        Sources, in fallback order: ``"rules"`` (consequents of rules whose antecedents are all in
        the cart, ranked by confidence then lift; score = confidence of the best such rule),
        ``"similar"`` (model items with positive mean cosine similarity of factors to the cart's
        items; score = that mean cosine), ``"popular"`` (model items by the share of users who have
        them; score = that share). Never a cart item; cart items unknown to the model and the rules
        are allowed (they match nothing). Fewer than ``n`` rows only when the catalogue runs out.
        """
        out = self.recommend_for_carts([as_items(cart)], n=n, format="arrow")
        out = out.drop_columns(["cart_id", "rank"])
        return make_frame(dict(zip(out.column_names, out.columns, strict=True)), resolve_format(format, default=self._format))

    def recommend_for_carts(
        self,
        carts: Any,
        n: int = 10,
        cart_col: str | None = None,
        item_col: str | None = None,
        format: str | None = None,
    ) -> Any:
        """Batch :meth:`recommend_for_cart`: [cart_id, rank, item_id, score, source] rows, by cart then rank.

        ``carts``: a list of carts (ids 0..m-1), a mapping cart_id -> items, or a long frame with
        ``cart_col`` / ``item_col`` (one row per cart × item). Numba kernels do the rule matching
        and the fallback merge; similarity scores come from BLAS blocks and the shared top-k kernel.
        """
        encoded = encode_carts(carts, cart_col, item_col, self._index)
        add_ons = self._add_ons.top(encoded, n)
        m, width = add_ons.idx.shape
        keep = np.arange(width)[None, :] < add_ons.count[:, None]
        sources = pa.DictionaryArray.from_arrays(pa.array(add_ons.source[keep]), pa.array(list(SOURCES)))
        return make_frame(
            {
                "cart_id": encoded.ids.take(pa.array(np.repeat(np.arange(m), add_ons.count))),
                "rank": (np.nonzero(keep)[1] + 1).astype(np.int64),
                "item_id": self._index.vocab.to_arrow().take(pa.array(add_ons.idx[keep])),
                "score": add_ons.score[keep],
                "source": sources.cast(pa.string()),
            },
            resolve_format(format, like=encoded.like, default=self._format),
        )
