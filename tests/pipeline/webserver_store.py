"""Definitions served by `dagster dev` in tests/test_webserver_runs.py: the project's graph on a smaller
synthetic store (40k lines) on which the default configuration passes every check, so "Materialize all"
finishes in well under a minute. Storage follows RUSKET_DATA_DIR as in the project's Definitions."""

from rusket_assets.definitions import build_definitions
from rusket_assets.resources import TransactionSource

STORE = {"n_customers": 3000, "n_products": 300, "n_categories": 20, "n_days": 60, "n_lines": 40_000, "seed": 7}

defs = build_definitions(source=TransactionSource(store=STORE))
