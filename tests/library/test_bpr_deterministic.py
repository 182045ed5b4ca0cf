"""BPR's deterministic mode: hand-computed steps, block changes summed, same factors for any thread count, Hogwild quality."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.sparse as sp

from rusket_core.evaluation import (
    PopularityRecommender,
    evaluate,
    planted_interactions,
    train_test_split,
)
from rusket_core.factorization import BPR
from rusket_core.factorization import bpr as bpr_module
from rusket_core.factorization.kernels import bpr_epoch_blocks

PTR = np.array([0, 1], np.int64)
IND = np.array([0], np.int32)


@pytest.mark.parametrize("loss", ["rational", "logistic"])
def test_one_block_epochs_match_hand_computed_steps_and_loss(loss):
    """One user with item 0 of two: every step pairs (0, 1); two epochs at lr and lr / 2."""
    x, yi, yj = np.array([0.5, -1.0]), np.array([1.0, 0.5]), np.array([-0.5, 2.0])
    X, Y = np.array([x], np.float32), np.array([yi, yj], np.float32)
    Yb = np.empty((1, 2, 2), np.float32)
    states = np.array([5], np.uint64)
    lr, reg = 0.1, 0.2
    for rate in (lr, lr / 2):
        z = x @ (yi - yj)
        sigma = 0.5 + 0.5 * z / (1 + abs(z)) if loss == "rational" else 1 / (1 + np.exp(-z))
        weight = 1 - sigma
        done, correct, losses = bpr_epoch_blocks(PTR, IND, np.array([0], np.int32), X, Y, Yb, rate, reg, 1,
                                                 states, loss == "rational", 1)  # fmt: skip
        assert done.tolist() == [1] and correct.tolist() == [int(z > 0)]
        np.testing.assert_allclose(losses, [-np.log(sigma)], rtol=1e-5)
        x, yi, yj = (
            x + rate * (weight * (yi - yj) - reg * x),
            yi + rate * (weight * x - reg * yi),
            yj + rate * (-weight * x - reg * yj),
        )
        np.testing.assert_allclose(X[0], x, rtol=1e-5)
        np.testing.assert_allclose(Y, [yi, yj], rtol=1e-5)
    assert states[0] != 5  # the block's stream moved on


def test_blocks_start_from_the_same_items_and_their_changes_add_up():
    """Two users in two blocks: the result is the start plus each block's change made alone."""
    csr = sp.csr_array(np.array([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], dtype=np.float32))
    ptr, ind = csr.indptr.astype(np.int64), csr.indices.astype(np.int32)
    rng = np.random.default_rng(0)
    X0 = rng.standard_normal((2, 3)).astype(np.float32)
    Y0 = rng.standard_normal((5, 3)).astype(np.float32)
    seeds = np.array([17, 23], np.uint64)
    X, Y = X0.copy(), Y0.copy()
    bpr_epoch_blocks(ptr, ind, np.array([0, 1], np.int32), X, Y, np.empty((2, 5, 3), np.float32),
                     0.1, 0.01, 6, seeds.copy(), True, 1)  # fmt: skip
    expected_y = Y0.astype(np.float64).copy()
    for user in (0, 1):  # each block alone: 3 steps for its user from its own stream
        Xa, Ya = X0.copy(), Y0.copy()
        bpr_epoch_blocks(ptr, ind, np.array([user], np.int32), Xa, Ya, np.empty((1, 5, 3), np.float32),
                         0.1, 0.01, 3, seeds[user : user + 1].copy(), True, 1)  # fmt: skip
        np.testing.assert_allclose(X[user], Xa[user], rtol=1e-6)
        expected_y += Ya - Y0
    np.testing.assert_allclose(Y, expected_y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("round_steps", [4096, 16])  # one round per epoch, and many rounds
def test_same_seed_gives_identical_factors_for_any_thread_count(round_steps, monkeypatch):
    monkeypatch.setattr(bpr_module, "ROUND_STEPS", round_steps)
    monkeypatch.setattr(bpr_module, "ROUND_PER_ITEM", 0)
    csr = sp.random(300, 80, density=0.08, random_state=5, format="csr", dtype=np.float32)
    threads = [1, 2, 2] if numba.config.NUMBA_NUM_THREADS >= 2 else [1, 1]
    fits = [BPR(factors=8, iterations=6, random_state=3, num_threads=t, deterministic=True).fit(csr) for t in threads]
    for other in fits[1:]:
        np.testing.assert_array_equal(fits[0].item_factors, other.item_factors)
        np.testing.assert_array_equal(fits[0].user_factors, other.user_factors)
        np.testing.assert_array_equal(fits[0].loss_, other.loss_)
    assert fits[0].samples_.tolist() == [csr.nnz] * 6
    other_seed = BPR(factors=8, iterations=6, random_state=4, deterministic=True).fit(csr)
    assert not np.array_equal(other_seed.item_factors, fits[0].item_factors)
    assert fits[0].get_params()["deterministic"] is True


def test_deterministic_mode_learns_planted_clusters():
    df = planted_interactions(
        n_users=400, n_items=200, n_interactions=8000, n_clusters=8, in_cluster=0.9,
        popularity_exponent=0.5, random_state=0,
    )  # fmt: skip
    train, test = train_test_split(df, "user_id", "item_id", 0.2, random_state=0)
    bpr = BPR.from_transactions(train, "user_id", "item_id", factors=16, iterations=50, deterministic=True).fit()
    pop = PopularityRecommender.from_transactions(train, "user_id", "item_id").fit()
    bpr_p = evaluate(bpr, None, test, k=10)["precision"]
    pop_p = evaluate(pop, None, test, k=10)["precision"]
    assert bpr_p > 3 * pop_p, (bpr_p, pop_p)
    same = [np.mean(bpr.similar_items(i, n=10)[0] % 8 == i % 8) for i in range(0, 200, 7)]
    assert np.mean(same) > 0.85  # chance is 1/8
    assert bpr.loss_[-1] < bpr.loss_[0] and bpr.ranking_accuracy_[-1] > bpr.ranking_accuracy_[0]


def test_deterministic_mode_ranks_as_well_as_hogwild_with_long_blocks():
    """30 steps per item per block and epoch: merging the block copies once per epoch fell to 0.046
    vs Hogwild's 0.069 here (100 epochs, lr 0.05); merging after every round matches Hogwild."""
    df = planted_interactions(
        n_users=30_000, n_items=1000, n_interactions=300_000, n_clusters=16, in_cluster=0.8,
        popularity_exponent=0.8, random_state=0,
    )  # fmt: skip
    train, test = train_test_split(df, "user_id", "item_id", 0.2, random_state=0)
    p = {}
    for det in (True, False):
        model = BPR.from_transactions(train, "user_id", "item_id", factors=64, iterations=100, loss="logistic",
                                      random_state=42, num_threads=1, deterministic=det).fit()  # fmt: skip
        p[det] = evaluate(model, None, test, k=10)["precision"]
    assert p[True] > 0.95 * p[False], p
