"""Fold-in and warm start for the factor models: new or changed rows solved against fixed factors.

A daily refresh should cost the day, not the history. ``partial_fit_users`` / ``partial_fit_items``
add the given interactions to the training matrix (or replace those rows) and re-solve only those
rows with the other side's factors fixed; new labels are appended, so every other row keeps its
index and its factors. ``fit(init=previous)`` starts a full fit from a previous model's rows,
matched by label, so a few iterations reach what a cold fit needs many for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Encoded, Labels, _build_csr, encode_transactions, merge_into_csr
from rusket_core.factorization.base import FactorModel, transpose_csr
from rusket_core.frames import to_arrow_table

SIDES = ("users", "items")


class FoldIn:
    """Mixin for :class:`FactorModel` subclasses that can solve given rows with the other side fixed.

    Subclasses implement ``_solve_rows(side, indptr, indices, data, X, new)`` (update ``X``, the
    current factors of the CSR's rows, in place; ``new`` flags rows without factors yet) and call
    ``self._warm_start()`` in ``_fit`` right after drawing their initial factors.
    """

    _init: tuple | None = None
    _fold_matrix: tuple[Encoded, np.ndarray] | None = None

    def fit(self, user_items: Any = None, init: FactorModel | None = None) -> FactorModel:
        """Train as :meth:`FactorModel.fit`; with ``init`` (a fitted model of the same class and
        ``factors``) start from its user and item rows, matched by label; labels it does not know
        start as in a cold fit. ``init`` may be the model itself, e.g. a few iterations over the
        interactions a ``partial_fit_users`` added."""
        if init is not None:
            if not isinstance(init, type(self)):
                raise TypeError(f"init must be a fitted {type(self).__name__}, got {type(init).__name__}")
            init._check_fitted()
            if init.factors != self.factors:
                raise ValueError(f"init has {init.factors} factors, this model {self.factors}")
            # references taken now: fitting replaces (never edits) the factor arrays and labels
            self._init = (init.user_factors, init.users, init.item_factors, init.items)
        try:
            return super().fit(user_items)
        finally:
            self._init = None

    def _warm_start(self) -> None:
        """Overwrite the freshly drawn rows with ``init``'s rows for the labels it knows."""
        if self._init is None:
            return
        their_users, user_labels, their_items, item_labels = self._init
        for mine, labels, theirs, their_labels in (
            (self.user_factors, self.users, their_users, user_labels),
            (self.item_factors, self.items, their_items, item_labels),
        ):
            idx = _lookup(their_labels, labels.values)
            hit = idx >= 0
            mine[hit] = theirs[idx[hit]]

    # ------------------------------------------------------------------------------------------
    # updating the model

    def partial_fit_users(self, data: Any, replace: bool = False, **options: Any) -> FactorModel:
        """Add ``data``'s interactions to the training matrix and re-solve those users' rows with the
        item factors fixed; unknown users are appended (labels and rows), others keep their rows.

        ``data``: a frame with the model's user, item (and rating) columns, or a mapping
        ``{user: {item: rating}}`` (``{user: [items]}`` without ratings). Ratings of repeated
        (user, item) pairs add up, as in ``fit``; with ``replace`` the given interactions replace
        those users' training rows instead. Items must be known to the model (``KeyError``).
        ``options`` go to the model's row solver (see the subclass).
        """
        return self._partial_fit("users", data, replace, options)

    def partial_fit_items(self, data: Any, replace: bool = False, **options: Any) -> FactorModel:
        """The item-side twin of :meth:`partial_fit_users`: re-solve (or add) the items in ``data``
        with the user factors fixed; ``{item: {user: rating}}`` mappings are keyed by item."""
        self._check_item_fold_in()
        return self._partial_fit("items", data, replace, options)

    def _partial_fit(self, side: str, data: Any, replace: bool, options: dict) -> FactorModel:
        self._check_fitted()
        rows, cols, weights, targets, new_labels = self._fold_entries(side, data)
        n_new = len(new_labels)
        enc = self.user_items
        if side == "items":  # the training matrix is users × items: new entries to its axes
            rows, cols = cols, rows
        drop = None
        if replace:  # the targets' old entries go
            flagged = np.zeros(enc.n_rows if side == "users" else enc.n_items, dtype=bool)
            flagged[targets[targets < len(flagged)]] = True
            if side == "users":
                drop = np.repeat(flagged, np.diff(enc.indptr))
            else:
                drop = flagged[enc.indices]
        n_users = enc.n_rows + (n_new if side == "users" else 0)
        # only the rows gaining or losing entries are rebuilt (as _build_csr over all entries would)
        indptr, indices, data_out = merge_into_csr(
            enc.indptr, enc.indices, enc.data, rows, cols, None if enc.data is None else weights, n_users, drop
        )
        users, items = self.users, self.items
        if side == "users":
            users = Labels(np.concatenate([users.values, new_labels])) if n_new else users
        else:
            items = Labels(np.concatenate([items.values, new_labels])) if n_new else items
        merged = Encoded(indptr, indices, data_out if enc.data is not None else None, users, items)
        X = self.user_factors if side == "users" else self.item_factors
        X = np.concatenate([X, np.zeros((n_new, X.shape[1]), np.float32)]) if n_new else X.copy()
        self._solve_targets(side, merged, X, targets, targets >= len(X) - n_new, options)
        if side == "users":
            self.user_factors = X
        else:
            self.item_factors = X
        self._set_interactions(merged)
        self._unit_items = None
        return self

    def _solve_targets(self, side, enc: Encoded, X: np.ndarray, targets, new, options: dict) -> None:
        """Re-solve rows ``targets`` of ``X`` (users or items) from their rows of ``enc``."""
        ptr, ind, dat = enc.indptr, enc.indices, enc.weights()
        if side == "items":
            ptr, ind, dat = transpose_csr(ptr, ind, dat, enc.n_items)
        sub_ptr, sub_ind, sub_dat = take_rows(ptr, ind, dat, targets)
        solved = np.ascontiguousarray(X[targets])
        # what the rows are solved against: the interactions and this side's whole factor matrix (new rows zero)
        self._fold_matrix = (enc, X)
        try:
            with self._threads():
                self._solve_rows(side, sub_ptr, sub_ind, sub_dat, solved, new, **options)
        finally:
            self._fold_matrix = None
        X[targets] = solved

    def partial_fit(self, data: Any, **options: Any) -> FactorModel:
        """Take in a batch of new interaction lines (e.g. a day): the lines of known items go through
        :meth:`partial_fit_users`; items never seen before are then added by
        :meth:`partial_fit_items` from their buyers, and the batch's users re-solved once more
        against the extended item factors. Every user of the batch ends with the fold-in (for ALS
        the exact row) of its whole history. ``data`` as for :meth:`partial_fit_users`; on an
        error the model is left as it was."""
        self._check_fitted()
        table, user_col, item_col, _ = self._fold_table("users", data)
        known = _lookup(self.items, table.column(item_col)) >= 0
        if known.all():
            return self.partial_fit_users(table, **options)
        self._check_item_fold_in()
        before = self.user_factors, self.item_factors, self.user_items
        try:
            self._partial_fit_new_items(table, user_col, known, options)
        except BaseException:
            self.user_factors, self.item_factors = before[:2]
            self._set_interactions(before[2])
            raise
        finally:
            self._unit_items = None
        return self

    def _partial_fit_new_items(self, table: pa.Table, user_col: str, known: np.ndarray, options) -> None:
        if known.any():
            self.partial_fit_users(table.filter(pa.array(known)), **options)
        fresh = table.filter(pa.array(~known))
        # customers who bought only new items: empty rows (zero factors, the exact solution) for now
        buyers = pc.unique(fresh.column(user_col))
        missing = Labels(buyers.filter(pa.array(_lookup(self.users, buyers) < 0))).values
        if len(missing):
            enc = self.user_items
            indptr = np.concatenate([enc.indptr, np.full(len(missing), enc.indptr[-1])])
            users = Labels(np.concatenate([self.users.values, missing]))
            self._set_interactions(Encoded(indptr, enc.indices, enc.data, users, enc.items))
            zeros = np.zeros((len(missing), self.factors), np.float32)
            self.user_factors = np.concatenate([self.user_factors, zeros])
        self.partial_fit_items(fresh, **options)
        touched = self.users.indices_of(pc.unique(table.column(user_col)))
        X = self.user_factors.copy()
        self._solve_targets("users", self.user_items, X, touched, np.zeros(len(touched), bool), options)
        self.user_factors = X

    def _check_item_fold_in(self) -> None:
        """Models that cannot fold in items say so before anything changes (hook)."""

    # ------------------------------------------------------------------------------------------
    # encoding fold-in input against the model's labels

    def _columns(self) -> tuple[str, str, str | None]:
        """Column names fold-in frames use: the model's own, or user_id/item_id/rating when it was
        fitted on a matrix."""
        rating = self.rating_col or ("rating" if self.user_items.data is not None else None)
        return self.user_col or "user_id", self.item_col or "item_id", rating

    def _fold_table(self, side: str, data: Any) -> tuple[pa.Table, str, str, str | None]:
        """``data`` as a table with (row, column[, rating]) columns, rows being ``side``'s labels."""
        user_col, item_col, rating_col = self._columns()
        row_col, col_col = (user_col, item_col) if side == "users" else (item_col, user_col)
        if isinstance(data, Mapping):
            data = self._mapping_table(data, row_col, col_col, rating_col)
        return to_arrow_table(data), row_col, col_col, rating_col

    def _mapping_table(self, data: Mapping, row_col: str, col_col: str, rating_col: str | None) -> pa.Table:
        keys, others, ratings = [], [], []
        for key, row in data.items():
            if isinstance(row, Mapping):
                if rating_col is None:
                    raise ValueError(
                        f"{key!r}: this model has no ratings; give a list of ids, not a mapping of ratings"
                    )
                others.extend(row.keys())
                ratings.extend(row.values())
            else:
                if rating_col is not None:
                    raise ValueError(f"{key!r}: this model uses ratings; give a mapping {{id: rating}}")
                row = list(row)
                others.extend(row)
            keys.extend([key] * len(row))
        columns = {row_col: keys, col_col: others}
        if rating_col is not None:
            columns[rating_col] = np.asarray(ratings, dtype=np.float64)
        return pa.table(columns)

    def _fold_rows(self, side: str, data: Any) -> tuple[Labels, np.ndarray, np.ndarray, np.ndarray | None]:
        """``data`` as a CSR over the other side's model indices: (row labels, indptr, indices, data)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        table, row_col, col_col, rating_col = self._fold_table(side, data)
        enc = encode_transactions(table, row_col, col_col, weight_col=rating_col)
        other = self.items if side == "users" else self.users
        col_idx = _lookup(other, enc.items.values)
        unknown = np.flatnonzero(col_idx < 0)
        if len(unknown):
            what = "item" if side == "users" else "user"
            raise KeyError(
                f"{len(unknown)} {what}s in column {col_col!r} are not in the model (e.g. "
                f"{enc.items.values[unknown[0]]!r}); fold them in with partial_fit_{what}s first or refit"
            )
        rows = np.repeat(np.arange(enc.n_rows, dtype=np.int64), np.diff(enc.indptr))
        w = None if enc.data is None else enc.data.astype(np.float64)
        indptr, indices, data_out = _build_csr(rows, col_idx[enc.indices], w, enc.n_rows)
        return enc.rows, indptr, indices, (data_out if enc.data is not None else None)

    def _fold_entries(self, side: str, data: Any):
        """COO entries of ``data`` in model indices (new labels numbered after the known ones), the
        target rows and the new labels."""
        labels, indptr, indices, weights = self._fold_rows(side, data)
        own = self.users if side == "users" else self.items
        idx = _lookup(own, labels.values)
        new = idx < 0
        idx[new] = len(own) + np.arange(int(new.sum()))
        rows = np.repeat(idx, np.diff(indptr))
        w = np.ones(len(indices)) if weights is None else weights.astype(np.float64)
        return rows, indices.astype(np.int64), w, idx, labels.values[new]

    def _recalculate(self, side: str, data: Any, options: dict) -> tuple[np.ndarray, np.ndarray]:
        """Solved rows for ``data`` (each row exactly as given) without changing the model."""
        self._check_fitted()
        labels, indptr, indices, weights = self._fold_rows(side, data)
        own = self.users if side == "users" else self.items
        idx = _lookup(own, labels.values)
        new = idx < 0
        current = self.user_factors if side == "users" else self.item_factors
        X = np.zeros((len(idx), current.shape[1]), np.float32)
        X[~new] = current[idx[~new]]
        w = np.ones(len(indices), np.float32) if weights is None else weights
        with self._threads():
            self._solve_rows(side, indptr, indices, w, X, new, **options)
        return labels.values, X

    def _single_row(self, side: str, label: Any, interactions: Any) -> dict:
        """One row's interactions as a ``{label: ...}`` mapping or a frame carrying its label."""
        if isinstance(interactions, Mapping) or not hasattr(interactions, "columns") and not isinstance(
            interactions, pa.Table
        ):
            return {label: interactions}
        user_col, item_col, _ = self._columns()
        row_col = user_col if side == "users" else item_col
        table = to_arrow_table(interactions)
        if row_col in table.column_names:
            others = pc.unique(table.column(row_col)).to_pylist()
            if others != [label]:
                raise ValueError(f"column {row_col!r} holds ids other than {label!r}: {others[:5]}")
            return table
        return table.append_column(row_col, pa.array([label] * table.num_rows))


def take_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray):
    """CSR rows ``rows`` (in that order) with their data, as new (indptr, indices, data) arrays."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    pos = np.arange(int(ptr[-1]), dtype=np.int64) - np.repeat(ptr[:-1] - starts, lengths)
    return ptr, np.ascontiguousarray(indices[pos], np.int32), np.ascontiguousarray(data[pos], np.float32)


def _lookup(labels: Labels, values: Any) -> np.ndarray:
    """Indices of ``values`` in ``labels``, -1 for unknown ones (ids of another type raise KeyError)."""
    from rusket_core.evaluation import _lookup as lookup

    return lookup(labels, values)
