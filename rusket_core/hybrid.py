"""Hybrid recommender: a factor model's CF scores, association rules for carts, and item embeddings.

``Recommender`` works over any fitted factor model exposing ``user_factors``, ``item_factors``,
``users``, ``items`` and ``user_items`` (ALS, BPR). Items named by the rules but unknown to the model
can still be recommended for carts; similarity and popularity fills come from the model's items.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit, prange

from rusket_core.analytics import label_kind, numeric_column, rules_table
from rusket_core.encoding import Labels
from rusket_core.factorization.topk import (
    BLOCK_SCORES,
    csr_rows,
    select_row,  # the shared top-k row selection (one compiled function for every kernel)
    single_threaded_blas,
    topk,
)
from rusket_core.frames import column, input_format, make_frame, resolve_format, to_arrow_table
from rusket_core.progress import Progress

logger = logging.getLogger(__name__)

#: ``source`` values in cart recommendations, in fallback order
SOURCES = ("rules", "similar", "popular")

_KEY_COLUMNS = ("label", "item", "item_id", "id")


# ---------------------------------------------------------------------------------------------------------
# kernels


@njit(cache=True)
def _blend_row(row, srow, use_sem, mask, excl_indices, e0, e1, alpha):
    """In place: row = alpha * minmax(row) + (1 - alpha) * minmax(srow) over the row's candidates.

    Min-max runs over the candidate (non-excluded) items; a constant signal contributes 0; without
    a semantic target the CF part is used alone (weight 1); excluded items become -inf.
    """
    n_items = row.shape[0]
    for e in range(e0, e1):
        mask[excl_indices[e]] = True
    cmin, cmax = np.float32(np.inf), np.float32(-np.inf)
    smin, smax = np.float32(np.inf), np.float32(-np.inf)
    for j in range(n_items):
        if not mask[j]:
            x = row[j]
            cmin = min(cmin, x)
            cmax = max(cmax, x)
    if use_sem:
        for j in range(n_items):
            if not mask[j]:
                y = srow[j]
                smin = min(smin, y)
                smax = max(smax, y)
    # the blend is affine in (cf, sem): score = ac * cf + as_ * sem + b
    ac = np.float32(0.0)
    as_ = np.float32(0.0)
    if cmax > cmin:
        ac = np.float32((alpha if use_sem else 1.0) / (cmax - cmin))
    if use_sem and smax > smin:
        as_ = np.float32((1.0 - alpha) / (smax - smin))
    b = np.float32(-(ac * cmin if ac != 0 else 0.0) - (as_ * smin if as_ != 0 else 0.0))
    for j in range(n_items):
        row[j] = ac * row[j] + as_ * srow[j] + b
    for e in range(e0, e1):
        row[excl_indices[e]] = -np.inf
        mask[excl_indices[e]] = False


@njit(parallel=True, cache=True)
def _blend_topk_kernel(
    query, items_t, target, emb_t, has_sem, excl_indptr, excl_indices, alpha, out_idx, out_val,
    block_rows, n_chunks,
):  # fmt: skip
    """Per block of users (one pair of BLAS products per block, per thread): CF and cosine scores,
    the blend, then the shared top-k row selection."""
    m = query.shape[0]
    n_items = items_t.shape[1]
    n = out_idx.shape[1]
    n_blocks = (m + block_rows - 1) // block_rows
    per = (n_blocks + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        cf = np.empty((block_rows, n_items), np.float32)
        sem = np.empty((block_rows, n_items), np.float32)
        mask = np.zeros(n_items, np.bool_)
        hv = np.empty(n, np.float32)
        hi = np.empty(n, np.int32)
        for b in range(c * per, min(n_blocks, (c + 1) * per)):
            r0 = b * block_rows
            r1 = min(m, r0 + block_rows)
            np.dot(query[r0:r1], items_t, cf[: r1 - r0])
            np.dot(target[r0:r1], emb_t, sem[: r1 - r0])
            for r in range(r0, r1):
                row = cf[r - r0]
                e0, e1 = excl_indptr[r], excl_indptr[r + 1]
                _blend_row(row, sem[r - r0], has_sem[r], mask, excl_indices, e0, e1, alpha)
                select_row(row, mask, excl_indices, e0, e1, hv, hi, out_idx[r], out_val[r])


@njit(cache=True)
def _rule_better(c1, l1, j1, c2, l2, j2):
    """Rule ranking: higher confidence, then higher lift, then lower item index."""
    return c1 > c2 or (c1 == c2 and (l1 > l2 or (l1 == l2 and j1 < j2)))


@njit(parallel=True, cache=True)
def _cart_rules_kernel(
    cart_indptr, cart_items, first_ptr, rule_ids, ant_indptr, ant_items, con_indptr, con_items,
    conf, lift, n_vocab, out_idx, out_conf, out_lift, out_count, n_chunks,
):  # fmt: skip
    """Per cart: consequents of rules whose antecedents lie in the cart, best (confidence, lift) first.

    Rules are looked up by their smallest antecedent item (``first_ptr`` / ``rule_ids``), so a cart
    only visits rules that can match. An item's score is its best matching rule.
    """
    m = len(cart_indptr) - 1
    n = out_idx.shape[1]
    per = (m + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        in_cart = np.zeros(n_vocab, np.bool_)
        best_conf = np.full(n_vocab, -np.inf)
        best_lift = np.full(n_vocab, -np.inf)
        touched = np.empty(n_vocab, np.int64)
        for q in range(c * per, min(m, (c + 1) * per)):
            for e in range(cart_indptr[q], cart_indptr[q + 1]):
                in_cart[cart_items[e]] = True
            nt = 0
            for e in range(cart_indptr[q], cart_indptr[q + 1]):
                a = cart_items[e]
                for p in range(first_ptr[a], first_ptr[a + 1]):
                    r = rule_ids[p]
                    ok = True
                    for x in range(ant_indptr[r], ant_indptr[r + 1]):
                        if not in_cart[ant_items[x]]:
                            ok = False
                            break
                    if not ok:
                        continue
                    for x in range(con_indptr[r], con_indptr[r + 1]):
                        j = con_items[x]
                        if in_cart[j]:
                            continue
                        if best_conf[j] == -np.inf:
                            touched[nt] = j
                            nt += 1
                        if conf[r] > best_conf[j] or (conf[r] == best_conf[j] and lift[r] > best_lift[j]):
                            best_conf[j] = conf[r]
                            best_lift[j] = lift[r]
            cnt = 0
            for t in range(nt):
                j = touched[t]
                cj, lj = best_conf[j], best_lift[j]
                pos = cnt
                while pos > 0 and _rule_better(cj, lj, j, out_conf[q, pos - 1], out_lift[q, pos - 1], out_idx[q, pos - 1]):
                    pos -= 1
                if pos < n:
                    for s in range(min(cnt, n - 1), pos, -1):
                        out_idx[q, s] = out_idx[q, s - 1]
                        out_conf[q, s] = out_conf[q, s - 1]
                        out_lift[q, s] = out_lift[q, s - 1]
                    out_idx[q, pos] = j
                    out_conf[q, pos] = cj
                    out_lift[q, pos] = lj
                    cnt = min(cnt + 1, n)
                best_conf[j] = -np.inf
                best_lift[j] = -np.inf
            out_count[q] = cnt
            for e in range(cart_indptr[q], cart_indptr[q + 1]):
                in_cart[cart_items[e]] = False


@njit(parallel=True, cache=True)
def _fill_kernel(
    cart_indptr, cart_items, rule_idx, rule_conf, rule_count, sim_idx, sim_val, pop_order, pop_score,
    n_vocab, out_idx, out_score, out_source, out_count, n_chunks,
):  # fmt: skip
    """Per cart: rule items, then similar items, then popular items, skipping cart and repeated items."""
    m = len(cart_indptr) - 1
    n = out_idx.shape[1]
    per = (m + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        taken = np.zeros(n_vocab, np.bool_)
        for q in range(c * per, min(m, (c + 1) * per)):
            for e in range(cart_indptr[q], cart_indptr[q + 1]):
                taken[cart_items[e]] = True
            k = 0
            for t in range(rule_count[q]):
                j = rule_idx[q, t]
                out_idx[q, k], out_score[q, k], out_source[q, k] = j, rule_conf[q, t], 0
                taken[j] = True
                k += 1
            for t in range(sim_idx.shape[1]):
                if k == n:
                    break
                j = sim_idx[q, t]
                if j < 0:
                    break
                if taken[j]:
                    continue
                out_idx[q, k], out_score[q, k], out_source[q, k] = j, sim_val[q, t], 1
                taken[j] = True
                k += 1
            for t in range(len(pop_order)):
                if k == n:
                    break
                j = pop_order[t]
                if taken[j]:
                    continue
                out_idx[q, k], out_score[q, k], out_source[q, k] = j, pop_score[t], 2
                taken[j] = True
                k += 1
            out_count[q] = k
            for e in range(cart_indptr[q], cart_indptr[q + 1]):
                taken[cart_items[e]] = False
            for t in range(k):
                taken[out_idx[q, t]] = False


def _n_chunks(m: int) -> int:
    return int(max(1, min(m, 4 * numba.get_num_threads())))


# ---------------------------------------------------------------------------------------------------------
# the recommender


class Recommender:
    """CF recommendations blended with item-embedding similarity, and rule-based cart add-ons.

    ``model``: a fitted factor model (ALS / BPR). ``rules_df``: an association-rules frame (lists of
    labels in ``antecedents`` / ``consequents`` plus ``confidence`` and ``lift``), multi-item rules
    included. ``item_embeddings``: an (n_items, d) array aligned to ``model.items``, a mapping
    label -> vector, or a frame with a label column (``label``, ``item``, ``item_id`` or ``id``, or the
    only non-vector column) and one vector column (``vector``, or the only list column) — e.g.
    ``export_item_factors()`` of another model. Model items missing from the embeddings get a zero
    vector (cosine 0); their count is ``missing_embeddings``.
    """

    def __init__(self, model: Any, rules_df: Any = None, item_embeddings: Any = None) -> None:
        for attr in ("user_factors", "item_factors", "users", "items", "user_items"):
            if getattr(model, attr, None) is None:
                raise ValueError(f"model has no {attr!r}: pass a fitted factor model (ALS, BPR)")
        self.model = model
        self.rules_df = rules_df
        self._format = resolve_format(None, like=rules_df, default=getattr(model, "_format", None) or "pandas")
        self._unit = _unit_rows(model.item_factors)
        counts = model.user_items.item_counts()
        self._pop_model = np.lexsort((np.arange(len(counts)), -counts)).astype(np.int64)
        self._pop_score = (counts[self._pop_model] / max(model.user_items.n_rows, 1)).astype(np.float64)
        self._build_rules(rules_df)
        self.missing_embeddings = 0
        self._emb = self._emb_labels = self._emb_all = None
        if item_embeddings is not None:
            self._build_embeddings(item_embeddings)

    # ------------------------------------------------------------------------------------------
    # users

    def recommend_for_user(
        self,
        user_id: Any,
        n: int = 10,
        alpha: float = 0.7,
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
        idx, scores = self._user_topk(rows, n, alpha, targets)
        keep = idx[0] >= 0
        return self.model.items.take(idx[0][keep]), np.ascontiguousarray(scores[0][keep], dtype=np.float32)

    def recommend_for_users(
        self,
        users: Any = None,
        n: int = 10,
        alpha: float = 0.7,
        targets: Any = None,
        carts: Any = None,
        rules_weight: float = 0.3,
        cart_col: str | None = None,
        item_col: str | None = None,
        format: str | None = None,
    ) -> Any:
        """Batch :meth:`recommend_for_user` for every user (or ``users``): [user_id, item_id, score] rows.

        ``targets`` (optional) gives one semantic target item per requested user (aligned with
        ``users``); by default each user's strongest interaction. Computed block by block (BLAS
        scores, a parallel numba blend and the shared top-k kernel), never a dense users × items matrix.

        ``carts`` adds the rules: each user's current basket (e.g. their last order) as a mapping
        user_id -> items or a long frame with ``cart_col`` (user ids) and ``item_col``. Rule add-ons
        for the basket (as in :meth:`recommend_for_carts`, rules only) are blended with the model
        part, min-max normalised per user: score = (1 - rules_weight) * model + rules_weight *
        confidence, over 2n candidates of each part. The frame is then [user_id, rank, item_id, score,
        model_score, rule_score, source], ``source`` being "model", "rules" or "model+rules" and a
        part's score null where it did not propose the item. Items in the user's training row or
        cart are never returned; a rule item unknown to the model can be. A frame of carts sets the
        output's library unless ``format`` is given.
        """
        rows = np.arange(len(self.model.users), dtype=np.int64) if users is None else self._user_rows(users)
        if targets is not None:
            targets = list(targets)
            if len(targets) != len(rows):
                raise ValueError(f"targets has {len(targets)} entries for {len(rows)} users")
        if carts is not None:
            return self._users_with_rules(rows, n, alpha, targets, carts, rules_weight, cart_col, item_col, format)
        idx, scores = self._user_topk(rows, n, alpha, targets)
        keep = idx >= 0
        return make_frame(
            {
                "user_id": self.model.users.take(np.repeat(rows, keep.sum(axis=1))),
                "item_id": self.model.items.take(idx[keep]),
                "score": np.ascontiguousarray(scores[keep], dtype=np.float32),
            },
            resolve_format(format, default=getattr(self.model, "_format", None) or "pandas"),
        )

    def _users_with_rules(self, rows, n, alpha, targets, carts, rules_weight, cart_col, item_col, format) -> Any:
        """The model part and the rule add-ons of each user's cart, merged by item (see recommend_for_users)."""
        import polars as pl

        if not 0.0 <= float(rules_weight) <= 1.0:
            raise ValueError(f"rules_weight must be in [0, 1], got {rules_weight!r}")
        width = max(0, int(n))
        _, first = np.unique(rows, return_index=True)  # a user asked for twice is answered once
        keep = np.sort(first)
        rows = rows[keep]
        targets = None if targets is None else [targets[i] for i in keep]
        idx, scores = self._user_topk(rows, 2 * width, alpha, targets, scaled=True)
        has = idx >= 0
        # position of each model user row in the request
        pos_of_row = np.full(len(self.model.users), -1, dtype=np.int64)
        pos_of_row[rows] = np.arange(len(rows))
        model_part = pl.DataFrame({
            "pos": pos_of_row[np.repeat(rows, has.sum(axis=1))],
            "item": self._model_to_vocab[idx[has]].astype(np.int64),
            "model_score": scores[has].astype(np.float64),
        })  # fmt: skip
        found = self._cart_topk(carts, 2 * width, cart_col, item_col)
        cart_ids, like, r_idx, r_score, r_source, r_count, cart_ptr, cart_items = found
        try:
            cart_rows = self.model.users.indices_of(cart_ids.to_numpy(zero_copy_only=False))
        except KeyError as err:
            raise KeyError(f"carts: {err.args[0]} (carts are keyed by the model's user ids)") from None
        in_cart = pl.DataFrame(
            {"pos": pos_of_row[np.repeat(cart_rows, np.diff(cart_ptr))], "item": cart_items.astype(np.int64)}
        )
        is_rule = (np.arange(r_idx.shape[1])[None, :] < r_count[:, None]) & (r_source == SOURCES.index("rules"))
        rule_pos = pos_of_row[np.repeat(cart_rows, is_rule.sum(axis=1))]
        rules_part = pl.DataFrame(
            {"pos": rule_pos, "item": r_idx[is_rule].astype(np.int64), "rule_score": r_score[is_rule]}
        ).filter(pl.col("pos") >= 0)  # carts of users not asked for
        # rule items the user already has (the model part excludes them itself)
        enc = self.model.user_items
        user_row = rows[rules_part["pos"].to_numpy()]
        model_item = self._vocab_to_model[rules_part["item"].to_numpy()]
        seen = np.zeros(len(rules_part), dtype=bool)
        known = model_item >= 0
        seen[known] = _in_rows(enc.indptr, enc.indices, enc.n_items, user_row[known], model_item[known])
        rules_part = rules_part.filter(~pl.Series(seen))
        w = float(rules_weight)
        merged = (
            model_part.join(in_cart, on=["pos", "item"], how="anti")
            .join(rules_part, on=["pos", "item"], how="full", coalesce=True)
            .with_columns(
                score=(1 - w) * pl.col("model_score").fill_null(0.0) + w * pl.col("rule_score").fill_null(0.0),
                source=pl.when(pl.col("model_score").is_not_null() & pl.col("rule_score").is_not_null())
                .then(pl.lit("model+rules"))
                .when(pl.col("rule_score").is_not_null())
                .then(pl.lit("rules"))
                .otherwise(pl.lit("model")),
            )
            .sort(["pos", "score", "item"], descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1).over("pos").cast(pl.Int64))
            .filter(pl.col("rank") <= width)
        )
        return make_frame(
            {
                "user_id": self.model.users.take(rows[merged["pos"].to_numpy()]),
                "rank": merged["rank"].to_numpy(),
                "item_id": self._vocab.to_arrow().take(pa.array(merged["item"].to_numpy())),
                "score": merged["score"].to_numpy(),
                "model_score": merged["model_score"].to_arrow(),
                "rule_score": merged["rule_score"].to_arrow(),
                "source": merged["source"].to_arrow().cast(pa.string()),
            },
            resolve_format(format, like=like, default=getattr(self.model, "_format", None) or "pandas"),
        )

    def _user_rows(self, users: Any) -> np.ndarray:
        if np.isscalar(users) or isinstance(users, str):
            users = [users]
        return self.model.users.indices_of(users)

    def _user_topk(
        self, rows: np.ndarray, n: int, alpha: float, targets: list | None, scaled: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n (model item index, score) per user row, -1 padded; the blend when embeddings exist.

        Without embeddings the scores are the model's raw ones, or min-max scaled per user (over
        the unseen items) when ``scaled``."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        model = self.model
        enc = model.user_items
        ptr, ind = csr_rows(enc.indptr, enc.indices, rows)
        n_items = len(model.items)
        width = max(0, min(int(n), n_items))
        if self._emb is None and targets is not None:
            raise ValueError("a semantic target needs item_embeddings= on the Recommender")
        if self._emb is None and not scaled:
            return topk(model.user_factors[rows], model.item_factors, width, ptr, ind)
        m = len(rows)
        if self._emb is None:  # the blend kernel with no semantic part: CF scaled to [0, 1]
            emb = np.zeros((n_items, 1), dtype=np.float32)
            target_vecs, has_sem = np.zeros((m, 1), dtype=np.float32), np.zeros(m, dtype=np.bool_)
        else:
            emb = self._emb
            target_vecs, has_sem = self._target_vectors(rows, targets)
        out_idx = np.empty((m, width), dtype=np.int32)
        out_val = np.empty((m, width), dtype=np.float32)
        if not m or not width:
            return out_idx, out_val
        block_rows = int(max(1, min(m, BLOCK_SCORES // max(n_items, 1))))
        n_chunks = int(max(1, min((m + block_rows - 1) // block_rows, numba.get_num_threads())))
        query = np.ascontiguousarray(model.user_factors[rows], dtype=np.float32)
        items_t = np.ascontiguousarray(model.item_factors.T, dtype=np.float32)
        target_vecs, emb_t = np.ascontiguousarray(target_vecs, dtype=np.float32), np.ascontiguousarray(emb.T)
        # slices of users (each still many blocks per thread) so progress can be reported between them
        step = max(block_rows * n_chunks * 8, -(-m // 20))
        progress = Progress(logger, f"scoring {n_items} items", m, "users")
        with single_threaded_blas(n_chunks > 1):  # parallelism from numba threads, one product each
            for r0 in range(0, m, step):
                r1 = min(m, r0 + step)
                _blend_topk_kernel(
                    query[r0:r1], items_t, target_vecs[r0:r1], emb_t, has_sem[r0:r1], ptr[r0 : r1 + 1], ind,
                    np.float32(alpha), out_idx[r0:r1], out_val[r0:r1], block_rows, n_chunks,
                )  # fmt: skip
                progress.update(r1)
        return out_idx, out_val

    def _target_vectors(self, rows: np.ndarray, targets: list | None) -> tuple[np.ndarray, np.ndarray]:
        """Unit embedding of each user's semantic target (given, or the strongest interaction)."""
        d = self._emb.shape[1]
        if targets is not None:
            pos = self._emb_labels.indices_of(targets)
            return self._emb_all[pos], np.ones(len(rows), dtype=np.bool_)
        strongest = strongest_items(self.model.user_items)[rows]
        has = strongest >= 0
        vecs = np.zeros((len(rows), d), dtype=np.float32)
        vecs[has] = self._emb[strongest[has]]
        return vecs, has

    # ------------------------------------------------------------------------------------------
    # carts

    def recommend_for_cart(self, cart: Any, n: int = 10, format: str | None = None) -> Any:
        """Add-ons for one cart as a frame [item, score, source], best first within each source.

        Sources, in fallback order: ``"rules"`` (consequents of rules whose antecedents are all in
        the cart, ranked by confidence then lift; score = confidence of the best such rule),
        ``"similar"`` (model items with positive mean cosine similarity of factors to the cart's
        items; score = that mean cosine), ``"popular"`` (model items by the share of users who have
        them; score = that share). Never a cart item; cart items unknown to the model and the rules
        are allowed (they match nothing). Fewer than ``n`` rows only when the catalogue runs out.
        """
        out = self.recommend_for_carts([list(_as_list(cart))], n=n, format="arrow")
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
        """Batch :meth:`recommend_for_cart`: [cart_id, rank, item, score, source] rows, by cart then rank.

        ``carts``: a list of carts (ids 0..m-1), a mapping cart_id -> items, or a long frame with
        ``cart_col`` / ``item_col`` (one row per cart × item). Numba kernels do the rule matching
        and the fallback merge; similarity scores come from BLAS blocks and the shared top-k kernel.
        """
        cart_ids, like, out_idx, out_score, out_source, out_count, _, _ = self._cart_topk(carts, n, cart_col, item_col)
        m, width = out_idx.shape
        keep = np.arange(width)[None, :] < out_count[:, None]
        sources = pa.DictionaryArray.from_arrays(pa.array(out_source[keep]), pa.array(list(SOURCES)))
        return make_frame(
            {
                "cart_id": cart_ids.take(pa.array(np.repeat(np.arange(m), out_count))),
                "rank": (np.nonzero(keep)[1] + 1).astype(np.int64),
                "item": self._vocab.to_arrow().take(pa.array(out_idx[keep])),
                "score": out_score[keep],
                "source": sources.cast(pa.string()),
            },
            resolve_format(format, like=like, default=self._format),
        )

    def _cart_topk(self, carts: Any, n: int, cart_col: str | None, item_col: str | None) -> tuple:
        """Add-ons per cart as arrays: (cart ids, input frame, vocabulary ids, scores, source codes, counts,
        and the carts themselves as CSR indptr / vocabulary ids)."""
        cart_ids, indptr, items, like = self._encode_carts(carts, cart_col, item_col)
        m, width = len(cart_ids), max(0, int(n))
        n_vocab = len(self._vocab)
        r_idx = np.full((m, width), -1, dtype=np.int64)
        r_conf = np.zeros((m, width), dtype=np.float64)
        r_lift = np.zeros((m, width), dtype=np.float64)
        r_count = np.zeros(m, dtype=np.int64)
        if m and width:
            rules = self._rules
            _cart_rules_kernel(
                indptr, items, rules["first_ptr"], rules["rule_ids"], rules["ant_indptr"], rules["ant_items"],
                rules["con_indptr"], rules["con_items"], rules["conf"], rules["lift"], n_vocab,
                r_idx, r_conf, r_lift, r_count, _n_chunks(m),
            )  # fmt: skip
        sim_idx, sim_val = self._cart_similar(indptr, items, r_count, width)
        out_idx = np.full((m, width), -1, dtype=np.int64)
        out_score = np.zeros((m, width), dtype=np.float64)
        out_source = np.zeros((m, width), dtype=np.int8)
        out_count = np.zeros(m, dtype=np.int64)
        if m and width:
            _fill_kernel(
                indptr, items, r_idx, r_conf, r_count, sim_idx, sim_val,
                self._model_to_vocab[self._pop_model], self._pop_score, n_vocab,
                out_idx, out_score, out_source, out_count, _n_chunks(m),
            )  # fmt: skip
        return cart_ids, like, out_idx, out_score, out_source, out_count, indptr, items

    def _cart_similar(self, indptr, items, r_count, width) -> tuple[np.ndarray, np.ndarray]:
        """Top-``width`` model items (vocabulary ids) by mean cosine to each cart needing a fill."""
        from scipy import sparse

        m = len(indptr) - 1
        sim_idx = np.full((m, width), -1, dtype=np.int64)
        sim_val = np.zeros((m, width), dtype=np.float64)
        need = np.flatnonzero(r_count < width)
        if not len(need) or not width:
            return sim_idx, sim_val
        ptr, vocab_items = csr_rows(indptr, items, need)
        model_items = self._vocab_to_model[vocab_items]
        known = model_items >= 0
        row_of = np.repeat(np.arange(len(need)), np.diff(ptr))[known]
        model_items = model_items[known]
        n_known = np.bincount(row_of, minlength=len(need))
        weights = 1.0 / n_known[row_of]
        n_model = len(self.model.items)
        carts = sparse.csr_array((weights.astype(np.float32), (row_of, model_items)), shape=(len(need), n_model))
        cart_vecs = np.asarray(carts @ self._unit, dtype=np.float32)
        excl_ptr = np.zeros(len(need) + 1, dtype=np.int64)
        np.cumsum(n_known, out=excl_ptr[1:])
        excl_ind = model_items[np.argsort(row_of, kind="stable")].astype(np.int32)
        idx, val = topk(cart_vecs, self._unit, width, excl_ptr, excl_ind)
        ok = (idx >= 0) & (val > 0)  # only positively similar items count as "similar"
        sim_idx[need, : idx.shape[1]] = np.where(ok, self._model_to_vocab[np.maximum(idx, 0)], -1)
        sim_val[need, : idx.shape[1]] = np.where(ok, val, 0.0)
        return sim_idx, sim_val

    def _encode_carts(self, carts, cart_col, item_col) -> tuple[pa.Array, np.ndarray, np.ndarray, Any]:
        """Carts as (cart ids, CSR indptr, vocabulary ids of known items, frame for the output format)."""
        like = None
        if isinstance(carts, Mapping):
            cart_ids = pa.array(list(carts.keys()))
            baskets = [list(_as_list(v)) for v in carts.values()]
        elif isinstance(carts, list | tuple):
            cart_ids = pa.array(np.arange(len(carts), dtype=np.int64))
            baskets = [list(_as_list(v)) for v in carts]
        else:
            try:
                input_format(carts)
            except TypeError:
                raise TypeError(
                    f"carts must be a list of carts, a mapping cart_id -> items or a long frame; got {type(carts).__name__}"
                ) from None
            if cart_col is None or item_col is None:
                raise ValueError("a frame of carts needs cart_col= and item_col= (one row per cart × item)")
            like = carts
            table = to_arrow_table(carts)
            cart_values = column(table, cart_col, "cart column")
            item_values = column(table, item_col, "item column")
            for name, col in ((cart_col, cart_values), (item_col, item_values)):
                if col.null_count:
                    raise ValueError(f"column {name!r} has {col.null_count} null values")
            cart_labels = Labels.from_values(cart_values)
            codes = cart_labels.indices_of(cart_values)
            vocab_ids = self._vocab_ids(item_values.combine_chunks().to_numpy(zero_copy_only=False))
            return cart_labels.to_arrow(), *_csr_from_codes(codes, vocab_ids, len(cart_labels)), like
        lengths = np.array([len(b) for b in baskets], dtype=np.int64)
        flat = [x for b in baskets for x in b]
        flat_arr = np.asarray(flat, dtype=object) if flat and isinstance(flat[0], str) else np.asarray(flat)
        vocab_ids = self._vocab_ids(flat_arr)
        codes = np.repeat(np.arange(len(baskets), dtype=np.int64), lengths)
        return cart_ids, *_csr_from_codes(codes, vocab_ids, len(baskets)), like

    def _vocab_ids(self, labels: np.ndarray) -> np.ndarray:
        """Vocabulary ids of cart items (-1 when unknown); a label of the wrong type is a KeyError."""
        if not len(labels):
            return np.empty(0, dtype=np.int64)
        kind = self._vocab.values.dtype.kind
        if labels.dtype.kind == "O":
            wrong = [x for x in labels[:1].tolist() if isinstance(x, str) != (kind in "OU")]
        else:
            wrong = [] if (labels.dtype.kind in "iu" and kind in "iu") or labels.dtype.kind == kind else [labels[0]]
        if wrong:
            raise KeyError(f"cart item {wrong[0]!r} does not match the item ids' type ({self._vocab.values.dtype})")
        return self._vocab.lookup.get_indexer(labels).astype(np.int64)

    # ------------------------------------------------------------------------------------------
    # building

    def _build_rules(self, rules_df: Any) -> None:
        """Union vocabulary of model and rule items, and the rules as CSR arrays indexed by first antecedent."""
        model_items = self.model.items
        empty = np.empty(0, dtype=np.int64)
        if rules_df is None:
            self._vocab = model_items
            ant_ptr, ant_items, con_ptr, con_items = np.zeros(1, np.int64), empty, np.zeros(1, np.int64), empty
            conf = lift = np.empty(0)
        else:
            table = rules_table(rules_df, required=("antecedents", "consequents", "confidence", "lift"))
            conf, lift = numeric_column(table, "confidence"), numeric_column(table, "lift")
            if np.isnan(conf).any() or np.isnan(lift).any():
                raise ValueError("rules columns 'confidence' and 'lift' must not be NaN")
            ant_ptr, ant_labels = _list_parts(table, "antecedents")
            con_ptr, con_labels = _list_parts(table, "consequents")
            rule_labels = np.concatenate([ant_labels, con_labels])
            if len(rule_labels) and label_kind(rule_labels) != label_kind(model_items.values):
                raise ValueError(
                    f"rule items are {rule_labels.dtype} but the model's items are {model_items.values.dtype}"
                )
            self._vocab = Labels.from_values(np.concatenate([model_items.values, rule_labels]))
            ant_items = self._vocab.indices_of(ant_labels)
            con_items = self._vocab.indices_of(con_labels)
        self._model_to_vocab = self._vocab.indices_of(model_items.values)
        self._vocab_to_model = np.full(len(self._vocab), -1, dtype=np.int64)
        self._vocab_to_model[self._model_to_vocab] = np.arange(len(model_items))
        n_rules = len(ant_ptr) - 1
        lengths = np.diff(ant_ptr)
        if n_rules and (lengths.min() == 0 or np.diff(con_ptr).min() == 0):
            raise ValueError("every rule needs at least one antecedent and one consequent item")
        # smallest antecedent item of each rule
        first = np.minimum.reduceat(ant_items, ant_ptr[:-1]) if n_rules else empty
        rule_ids = np.argsort(first, kind="stable").astype(np.int64)
        first_ptr = np.zeros(len(self._vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(first, minlength=len(self._vocab)), out=first_ptr[1:])
        self._rules = {
            "first_ptr": first_ptr,
            "rule_ids": rule_ids,
            "ant_indptr": ant_ptr.astype(np.int64),
            "ant_items": ant_items.astype(np.int64),
            "con_indptr": con_ptr.astype(np.int64),
            "con_items": con_items.astype(np.int64),
            "conf": np.require(conf, np.float64, "CW"),  # writable: one numba signature whatever the input
            "lift": np.require(lift, np.float64, "CW"),
        }

    def _build_embeddings(self, item_embeddings: Any) -> None:
        """Unit embeddings aligned to the model's items, plus all given vectors keyed by label."""
        items = self.model.items
        if isinstance(item_embeddings, np.ndarray):
            matrix = item_embeddings
            if matrix.ndim != 2 or matrix.shape[0] != len(items):
                raise ValueError(
                    f"item_embeddings array must be (n_items={len(items)}, d) aligned to model.items, got {matrix.shape}"
                )
            labels = items
        elif isinstance(item_embeddings, Mapping):
            labels = Labels(list(item_embeddings.keys()))
            matrix = np.stack([np.asarray(v, dtype=np.float32) for v in item_embeddings.values()])
        else:
            labels, matrix = _embedding_frame(item_embeddings)
        matrix = np.asarray(matrix, dtype=np.float32)
        if not np.isfinite(matrix).all():
            raise ValueError("item_embeddings contain NaN or inf values")
        unit = _unit_rows(matrix)
        pos = labels.lookup.get_indexer(items.values) if labels is not items else np.arange(len(items))
        self.missing_embeddings = int((pos < 0).sum())
        aligned = np.zeros((len(items), matrix.shape[1]), dtype=np.float32)
        aligned[pos >= 0] = unit[pos[pos >= 0]]
        self._emb, self._emb_labels, self._emb_all = aligned, labels, unit


# ---------------------------------------------------------------------------------------------------------
# helpers


def strongest_items(enc: Any) -> np.ndarray:
    """Per row of an Encoded matrix, the item index with the largest weight (ties: lowest index); -1 if empty."""
    counts = np.diff(enc.indptr)
    rows = np.repeat(np.arange(enc.n_rows), counts)
    order = np.lexsort((enc.indices, -enc.weights(), rows))
    out = np.full(enc.n_rows, -1, dtype=np.int64)
    nonempty = counts > 0
    out[nonempty] = enc.indices[order[enc.indptr[:-1][nonempty]]]
    return out


def _in_rows(indptr: np.ndarray, indices: np.ndarray, n_cols: int, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each (row, item) pair is stored in the CSR matrix with ``n_cols`` columns."""
    stored = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * n_cols + indices
    return np.isin(rows.astype(np.int64) * n_cols + items, stored)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) or np.isscalar(value) else value


def _list_parts(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat labels) of a list-of-labels rules column."""
    col = table.column(name).combine_chunks()
    if col.null_count:
        raise ValueError(f"rules column {name!r} has {col.null_count} null values")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    ptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    return ptr, pc.list_flatten(col).to_numpy(zero_copy_only=False)


def _csr_from_codes(codes: np.ndarray, vocab_ids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, ids) grouping the known ids (>= 0) by code, duplicates within a row removed."""
    known = vocab_ids >= 0
    codes, vocab_ids = codes[known], vocab_ids[known]
    key = np.unique(codes * (vocab_ids.max(initial=0) + 1) + vocab_ids)
    width = vocab_ids.max(initial=0) + 1
    rows, ids = key // width, key % width
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    return indptr, ids.astype(np.int64)


def _embedding_frame(frame: Any) -> tuple[Labels, np.ndarray]:
    """(labels, vectors) from a frame with one label column and one list-of-floats vector column."""
    table = to_arrow_table(frame)
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    lists = [c for c, t in types.items() if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)]
    vector = "vector" if "vector" in lists else (lists[0] if len(lists) == 1 else None)
    if vector is None:
        raise ValueError(f"item_embeddings frame needs one vector column ('vector' or a single list column); got {table.column_names}")
    others = [c for c in table.column_names if c not in lists]
    key = next((c for c in _KEY_COLUMNS if c in others), others[0] if len(others) == 1 else None)
    if key is None:
        raise ValueError(f"item_embeddings frame needs a label column ({', '.join(_KEY_COLUMNS)}); got {table.column_names}")
    col = table.column(vector).combine_chunks()
    if col.null_count:
        raise ValueError(f"item_embeddings column {vector!r} has {col.null_count} null vectors")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"item_embeddings column {vector!r} holds vectors of different lengths")
    d = int(lengths[0]) if len(lengths) else 0
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32)
    return Labels(table.column(key)), flat.reshape(len(lengths), d)
