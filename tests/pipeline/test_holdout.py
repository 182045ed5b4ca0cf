"""The evaluation split in DuckDB equals ``train_test_split`` and the customer sample on the whole table."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from rusket_assets.holdout import holdout_split
from rusket_assets.interactions import WarehouseTable
from rusket_assets.resources import Warehouse
from rusket_core.evaluation import train_test_split


def _in_memory(lines: pa.Table, fraction: float, seed: int, sample: int):
    """What model_evaluation computed before: split the whole table, sample test customers in order of appearance."""
    train, test = train_test_split(lines, "customer_id", "product_id", fraction, seed)
    customers = pc.unique(test["customer_id"])
    if len(customers) > sample:
        rng = np.random.default_rng(seed)
        customers = customers.take(pa.array(np.sort(rng.choice(len(customers), sample, replace=False))))
        test = test.filter(pc.is_in(test["customer_id"], value_set=customers))
    return train, test, len(customers)


@pytest.mark.parametrize(("fraction", "seed", "sample"), [(0.2, 0, 1000), (0.3, 7, 9), (0.5, 3, 1)])
def test_holdout_in_sql_equals_the_in_memory_split(tmp_path, fraction, seed, sample):
    rng = np.random.default_rng(seed)
    n = 600
    lines = pa.table(
        {
            "customer_id": pa.array([f"c{int(c)}" for c in rng.integers(0, 40, n)]),  # appearance order != label order
            "product_id": pa.array(rng.integers(0, 25, n) * 7 % 25),
            "quantity": pa.array(rng.integers(1, 4, n)),
        }
    )
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"))
    with duckdb.connect(warehouse.path) as con:
        con.execute("create schema ingest")
        con.register("lines", lines)
        con.execute("create table ingest.raw_transactions as select * from lines")
    table = WarehouseTable(warehouse, "ingest", "raw_transactions")
    columns = ["customer_id", "product_id", "quantity"]
    want_train, want_test, want_n = _in_memory(lines, fraction, seed, sample)
    with holdout_split(table, columns, "customer_id", "product_id", fraction, seed, sample) as (train, test, n_customers):
        got_train = train.to_arrow_table()
    assert n_customers == want_n and (sample >= 40 or n_customers == sample)
    assert test.equals(want_test)  # same rows in the same order
    key = [("customer_id", "ascending"), ("product_id", "ascending"), ("quantity", "ascending")]
    assert got_train.sort_by(key).equals(want_train.sort_by(key))
    assert test.num_rows > 0 and got_train.num_rows > 0
