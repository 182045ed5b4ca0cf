"""BPR: every sample processed, negatives checked against positives, planted quality, degenerate input."""

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
from rusket_core.factorization.kernels import bpr_epochs


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(7, 5), (300, 120)])
def test_every_epoch_takes_exactly_nnz_steps(threads, shape):
    csr = sp.random(*shape, density=0.2, random_state=1, format="csr", dtype=np.float32)
    model = BPR(factors=4, iterations=3, num_threads=threads).fit(csr)
    assert model.samples_.tolist() == [csr.nnz] * 3


@pytest.mark.parametrize("n_samples", [0, 1, 7, 1001])
def test_kernel_splits_samples_over_chunks_without_loss(n_samples):
    csr = sp.csr_array(np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    X = np.full((2, 3), 0.1, np.float32)
    Y = np.full((4, 3), 0.1, np.float32)
    users = np.array([0, 1], dtype=np.int32)
    seeds = np.array([11, 12, 13], dtype=np.uint64)
    done, _, _ = bpr_epochs(
        csr.indptr.astype(np.int64), csr.indices.astype(np.int32), users,
        X, Y, 0.01, 0.0, n_samples, 2, seeds, True, 1.0,
    )  # fmt: skip
    # three chunks for two users: one chunk idles, nothing is lost in either epoch
    assert done.sum(axis=1).tolist() == [n_samples, n_samples]


def test_negatives_are_never_positives():
    # one user owns 9 of 10 items: only item 9 may be drawn as a negative. Unchecked draws would
    # hit a positive 90% of the time and leave many samples ranked wrong.
    csr = sp.csr_array(np.array([[1] * 9 + [0]], dtype=np.float32))
    model = BPR(factors=4, iterations=200, learning_rate=0.1, num_threads=1).fit(csr)
    assert model.ranking_accuracy_[-20:].min() == 1.0
    scores = model.item_factors @ model.user_factors[0]
    assert np.argmin(scores) == 9


@pytest.mark.parametrize("decay", [0.0, 1.0])
@pytest.mark.parametrize("loss", ["rational", "logistic"])
def test_two_epochs_match_the_hand_computed_updates(loss, decay):
    # one user owning item 0 of 2: the only possible sample is (u=0, i=0, j=1), once per epoch
    X = np.array([[0.5, -1.0]], np.float32)
    Y = np.array([[1.0, 0.5], [-0.5, 2.0]], np.float32)
    x, yi, yj = X[0].astype(np.float64), Y[0].astype(np.float64), Y[1].astype(np.float64)
    lr, reg = 0.1, 0.2
    signs = []
    for rate in (lr, lr * (1 - decay / 2)):  # linear schedule: epoch e of 2 runs at lr * (1 - e/2)
        z = x @ (yi - yj)  # first epoch: 0.5*1.5 - 1*(-1.5) = 2.25
        signs.append(int(z > 0))
        weight = 0.5 - 0.5 * z / (1 + abs(z)) if loss == "rational" else 1 / (1 + np.exp(z))
        x, yi, yj = (
            x + rate * (weight * (yi - yj) - reg * x),
            yi + rate * (weight * x - reg * yi),
            yj + rate * (-weight * x - reg * yj),
        )
    done, correct, _ = bpr_epochs(
        np.array([0, 1], np.int64), np.array([0], np.int32), np.array([0], np.int32),
        X, Y, lr, reg, 1, 2, np.array([5], np.uint64), loss == "rational", decay,
    )  # fmt: skip
    assert done.tolist() == [[1], [1]] and correct.ravel().tolist() == signs
    np.testing.assert_allclose(X[0], x, rtol=1e-5)
    np.testing.assert_allclose(Y[0], yi, rtol=1e-5)
    np.testing.assert_allclose(Y[1], yj, rtol=1e-5)


def test_losses_differ_only_in_the_weight_of_right_ranked_pairs():
    csr = sp.random(60, 40, density=0.15, random_state=4, format="csr", dtype=np.float32)
    a = BPR(factors=4, iterations=3, random_state=1, num_threads=1, loss="rational").fit(csr)
    b = BPR(factors=4, iterations=3, random_state=1, num_threads=1, loss="logistic").fit(csr)
    assert not np.allclose(a.item_factors, b.item_factors)
    assert a.get_params()["loss"] == "rational" and b.get_params()["loss"] == "logistic"
    with pytest.raises(ValueError, match="loss"):
        BPR(loss="hinge")
    with pytest.raises(ValueError, match="schedule"):
        BPR(schedule="cosine")


def test_users_with_every_item_are_skipped_not_looped_on():
    dense = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=np.float32)
    model = BPR(factors=3, iterations=5).fit(sp.csr_array(dense))
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()
    assert model.samples_.tolist() == [7] * 5  # still nnz steps, all drawn from user 1
    everything = sp.csr_array(np.ones((2, 2), dtype=np.float32))
    assert np.isfinite(BPR(factors=2, iterations=2).fit(everything).user_factors).all()


def test_single_thread_runs_are_reproducible():
    csr = sp.random(50, 30, density=0.1, random_state=2, format="csr", dtype=np.float32)
    a = BPR(factors=4, iterations=5, random_state=3, num_threads=1).fit(csr)
    b = BPR(factors=4, iterations=5, random_state=3, num_threads=1).fit(csr)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS  # restored after fit


def test_planted_clusters_beat_popularity_and_group_similar_items():
    df = planted_interactions(
        n_users=400, n_items=200, n_interactions=8000, n_clusters=8, in_cluster=0.9,
        popularity_exponent=0.5, random_state=0,
    )  # fmt: skip
    train, test = train_test_split(df, "user_id", "item_id", 0.2, random_state=0)
    bpr = BPR.from_transactions(train, "user_id", "item_id", factors=16, iterations=50).fit()
    pop = PopularityRecommender.from_transactions(train, "user_id", "item_id").fit()
    bpr_p = evaluate(bpr, None, test, k=10)["precision"]
    pop_p = evaluate(pop, None, test, k=10)["precision"]
    assert bpr_p > 3 * pop_p, (bpr_p, pop_p)
    same = [np.mean(bpr.similar_items(i, n=10)[0] % 8 == i % 8) for i in range(0, 200, 7)]
    assert np.mean(same) > 0.85  # chance is 1/8
    assert bpr.ranking_accuracy_[-1] > bpr.ranking_accuracy_[0]


@pytest.mark.parametrize(
    "params",
    [{"factors": 0}, {"learning_rate": 0}, {"regularization": -1}, {"iterations": -1}],
)
def test_invalid_parameters_raise(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        BPR(**params)
