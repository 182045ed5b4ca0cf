"""Paths, helpers and fixtures shared by the library (tests/library) and pipeline (tests/pipeline) tests."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from rusket_core.encoding import Encoded, Labels
from rusket_core.factorization import ALS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RETAIL = DATA / "online_retail_II_sample.parquet"  # bundled Online Retail II sample


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_dagster_home(parent: Path) -> Path:
    """A DAGSTER_HOME under ``parent`` holding the project's instance config (dagster_home/dagster.yaml)."""
    home = parent / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session for the whole run (start-up takes tens of seconds); skipped without pyspark."""
    pytest.importorskip("pyspark")
    from rusket_core.spark import spark_session

    session = spark_session()
    yield session
    session.stop()


@pytest.fixture
def dagster_home(tmp_path, monkeypatch) -> Path:
    """A fresh DAGSTER_HOME with the project's instance config, set in the environment for the test."""
    home = make_dagster_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _random_model(rng: np.random.Generator, users, n_items: int, density: float) -> ALS:
    """Random 3-factor model over ``users`` with random seen items; item labels are the even numbers
    (odd ones are free for items known only to rules)."""
    dense = rng.random((len(users), n_items)) < density
    user_factors, item_factors = rng.normal(size=(len(users), 3)), rng.normal(size=(n_items, 3))
    user_labels, item_labels = Labels(users), Labels(np.arange(0, 2 * n_items, 2))
    indptr = np.r_[0, np.cumsum(dense.sum(axis=1))].astype(np.int64)
    seen = Encoded(indptr, np.nonzero(dense)[1].astype(np.int32), None, user_labels, item_labels)
    return ALS.from_factors(user_factors, item_factors, user_items=seen, factors=3)


@pytest.fixture
def random_model():
    """Factory ``random_model(rng, users, n_items, density)`` of fitted random ALS models."""
    return _random_model
