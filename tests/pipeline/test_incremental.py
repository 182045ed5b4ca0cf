"""Incremental refresh of the graph: fold-in of the day's customers, merged recommendations, the gate."""

from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rusket_assets.assets.daily import HISTORY_SOURCE, DailyFiles
from rusket_assets.definitions import build_definitions
from rusket_assets.incremental import REFRESH_TAG
from rusket_assets.resources import TransactionSource, Warehouse
from rusket_assets.source import read_transactions
from tests.pipeline.conftest import RUN_CONFIG
from tests.pipeline.conftest import SMALL as STORE

LAST_DAY = "2025-10-30"
#: the exact rule add-ons (off by default: a day moves most rules' confidence)
EXACT_RULES = {"ops": {**RUN_CONFIG["ops"], "personalization__user_recommendations": {"config": {"rule_changes": True}}}}
RECOMMENDATIONS = {
    dg.AssetKey(["ingest", "raw_transactions"]),
    dg.AssetKey(["ingest", "products"]),
    dg.AssetKey(["baskets", "frequent_itemsets"]),
    dg.AssetKey(["baskets", "association_rules"]),
    dg.AssetKey(["personalization", "als_model"]),
    dg.AssetKey(["personalization", "bpr_model"]),
    dg.AssetKey(["personalization", "user_factors"]),
    dg.AssetKey(["personalization", "item_factors"]),
    dg.AssetKey(["personalization", "model_evaluation"]),
    dg.AssetKey(["personalization", "user_recommendations"]),
    dg.AssetKey(["vectors", "user_vectors"]),
    dg.AssetKey(["vectors", "item_vectors"]),
    dg.AssetKey(["analytics", "cross_sell_potential"]),
    dg.AssetKey(["personalization", "similar_items"]),
}


def setup(tmp: Path) -> dg.Definitions:
    """The store's first 29 days in ingest.daily_orders; the graph reads that history table."""
    warehouse = Warehouse(path=str(tmp / "warehouse.duckdb"), publish_snapshot=False)
    lines, _ = read_transactions(TransactionSource(store=STORE, location={"date_to": LAST_DAY}), warehouse)
    warehouse.replace_table("ingest", "daily_orders", lines)
    defs = build_definitions(
        warehouse_path=warehouse.path, lancedb_uri=str(tmp / "lancedb"), models_path=str(tmp / "models"),
        source=TransactionSource(**HISTORY_SOURCE), daily_files=DailyFiles(path=str(tmp / "daily")),
    )  # fmt: skip
    return defs


def run(defs, instance, tags=None, config=None, partition=None):
    if partition:
        job = defs.resolve_job_def("daily_ingest")
        # the day's lines come from the synthetic store itself
        config = {"resources": {"source": {"config": {"store": STORE}}}}
        return job.execute_in_process(partition_key=partition, instance=instance, run_config=config)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=RECOMMENDATIONS)
    return job.execute_in_process(run_config=config or RUN_CONFIG, instance=instance, tags=tags or {}, raise_on_error=False)


def table(tmp: Path, query: str) -> list[tuple]:
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
        return con.sql(query).fetchall()


def user_vectors(tmp: Path) -> dict:
    import lancedb

    rows = lancedb.connect(str(tmp / "lancedb")).open_table("user_vectors").to_arrow()
    return {label: (i, tuple(v)) for i, label, v in zip(*(rows[c].to_pylist() for c in ("id", "label", "vector")), strict=True)}


def metadata(result, name):
    return {k: v.value for k, v in result.asset_materializations_for_node(name)[0].metadata.items()}


FACTORS = "select customer_id, vector from personalization.user_factors"
RECS = "select customer_id, rank, product_id, score, source from personalization.user_recommendations"


POTENTIAL = "select customer_id, rank, target, score from analytics.cross_sell_potential"


def _rules(tmp: Path) -> dict:
    """(antecedents, consequents) -> confidence of the stored association rules."""
    rows = table(tmp, "select antecedents, consequents, confidence from baskets.association_rules")
    return {(tuple(a), tuple(c)): f for a, c, f in rows}


def _last_baskets(tmp: Path) -> pa.Table:
    from rusket_assets.assets.personalization import CART_COLUMNS, last_baskets

    warehouse = Warehouse(path=str(tmp / "warehouse.duckdb"), publish_snapshot=False)
    return last_baskets(warehouse.query(f"select {', '.join(CART_COLUMNS)} from ingest.raw_transactions"))


def _full_recommendations(tmp: Path) -> list[tuple]:
    """user_recommendations recomputed for every customer from the saved models, stored rules and last baskets."""
    from rusket_assets.assets.personalization import RecommendationConfig, published_recommender
    from rusket_assets.io import load_model
    from rusket_core.chunks import iter_recommend_for_users

    models = tmp / "models"
    rules = Warehouse(path=str(tmp / "warehouse.duckdb"), publish_snapshot=False).query("select * from baskets.association_rules")
    recommender = published_recommender(load_model(models, "personalization__als_model"), load_model(models, "personalization__bpr_model"),
                                        rules, _last_baskets(tmp), RecommendationConfig())  # fmt: skip
    full = pa.concat_tables(list(iter_recommend_for_users(recommender, n=10)))
    return list(zip(*(full[c].to_pylist() for c in ("user_id", "rank", "item_id", "score", "source")), strict=True))


def test_incremental_run_refreshes_only_the_days_customers(tmp_path):
    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance, config=EXACT_RULES).success  # full build on days 1..29
        before = {row[:3]: row for row in table(tmp_path, RECS)}
        potential_before = table(tmp_path, POTENTIAL)
        vectors_before = user_vectors(tmp_path)
        factors_before = dict(table(tmp_path, FACTORS))
        rules_before = _rules(tmp_path)
        assert run(defs, instance, partition=LAST_DAY).success
        day = table(tmp_path, f"select distinct customer_id from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'")
        day_customers = {c for (c,) in day}
        known = {c for (c,) in table(tmp_path, f"select distinct customer_id from ingest.daily_orders where ordered_at < '{LAST_DAY}'")}
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=EXACT_RULES)
        assert result.success
    als = metadata(result, "personalization__als_model")
    assert als["refresh"] == "incremental"
    assert als["customers_refreshed"] == len(day_customers)  # quantity weights: every buyer's row grew
    assert als["new_customers"] == len(day_customers - known) > 0
    assert metadata(result, "personalization__bpr_model")["refresh"] == "incremental"
    refreshed = {int(c) for (c,) in table(tmp_path, "select distinct id from personalization.refreshed_customers where side = 'customer'")}
    assert refreshed == day_customers
    recs = metadata(result, "personalization__user_recommendations")
    # besides the day's customers: those whose last basket holds every antecedent of a rule that
    # was added, removed or changed confidence (counted here in Python from both rule tables)
    rules_after = _rules(tmp_path)
    moved = {r for r in rules_before.keys() | rules_after.keys() if rules_before.get(r) != rules_after.get(r)}
    carts: dict = {}
    for row in _last_baskets(tmp_path).to_pylist():
        carts.setdefault(row["customer_id"], set()).add(row["product_id"])
    by_rules = {c for c, cart in carts.items() if any(set(ant) <= cart for ant, _ in moved)}
    assert recs["customers_rule_changes"] == len(by_rules) and by_rules - day_customers
    assert recs["rules_changed"] == len(moved) > 0
    redone = day_customers | by_rules
    assert recs["customers_refreshed"] == len(redone)
    assert recs["rows_replaced"] == sum(1 for k in before if k[0] in redone)
    after = table(tmp_path, RECS)
    # the other customers' rows untouched; the refreshed ones (new customers included) have fresh rows
    untouched = sorted(row for row in after if row[0] not in redone)
    assert untouched == sorted(row for key, row in before.items() if key[0] not in redone)
    # the whole table equals a full recompute with the published models, today's rules and carts,
    # and the rules moved the lists of customers who bought nothing that day
    full = _full_recommendations(tmp_path)
    assert sorted(r[:3] + r[4:] for r in after) == sorted(r[:3] + r[4:] for r in full)
    scores = {r[:3]: r[3] for r in full}
    assert all(abs(r[3] - scores[r[:3]]) <= 1e-6 for r in after)
    assert {r[0] for r in set(after) - set(before.values())} - day_customers
    assert {row[0] for row in after} >= day_customers
    assert {row[0] for row in after} == known | day_customers
    # no duplicates and no product the customer bought (today's purchases included)
    assert table(tmp_path, "select count(*) - count(distinct (customer_id, rank)) from personalization.user_recommendations") == [(0,)]
    seen = table(
        tmp_path,
        "select count(*) from personalization.user_recommendations r join ingest.daily_orders d "
        "on r.customer_id = d.customer_id and r.product_id = d.product_id",
    )
    assert seen == [(0,)]
    # LanceDB customer vectors: the day's customers upserted (unit-length new factors), others as before
    from rusket_assets.io import load_model

    vec = metadata(result, "vectors__user_vectors")
    assert (vec["refresh"], vec["rows_upserted"], vec["rows_inserted"]) == ("incremental", len(day_customers), len(day_customers - known))
    model = load_model(tmp_path / "models", "personalization__als_model")
    vectors_after = user_vectors(tmp_path)
    assert len(vectors_after) == vec["dagster/row_count"] == len(model.users) == len(known | day_customers)
    assert {c: v for c, v in vectors_after.items() if c not in day_customers} == {c: v for c, v in vectors_before.items() if c not in day_customers}
    # DuckDB customer factors: the same, raw factors
    factors = metadata(result, "personalization__user_factors")
    assert (factors["customers_refreshed"], factors["rows_replaced"]) == (len(day_customers), len(day_customers & known))
    factors_after = dict(table(tmp_path, FACTORS))
    assert len(factors_after) == len(model.users)
    assert {c: v for c, v in factors_after.items() if c not in day_customers} == {c: v for c, v in factors_before.items() if c not in day_customers}
    for row, label in enumerate(model.users.values):
        if label in day_customers:
            assert list(factors_after[label]) == model.user_factors[row].tolist()
    unit = model.user_factors / np.linalg.norm(model.user_factors, axis=1, keepdims=True)
    for row, label in enumerate(model.users.values):
        assert vectors_after[label][0] == row
        if label in day_customers:
            np.testing.assert_allclose(vectors_after[label][1], unit[row], rtol=1e-6, atol=1e-6)
    # cross-sell potential: the rescored customers' rows equal a full recompute on the published
    # model, the others are the rows written before
    from rusket_core.chunks import iter_score_potential

    potential = metadata(result, "analytics__cross_sell_potential")
    assert potential["refresh"] == "incremental" and potential["customers_changed"] == len(day_customers)
    products = table(tmp_path, "select product_id, category from ingest.products where category is not null")
    mapping = pa.table({"product_id": [p for p, _ in products], "category": [c for _, c in products]})
    full = pa.concat_tables(list(iter_score_potential(model, mapping, n=3)))
    expected = {(c, t): s for c, t, s in zip(*(full[k].to_pylist() for k in ("user_id", "target", "score")), strict=True)}
    after_rows = table(tmp_path, POTENTIAL)
    assert {(c, t) for c, _, t, _ in after_rows} == set(expected)
    for c, _, t, s in after_rows:
        assert abs(s - expected[(c, t)]) <= 1e-5 * max(1.0, abs(s))
    kept = sorted(r for r in potential_before if r[0] not in day_customers)
    assert sorted(r for r in after_rows if r[0] not in day_customers) == kept
    assert len({r[0] for r in after_rows} & day_customers) > 0
    similar = metadata(result, "personalization__similar_items")
    assert similar["refresh"] == "incremental" and similar["new_products"] == als["new_products"]
    full_similar = model.batch_similar_items(n=10, format="arrow")
    stored_similar = table(tmp_path, "select product_id, similar_product_id, score from personalization.similar_items")
    assert {r[:2] for r in stored_similar} == set(zip(*(full_similar[c].to_pylist() for c in full_similar.column_names[:2]), strict=True))
    # LanceDB product vectors: upserted from the version they were written from, equal to the model's
    import lancedb

    items = metadata(result, "vectors__item_vectors")
    assert items["refresh"] == "incremental" and items["rows_upserted"] == items["rows_inserted"] == als["new_products"]
    stored = lancedb.connect(str(tmp_path / "lancedb")).open_table("item_vectors").to_arrow().sort_by("id")
    assert stored["label"].to_pylist() == list(model.items.values)
    unit_items = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(stored["vector"].to_pylist()), unit_items, rtol=1e-6, atol=1e-6)
    names = dict(table(tmp_path, "select product_id, product_name from ingest.products"))
    assert stored["product_name"].to_pylist() == [names[p] for p in model.items.values]


def test_incremental_equals_fold_in_of_the_day(tmp_path):
    """The published ALS is the saved model with the day's lines folded in (library partial_fit)."""
    from rusket_assets.io import load_model

    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance).success
        saved = load_model(tmp_path / "models", "personalization__als_model")
        assert run(defs, instance, partition=LAST_DAY).success
        assert run(defs, instance, tags={REFRESH_TAG: "incremental"}).success
    day = Warehouse(path=str(tmp_path / "warehouse.duckdb")).query(
        f"select customer_id, product_id, quantity from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'"
    )
    saved.partial_fit(day)
    published = load_model(tmp_path / "models", "personalization__als_model")
    assert list(published.users.values) == list(saved.users.values)
    assert abs(published.user_factors - saved.user_factors).max() < 1e-4
    assert abs(published.item_factors - saved.item_factors).max() < 1e-4
    n = len(pc.unique(day["customer_id"]))
    assert n > 0


def test_gate_blocks_an_incremental_run(tmp_path):
    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance).success
        before = table(tmp_path, RECS + " order by customer_id, rank")
        assert run(defs, instance, partition=LAST_DAY).success
        weak = {"ops": {**RUN_CONFIG["ops"], "personalization__als_model": {"config": {"factors": 8, "iterations": 0}},
                        "personalization__bpr_model": {"config": {"factors": 8, "iterations": 0}},
                        "personalization__user_recommendations": {"config": {"rules_weight": 0.0}}}}  # fmt: skip
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=weak)
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["published_beats_popularity"] is False
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["personalization", "user_recommendations"]) not in materialized
    assert table(tmp_path, RECS + " order by customer_id, rank") == before


def _train_lines(tmp: Path, where: str = "true"):
    """The holdout split's train lines (the saved split) of ingest.daily_orders matching ``where``."""
    from rusket_assets.holdout_fit import held_out

    return Warehouse(path=str(tmp / "warehouse.duckdb")).query(
        f"select customer_id, product_id, quantity from ingest.daily_orders where not {held_out(_split(tmp))} and {where} order by all"
    )


def _split(tmp: Path) -> dict:
    import json

    from rusket_assets.holdout_fit import SPLIT_FILE

    return json.loads((tmp / "models" / SPLIT_FILE).read_text())["split"]


def test_incremental_run_updates_the_holdout_models(tmp_path):
    """Full run: holdout ALS = a fit on the train lines; incremental: that model with the day's train lines folded in."""
    import numpy as np

    from rusket_assets.assets.personalization import holdout_model_name
    from rusket_assets.io import load_model
    from rusket_core import ALS

    defs = setup(tmp_path)
    models = tmp_path / "models"
    model_rows_only = {"personalization__user_recommendations": {"config": {"rule_changes": False}}}
    with dg.DagsterInstance.ephemeral() as instance:
        full = run(defs, instance, config={"ops": {**RUN_CONFIG["ops"], **model_rows_only}})
        assert full.success
        saved = load_model(models, holdout_model_name("als"))
        params = RUN_CONFIG["ops"]["personalization__als_model"]["config"]
        refit = ALS.from_transactions(_train_lines(tmp_path), "customer_id", "product_id", "quantity",
                                      random_state=42, **params).fit()  # fmt: skip
        assert list(saved.users.values) == list(refit.users.values)
        np.testing.assert_array_equal(saved.user_factors, refit.user_factors)
        assert metadata(full, "personalization__model_evaluation")["holdout_als refresh"] == "full"
        assert run(defs, instance, partition=LAST_DAY).success
        small = {"ops": {**RUN_CONFIG["ops"], "personalization__model_evaluation": {"config": {"incremental_sample": 50}},
                         **model_rows_only}}  # fmt: skip
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=small)
        assert result.success
    # rule_changes off: only the customers whose model rows changed (the day's buyers) are recomputed
    recs = metadata(result, "personalization__user_recommendations")
    day_buyers = table(tmp_path, f"select count(distinct customer_id) from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'")
    assert (recs["customers_refreshed"], recs["customers_rule_changes"]) == (day_buyers[0][0], 0)
    evaluation = metadata(result, "personalization__model_evaluation")
    assert evaluation["holdout_als refresh"] == evaluation["holdout_bpr refresh"] == "incremental"
    day = _train_lines(tmp_path, f"ordered_at::DATE = '{LAST_DAY}'")
    assert evaluation["holdout_als customers_with_new_lines"] == len(pc.unique(day["customer_id"])) > 0
    # scored: the sampled customers (hash at most the cut, lines on both sides) who bought that day, plus the first 50
    test = "(hash(customer_id, product_id, 42::BIGINT) % 1000000) < 200000"
    sampled = f"hash(customer_id, 42::BIGINT) <= {_split(tmp_path)['cut']}"
    sample = [c for (c,) in table(tmp_path, f"select customer_id from ingest.daily_orders where {sampled} group by customer_id having "
                                  f"bool_or({test}) and bool_or(not {test}) order by hash(customer_id, 42::BIGINT), customer_id")]  # fmt: skip
    bought = set(sample) & set(day["customer_id"].to_pylist())
    scored = set(sample[:50]) | bought
    assert evaluation["evaluated_customers"] == len(scored) < len(sample)
    assert evaluation["evaluation_scope"].startswith(f"incremental: {len(bought)} sampled customers")
    updated = load_model(models, holdout_model_name("als"))
    saved.partial_fit(day)
    assert list(updated.users.values) == list(saved.users.values)
    assert abs(updated.user_factors - saved.user_factors).max() < 1e-4
    # customers without train lines that day keep their rows exactly
    n_old = len(refit.users)
    untouched = ~np.isin(updated.users.values[:n_old], day["customer_id"].to_numpy())
    np.testing.assert_array_equal(updated.user_factors[:n_old][untouched], refit.user_factors[untouched])
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["published_beats_popularity"]


def test_gate_blocks_a_broken_incremental_update(tmp_path, monkeypatch):
    """A bug in the update path breaks the holdout models too (they take the same path): the gate fails."""
    import numpy as np

    import rusket_assets.incremental as incremental

    update = incremental.update_model

    def broken(previous, *args):
        model, diff, reason = update(previous, *args)
        if model is not None:
            model.item_factors = np.random.default_rng(0).standard_normal(model.item_factors.shape).astype(np.float32)
        return model, diff, reason

    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance).success
        before = table(tmp_path, RECS + " order by customer_id, rank")
        assert run(defs, instance, partition=LAST_DAY).success
        monkeypatch.setattr(incremental, "update_model", broken)
        no_rules = {"ops": {**RUN_CONFIG["ops"], "personalization__user_recommendations": {"config": {"rules_weight": 0.0}}}}
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=no_rules)
    evaluation = metadata(result, "personalization__model_evaluation")
    assert evaluation["holdout_als refresh"] == evaluation["holdout_bpr refresh"] == "incremental"
    assert evaluation["evaluation_scope"].startswith("incremental")  # the gate scored the day's scope
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["published_beats_popularity"] is False
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert dg.AssetKey(["personalization", "user_recommendations"]) not in materialized
    assert table(tmp_path, RECS + " order by customer_id, rank") == before


def test_outputs_of_another_model_generation_are_rewritten(tmp_path):
    """The models take the day in a run that stops before their outputs; the next incremental run
    changes nobody (the day is in the saved models already), yet finds the LanceDB and DuckDB tables
    built from the previous model version and rewrites them instead of upserting nothing."""
    from rusket_assets.io import load_model, model_version

    defs = setup(tmp_path)
    models_only = {dg.AssetKey(["ingest", "raw_transactions"]), dg.AssetKey(["personalization", "als_model"]),
                   dg.AssetKey(["personalization", "bpr_model"])}  # fmt: skip
    with dg.DagsterInstance.ephemeral() as instance:
        assert run(defs, instance).success
        assert run(defs, instance, partition=LAST_DAY).success
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=models_only)
        first = job.execute_in_process(run_config={"ops": {k: v for k, v in RUN_CONFIG["ops"].items() if "_model" in k}},
                                       instance=instance, tags={REFRESH_TAG: "incremental"})  # fmt: skip
        assert metadata(first, "personalization__als_model")["customers_refreshed"] > 0
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"})
        assert result.success
    assert metadata(result, "personalization__als_model")["customers_refreshed"] == 0
    model = load_model(tmp_path / "models", "personalization__als_model")
    vec = metadata(result, "vectors__user_vectors")
    assert vec["refresh"] == "full" and vec["model_version"] == model_version(tmp_path / "models", "personalization__als_model")
    unit = model.user_factors / np.linalg.norm(model.user_factors, axis=1, keepdims=True)
    vectors = user_vectors(tmp_path)
    for row, label in enumerate(model.users.values):
        np.testing.assert_allclose(vectors[label][1], unit[row], rtol=1e-6, atol=1e-6)
    assert "rows_replaced" not in metadata(result, "personalization__user_factors")  # rewritten, not merged
    factors = dict(table(tmp_path, FACTORS))
    assert all(list(factors[label]) == model.user_factors[row].tolist() for row, label in enumerate(model.users.values))
    assert "rows_replaced" not in metadata(result, "personalization__user_recommendations")


def test_cross_sell_rescoring_rule_with_new_products(tmp_path):
    """After a fold-in that adds products, the customers _rows_to_rescore leaves out keep exactly the
    rows a full recompute gives them (random data, a new product in an existing and in a new category)."""
    from rusket_assets.assets.analytics import _rows_to_rescore
    from rusket_assets.incremental import Changes
    from rusket_core import ALS
    from rusket_core.chunks import iter_score_potential

    rng = np.random.default_rng(5)
    lines = pa.table({"customer_id": rng.integers(0, 300, 4000), "product_id": rng.integers(0, 40, 4000),
                      "quantity": rng.integers(1, 4, 4000).astype(float)})  # fmt: skip
    model = ALS.from_transactions(lines, "customer_id", "product_id", "quantity", factors=6, iterations=4, random_state=1).fit()
    mapping = pa.table({"product_id": np.arange(42), "category": [f"c{p % 7}" for p in range(41)] + ["c_new"]})

    def ranked(rows=None):
        chunks = list(iter_score_potential(model, mapping, n=2, rows=rows))
        return {(c, t): s for ch in chunks for c, t, s in zip(*(ch[k].to_pylist() for k in ("user_id", "target", "score")), strict=True)}

    before = ranked()
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"), publish_snapshot=False)
    stored = pa.table({"customer_id": [c for c, _ in before], "target": [t for _, t in before], "score": pa.array(list(before.values()), pa.float32())})
    warehouse.replace_table("analytics", "cross_sell_potential", stored)
    day = pa.table({"customer_id": [3, 4, 5, 6], "product_id": [40, 40, 41, 7], "quantity": [1.0, 2.0, 1.0, 1.0]})
    model.partial_fit(day)
    change = Changes(pa.array(["3", "4", "5", "6"]), pa.array(["40", "41"]), "v")
    rows = _rows_to_rescore(warehouse, model, change, mapping, n=2)
    assert {3, 4, 5, 6} <= set(model.users.values[rows]) and len(rows) < len(model.users)
    after = ranked()
    merged = {k: v for k, v in before.items() if k[0] not in set(model.users.values[rows])} | ranked(rows)
    assert merged.keys() == after.keys()
    assert all(abs(merged[k] - after[k]) <= 1e-5 * max(1.0, abs(after[k])) for k in after)
    # without the new products' rule (only the changed customers rescored) some rows would be stale
    stale = {k: v for k, v in before.items() if k[0] not in {3, 4, 5, 6}} | ranked(rows[np.isin(model.users.values[rows], [3, 4, 5, 6])])
    assert stale.keys() != after.keys()


def test_similar_items_recompute_rule_with_new_products(tmp_path):
    """After a fold-in adding products, the lists _items_to_recompute leaves out equal a full recompute."""
    from rusket_assets.assets.common import with_rank
    from rusket_assets.assets.personalization import _items_to_recompute
    from rusket_core import ALS

    rng = np.random.default_rng(6)
    lines = pa.table({"customer_id": rng.integers(0, 200, 3000), "product_id": rng.integers(0, 60, 3000),
                      "quantity": np.ones(3000)})  # fmt: skip
    model = ALS.from_transactions(lines, "customer_id", "product_id", "quantity", factors=5, iterations=4, random_state=2).fit()

    def lists(items=None):
        t = model.batch_similar_items(n=3, items=items, format="arrow")
        return {(a, b): s for a, b, s in zip(*(t[c].to_pylist() for c in t.column_names), strict=True)}

    before = lists()
    warehouse = Warehouse(path=str(tmp_path / "w.duckdb"), publish_snapshot=False)
    stored = pa.table({"product_id": [a for a, _ in before], "similar_product_id": [b for _, b in before],
                       "score": pa.array(list(before.values()), pa.float32())})  # fmt: skip
    warehouse.replace_table("personalization", "similar_items", with_rank(stored, "product_id"))
    model.partial_fit(pa.table({"customer_id": [1, 2, 3, 4], "product_id": [60, 60, 61, 61], "quantity": [1.0] * 4}))
    rows = _items_to_recompute(warehouse, model, pa.array(["60", "61"]), 3)
    labels = model.items.values[rows]
    assert {60, 61} <= set(labels) and len(rows) < len(model.items)
    after = lists()
    merged = {k: v for k, v in before.items() if k[0] not in set(labels)} | lists(labels)
    assert merged.keys() == after.keys()
    assert all(abs(merged[k] - after[k]) <= 1e-5 for k in after)



SATURATION = {dg.AssetKey(["ingest", "raw_transactions"]), dg.AssetKey(["personalization", "als_model"]),
              dg.AssetKey(["analytics", "customer_saturation"])}  # fmt: skip
SATURATION_ROWS = "select customer_id, n_distinct, share, decile from analytics.customer_saturation order by customer_id"


def _saturation_run(defs, instance, incremental: bool):
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=SATURATION)
    config = {"ops": {k: v for k, v in RUN_CONFIG["ops"].items() if k == "personalization__als_model"}}
    return job.execute_in_process(run_config=config, instance=instance, raise_on_error=False,
                                  tags={REFRESH_TAG: "incremental"} if incremental else {})  # fmt: skip


def _append_day(tmp: Path) -> set:
    """The store's day LAST_DAY appended to ingest.daily_orders, plus lines putting 40 old customers
    who did not buy that day into a category nobody bought before; returns the customers with new lines."""
    warehouse = Warehouse(path=str(tmp / "warehouse.duckdb"), publish_snapshot=False)
    day, _ = read_transactions(TransactionSource(store=STORE, location={"date_from": LAST_DAY}), warehouse)
    buyers = set(day["customer_id"].to_pylist())
    old = [c for (c,) in table(tmp, "select distinct customer_id from ingest.daily_orders order by 1") if c not in buyers][:40]
    extra = day.slice(0, 40).to_pylist()
    for row, customer in zip(extra, old, strict=True):
        row.update(customer_id=customer, category="a new category", basket_id=row["basket_id"] * 1000 + customer)
    lines = pa.concat_tables([day, pa.Table.from_pylist(extra, schema=day.schema)])
    with duckdb.connect(str(tmp / "warehouse.duckdb")) as con:
        con.register("day", lines)
        con.execute("insert into ingest.daily_orders by name select * from day")
    return buyers | set(old)


def test_incremental_customer_saturation_equals_a_full_recount(tmp_path):
    """After a day with new customers, new categories for old customers and a category nobody had,
    the merged table equals the library's full recount: counts, shares (the denominator grew) and
    deciles (boundaries moved for customers without new lines)."""
    from rusket_core import customer_saturation

    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert _saturation_run(defs, instance, incremental=False).success
        before = {r[0]: r for r in table(tmp_path, SATURATION_ROWS)}
        changed = _append_day(tmp_path)
        result = _saturation_run(defs, instance, incremental=True)
        assert result.success
    info = metadata(result, "analytics__customer_saturation")
    assert info["refresh"] == "incremental" and info["customers_changed"] == len(changed)
    lines = Warehouse(path=str(tmp_path / "warehouse.duckdb")).query(
        "select customer_id, category from ingest.raw_transactions where category is not null")
    full = customer_saturation(lines, user_col="customer_id", category_col="category", format="arrow").sort_by("customer_id")
    after = table(tmp_path, SATURATION_ROWS)
    assert after == list(zip(*(full[c].to_pylist() for c in full.column_names), strict=True))
    assert info["dagster/row_count"] == len(after)
    # what the test covers: new customers, more categories, every share moved, a decile moved without new lines
    assert {r[0] for r in after} - before.keys()
    assert any(r[1] > before[r[0]][1] for r in after if r[0] in before)
    assert all(r[2] < before[r[0]][2] for r in after if r[0] in before and r[1] == before[r[0]][1])
    assert any(r[3] != before[r[0]][3] for r in after if r[0] in before and r[0] not in changed)


def test_failed_saturation_merge_leaves_the_old_table(tmp_path, monkeypatch):
    """A failure before the merge's commit (after its delete, insert and update ran) rolls it all back."""
    import rusket_assets.incremental as incremental
    from rusket_assets.tables import transaction

    real = incremental.in_transaction

    def failing(con, statements):
        if not any("customer_saturation" in sql for sql, _ in statements):
            return real(con, statements)
        with transaction(con):
            for sql, params in statements:
                con.execute(sql, params)
            raise OSError("disk full")

    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        assert _saturation_run(defs, instance, incremental=False).success
        before = table(tmp_path, SATURATION_ROWS)
        _append_day(tmp_path)
        monkeypatch.setattr(incremental, "in_transaction", failing)
        result = _saturation_run(defs, instance, incremental=True)
    assert not result.success
    assert "disk full" in str(result.all_events)
    assert table(tmp_path, SATURATION_ROWS) == before


# the sample covers a quarter of the customers: their held-out lines are about 5% of all, shared path forced
SHARED = {"personalization__model_evaluation": {"config": {"shared_fit_max_share": 1.0, "sample_customers": 100}}}


def _check_shared_als(tmp: Path, split: dict) -> set:
    """The holdout ALS is trained on every line but the sampled customers' test pairs; the published
    ALS is it with the customers of those pairs re-solved exactly (numpy least squares) from their whole
    history, every other row and the known products' rows as they were. Returns the re-solved customers."""
    from rusket_assets.holdout_fit import holdout_model_name
    from rusket_assets.io import load_model
    from tests.library.test_foldin import _numpy_row

    holdout = load_model(tmp / "models", holdout_model_name("als"))
    published = load_model(tmp / "models", "personalization__als_model")
    lines = Warehouse(path=str(tmp / "warehouse.duckdb")).query(
        "select customer_id as c, product_id as p, quantity as q, hash(customer_id, 42::BIGINT) as hc, "
        "hash(customer_id, product_id, 42::BIGINT) % 1000000 as hp from ingest.daily_orders"
    ).to_pylist()
    held = [r for r in lines if r["hc"] <= split["cut"] and r["hp"] < 200_000]

    def pairs(model) -> set:
        enc = model.user_items
        users = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
        return set(zip(model.users.values[users].tolist(), model.items.values[enc.indices].tolist(), strict=True))

    held_pairs = {(r["c"], r["p"]) for r in held}
    assert pairs(holdout) == {(r["c"], r["p"]) for r in lines} - held_pairs
    assert pairs(published) - pairs(holdout) == held_pairs and held_pairs
    resolved = {r["c"] for r in held}
    at = {u: i for i, u in enumerate(holdout.users.values.tolist())}
    for i, user in enumerate(published.users.values.tolist()):
        if user not in resolved:
            np.testing.assert_array_equal(published.user_factors[i], holdout.user_factors[at[user]])
    n_known = len(holdout.items)
    assert published.items.values[:n_known].tolist() == holdout.items.values.tolist()
    np.testing.assert_array_equal(published.item_factors[:n_known], holdout.item_factors)
    item_at = {p: i for i, p in enumerate(published.items.values.tolist())}
    history: dict = {}
    for r in lines:
        if r["c"] in resolved:
            row = history.setdefault(r["c"], {})
            row[item_at[r["p"]]] = row.get(item_at[r["p"]], 0.0) + r["q"]
    params = RUN_CONFIG["ops"]["personalization__als_model"]["config"]
    for i, user in enumerate(published.users.values.tolist()):
        if user in resolved:
            exact = _numpy_row(published.item_factors, history[user], alpha=params["alpha"], reg=params["regularization"])
            np.testing.assert_allclose(published.user_factors[i], exact, rtol=1e-3, atol=1e-4)
    return resolved


def _published_rows(tmp: Path) -> dict:
    """Row index of each customer in the saved published ALS."""
    from rusket_assets.io import load_model

    users = load_model(tmp / "models", "personalization__als_model").users.values.tolist()
    return {c: i for i, c in enumerate(users)}


def _load(tmp: Path, name: str):
    from rusket_assets.io import load_model

    return load_model(tmp / "models", name)


def _pairs_of(model) -> set:
    enc = model.user_items
    users = np.repeat(np.arange(enc.n_rows), np.diff(enc.indptr))
    return set(zip(model.users.values[users].tolist(), model.items.values[enc.indices].tolist(), strict=True))


def _check_published_update(tmp: Path, name: str, before, day_lines: pa.Table, changed: set) -> None:
    """After an incremental run on the shared path: the published model is yesterday's with the day's lines
    folded in. Its pairs are every line's, its labels yesterday's with the new ones appended, and the rows of
    the known products and of the customers whose lines did not change (``changed``) are yesterday's, bit for
    bit, the others moved; for ALS the whole
    model equals the library's ``partial_fit`` of the day's lines into yesterday's model."""
    published, holdout = _load(tmp, f"personalization__{name}_model"), _load(tmp, f"personalization__model_evaluation__{name}")
    every = {(c, p) for c, p in table(tmp, "select customer_id, product_id from ingest.daily_orders")}
    assert _pairs_of(published) == every and _pairs_of(holdout) < every
    n_users, n_items = len(before.users), len(before.items)
    assert published.users.values[:n_users].tolist() == before.users.values.tolist()
    assert published.items.values[:n_items].tolist() == before.items.values.tolist()
    np.testing.assert_array_equal(published.item_factors[:n_items], before.item_factors)
    others = np.array([u not in changed for u in before.users.values.tolist()])
    assert others.any() and not others.all()
    np.testing.assert_array_equal(published.user_factors[:n_users][others], before.user_factors[others])
    assert not np.array_equal(published.user_factors[:n_users][~others], before.user_factors[~others])
    if name == "als":
        before.partial_fit(day_lines)
        assert published.users.values.tolist() == before.users.values.tolist()
        np.testing.assert_allclose(published.user_factors, before.user_factors, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(published.item_factors, before.item_factors, rtol=1e-4, atol=1e-5)


def test_one_fit_serves_the_published_and_the_holdout_models(tmp_path, monkeypatch):
    """Shared path: one fit per model kind (the holdout model, loaded by model_evaluation), the
    published model derived by fold-in; an incremental run updates the holdout and the published model
    of each kind from their saved versions (the day's lines folded in) and keeps the sample."""
    import json

    import rusket_assets.incremental as incremental
    from rusket_assets.holdout_fit import SPLIT_FILE

    config = {"ops": {**RUN_CONFIG["ops"], **SHARED}}
    defs = setup(tmp_path)
    with dg.DagsterInstance.ephemeral() as instance:
        full = run(defs, instance, config=config)
        assert full.success
        split = json.loads((tmp_path / "models" / SPLIT_FILE).read_text())["split"]
        for name in ("als", "bpr"):
            fit = metadata(full, f"personalization__{name}_model")
            assert fit["evaluation_fit"] == "shared" and 0 < fit["held_out_share"] < 0.1
        evaluation = metadata(full, "personalization__model_evaluation")
        assert evaluation["holdout_als fitted_by"] == "als_model" and evaluation["holdout_bpr fitted_by"] == "bpr_model"
        assert evaluation["evaluated_customers"] == evaluation["sampled_customers"] == 100
        _check_shared_als(tmp_path, split)
        assert run(defs, instance, partition=LAST_DAY).success
        rows_before = _published_rows(tmp_path)
        before = {name: _load(tmp_path, f"personalization__{name}_model") for name in ("als", "bpr")}
        update = incremental.update_model
        calls = []

        def counted(previous, *args):
            calls.append(type(previous).__name__)
            return update(previous, *args)

        monkeypatch.setattr(incremental, "update_model", counted)
        result = run(defs, instance, tags={REFRESH_TAG: "incremental"}, config=config)
        assert result.success
    # one update of each model: the holdout model's and the published model's, no fit
    assert sorted(calls) == ["ALS", "ALS", "BPR", "BPR"]
    assert json.loads((tmp_path / "models" / SPLIT_FILE).read_text())["split"] == split  # the sample is kept
    day_lines = Warehouse(path=str(tmp_path / "warehouse.duckdb")).query(
        f"select customer_id, product_id, quantity from ingest.daily_orders where ordered_at::DATE = '{LAST_DAY}'"
    )
    day = set(pc.unique(day_lines["customer_id"]).to_pylist())
    for name in ("als", "bpr"):
        meta = metadata(result, f"personalization__{name}_model")
        assert meta["evaluation_fit"] == "shared" and meta["holdout refresh"] == meta["refresh"] == "incremental"
        assert meta["published_from"] == "saved published model"
        # both updates compared only the day's customers (no older day changed)
        assert "days appended" in meta["diff_scope"] and "days appended" in meta["holdout diff_scope"]
        # ALS (quantity weights): every buyer's row grew; BPR (pairs): the buyers of a product new to them
        new_pairs = {(c, p) for c, p in zip(day_lines["customer_id"].to_pylist(), day_lines["product_id"].to_pylist(), strict=True)}
        changed = day if name == "als" else {c for c, p in new_pairs - _pairs_of(before[name])}
        assert meta["customers_refreshed"] == len(changed) > 0
        _check_published_update(tmp_path, name, before[name], day_lines, changed)
    evaluation = metadata(result, "personalization__model_evaluation")
    assert evaluation["holdout_als refresh"] == evaluation["holdout_bpr refresh"] == "incremental"
    assert evaluation["holdout_als fitted_by"] == "als_model"
    # the published rows that changed are the day's customers' (rows only appended: no index moved)
    refreshed = {int(c) for (c,) in table(tmp_path, "select id from personalization.refreshed_customers "
                                          "where model = 'personalization__als_model' and side = 'customer'")}  # fmt: skip
    assert refreshed == day
    rows_after = _published_rows(tmp_path)
    assert all(rows_after[c] == i for c, i in rows_before.items())
    assert metadata(result, "vectors__user_vectors")["refresh"] == "incremental"  # upserted, not rewritten
    checks = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["published_beats_popularity"]
