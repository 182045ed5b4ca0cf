"""Carts: reading them (mapping, list or long frame) and their add-ons, rules then similar then popular items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from numba import njit, prange

from rusket_core.encoding import Labels
from rusket_core.factorization.base import FactorModel
from rusket_core.factorization.topk import csr_rows, n_chunks, topk
from rusket_core.frames import column, input_format, to_arrow_table
from rusket_core.hybrid.embeddings import unit_rows
from rusket_core.hybrid.rule_index import RuleIndex

#: ``source`` values in cart recommendations, in fallback order
SOURCES = ("rules", "similar", "popular")


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


class EncodedCarts(NamedTuple):
    """Carts as CSR rows of vocabulary ids (items unknown to model and rules dropped)."""

    ids: pa.Array  # cart ids (the user's labels)
    indptr: np.ndarray
    items: np.ndarray
    like: Any  # the input frame (it sets the output library), or None


class AddOns(NamedTuple):
    """Per cart: add-on vocabulary ids, scores and source codes (index into ``SOURCES``), -1 padded, and counts."""

    idx: np.ndarray
    score: np.ndarray
    source: np.ndarray
    count: np.ndarray


def encode_carts(carts: Any, cart_col: str | None, item_col: str | None, index: RuleIndex) -> EncodedCarts:
    """Read carts: a list of carts (ids 0..m-1), a mapping cart_id -> items, or a long frame with
    ``cart_col`` / ``item_col`` (one row per cart × item)."""
    if isinstance(carts, Mapping):
        cart_ids = pa.array(list(carts.keys()))
        baskets = [as_items(v) for v in carts.values()]
    elif isinstance(carts, list | tuple):
        cart_ids = pa.array(np.arange(len(carts), dtype=np.int64))
        baskets = [as_items(v) for v in carts]
    else:
        try:
            input_format(carts)
        except TypeError:
            raise TypeError(
                f"carts must be a list of carts, a mapping cart_id -> items or a long frame; got {type(carts).__name__}"
            ) from None
        if cart_col is None or item_col is None:
            raise ValueError("a frame of carts needs cart_col= and item_col= (one row per cart × item)")
        table = to_arrow_table(carts)
        cart_values = column(table, cart_col, "cart column")
        item_values = column(table, item_col, "item column")
        for name, col in ((cart_col, cart_values), (item_col, item_values)):
            if col.null_count:
                raise ValueError(f"column {name!r} has {col.null_count} null values")
        cart_labels = Labels.from_values(cart_values)
        codes = cart_labels.indices_of(cart_values)
        vocab_ids = index.vocab_ids(item_values.combine_chunks().to_numpy(zero_copy_only=False))
        return EncodedCarts(cart_labels.to_arrow(), *csr_from_codes(codes, vocab_ids, len(cart_labels)), carts)
    lengths = np.array([len(b) for b in baskets], dtype=np.int64)
    flat = [x for b in baskets for x in b]
    flat_arr = np.asarray(flat, dtype=object) if flat and isinstance(flat[0], str) else np.asarray(flat)
    vocab_ids = index.vocab_ids(flat_arr)
    codes = np.repeat(np.arange(len(baskets), dtype=np.int64), lengths)
    return EncodedCarts(cart_ids, *csr_from_codes(codes, vocab_ids, len(baskets)), None)


class CartAddOns:
    """Add-ons for carts: rule consequents, then model items similar to the cart, then popular items.

    Similar: positive mean cosine of the model's item factors to the cart's items. Popular: the
    share of the model's users who have the item.
    """

    def __init__(self, model: FactorModel, index: RuleIndex) -> None:
        self.model, self.index = model, index
        self._unit = unit_rows(model.item_factors)
        counts = model.user_items.item_counts()
        self._pop_model = np.lexsort((np.arange(len(counts)), -counts)).astype(np.int64)
        self._pop_score = (counts[self._pop_model] / max(model.user_items.n_rows, 1)).astype(np.float64)

    def top(self, carts: EncodedCarts, n: int) -> AddOns:
        """The best ``n`` add-ons of every cart, rules first, never a cart item or a repeat."""
        indptr, items = carts.indptr, carts.items
        m, width = len(indptr) - 1, max(0, int(n))
        rules = self.index.match(indptr, items, width)
        sim_idx, sim_val = self._similar(indptr, items, rules.count, width)
        out = AddOns(
            np.full((m, width), -1, dtype=np.int64), np.zeros((m, width), dtype=np.float64),
            np.zeros((m, width), dtype=np.int8), np.zeros(m, dtype=np.int64),
        )  # fmt: skip
        if m and width:
            _fill_kernel(
                indptr, items, rules.idx, rules.conf, rules.count, sim_idx, sim_val,
                self.index.model_to_vocab[self._pop_model], self._pop_score, len(self.index.vocab),
                *out, n_chunks(m),
            )  # fmt: skip
        return out

    def _similar(self, indptr, items, r_count, width) -> tuple[np.ndarray, np.ndarray]:
        """Top-``width`` model items (vocabulary ids) by mean cosine to each cart needing a fill."""
        from scipy import sparse

        m = len(indptr) - 1
        sim_idx = np.full((m, width), -1, dtype=np.int64)
        sim_val = np.zeros((m, width), dtype=np.float64)
        need = np.flatnonzero(r_count < width)
        if not len(need) or not width:
            return sim_idx, sim_val
        ptr, vocab_items = csr_rows(indptr, items, need)
        model_items = self.index.vocab_to_model[vocab_items]
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
        sim_idx[need, : idx.shape[1]] = np.where(ok, self.index.model_to_vocab[np.maximum(idx, 0)], -1)
        sim_val[need, : idx.shape[1]] = np.where(ok, val, 0.0)
        return sim_idx, sim_val


def as_items(value: Any) -> list:
    """One cart as a list of item labels (a lone label is a one-item cart)."""
    return [value] if isinstance(value, str) or np.isscalar(value) else list(value)


def csr_from_codes(codes: np.ndarray, vocab_ids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, ids) grouping the known ids (>= 0) by code, duplicates within a row removed."""
    known = vocab_ids >= 0
    codes, vocab_ids = codes[known], vocab_ids[known]
    key = np.unique(codes * (vocab_ids.max(initial=0) + 1) + vocab_ids)
    width = vocab_ids.max(initial=0) + 1
    rows, ids = key // width, key % width
    indptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m), out=indptr[1:])
    return indptr, ids.astype(np.int64)
