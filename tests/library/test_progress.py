"""Library progress through `logging`: the figures logged are the model's own, at a limited rate."""

from __future__ import annotations

import logging
import re

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
from numba import njit

from rusket_core import ALS, BPR, FPGrowth, Recommender
from rusket_core.progress import Progress

CSR = sp.random(120, 40, density=0.1, random_state=1, format="csr", dtype=np.float32)


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_rate_limit_logs_the_last_step_and_nothing_in_between(caplog):
    logger = logging.getLogger("rusket_core.test")
    with caplog.at_level(logging.INFO, logger="rusket_core"):
        progress = Progress(logger, "work", 10, "rows", every=3600)
        for done in range(1, 11):
            progress.update(done, speed=2.5)
    (only,) = messages(caplog, "rusket_core.test")
    assert re.fullmatch(r"work: 10 of 10 rows \(\d+\.\d s\), speed 2\.5", only)


def test_nothing_is_computed_or_logged_below_info(caplog):
    logger = logging.getLogger("rusket_core.test")
    with caplog.at_level(logging.WARNING, logger="rusket_core"):
        progress = Progress(logger, "work", 1)
        assert not progress.due(1)
        progress.update(1)
    assert not caplog.records


def test_als_logs_iterations_and_the_final_loss(caplog):
    with caplog.at_level(logging.INFO, logger="rusket_core"):
        model = ALS(factors=4, iterations=3, random_state=0).fit(CSR)
    last = messages(caplog, "rusket_core.factorization.als")[-1]
    assert "ALS fit (120 users × 40 items, 4 factors): 3 of 3 iterations" in last
    logged = float(last.rsplit("loss ", 1)[1])
    np.testing.assert_allclose(logged, model.training_loss(), rtol=1e-5)


def test_deterministic_bpr_logs_epochs_with_loss(caplog):
    with caplog.at_level(logging.INFO, logger="rusket_core"):
        model = BPR(factors=4, iterations=4, deterministic=True).fit(CSR)
    last = messages(caplog, "rusket_core.factorization.bpr")[-1]
    assert ": 4 of 4 epochs" in last
    np.testing.assert_allclose(float(re.search(r"loss ([\d.e-]+)", last).group(1)), model.loss_[-1], rtol=1e-5)


def test_mining_and_batch_scoring_report_their_counts(caplog):
    baskets = pa.table({"basket": [1, 1, 2, 2, 3, 3, 3], "item": ["a", "b", "a", "b", "a", "b", "c"]})
    with caplog.at_level(logging.INFO, logger="rusket_core"):
        itemsets = FPGrowth.from_transactions(baskets, "basket", "item", min_support=2).mine(format="arrow")
        model = ALS(factors=4, iterations=1).fit(CSR)
        embeddings = model.export_item_factors(format="arrow").select(["label", "vector"])
        Recommender(model=model, item_embeddings=embeddings).recommend_for_users(n=3, format="arrow")
    mined = messages(caplog, "rusket_core.mining.fpgrowth")
    assert mined[0] == "mining itemsets: 3 baskets, 3 items, in at least 2 baskets, up to any number of items"
    assert mined[1].startswith(f"mined {itemsets.num_rows} itemsets in ")
    assert messages(caplog, "rusket_core.factorization.topk")[-1].startswith("scoring 40 items: 120 of 120 users")


def test_first_compile_of_a_library_kernel_is_announced(caplog):
    namespace = {"__name__": "rusket_core._compile_probe"}
    exec("def probe(x):\n    return x + 1\n", namespace)
    kernel = njit(namespace["probe"])  # no cache: compiled on this first call
    with caplog.at_level(logging.INFO, logger="rusket_core"):
        assert kernel(41) == 42
    start, end = messages(caplog, "rusket_core.jit")
    assert start.startswith("compiling rusket_core._compile_probe.probe(int64): first use")
    assert re.fullmatch(r"compiled rusket_core._compile_probe.probe in \d+\.\d s", end)
