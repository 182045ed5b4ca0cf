"""The published models' own incremental update on the shared path: what it compares, and when it must
compare every line."""

import dagster as dg
import numpy as np
import pyarrow as pa

from rusket_assets.incremental import REFRESH_TAG
from rusket_assets.io import ModelIOManager
from tests.pipeline.conftest import RUN_CONFIG
from tests.pipeline.test_incremental import (
    LAST_DAY,
    SHARED,
    _load,
    _pairs_of,
    metadata,
    run,
    setup,
    table,
)

CONFIG = {"ops": {**RUN_CONFIG["ops"], **SHARED}}
ALS = "personalization__als_model"


def test_a_failed_published_save_makes_the_next_update_compare_every_line(tmp_path, monkeypatch):
    """The holdout record names the run whose published model its day marks describe. When that run
    failed to save the published model (the record already written), the next incremental run must not
    trust those marks (they would hide the day from the diff): it compares every line, and the
    published model gets the day exactly once (the library's fold-in of the day into the saved model)."""
    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance, config=CONFIG).success
        assert run(defs, instance, partition=LAST_DAY).success
        saved = _load(tmp_path, ALS)
        handle_output = ModelIOManager.handle_output

        def failing(self, context, obj):
            if context.asset_key.path[-1] == "als_model":
                raise OSError("disk full")
            return handle_output(self, context, obj)

        monkeypatch.setattr(ModelIOManager, "handle_output", failing)
        assert not run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=CONFIG).success
        monkeypatch.setattr(ModelIOManager, "handle_output", handle_output)
        np.testing.assert_array_equal(_load(tmp_path, ALS).user_factors, saved.user_factors)  # the old model stays
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=CONFIG)
        assert result.success
    als = metadata(result, ALS)
    assert als["published_from"] == "saved published model" and als["diff_scope"] == "every line"
    assert "days appended" in als["holdout diff_scope"]  # the holdout model was saved: its marks hold
    day = table(tmp_path, f"select customer_id, product_id, quantity from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'")
    lines = pa.table({"customer_id": [r[0] for r in day], "product_id": [r[1] for r in day], "quantity": [r[2] for r in day]})
    published = _load(tmp_path, ALS)
    assert _pairs_of(published) == {(c, p) for c, p in table(tmp_path, "select customer_id, product_id from ingest.daily_orders")}
    saved.partial_fit(lines)
    assert published.users.values.tolist() == saved.users.values.tolist()
    np.testing.assert_allclose(published.user_factors, saved.user_factors, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(published.item_factors, saved.item_factors, rtol=1e-4, atol=1e-5)


def test_the_next_day_compares_only_its_customers(tmp_path):
    """Two incremental days in a row: each published update compares only the customers of the day
    appended since the published model was saved (the marks recorded by the run that saved it)."""
    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance, config=CONFIG).success
        assert run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=CONFIG).success  # nothing new yet
        assert run(defs, instance, partition=LAST_DAY).success
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=CONFIG)
        assert result.success
    day = {c for (c,) in table(tmp_path, f"select distinct customer_id from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'")}
    als = metadata(result, ALS)
    assert als["published_from"] == "saved published model"
    assert als["diff_scope"] == f"the lines of {len(day)} customers of the days appended"
    assert als["customers_refreshed"] == len(day)


def test_merged_recommendations_equal_a_full_recompute_for_the_changed_customers(tmp_path):
    """With rule_changes off (the default) an incremental run reads only the changed customers' last
    baskets; their merged rows equal a full recompute from the published models, all carts and rules."""
    from tests.pipeline.test_incremental import RECS, _full_recommendations

    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance, config=CONFIG).success
        assert run(defs, instance, partition=LAST_DAY).success
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=CONFIG)
        assert result.success
    recs = metadata(result, "personalization__user_recommendations")
    day = {c for (c,) in table(tmp_path, f"select distinct customer_id from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'")}
    assert recs["refresh"] == "incremental" and recs["customers_refreshed"] == len(day) and recs["customers_rule_changes"] == 0
    full = _full_recommendations(tmp_path)
    want = sorted((r[0], r[1], r[2], r[4]) for r in full if r[0] in day)
    got = sorted((r[0], r[1], r[2], r[4]) for r in table(tmp_path, RECS) if r[0] in day)
    assert got == want and len(got) >= 10 * len(day) // 2
