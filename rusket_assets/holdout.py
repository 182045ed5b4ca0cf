"""The evaluation holdout split inside DuckDB, stable as days are appended.

A (customer, product) pair is held out when a seeded hash of the pair falls below ``test_fraction``
of the hash range, so every line of a pair lands on the same side and a pair keeps its side whatever
lines are added later: yesterday's train lines plus today's train lines are today's train lines,
which lets an incremental run update the holdout models like the published ones. The scored
customers are the ``sample_customers`` with the smallest seeded hash among those with lines on both
sides (a customer without training lines is unknown to every model). Nothing but the sampled
customers' test lines reaches Python; the train lines stay a DuckDB relation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import pyarrow as pa

from rusket_assets.interactions import WarehouseTable
from rusket_assets.tables import quote

#: hash values are compared modulo this (the held-out share's resolution)
BUCKETS = 1_000_000


class Holdout(NamedTuple):
    """The train lines (a DuckDB relation, valid inside the block), the sampled customers' test lines
    (arrow, in table order), how many customers were sampled, their train lines (a relation) and the
    sampled customers themselves in sampling order (a prefix of it is a smaller sample)."""

    train: Any
    test: pa.Table
    customers: int
    sample_train: Any
    sample: pa.Array


def is_test(user: str, item: str, test_fraction: float, seed: int) -> str:
    """SQL condition: the pair (``user``, ``item``) is held out (depends on the pair and the seed only)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cut = round(test_fraction * BUCKETS)
    return f"(hash({user}, {item}, {int(seed)}::BIGINT) % {BUCKETS}) < {cut}"


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
    """Split ``table``'s pairs by :func:`is_test`; the test lines of the sampled customers and the
    train lines (``columns`` of both)."""
    select = ", ".join(quote(c) for c in columns)
    user = quote(user_col)
    test = is_test(user, quote(item_col), test_fraction, seed)
    with table.warehouse.connect() as con:
        con.execute(
            f"create temp table __holdout_sample as select {user} from {table.name} group by {user} "
            f"having bool_or({test}) and bool_or(not {test}) "
            f"order by hash({user}, {int(seed)}::BIGINT), {user} limit {int(sample_customers)}"
        )
        test_lines = con.sql(
            f"select {select} from {table.name} where {test} "
            f"and {user} in (select {user} from __holdout_sample) order by rowid"
        ).to_arrow_table()
        sample = con.sql(f"select {user} from __holdout_sample order by hash({user}, {int(seed)}::BIGINT), {user}").to_arrow_table()
        customers = sample.num_rows
        train = con.sql(f"select {select} from {table.name} where not {test}")
        sample_train = con.sql(
            f"select {select} from {table.name} where not {test} and {user} in (select {user} from __holdout_sample)"
        )
        yield Holdout(train, test_lines, int(customers), sample_train, sample.column(0).combine_chunks())
