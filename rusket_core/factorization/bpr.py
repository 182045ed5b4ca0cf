"""Bayesian personalised ranking (Rendle et al. 2009) by Hogwild SGD with checked negative samples."""

from __future__ import annotations

import logging

import numba
import numpy as np

from rusket_core.encoding import Encoded
from rusket_core.factorization.base import FactorModel, check_int, check_real
from rusket_core.factorization.foldin import FoldIn
from rusket_core.factorization.kernels import (
    bpr_epoch_blocks,
    bpr_epochs,
    bpr_fold_in,
    bpr_item_fold_in,
)
from rusket_core.progress import Progress

logger = logging.getLogger(__name__)

LOSSES = ("rational", "logistic")
SCHEDULES = ("linear", "constant")
#: user blocks of the deterministic mode (fixed, so results do not depend on the thread count)
BLOCKS = 8
#: deterministic mode: a block takes max(ROUND_STEPS, ROUND_PER_ITEM * items) SGD steps between merges
#: of the item copies. Merging once per epoch diverged on long epochs (benchmarks/RESULTS.md,
#: "Deterministic BPR"); the floor bounds the merges' cost (each touches every item row and waits
#: for all blocks).
ROUND_STEPS, ROUND_PER_ITEM = 4096, 4


class BPR(FoldIn, FactorModel):
    """Pairwise ranking factors: each epoch takes exactly ``nnz`` SGD steps on (user, seen, unseen).

    Every user gets the same share of steps (so light users weigh as much as heavy ones, as
    ranking metrics averaged over users do, like MyMediaLite's uniform-user sampling); a step
    pairs one of the user's items with a negative item drawn uniformly and redrawn until it is
    not in the user's training row.

    ``loss`` sets how a pair with score gap z = x_u·(y_i - y_j) is weighted: ``"logistic"`` is
    Rendle's BPR-Opt (weight 1 - sigma(z), which vanishes like e^-z once a pair is ranked right);
    ``"rational"`` (default) puts sigma(z) = 1/2 + z/(2(1 + |z|)) in its place, a convex loss whose
    weight falls like 1/z, so pairs already ranked right keep pulling the factors apart and lean
    to popular items. Which one ranks better depends on the data (held-out figures on planted,
    synthetic and retail data in benchmarks/RESULTS.md); compare both with
    ``rusket_core.evaluation`` on your data.
    ``schedule="linear"`` (default) lowers the step size from ``learning_rate`` in the first epoch
    towards 0 in the last, so the final factors are not left at the noise level of a full-size
    step; ``"constant"`` keeps it.
    By default threads update shared factors without locks (Hogwild), so results are reproducible
    for a given ``random_state`` only with one thread. ``deterministic=True`` gives the same factors
    for the same ``random_state`` whatever the thread count or timing: users are split into
    ``BLOCKS`` fixed blocks with their own sample streams, each epoch runs in rounds of a fixed number of
    steps per block (``ROUND_STEPS``, ``ROUND_PER_ITEM``), each block on a private copy of the item
    factors, and after every round the blocks' item changes are summed in block order (memory:
    ``BLOCKS`` copies of the item factors). After ``fit``, ``samples_`` holds the steps taken per
    epoch, ``ranking_accuracy_`` the share of samples already ranked right and ``loss_`` the mean
    pair loss -ln sigma(z) of the epoch's samples.
    ``partial_fit_users`` / ``partial_fit_items`` run seeded SGD epochs over the given users' (items')
    rows with the other side fixed (reproducible for a seed at any thread count), so ``partial_fit``
    takes in new products too; ``fit(init=model)`` warm-starts.
    """

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 150,
        loss: str = "rational",
        schedule: str = "linear",
        random_state: int = 0,
        num_threads: int | None = None,
        deterministic: bool = False,
    ) -> None:
        super().__init__(num_threads)
        self.factors = check_int("factors", factors, 1)
        self.learning_rate = check_real("learning_rate", learning_rate, strict=True)
        self.regularization = check_real("regularization", regularization)
        self.iterations = check_int("iterations", iterations, 0)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.loss = loss
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.schedule = schedule
        self.random_state = random_state
        self.deterministic = bool(deterministic)

    def _fit(self, interactions: Encoded) -> None:
        indptr = np.ascontiguousarray(interactions.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(interactions.indices, dtype=np.int32)
        n_users, n_items, k = interactions.n_rows, interactions.n_items, self.factors
        rng = np.random.default_rng(self.random_state)
        scale = np.float32(0.1 / np.sqrt(k))
        self.user_factors = (rng.standard_normal((n_users, k), dtype=np.float32) * scale).astype(np.float32)
        self.item_factors = (rng.standard_normal((n_items, k), dtype=np.float32) * scale).astype(np.float32)
        self._warm_start()
        # users with at least one positive and one negative item: the only ones a sample can use
        lengths = np.diff(indptr)
        users = np.flatnonzero((lengths > 0) & (lengths < n_items)).astype(np.int32)
        n_samples = len(indices)
        self.samples_ = np.zeros(self.iterations, dtype=np.int64)
        self.ranking_accuracy_ = np.zeros(self.iterations, dtype=np.float64)
        self.loss_ = np.zeros(self.iterations, dtype=np.float64)
        if len(users) == 0:
            return
        n_chunks = BLOCKS if self.deterministic else numba.get_num_threads()
        seeds = rng.integers(1, np.iinfo(np.int64).max, size=n_chunks, dtype=np.int64).astype(np.uint64)
        what = f"BPR fit ({n_users} users × {n_items} items, {k} factors, {self.loss} loss)"
        rational, decay = self.loss == "rational", 1.0 if self.schedule == "linear" else 0.0
        if self.deterministic:
            progress = Progress(logger, what, self.iterations, "epochs")
            copies = np.empty((n_chunks, n_items, k), dtype=np.float32)
            done = np.zeros((self.iterations, n_chunks), dtype=np.int64)
            correct, losses = np.zeros_like(done), np.zeros(done.shape, dtype=np.float64)
            rounds = max(1, n_samples // (n_chunks * max(ROUND_STEPS, ROUND_PER_ITEM * n_items)))
            for epoch in range(self.iterations):
                rate = self.learning_rate * (1.0 - decay * epoch / self.iterations)
                done[epoch], correct[epoch], losses[epoch] = bpr_epoch_blocks(
                    indptr, indices, users, self.user_factors, self.item_factors, copies,
                    rate, self.regularization, n_samples, seeds, rational, rounds,
                )  # fmt: skip
                steps = max(1, int(done[epoch].sum()))
                progress.update(epoch + 1, loss=losses[epoch].sum() / steps, ranked_right=correct[epoch].sum() / steps)
        else:
            logger.info("%s: %d epochs (Hogwild threads)", what, self.iterations)
            done, correct, losses = bpr_epochs(
                indptr, indices, users, self.user_factors, self.item_factors,
                self.learning_rate, self.regularization, n_samples, self.iterations, seeds, rational, decay,
            )  # fmt: skip
        self.samples_ = done.sum(axis=1)
        self.ranking_accuracy_ = correct.sum(axis=1) / np.maximum(1, self.samples_)
        self.loss_ = losses.sum(axis=1) / np.maximum(1, self.samples_)
        if not self.deterministic and self.iterations:
            logger.info("%s: done, last epoch loss %.4g, ranked right %.4g", what, self.loss_[-1], self.ranking_accuracy_[-1])

    def _solve_rows(
        self, side: str, indptr, indices, data, X: np.ndarray, new: np.ndarray,
        epochs: int | None = None, random_state: int | None = None,
    ) -> None:  # fmt: skip
        """Fold-in SGD: ``epochs`` (default ``iterations``) epochs over these rows with the other side
        fixed, each row taking per epoch the share of steps a user (an item) gets in ``fit``; new rows
        start as in a cold fit. Users: pairs as in ``fit``. Items: the item as a buyer's positive
        against a negative and as a non-buyer's negative against one of their items
        (``bpr_item_fold_in``). Seeded by ``random_state`` (default the model's)."""
        epochs = check_int("epochs", self.iterations if epochs is None else epochs, 0)
        seed = self.random_state if random_state is None else random_state
        k = self.factors
        rng = np.random.default_rng(seed)
        X[new] = rng.standard_normal((int(new.sum()), k), dtype=np.float32) * np.float32(0.1 / np.sqrt(k))
        enc, own = (self.user_items, self.item_factors) if self._fold_matrix is None else self._fold_matrix
        decay = 1.0 if self.schedule == "linear" else 0.0
        if side == "items":
            active = int((enc.item_counts() > 0).sum())
            steps = max(1, round(enc.nnz / max(active, 1)))
            bpr_item_fold_in(
                indptr, indices, X, self.user_factors, np.ascontiguousarray(enc.indptr, np.int64),
                np.ascontiguousarray(enc.indices, np.int32), np.ascontiguousarray(own, np.float32), self.learning_rate,
                self.regularization, steps, epochs, np.uint64(rng.integers(0, 2**63)), self.loss == "rational", decay,
            )  # fmt: skip
            return
        lengths = np.diff(self.user_items.indptr)
        active = int(((lengths > 0) & (lengths < self.user_items.n_items)).sum())
        steps = max(1, round(self.user_items.nnz / max(active, 1)))
        bpr_fold_in(
            indptr, indices, X, self.item_factors, self.learning_rate, self.regularization, steps,
            epochs, np.uint64(rng.integers(0, 2**63)), self.loss == "rational",
            decay, max(1, min(len(X), 4 * numba.get_num_threads())),
        )  # fmt: skip
