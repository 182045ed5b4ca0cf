"""The evaluation split in DuckDB: whole pairs on one side, stable when days are appended, a seeded sample."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rusket_assets.holdout import holdout_split, sample_cut
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


def _split(table: WarehouseTable, fraction: float, seed: int, sample: int, cut: int | None = None):
    """(train lines, scored test lines, scored customers, their train lines, sampled customers, cut); the
    cut chosen for ``sample`` customers unless given."""
    if cut is None:
        cut = sample_cut(table, "customer_id", "product_id", fraction, seed, sample)
    with holdout_split(table, COLUMNS, "customer_id", "product_id", fraction, seed, cut) as h:
        return h.train.to_arrow_table(), h.test, h.customers, h.sample_train.to_arrow_table(), h.sample.to_pylist(), cut


def _pairs(table: pa.Table) -> set:
    return set(zip(table["customer_id"].to_pylist(), table["product_id"].to_pylist(), strict=True))


def _hashes(table: WarehouseTable, seed: int) -> list[dict]:
    """Every line with DuckDB's customer hash and pair bucket (the reference below decides in Python)."""
    return table.warehouse.query(
        f"select *, hash(customer_id, {seed}::BIGINT) as hc, hash(customer_id, product_id, {seed}::BIGINT) % 1000000 as hp "
        f"from {table.name} order by rowid"
    ).to_pylist()


def _reference(rows: list[dict], fraction: float, cut: int | None):
    """Held-out lines, scored customers (in sampling order) by the definition: test pair (pair bucket below
    the fraction) of a sampled customer (hash at most the cut); scored = sampled with pairs on both sides."""
    test = [r["hp"] < round(fraction * 1_000_000) for r in rows]
    held = [t and cut is not None and r["hc"] <= cut for r, t in zip(rows, test, strict=True)]
    sides: dict = {}
    for r, t in zip(rows, test, strict=True):
        sides.setdefault(r["customer_id"], set()).add(t)
    hashes = {r["customer_id"]: r["hc"] for r in rows}
    eligible = sorted((hashes[c], c) for c, s in sides.items() if s == {True, False})
    scored = [c for h, c in eligible if cut is not None and h <= cut]
    return held, scored, eligible


def _line(r: dict) -> tuple:
    return tuple(r[c] for c in COLUMNS)


@pytest.mark.parametrize(("fraction", "seed", "sample"), [(0.2, 0, 1000), (0.3, 7, 9), (0.5, 3, 1)])
def test_only_the_sampled_customers_test_pairs_are_held_out(tmp_path, fraction, seed, sample):
    lines = _lines(np.random.default_rng(seed), 600, day=1)
    table = _table(tmp_path, lines)
    train, test, customers, sample_train, sampled, cut = _split(table, fraction, seed, sample)
    rows = _hashes(table, seed)
    held, scored, eligible = _reference(rows, fraction, cut)
    # at a full rebuild the cut samples the `sample` eligible customers with the smallest hash
    assert scored == [c for _, c in eligible[:sample]] == sampled and customers == min(sample, len(eligible))
    assert sorted(map(_line, train.to_pylist())) == sorted(_line(r) for r, h in zip(rows, held, strict=True) if not h)
    assert sum(held) > 0 and _pairs(train).isdisjoint({(r["customer_id"], r["product_id"]) for r, h in zip(rows, held, strict=True) if h})
    # the scored customers' held-out lines in table order, and their train lines
    assert list(map(_line, test.to_pylist())) == [_line(r) for r, h in zip(rows, held, strict=True) if h and r["customer_id"] in scored]
    assert sorted(map(_line, sample_train.to_pylist())) == sorted(_line(r) for r in train.to_pylist() if r["customer_id"] in scored)


def test_held_out_share_and_seed(tmp_path):
    lines = _lines(np.random.default_rng(0), 20_000, day=1, customers=2_000)
    table = _table(tmp_path, lines)
    train, test, customers, _, _, _ = _split(table, 0.2, 42, 10**6)  # (nearly) every customer sampled
    assert customers == len(pc.unique(test["customer_id"])) > 1_500
    assert abs(len(_pairs(lines) - _pairs(train)) / len(_pairs(lines)) - 0.2) < 0.02
    again = _split(table, 0.2, 42, 10**6)[1]
    other = _split(table, 0.2, 43, 10**6)[1]
    assert _pairs(again) == _pairs(test) and _pairs(other) != _pairs(test)
    assert sample_cut(table, "customer_id", "product_id", 0.2, 42, 10) < sample_cut(table, "customer_id", "product_id", 0.2, 42, 100)


def test_appending_a_day_keeps_the_sample_and_every_old_pair_on_its_side(tmp_path):
    rng = np.random.default_rng(5)
    old = _lines(rng, 800, day=1)
    day = _lines(rng, 300, day=2, customers=60)  # new customers and repeat pairs among them
    train_old, test_old, _, _, sampled_old, cut = _split(_table(tmp_path, old), 0.25, 11, 12)
    both = pa.concat_tables([old, day])
    table = _table(tmp_path, both)
    train_new, test_new, _, _, sampled_new, _ = _split(table, 0.25, 11, 12, cut=cut)  # the kept cut
    key = [(c, "ascending") for c in COLUMNS]
    # yesterday's train lines plus the day's train lines are today's train lines
    train_day = train_new.filter(pc.equal(train_new["day"], 2))
    assert pa.concat_tables([train_old, train_day]).sort_by(key).equals(train_new.sort_by(key))
    assert _pairs(train_new).isdisjoint(_pairs(test_old)) and train_day.num_rows > 0
    assert _pairs(test_new.filter(pc.equal(test_new["day"], 1))) == _pairs(test_old)
    # the sample: yesterday's customers stay, new customers join by their own hash only
    _, scored, _ = _reference(_hashes(table, 11), 0.25, cut)
    assert sampled_new == scored and set(sampled_old) < set(sampled_new)
    assert _pairs(day) & _pairs(test_old)  # the day repeats held-out pairs: they stay out
