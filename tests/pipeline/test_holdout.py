"""The evaluation split in DuckDB: whole pairs on one side, stable when days are appended, a seeded sample."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rusket_assets.holdout import holdout_split
from rusket_assets.interactions import WarehouseTable
from rusket_assets.resources import Warehouse

COLUMNS = ["customer_id", "product_id", "quantity", "day"]


def _lines(rng, n: int, day: int, customers: int = 40) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([f"c{int(c)}" for c in rng.integers(0, customers, n)]),
            "product_id": pa.array(rng.integers(0, 25, n) * 7 % 25),
            "quantity": pa.array(rng.integers(1, 4, n)),
            "day": pa.array(np.full(n, day)),
        }
    )


def _table(tmp_path, lines: pa.Table) -> WarehouseTable:
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with duckdb.connect(warehouse.path) as con:
        con.execute("create schema if not exists ingest")
        con.register("lines", lines)
        con.execute("create or replace table ingest.raw_transactions as select * from lines")
    return WarehouseTable(warehouse, "ingest", "raw_transactions")


def _split(table: WarehouseTable, fraction: float, seed: int, sample: int):
    with holdout_split(table, COLUMNS, "customer_id", "product_id", fraction, seed, sample) as holdout:
        return holdout.train.to_arrow_table(), holdout.test, holdout.customers, holdout.sample_train.to_arrow_table()


def _pairs(table: pa.Table) -> set:
    return set(zip(table["customer_id"].to_pylist(), table["product_id"].to_pylist(), strict=True))


@pytest.mark.parametrize(("fraction", "seed", "sample"), [(0.2, 0, 1000), (0.3, 7, 9), (0.5, 3, 1)])
def test_whole_pairs_go_to_one_side_and_the_sample_has_both(tmp_path, fraction, seed, sample):
    lines = _lines(np.random.default_rng(seed), 600, day=1)
    train, test, customers, sample_train = _split(_table(tmp_path, lines), fraction, seed, sample)
    with holdout_split(_table(tmp_path, lines), COLUMNS, "customer_id", "product_id", fraction, seed, 10**6) as h:
        all_test = h.test  # every customer with lines on both sides
    held_out = _pairs(all_test)
    assert _pairs(train).isdisjoint(held_out)
    rows = lines.to_pylist()
    # every line is a train line, or a test line of a customer with train lines, or its customer has no train line
    trained = set(pc.unique(train["customer_id"]).to_pylist())
    assert sorted(map(tuple, (r.values() for r in rows if (r["customer_id"], r["product_id"]) not in held_out
                              and r["customer_id"] in trained))) == sorted(map(tuple, (r.values() for r in train.to_pylist())))  # fmt: skip
    assert all_test.to_pylist() == [r for r in rows if (r["customer_id"], r["product_id"]) in held_out]
    with_test = set(pc.unique(all_test["customer_id"]).to_pylist())
    assert with_test <= trained
    assert customers == min(sample, len(with_test))
    sampled = set(pc.unique(test["customer_id"]).to_pylist())
    assert len(sampled) == customers and sampled <= with_test
    # the sample's test lines in table order, and its train lines
    assert test.to_pylist() == [r for r in all_test.to_pylist() if r["customer_id"] in sampled]
    assert sorted(map(tuple, (r.values() for r in sample_train.to_pylist()))) == sorted(
        map(tuple, (r.values() for r in train.to_pylist() if r["customer_id"] in sampled))
    )


def test_held_out_share_and_seed(tmp_path):
    lines = _lines(np.random.default_rng(0), 20_000, day=1, customers=2_000)
    table = _table(tmp_path, lines)
    train, test, _, _ = _split(table, 0.2, 42, 10**6)
    n_pairs = len(_pairs(lines))
    assert abs(len(_pairs(test)) / n_pairs - 0.2) < 0.02
    again, _, _, _ = _split(table, 0.2, 42, 10**6)
    other, _, _, _ = _split(table, 0.2, 43, 10**6)
    assert _pairs(again) == _pairs(train) and _pairs(other) != _pairs(train)


def test_appending_a_day_keeps_every_old_pair_on_its_side(tmp_path):
    rng = np.random.default_rng(5)
    old = _lines(rng, 800, day=1)
    day = _lines(rng, 150, day=2, customers=50)  # new customers and repeat pairs among them
    train_old, _, _, _ = _split(_table(tmp_path, old), 0.25, 11, 10**6)
    with holdout_split(_table(tmp_path, old), COLUMNS, "customer_id", "product_id", 0.25, 11, 10**6) as h:
        test_old = _pairs(h.test)
    both = pa.concat_tables([old, day])
    train_new, _, _, _ = _split(_table(tmp_path, both), 0.25, 11, 10**6)
    key = [(c, "ascending") for c in COLUMNS]
    # yesterday's train lines plus the day's train lines are today's train lines
    train_day = train_new.filter(pc.equal(train_new["day"], 2))
    assert pa.concat_tables([train_old, train_day]).sort_by(key).equals(train_new.sort_by(key))
    assert _pairs(train_new).isdisjoint(test_old)
    assert train_day.num_rows > 0 and _pairs(day) & test_old  # the day repeats held-out pairs: they stay out
