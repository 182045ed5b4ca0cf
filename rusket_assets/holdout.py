"""The evaluation holdout split inside DuckDB: only pair codes and the sampled customers' test lines reach Python.

Same split as ``train_test_split`` on the whole table (users and items coded by first appearance,
pairs ordered by those codes, ``split_pairs`` with the same seed) and the same customer sample, so
the metrics equal the in-memory version's while memory follows the interaction matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from rusket_assets.interactions import WarehouseTable
from rusket_assets.tables import quote
from rusket_core.evaluation import split_pairs

#: the coded lines: every row of the table with its user code ``uc`` and item code ``ic``
_CODED = """{table} t join __holdout_users u on t.{user} = u.{user} join __holdout_items i on t.{item} = i.{item}"""
_IS_TEST = "exists (select 1 from __holdout_test x where x.uc = u.uc and x.ic = i.ic)"


class Holdout(NamedTuple):
    """The train lines (a DuckDB relation, valid inside the block), the sampled customers' test lines
    (arrow, in table order) and how many customers were sampled."""

    train: Any
    test: pa.Table
    customers: int


@contextmanager
def holdout_split(
    table: WarehouseTable,
    columns: Sequence[str],
    user_col: str,
    item_col: str,
    test_fraction: float,
    seed: int,
    sample_customers: int,
) -> Iterator[Holdout]:
    """Split each user's distinct items into train and test (seeded); test lines of a seeded sample of
    ``sample_customers`` of the customers with test items (all of them when fewer)."""
    select = ", ".join(f"t.{quote(c)}" for c in columns)
    names = {"table": table.name, "user": quote(user_col), "item": quote(item_col)}
    coded = _CODED.format(**names)
    with table.warehouse.connect() as con:
        for code, col in (("uc", names["user"]), ("ic", names["item"])):
            con.execute(
                f"create temp table __holdout_{'users' if code == 'uc' else 'items'} as "
                f"select {col}, (row_number() over (order by min(rowid)) - 1)::BIGINT as {code} "
                f"from {table.name} group by {col}"
            )  # codes by first appearance, as dictionary_encode numbers them
        pairs = con.sql(f"select distinct u.uc, i.ic from {coded} order by u.uc, i.ic").fetchnumpy()
        test = split_pairs(pairs["uc"].astype(np.int64), test_fraction, seed)
        test_pairs = pa.table({"uc": pairs["uc"][test], "ic": pairs["ic"][test]})
        del pairs
        con.register("__holdout_test_pairs", test_pairs)
        con.execute("create temp table __holdout_test as select * from __holdout_test_pairs")
        con.unregister("__holdout_test_pairs")
        customers = con.sql(
            f"select u.uc from {coded} where {_IS_TEST} group by u.uc order by min(t.rowid)"
        ).fetchnumpy()["uc"]  # the test customers in order of first appearance among the test lines
        if len(customers) > sample_customers:
            rng = np.random.default_rng(seed)
            customers = customers[np.sort(rng.choice(len(customers), sample_customers, replace=False))]
        con.register("__holdout_sample_codes", pa.table({"uc": customers}))
        test_lines = con.sql(
            f"select {select} from {coded} where {_IS_TEST} "
            "and u.uc in (select uc from __holdout_sample_codes) order by t.rowid"
        ).to_arrow_table()
        train = con.sql(f"select {select} from {coded} where not {_IS_TEST}")
        yield Holdout(train, test_lines, len(customers))
