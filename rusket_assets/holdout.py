"""The evaluation holdout split inside DuckDB, stable as days are appended.

A (customer, product) pair is a test pair when a seeded hash of the pair falls below ``test_fraction``
of the hash range, so every line of a pair lands on the same side and a pair keeps its side whatever
lines are added later. Only the sampled customers' test pairs are held out: a customer is sampled when
a seeded hash of the customer alone is at most a cut (:func:`sample_cut`, chosen at a full rebuild so
that about ``sample_customers`` customers with pairs on both sides are sampled, then kept), so
membership depends on nobody else and stays as days are appended; yesterday's train lines plus
today's train lines are today's train lines, which lets an incremental run update the holdout models
like the published ones. The scored customers are the sampled ones with lines on both sides (a
customer without training lines is unknown to every model). Nothing but the sampled customers' test
lines reaches Python; the train lines stay a DuckDB relation.
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
    """The train lines (a DuckDB relation, valid inside the block), the scored customers' test lines
    (arrow, in table order), how many customers are scored, their train lines (a relation) and the
    scored customers themselves in sampling order (a prefix of it is a smaller sample)."""

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


def customer_hash(user: str, seed: int) -> str:
    """SQL: the seeded hash (UBIGINT) that samples customers."""
    return f"hash({user}, {int(seed)}::BIGINT)"


def is_sampled(user: str, seed: int, cut: int | None) -> str:
    """SQL condition: customer ``user`` is in the sample (its hash is at most ``cut``; None: nobody)."""
    return "false" if cut is None else f"({customer_hash(user, seed)} <= {int(cut)}::UBIGINT)"


def is_held_out(user: str, item: str, test_fraction: float, seed: int, cut: int | None) -> str:
    """SQL condition: the line is held out from training (a test pair of a sampled customer)."""
    return f"({is_sampled(user, seed, cut)} and {is_test(user, item, test_fraction, seed)})"


def _eligible(user: str, item: str, test_fraction: float, seed: int) -> str:
    """SQL ``having`` condition of a customer group: pairs on both sides of the pair hash."""
    test = is_test(user, item, test_fraction, seed)
    return f"bool_or({test}) and bool_or(not {test})"


def sample_cut(table: WarehouseTable, user_col: str, item_col: str, test_fraction: float, seed: int,
               sample_customers: int) -> int | None:  # fmt: skip
    """The customer-hash cut sampling the ``sample_customers`` customers with the smallest hash among
    those with pairs on both sides (all of them when fewer); None when no customer has."""
    user, item = quote(user_col), quote(item_col)
    cut = table.warehouse.scalar(
        f"select max(h) from (select {customer_hash(user, seed)} as h from {table.name} group by {user} "
        f"having {_eligible(user, item, test_fraction, seed)} order by h limit {int(sample_customers)})"
    )
    return None if cut is None else int(cut)


@contextmanager
def holdout_split(
    table: WarehouseTable,
    columns: Sequence[str],
    user_col: str,
    item_col: str,
    test_fraction: float,
    seed: int,
    cut: int | None,
) -> Iterator[Holdout]:
    """Split ``table``'s lines by :func:`is_held_out`: the train lines and the test lines of the sampled
    customers with pairs on both sides (``columns`` of both)."""
    select = ", ".join(quote(c) for c in columns)
    user, item = quote(user_col), quote(item_col)
    held_out = is_held_out(user, item, test_fraction, seed, cut)
    order = f"{customer_hash(user, seed)}, {user}"
    with table.warehouse.connect() as con:
        con.execute(
            f"create temp table __holdout_sample as select {user} from {table.name} "
            f"where {is_sampled(user, seed, cut)} group by {user} having {_eligible(user, item, test_fraction, seed)}"
        )
        sampled = f"{user} in (select {user} from __holdout_sample)"
        test_lines = con.sql(f"select {select} from {table.name} where {held_out} and {sampled} order by rowid").to_arrow_table()
        sample = con.sql(f"select {user} from __holdout_sample order by {order}").to_arrow_table()
        train = con.sql(f"select {select} from {table.name} where not {held_out}")
        sample_train = con.sql(f"select {select} from {table.name} where not {held_out} and {sampled}")
        yield Holdout(train, test_lines, sample.num_rows, sample_train, sample.column(0).combine_chunks())
