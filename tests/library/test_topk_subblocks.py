"""Blocks scored in several BLAS products (``SUB_SCORES`` / ``ROW_TILE``): batch calls equal brute force on
every thread path, and the products give the scores one product per block gives."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import rusket_core.factorization.topk as topk_module
from rusket_core.factorization import FactorModel
from rusket_core.factorization.topk import dot_sub_rows, topk
from rusket_core.threads import single_threaded_blas


def _expected(scores: np.ndarray, excluded: set[int], n: int) -> list[int]:
    ok = [j for j in range(len(scores)) if j not in excluded and scores[j] > -np.inf]
    return sorted(ok, key=lambda j: (-scores[j], j))[:n]


@pytest.fixture(scope="module")
def tied_model() -> FactorModel:
    """Small-integer factors: every dot product and cosine is exact in float32, so ties are real."""
    rng = np.random.default_rng(3)
    n_users, n_items, k = 41, 19, 4
    users = rng.integers(-2, 3, (n_users, k)).astype(np.float32)
    items = rng.choice(np.array([-1.0, 1.0], np.float32), (n_items, k))
    items[4] = items[1]  # a duplicate: cosine exactly 1, tied with nothing else
    seen = sp.random(n_users, n_items, density=0.3, random_state=2, format="csr")
    seen.data[:] = 1.0
    return FactorModel.from_factors(users, items, user_items=seen)


@pytest.mark.parametrize("path", ["parallel", "one thread", "split"])
@pytest.mark.parametrize("block_scores", [1 << 24, 11 * 19])  # one block / 11 rows per block
@pytest.mark.parametrize("sub", [(1, 1), (2, 3 * 19), (3, 7 * 19)])  # (ROW_TILE, SUB_SCORES)
def test_sub_blocked_calls_equal_brute_force(monkeypatch, tied_model, path, block_scores, sub):
    model = tied_model
    n_users, n_items = len(model.user_factors), len(model.item_factors)
    monkeypatch.setattr(topk_module, "BLOCK_SCORES", block_scores)
    monkeypatch.setattr(topk_module, "MIN_BLOCK_ROWS", 1)
    monkeypatch.setattr(topk_module, "ROW_TILE", sub[0])
    monkeypatch.setattr(topk_module, "SUB_SCORES", sub[1])
    small, split = {"parallel": (1, 1), "one thread": (1 << 30, 1 << 30), "split": (1 << 30, 1)}[path]
    monkeypatch.setattr(topk_module, "SMALL_SCORES", small)
    monkeypatch.setattr(topk_module, "SPLIT_SCORES", split)
    n = 5
    recs = model.batch_recommend(n=n, format="pandas")
    scores = model.user_factors @ model.item_factors.T
    enc = model.user_items
    expected = []
    for u in range(n_users):
        seen = set(enc.indices[enc.indptr[u] : enc.indptr[u + 1]].tolist())
        expected += [(u, j, scores[u, j]) for j in _expected(scores[u], seen, n)]
    assert list(zip(recs.user_id, recs.item_id, recs.score, strict=True)) == expected

    similar = model.batch_similar_items(n=n, format="pandas")
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    cos = (unit @ unit.T).astype(np.float32)
    expected = [(i, j, cos[i, j]) for i in range(n_items) for j in _expected(cos[i], {i}, n)]
    assert list(zip(similar.item_id, similar.similar_item_id, similar.score, strict=True)) == expected


@pytest.mark.parametrize("width", [1, 17, 1679, 2000, 20_000, 1 << 22])
def test_sub_rows_are_whole_row_tiles_near_sub_scores(width):
    rows = dot_sub_rows(width)
    tile = topk_module.ROW_TILE
    assert rows % tile == 0 and rows >= tile
    assert rows * width <= max(topk_module.SUB_SCORES, tile * width)  # at most SUB_SCORES unless one tile is more
    assert (rows + tile) * width > topk_module.SUB_SCORES  # and no tile fewer than fits


@pytest.mark.parametrize("m, n_items", [(672, 300), (960, 211)])
def test_products_per_row_tile_give_the_scores_of_one_product_per_block(monkeypatch, m, n_items):
    # BLAS kernels round a score by where its row falls in the kernel's row tile; products that start
    # at multiples of ROW_TILE rows from the block start keep every row where one product put it (a
    # failure here means this machine's sgemm has a row tile that does not divide ROW_TILE); BLAS on one
    # thread, as the split and parallel paths run it (a multi-threaded product splits its rows elsewhere).
    # Every product here (whole rows multiples of ROW_TILE) is above 10^6 multiply-adds: below that
    # OpenBLAS's SkylakeX build may use its small-matrix kernels, which round some scores differently
    # (seen at 96 x 97 x 64 and 40 x 211 x 64 on a Sapphire Rapids machine; at most a block's last
    # product is that small when it has 4 factors or more, dot_sub_rows making the others SUB_SCORES scores)
    rng = np.random.default_rng(0)
    query = rng.normal(size=(m, 64)).astype(np.float32)
    items = rng.normal(size=(n_items, 64)).astype(np.float32)
    with single_threaded_blas(True):
        monkeypatch.setattr(topk_module, "SUB_SCORES", 1 << 40)
        one_idx, one_val = topk(query, items, 10)
        monkeypatch.setattr(topk_module, "SUB_SCORES", 1)  # one ROW_TILE per product
        idx, val = topk(query, items, 10)
    np.testing.assert_array_equal(idx, one_idx)
    np.testing.assert_array_equal(val, one_val)
