"""Rules indexed for carts: the item vocabulary (model items and rule items) and rule matching in numba."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange

from rusket_core.encoding import Labels
from rusket_core.factorization.topk import n_chunks
from rusket_core.mining.rules_frame import label_kind, list_parts, numeric_column, rules_table


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


class RuleCSR(NamedTuple):
    """Rules as CSR arrays over vocabulary ids, looked up by their smallest antecedent item."""

    first_ptr: np.ndarray
    rule_ids: np.ndarray
    ant_indptr: np.ndarray
    ant_items: np.ndarray
    con_indptr: np.ndarray
    con_items: np.ndarray
    conf: np.ndarray
    lift: np.ndarray


class RuleMatches(NamedTuple):
    """Per cart, the best rule consequents: vocabulary ids, confidence, lift (-1 / 0 padded) and counts."""

    idx: np.ndarray
    conf: np.ndarray
    lift: np.ndarray
    count: np.ndarray


class RuleIndex:
    """The vocabulary of model and rule items (``vocab``, with maps to and from model item indices)
    and the rules of a rules frame (multi-item rules included; None or empty for no rules)."""

    def __init__(self, rules_df: Any, model_items: Labels) -> None:
        empty = np.empty(0, dtype=np.int64)
        if rules_df is None:
            self.vocab = model_items
            ant_ptr, ant_items, con_ptr, con_items = np.zeros(1, np.int64), empty, np.zeros(1, np.int64), empty
            conf = lift = np.empty(0)
        else:
            table = rules_table(rules_df, required=("antecedents", "consequents", "confidence", "lift"))
            conf, lift = numeric_column(table, "confidence"), numeric_column(table, "lift")
            if np.isnan(conf).any() or np.isnan(lift).any():
                raise ValueError("rules columns 'confidence' and 'lift' must not be NaN")
            ant_ptr, ant_labels = list_parts(table, "antecedents")
            con_ptr, con_labels = list_parts(table, "consequents")
            rule_labels = np.concatenate([ant_labels, con_labels])
            if len(rule_labels) and label_kind(rule_labels) != label_kind(model_items.values):
                raise ValueError(
                    f"rule items are {rule_labels.dtype} but the model's items are {model_items.values.dtype}"
                )
            known = model_items.values
            self.vocab = Labels.from_values(np.concatenate([known, rule_labels])) if len(rule_labels) else model_items
            ant_items = self.vocab.indices_of(ant_labels)
            con_items = self.vocab.indices_of(con_labels)
        self.model_to_vocab = self.vocab.indices_of(model_items.values)
        self.vocab_to_model = np.full(len(self.vocab), -1, dtype=np.int64)
        self.vocab_to_model[self.model_to_vocab] = np.arange(len(model_items))
        n_rules = len(ant_ptr) - 1
        lengths = np.diff(ant_ptr)
        if n_rules and (lengths.min() == 0 or np.diff(con_ptr).min() == 0):
            raise ValueError("every rule needs at least one antecedent and one consequent item")
        # smallest antecedent item of each rule
        first = np.minimum.reduceat(ant_items, ant_ptr[:-1]) if n_rules else empty
        rule_ids = np.argsort(first, kind="stable").astype(np.int64)
        first_ptr = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(first, minlength=len(self.vocab)), out=first_ptr[1:])
        self._csr = RuleCSR(
            first_ptr, rule_ids, ant_ptr.astype(np.int64), ant_items.astype(np.int64), con_ptr.astype(np.int64),
            con_items.astype(np.int64),
            np.require(conf, np.float64, "CW"),  # writable: one numba signature whatever the input
            np.require(lift, np.float64, "CW"),
        )  # fmt: skip

    def match(self, cart_indptr: np.ndarray, cart_items: np.ndarray, width: int) -> RuleMatches:
        """Best ``width`` rule consequents of each cart (CSR of vocabulary ids), by confidence then lift."""
        m = len(cart_indptr) - 1
        out = RuleMatches(
            np.full((m, width), -1, dtype=np.int64), np.zeros((m, width), dtype=np.float64),
            np.zeros((m, width), dtype=np.float64), np.zeros(m, dtype=np.int64),
        )  # fmt: skip
        if m and width:
            _cart_rules_kernel(cart_indptr, cart_items, *self._csr, len(self.vocab), *out, n_chunks(m))
        return out

    def vocab_ids(self, labels: np.ndarray) -> np.ndarray:
        """Vocabulary ids of cart items (-1 when unknown); a label of the wrong type is a KeyError."""
        if not len(labels):
            return np.empty(0, dtype=np.int64)
        kind = self.vocab.values.dtype.kind
        if labels.dtype.kind == "O":
            wrong = [x for x in labels[:1].tolist() if isinstance(x, str) != (kind in "OU")]
        else:
            wrong = [] if (labels.dtype.kind in "iu" and kind in "iu") or labels.dtype.kind == kind else [labels[0]]
        if wrong:
            raise KeyError(f"cart item {wrong[0]!r} does not match the item ids' type ({self.vocab.values.dtype})")
        return self.vocab.lookup.get_indexer(labels).astype(np.int64)
