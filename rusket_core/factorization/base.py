"""Shared base of the factor recommenders: building from transactions, recommending, exporting, saving."""

from __future__ import annotations

import inspect
import io
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numba
import numpy as np
from numba import njit

from rusket_core.encoding import Encoded, Labels, encode_sparse, encode_transactions
from rusket_core.factorization.topk import csr_rows, topk
from rusket_core.frames import from_arrow, input_format, make_frame, resolve_format
from rusket_core.recommender import RecommenderBase


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming the parameter when it is below ``minimum``."""
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value: Any, minimum: float = 0, strict: bool = False) -> float:
    """``value`` as a finite float >= ``minimum`` (> when ``strict``), or a ValueError naming it."""
    ok = np.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {minimum}, got {value}")
    return float(value)


class FactorModel(RecommenderBase):
    """A recommender scoring user u and item i as ``user_factors[u] @ item_factors[i]``.

    Public attributes, set by ``fit`` (other modules build on them):

    - ``user_factors``: (n_users, k) float32, C-contiguous; row u belongs to ``users.values[u]``.
    - ``item_factors``: (n_items, k) float32, C-contiguous; row i belongs to ``items.values[i]``.
    - ``users``, ``items``: :class:`~rusket_core.encoding.Labels`, the caller's own ids.
    - ``user_items``: :class:`~rusket_core.encoding.Encoded`, the training interactions (users ×
      items CSR; ``data`` holds the summed ratings, or None without a rating column).
    - ``user_col``, ``item_col``, ``rating_col``: column names given to ``from_transactions``.

    All rankings go through :func:`rusket_core.factorization.topk.topk` (blocked scoring, parallel
    selection, seen-item exclusion CSR), which other recommenders can call on these factors too.
    Outputs that are frames follow the library of the frame the model was built from (pandas when
    fitted on a scipy matrix) unless ``format=`` says otherwise ("pandas", "polars", "arrow",
    "spark").
    """

    _registry: ClassVar[dict[str, type[FactorModel]]] = {}
    # plain attributes (set by fit / from_factors) fulfil the contract's properties
    users: Labels | None = None  # type: ignore[assignment]
    items: Labels | None = None  # type: ignore[assignment]
    user_items: Encoded | None = None  # type: ignore[assignment]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FactorModel._registry[cls.__name__] = cls

    def __init__(self, num_threads: int | None = None) -> None:
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {num_threads}")
        self.num_threads = num_threads
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None
        self.users: Labels | None = None
        self.items: Labels | None = None
        self.user_items: Encoded | None = None
        self.user_col: str | None = None
        self.item_col: str | None = None
        self.rating_col: str | None = None
        self._format: str | None = None
        self._item_users: tuple[np.ndarray, np.ndarray] | None = None
        self._unit_items: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------
    # building and fitting

    @classmethod
    def from_transactions(
        cls,
        data: Any,
        user_col: str,
        item_col: str,
        rating_col: str | None = None,
        **params: Any,
    ) -> FactorModel:
        """An unfitted model holding long-format interactions; repeated (user, item) rows are summed.

        ``rating_col`` values must be finite and >= 0 (confidence grows with them); without it
        every interaction counts once. Call ``fit()`` to train.
        """
        encoded = encode_transactions(data, user_col, item_col, weight_col=rating_col)
        return cls.from_encoded(encoded, user_col, item_col, rating_col, format=input_format(data), **params)

    @classmethod
    def from_encoded(
        cls, encoded: Encoded, user_col: str, item_col: str, rating_col: str | None = None,
        format: str | None = None, **params: Any,
    ) -> FactorModel:  # fmt: skip
        """:meth:`from_transactions` over interactions already encoded (one encoding shared by several
        models of the same lines); without ``rating_col`` the weights are dropped (each pair counts once)."""
        if rating_col is None:
            encoded = Encoded(encoded.indptr, encoded.indices, None, encoded.rows, encoded.items)
        elif encoded.data is None:
            raise ValueError(f"rating_col={rating_col!r} but the encoded interactions have no weights")
        else:
            _check_ratings(encoded.data, repr(rating_col))
        model = cls(**params)
        model._set_interactions(encoded)
        model.user_col, model.item_col, model.rating_col = user_col, item_col, rating_col
        model._format = format
        return model

    @classmethod
    def from_factors(
        cls,
        user_factors: Any,
        item_factors: Any,
        users: Any = None,
        items: Any = None,
        user_items: Any = None,
        **params: Any,
    ) -> FactorModel:
        """A fitted model from given factors (e.g. trained elsewhere), without calling ``fit``.

        ``users`` / ``items`` label the factor rows (default 0..n-1); ``user_items`` are the seen
        interactions excluded from recommendations: a scipy users × items matrix or an ``Encoded``
        in the same row/column order (default none). ``params`` go to the constructor.
        """
        uf = np.ascontiguousarray(user_factors, dtype=np.float32)
        itf = np.ascontiguousarray(item_factors, dtype=np.float32)
        if uf.ndim != 2 or itf.ndim != 2 or uf.shape[1] != itf.shape[1]:
            raise ValueError(f"factor shapes do not match: user_factors {uf.shape}, item_factors {itf.shape}")
        if isinstance(user_items, Encoded):
            users = user_items.rows.values if users is None else users
            items = user_items.items.values if items is None else items
        user_labels = Labels.range(len(uf)) if users is None else Labels(users)
        item_labels = Labels.range(len(itf)) if items is None else Labels(items)
        for what, labels, rows in (("users", user_labels, len(uf)), ("items", item_labels, len(itf))):
            if len(labels) != rows:
                raise ValueError(f"{what} has {len(labels)} labels for {rows} factor rows")
        if user_items is None:
            seen = Encoded(np.zeros(len(uf) + 1, np.int64), np.zeros(0, np.int32), None, user_labels, item_labels)
        else:
            enc = user_items if isinstance(user_items, Encoded) else encode_sparse(user_items)
            if (enc.n_rows, enc.n_items) != (len(uf), len(itf)):
                raise ValueError(
                    f"user_items is {enc.n_rows} × {enc.n_items} but the factors are {len(uf)} users × {len(itf)} items"
                )
            seen = Encoded(enc.indptr, enc.indices, enc.data, user_labels, item_labels)
        model = cls(**params)
        model._set_interactions(seen)
        model.user_factors, model.item_factors = uf, itf
        return model

    def fit(self, user_items: Any = None) -> FactorModel:
        """Train on ``user_items`` (scipy sparse users × items, whose indices become the ids, or an
        ``Encoded``), or on the interactions given to ``from_transactions`` when omitted."""
        if user_items is not None:
            if isinstance(user_items, Encoded):
                encoded = user_items
            else:
                from scipy import sparse

                if not sparse.issparse(user_items):
                    raise TypeError(
                        "fit() takes a scipy sparse users × items matrix or an Encoded; for a "
                        f"DataFrame use {type(self).__name__}.from_transactions(df, user_col=..., "
                        f"item_col=...), got {type(user_items).__name__}"
                    )
                encoded = encode_sparse(user_items)
            if encoded.data is not None:
                _check_ratings(encoded.data, "the interaction matrix")
            self._set_interactions(encoded)
        if self.user_items is None:
            raise ValueError(
                "nothing to fit: pass a users × items matrix or build the model with from_transactions()"
            )
        with self._threads():
            self._fit(self.user_items)
        self.user_factors = np.ascontiguousarray(self.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        self._unit_items = None
        return self

    def _fit(self, interactions: Encoded) -> None:
        raise NotImplementedError

    def _set_interactions(self, encoded: Encoded) -> None:
        self.user_items = encoded
        self.users, self.items = encoded.rows, encoded.items
        self._item_users = None

    @contextmanager
    def _threads(self):
        """Run with ``num_threads`` numba threads (when set), restoring the previous count."""
        if self.num_threads is None:
            yield
            return
        previous = numba.get_num_threads()
        numba.set_num_threads(min(int(self.num_threads), numba.config.NUMBA_NUM_THREADS))
        try:
            yield
        finally:
            numba.set_num_threads(previous)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (scikit-learn style)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    # ------------------------------------------------------------------------------------------
    # recommending

    def _check_fitted(self) -> None:
        if self.user_factors is None or self.item_factors is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit() first")

    def recommend_items(
        self, user_id: Any, n: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``n`` items for one user, best first: (item labels, float32 scores).

        With ``exclude_seen`` the user's training items are never returned; fewer than ``n`` come
        back only when fewer candidates exist. ``KeyError`` names an unknown user.
        """
        self._check_fitted()
        u = self.users.index_of(user_id)
        ptr, ind = self._seen_rows(np.array([u])) if exclude_seen else (None, None)
        idx, scores = topk(self.user_factors[u : u + 1], self.item_factors, n, ptr, ind)
        return self._labelled(self.items, idx[0], scores[0])

    def recommend_users(
        self, item_id: Any, n: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Users most likely to want ``item_id``, best first: (user labels, float32 scores).

        With ``exclude_seen`` users who already have the item in training are left out.
        """
        self._check_fitted()
        i = self.items.index_of(item_id)
        ptr = ind = None
        if exclude_seen:
            t_ptr, t_ind = self._transposed()
            ptr, ind = csr_rows(t_ptr, t_ind, np.array([i]))
        idx, scores = topk(self.item_factors[i : i + 1], self.user_factors, n, ptr, ind)
        return self._labelled(self.users, idx[0], scores[0])

    def similar_items(self, item_id: Any, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items closest to ``item_id`` by cosine similarity of item factors, the item itself excluded."""
        self._check_fitted()
        i = self.items.index_of(item_id)
        unit = self._unit_item_factors()
        idx, scores = topk(unit[i : i + 1], unit, n, np.array([0, 1]), np.array([i]))
        return self._labelled(self.items, idx[0], scores[0])

    def batch_recommend(
        self,
        n: int = 10,
        users: Any = None,
        exclude_seen: bool = True,
        format: str | None = None,
    ) -> Any:
        """Top-``n`` items for every user (or the given ``users``) as [user_id, item_id, score] rows.

        Scores are computed block by block with the parallel top-k kernel, never as a dense
        users × items matrix; rows come grouped by user, best first.
        """
        self._check_fitted()
        rows = self._rows(self.users, users)
        query = self.user_factors if rows is None else self.user_factors[rows]
        ptr = ind = None
        if exclude_seen:
            ptr, ind = self._seen_rows(rows)
        idx, scores = topk(query, self.item_factors, n, ptr, ind)
        return self._long_frame(rows, idx, scores, self.users, self.items, ("user_id", "item_id"), format)

    def batch_similar_items(self, n: int = 10, items: Any = None, format: str | None = None) -> Any:
        """Most similar items (cosine) for every item (or the given ``items``) as
        [item_id, similar_item_id, score] rows, the item itself excluded."""
        self._check_fitted()
        rows = self._rows(self.items, items)
        unit = self._unit_item_factors()
        query = unit if rows is None else unit[rows]
        m = len(query)
        self_idx = np.arange(m, dtype=np.int32) if rows is None else rows.astype(np.int32)
        idx, scores = topk(query, unit, n, np.arange(m + 1, dtype=np.int64), self_idx)
        return self._long_frame(
            rows, idx, scores, self.items, self.items, ("item_id", "similar_item_id"), format
        )

    # ------------------------------------------------------------------------------------------
    # exporting

    def export_user_factors(
        self, normalize: bool = False, include_labels: bool = True, format: str | None = None
    ) -> Any:
        """User factors as [id, label, vector] (vector: fixed-size float32 list, LanceDB-ready)."""
        self._check_fitted()
        return self._factor_frame(self.user_factors, self.users, normalize, include_labels, format)

    def export_item_factors(
        self, normalize: bool = False, include_labels: bool = True, format: str | None = None
    ) -> Any:
        """Item factors as [id, label, vector] (vector: fixed-size float32 list, LanceDB-ready)."""
        self._check_fitted()
        return self._factor_frame(self.item_factors, self.items, normalize, include_labels, format)

    def export_factors(
        self, normalize: bool = False, include_labels: bool = True, format: str | None = None
    ) -> Any:
        """Item factors as [id, label, vector]; the same as :meth:`export_item_factors`."""
        return self.export_item_factors(normalize, include_labels, format)

    # ------------------------------------------------------------------------------------------
    # saving

    def save(self, path: str | Path) -> Path:
        """Write factors, labels, training interactions and parameters to one ``.npz`` (no pickle; each
        array's data 64-byte aligned in the file, so :meth:`load` can map it)."""
        self._check_fitted()
        enc = self.user_items
        meta = {
            "model": type(self).__name__,
            "params": self.get_params(),
            "format": self._format,
            "user_col": self.user_col,
            "item_col": self.item_col,
            "rating_col": self.rating_col,
            "user_labels": _label_kind(self.users),
            "item_labels": _label_kind(self.items),
            "has_data": enc.data is not None,
        }
        arrays = {
            "meta": np.array(json.dumps(meta)),
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
            "user_labels": _labels_to_numpy(self.users, "user"),
            "item_labels": _labels_to_numpy(self.items, "item"),
            "indptr": enc.indptr,
            "indices": enc.indices,
            "data": enc.data if enc.data is not None else np.zeros(0, np.float32),
        }
        path = Path(path)
        write_npz(path, arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FactorModel:
        """Read a model written by :meth:`save`. The large arrays are mapped copy-on-write from the file
        (:func:`read_npz`): pages are read when first used and changes stay in this process."""
        npz = read_npz(Path(path))
        meta = json.loads(str(npz["meta"]))
        model_cls = FactorModel._registry.get(meta["model"])
        if model_cls is None:
            raise ValueError(f"{path}: unknown model type {meta['model']!r}")
        if cls is not FactorModel and not issubclass(model_cls, cls):
            raise ValueError(f"{path} holds a {meta['model']}, not a {cls.__name__}")
        model = model_cls(**meta["params"])
        users = Labels(_labels_from_numpy(npz["user_labels"], meta["user_labels"]))
        items = Labels(_labels_from_numpy(npz["item_labels"], meta["item_labels"]))
        data = npz["data"] if meta["has_data"] else None
        model._set_interactions(Encoded(npz["indptr"], npz["indices"], data, users, items))
        model.user_factors = np.ascontiguousarray(npz["user_factors"], dtype=np.float32)
        model.item_factors = np.ascontiguousarray(npz["item_factors"], dtype=np.float32)
        model.user_col, model.item_col = meta["user_col"], meta["item_col"]
        model.rating_col, model._format = meta["rating_col"], meta["format"]
        return model

    # ------------------------------------------------------------------------------------------
    # helpers

    def _seen_rows(self, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        enc = self.user_items
        if rows is None:
            return enc.indptr, enc.indices
        return csr_rows(enc.indptr, enc.indices, rows)

    def _transposed(self) -> tuple[np.ndarray, np.ndarray]:
        """Item × user CSR of the training interactions (built on first use)."""
        if self._item_users is None:
            enc = self.user_items
            ptr, ind, _ = transpose_csr(enc.indptr, enc.indices, None, enc.n_items)
            self._item_users = (ptr, ind)
        return self._item_users

    def _unit_item_factors(self) -> np.ndarray:
        if self._unit_items is None:
            self._unit_items = _normalized(self.item_factors)
        return self._unit_items

    @staticmethod
    def _rows(labels: Labels, wanted: Any) -> np.ndarray | None:
        if wanted is None:
            return None
        if np.isscalar(wanted) or isinstance(wanted, str):
            wanted = [wanted]
        return labels.indices_of(wanted)

    @staticmethod
    def _labelled(labels: Labels, idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = idx >= 0
        return labels.take(idx[keep]), np.ascontiguousarray(scores[keep], dtype=np.float32)

    @property
    def output_format(self) -> str:
        """The frame library outputs use by default: that of the training frame, else pandas."""
        return self._format or "pandas"

    def _output_format(self, format: str | None) -> str:
        return resolve_format(format, default=self.output_format)

    def _long_frame(self, rows, idx, scores, row_labels, col_labels, names, format) -> Any:
        keep = idx >= 0
        counts = keep.sum(axis=1)
        row_idx = np.arange(len(idx)) if rows is None else rows
        columns = {
            names[0]: row_labels.take(np.repeat(row_idx, counts)),
            names[1]: col_labels.take(idx[keep]),
            "score": np.ascontiguousarray(scores[keep], dtype=np.float32),
        }
        return make_frame(columns, self._output_format(format))

    def _factor_frame(self, factors, labels, normalize, include_labels, format) -> Any:
        import pyarrow as pa

        vectors = _normalized(factors) if normalize else factors
        n, k = vectors.shape
        columns: dict[str, Any] = {"id": pa.array(np.arange(n, dtype=np.int64))}
        if include_labels:
            columns["label"] = labels.to_arrow()
        columns["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)), k
        )
        return from_arrow(pa.table(columns), self._output_format(format))


FactorModel._registry[FactorModel.__name__] = FactorModel  # models built by FactorModel.from_factors load too


def transpose_csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray | None, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The column-major view of a CSR as another CSR (int64 offsets, int32 sorted row indices)."""
    values = np.zeros(0, np.float32) if data is None else np.ascontiguousarray(data)
    ptr, rows, out = _transpose_kernel(
        np.require(indptr, np.int64, "CW"), np.require(indices, np.int32, "CW"), values, data is not None, int(n_cols)
    )
    return ptr, rows, (out if data is not None else None)


@njit(cache=True)
def _transpose_kernel(indptr, indices, data, has_data, n_cols):  # pragma: no cover - numba
    """Counting sort of the entries by column in one pass over the rows in order, so each column's
    rows come out sorted: O(entries), no temporaries beyond the output (an argsort was 2 s at 10M
    entries and grew faster than the data; benchmarks/RESULTS.md, "ALS fit: session 8")."""
    nnz = indices.shape[0]
    ptr = np.zeros(n_cols + 1, np.int64)
    for e in range(nnz):
        ptr[indices[e] + 1] += 1
    for c in range(n_cols):
        ptr[c + 1] += ptr[c]
    fill = ptr[:-1].copy()
    rows = np.empty(nnz, np.int32)
    out = np.empty(nnz if has_data else 0, data.dtype)
    for r in range(indptr.shape[0] - 1):
        for e in range(indptr[r], indptr[r + 1]):
            c = indices[e]
            at = fill[c]
            rows[at] = r
            if has_data:
                out[at] = data[e]
            fill[c] = at + 1
    return ptr, rows, out


def _normalized(factors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return np.ascontiguousarray(factors / np.maximum(norms, 1e-12), dtype=np.float32)


def _check_ratings(data: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(data) | (data < 0)
    if bad.any():
        raise ValueError(
            f"ratings in {what} must be finite and >= 0; {int(bad.sum())} are not "
            f"(e.g. {data[np.flatnonzero(bad)[0]]!r})"
        )


def _label_kind(labels: Labels) -> str:
    return "str" if labels.values.dtype.kind in "OU" else "native"


def _labels_to_numpy(labels: Labels, what: str) -> np.ndarray:
    """Labels as a pickle-free numpy array (strings become fixed-width unicode)."""
    values = labels.values
    if values.dtype.kind == "O":
        if not all(isinstance(v, str) for v in values.tolist()):
            raise ValueError(f"cannot save {what} labels of mixed or non-string object type")
        return values.astype(str)
    return values


def _labels_from_numpy(values: np.ndarray, kind: str) -> np.ndarray:
    return values.astype(object) if kind == "str" else values


#: arrays smaller than this are read into memory; larger ones are mapped from the file
MAP_BYTES = 1 << 20
#: alignment of array data in the files :func:`write_npz` writes (what read_npz needs to map a member)
ALIGN = 64
_PADDING_ID = 0xD935  # a zip extra field that only pads (the id Android's zipalign uses)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` as ``np.savez`` writes it (members stored uncompressed, zip64 headers) with each
    member's array data starting at a multiple of ``ALIGN`` bytes in the file: a padding extra field
    in the local header moves it there (``np.load`` and zip readers skip it)."""
    import struct
    import zipfile

    with path.open("wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            value = np.asanyarray(value)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(value))
            # local header: 30 bytes, the name, the padding field (4 + n bytes), the zip64 field (20 bytes)
            start = fh.tell() + 30 + len(info.filename.encode()) + 4 + 20
            n = (-(start + len(header.getvalue()))) % ALIGN
            info.extra = struct.pack("<HH", _PADDING_ID, n) + bytes(n)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (``np.savez``, :func:`write_npz`): members stored uncompressed,
    at least ``MAP_BYTES`` long and ``ALIGN``-aligned in the file are mapped copy-on-write
    (``np.memmap`` mode "c": no copy at load, pages read on first use, writes private to this
    process), the others read; the values are those ``np.load`` gives."""
    import struct
    import zipfile

    arrays: dict[str, np.ndarray] = {}
    whole = None  # the file mapped once (one descriptor per loaded model), members are views of it
    with zipfile.ZipFile(path) as archive, path.open("rb") as fh:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            fh.seek(info.header_offset)
            local = fh.read(30)  # the local file header: its name and extra field lengths end it
            if local[:4] != b"PK\x03\x04":
                raise ValueError(f"{path}: member {info.filename} has no local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # a header this reader does not parse: the member read in full
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                continue
            if dtype.hasobject:
                raise ValueError(f"{path}: member {info.filename} holds Python objects (not loaded without pickle)")
            offset = fh.tell()
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            order = "F" if fortran else "C"
            if nbytes < MAP_BYTES or offset % ALIGN:  # small, or unaligned (an older file): read
                arrays[name] = np.frombuffer(bytearray(fh.read(nbytes)), dtype=dtype).reshape(shape, order=order)
            else:
                if whole is None:
                    whole = np.memmap(path, dtype=np.uint8, mode="c").view(np.ndarray)
                arrays[name] = whole[offset : offset + nbytes].view(dtype).reshape(shape, order=order)
    return arrays
