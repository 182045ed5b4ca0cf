"""Item embeddings for the semantic part of the blend: any input form, aligned to the model's items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_core.encoding import Labels
from rusket_core.frames import to_arrow_table

_KEY_COLUMNS = ("label", "item", "item_id", "id")


class ItemEmbeddings:
    """Unit item vectors aligned to ``items`` (zero for items without one) plus every given vector by label.

    ``item_embeddings``: an (n_items, d) array aligned to ``items``, a mapping label -> vector, or a
    frame with a label column (``label``, ``item``, ``item_id`` or ``id``, or the only non-vector
    column) and one vector column (``vector``, or the only list column).
    """

    def __init__(self, item_embeddings: Any, items: Labels) -> None:
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
        unit = unit_rows(matrix)
        pos = labels.lookup.get_indexer(items.values) if labels is not items else np.arange(len(items))
        #: model items without a vector (cosine 0 for them)
        self.missing = int((pos < 0).sum())
        self.aligned = np.zeros((len(items), matrix.shape[1]), dtype=np.float32)
        self.aligned[pos >= 0] = unit[pos[pos >= 0]]
        self.labels, self.all_units = labels, unit

    def target_keys(self, targets: list | None, strongest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's semantic target as a row of the returned unit matrix (given labels, else the
        item index in ``strongest``), -1 for a user without one; (keys int64, unit matrix)."""
        if targets is not None:
            return np.asarray(self.labels.indices_of(targets), dtype=np.int64), self.all_units
        return np.asarray(strongest, dtype=np.int64), self.aligned


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


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
