"""Time the scoring loops of ``cross_sell_potential`` and ``user_recommendations`` on a finished
``bench_scale.py`` run's saved models and warehouse, outside Dagster (for paired A/B runs).

    python benchmarks/bench_scoring.py --run /tmp/x/run_3000000 --step potential --out /tmp/pot.parquet
    python benchmarks/bench_scoring.py --run /tmp/x/run_3000000 --step recommend --customers 100000 --out /tmp/rec.parquet

Prints CPU seconds of the process (all threads) and wall seconds of the loop alone (models, rules and
carts are loaded first, kernels warmed on a few customers); writes the output for comparison.
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rusket_assets.assets.personalization import (
    CART_COLUMNS,
    RecommendationConfig,
    last_baskets,
    published_recommender,
)
from rusket_assets.io import load_model
from rusket_core.chunks import iter_recommend_for_users, iter_score_potential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a bench_scale run directory (holds data/models and data/warehouse.duckdb)")
    parser.add_argument("--step", choices=["potential", "recommend"], required=True)
    parser.add_argument("--customers", type=int, default=0, help="the first N model customers (0: all)")
    parser.add_argument("--out", required=True, help="parquet file for the output")
    args = parser.parse_args()
    models = f"{args.run}/data/models"
    als = load_model(models, "personalization__als_model")
    con = duckdb.connect(f"{args.run}/data/warehouse.duckdb", read_only=True)
    m = len(als.users) if args.customers <= 0 else min(args.customers, len(als.users))
    if args.step == "potential":
        mapping = con.sql("select product_id, category from ingest.products where category is not null").to_arrow_table()

        def batches(rows):
            return iter_score_potential(als, mapping, n=3, rows=rows)
    else:
        bpr = load_model(models, "personalization__bpr_model")
        rules = con.sql("select * from baskets.association_rules").to_arrow_table()
        carts = last_baskets(con.sql(f"select {', '.join(CART_COLUMNS)} from ingest.raw_transactions"))
        config = RecommendationConfig()
        recommender = published_recommender(als, bpr, rules, carts, config)

        def batches(rows):
            users = recommender.users.values[rows]
            return iter_recommend_for_users(recommender, n=config.n, chunk_size=config.chunk_customers, users=users)
    con.close()
    list(batches(np.arange(min(m, 100))))  # compile / load the kernels
    cpu, wall = time.process_time(), time.perf_counter()
    table = pa.concat_tables(list(batches(np.arange(m))))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{args.step}: {m} customers, {table.num_rows} rows, cpu {cpu:.1f} s, wall {wall:.1f} s")
    pq.write_table(table, args.out)


if __name__ == "__main__":
    main()
