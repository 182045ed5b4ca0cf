"""Top-k at small shapes: the heap against a sort, and batch calls equal to brute force on both sides
of the one-thread switch (``SMALL_SCORES``) and with many blocks."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import rusket_core.factorization.topk as topk_module
from rusket_core.factorization import FactorModel
from rusket_core.factorization.topk import select_topk


def _expected(scores: np.ndarray, excluded: set[int], n: int) -> list[int]:
    """Best ``n`` columns of one row: not excluded, not NaN, not -inf; ties to the lower column."""
    ok = [j for j in range(len(scores)) if j not in excluded and scores[j] > -np.inf]
    return sorted(ok, key=lambda j: (-scores[j], j))[:n]


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 6),
    n_items=st.integers(1, 120),
    n=st.integers(0, 130),
    seed=st.integers(0, 10_000),
    levels=st.sampled_from([2, 5, 0]),  # 0: continuous scores, else that many tied values
)
def test_heap_selection_matches_a_sort_with_deep_heaps(m, n_items, n, seed, levels):
    rng = np.random.default_rng(seed)
    if levels:
        scores = rng.integers(0, levels, (m, n_items)).astype(np.float32)
    else:
        scores = rng.normal(size=(m, n_items)).astype(np.float32)
    special = rng.random((m, n_items))
    scores[special < 0.05] = np.nan
    scores[(special >= 0.05) & (special < 0.1)] = -np.inf
    scores[(special >= 0.1) & (special < 0.13)] = np.inf
    excluded = [np.sort(rng.choice(n_items, rng.integers(0, n_items // 2 + 1), replace=False)) for _ in range(m)]
    ptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    ind = np.concatenate(excluded).astype(np.int32)
    idx, val = select_topk(scores, n, ptr, ind)
    assert idx.shape == val.shape == (m, min(n, n_items))
    for r in range(m):
        expected = _expected(scores[r], set(excluded[r].tolist()), n)
        k = len(expected)
        assert idx[r, :k].tolist() == expected
        np.testing.assert_array_equal(val[r, :k], scores[r, expected])
        assert np.all(idx[r, k:] == -1) and np.all(val[r, k:] == -np.inf)


@pytest.fixture(scope="module")
def tied_model() -> FactorModel:
    """Integer user factors and ±1 item factors (all norm 2, one zero item, duplicated items): every
    dot product and cosine is exact in float32, so ties are real ties; user 3 has seen nothing."""
    rng = np.random.default_rng(7)
    n_users, n_items, k = 23, 17, 4
    users = rng.integers(-2, 3, (n_users, k)).astype(np.float32)
    items = rng.choice(np.array([-1.0, 1.0], np.float32), (n_items, k))
    items[5] = 0.0  # a zero item: cosine 0 with everything
    items[9] = items[2]  # duplicates: cosine exactly 1
    items[12] = items[2]
    seen = sp.random(n_users, n_items, density=0.3, random_state=1, format="lil")
    seen[3, :] = 0.0
    seen = seen.tocsr()
    seen.data[:] = 1.0
    return FactorModel.from_factors(users, items, user_items=seen)


def _set_path(monkeypatch, path: str, scores: int) -> None:
    """Send a call over ``scores`` scores down ``path``, each threshold at its boundary."""
    small, split = {"parallel": (scores, scores), "one thread": (scores + 1, scores + 1), "split": (scores + 1, scores)}[path]
    monkeypatch.setattr(topk_module, "SMALL_SCORES", small)
    monkeypatch.setattr(topk_module, "SPLIT_SCORES", split)


@pytest.fixture
def parts_calls(monkeypatch) -> list:
    """Records the plans of every call split into parts on Python threads."""
    calls: list = []
    run_parts = topk_module._run_parts

    def spy(serial, state, indptr, indices, out_idx, out_val, plans):
        calls.append(plans)
        run_parts(serial, state, indptr, indices, out_idx, out_val, plans)

    monkeypatch.setattr(topk_module, "_run_parts", spy)
    return calls


@pytest.mark.parametrize("path", ["parallel", "one thread", "split"])
@pytest.mark.parametrize("block_scores", [1 << 24, 3 * 17])  # one block / three rows per block
@pytest.mark.parametrize("n", [1, 4, 16, 40])  # 40: more than the catalogue
def test_batch_calls_equal_brute_force_on_every_thread_path(monkeypatch, parts_calls, tied_model, path, block_scores, n):
    model = tied_model
    n_users, n_items = len(model.user_factors), len(model.item_factors)
    monkeypatch.setattr(topk_module, "BLOCK_SCORES", block_scores)
    monkeypatch.setattr(topk_module, "MIN_BLOCK_ROWS", 1)

    _set_path(monkeypatch, path, n_users * n_items)
    recs = model.batch_recommend(n=n, format="pandas")
    scores = model.user_factors @ model.item_factors.T
    enc = model.user_items
    expected_rows = []
    for u in range(n_users):
        seen = set(enc.indices[enc.indptr[u] : enc.indptr[u + 1]].tolist())
        expected_rows += [(u, j, scores[u, j]) for j in _expected(scores[u], seen, n)]
    assert list(zip(recs.user_id, recs.item_id, recs.score, strict=True)) == expected_rows
    assert (recs.user_id == 3).sum() == min(n, n_items)  # nothing seen: a full list

    _set_path(monkeypatch, path, n_items * n_items)
    similar = model.batch_similar_items(n=n, format="pandas")
    if path == "split" and numba.get_num_threads() > 1:
        assert len(parts_calls) == 2  # both batch calls ran in parts
    unit = model.item_factors / np.maximum(np.linalg.norm(model.item_factors, axis=1, keepdims=True), 1e-12)
    cos = (unit @ unit.T).astype(np.float32)
    expected_rows = [(i, j, cos[i, j]) for i in range(n_items) for j in _expected(cos[i], {i}, n)]
    assert list(zip(similar.item_id, similar.similar_item_id, similar.score, strict=True)) == expected_rows
    assert similar.loc[similar.item_id == 2, "similar_item_id"].tolist()[:2] == [9, 12][:n]  # the duplicates, tied at 1
    for i in (0, 5, 9):  # the single-item call agrees with the batch row
        got, got_scores = model.similar_items(i, n=n)
        assert [(i, j, s) for j, s in zip(got, got_scores, strict=True)] == [row for row in expected_rows if row[0] == i]


@pytest.mark.parametrize("m", [1, 2, 5, 64, 129, 1000])
@pytest.mark.parametrize("parts", [1, 2, 3, 8])
@pytest.mark.parametrize("block_scores", [1 << 24, 7 * 10])
def test_split_parts_cover_every_row_once_in_the_one_thread_blocks(monkeypatch, m, parts, block_scores):
    monkeypatch.setattr(topk_module, "BLOCK_SCORES", block_scores)
    width = 10
    plans = topk_module._split_plans(m, width, 0, width, parts)
    one_thread_rows = int(min(m, block_scores // width, max(topk_module.MIN_BLOCK_ROWS, -(-m // 2))))
    assert 1 <= len(plans) <= parts
    assert [int(p[0]) for p in plans][0] == 0 and int(plans[-1][1]) == m
    for prev, nxt in zip(plans, plans[1:], strict=False):
        assert int(prev[1]) == int(nxt[0])  # contiguous, no overlap
    for first, end, buf_cols, _, select_cols, block_rows, chunks, _ in plans:
        assert (int(buf_cols), int(select_cols), int(block_rows), int(chunks)) == (width, width, one_thread_rows, 1)
        assert first % one_thread_rows == 0 and end > first  # starts on a block boundary of the one-thread path
