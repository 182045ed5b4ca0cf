"""What each stored column means (units, ranges, rank base): the Description column of the Catalog.

One place for every table the graph writes (DuckDB ``schema.table`` and the LanceDB vector tables);
``column_description`` is used wherever a ``TableSchema`` is built.
"""

from __future__ import annotations

# Columns that mean the same in every table that has them.
SHARED: dict[str, str] = {
    "customer_id": "Customer id as in the source (its type kept).",
    "product_id": "Product id as in the source (its type kept).",
    "product_name": "Product name from the source; empty when the source has none.",
    "category": "Product category from the source; empty when the source has none.",
    "rank": "Position within the group, 1 = best.",
    "vector": "ALS factors, FLOAT[factors]; the dot product of a customer and a product vector is their score.",
    "quantity": "Units bought (sum over the lines it covers).",
    "revenue": "Revenue in the source's currency (sum over the lines it covers).",
    "support": "Fraction of baskets containing the itemset, in (0, 1].",
}

SUPPORTS = {
    "antecedent_support": "Fraction of baskets containing the antecedents, in (0, 1].",
    "consequent_support": "Fraction of baskets containing the consequents, in (0, 1].",
    "lift": "Confidence divided by consequent support; 1 = independent, above 1 = bought together more than chance.",
    "leverage": "Support minus the product of both sides' supports, in [-0.25, 0.25]; 0 = independent.",
    "jaccard": "Baskets with both sides over baskets with either, in [0, 1].",
    "kulczynski": "Mean of the confidences in both directions, in [0, 1].",
}

TABLES: dict[str, dict[str, str]] = {
    "ingest.raw_transactions": {
        "basket_id": "Basket (order or invoice) id as in the source.",
        "quantity": "Units of the product on this order line.",
        "revenue": "Line revenue in the source's currency (price times quantity unless the source says otherwise).",
        "price": "Unit price in the source's currency; empty when the source has none.",
        "ordered_at": "Order time; empty when the source has none.",
    },
    "personalization.refreshed_customers": {
        "model": "Model whose last incremental update changed the row (store name, e.g. personalization__als_model).",
        "run_id": "Dagster run of that update.",
        "parent_version": "Saved model version the update started from (outputs built from another version are rewritten).",
        "side": "customer or product: which of the model's rows the id names.",
        "id": "Customer or product id as text; empty on the one row of a side the update left unchanged.",
    },
    "personalization.recommendation_rules": {
        "antecedents": "Rule antecedents user_recommendations was last built from (empty on the row naming the run).",
        "consequents": "Rule consequents (list of product ids).",
        "confidence": "Rule confidence then; a rule whose confidence changes refreshes the customers whose last basket holds its antecedents.",
        "run_id": "Dagster run that built user_recommendations from these rules.",
    },
    "ingest.products": {
        "category": "Most frequent category of the product's lines; empty when the source has none.",
        "price": "Median unit price over the product's lines, in the source's currency.",
        "n_baskets": "Distinct baskets containing the product.",
        "n_customers": "Distinct customers who bought the product.",
    },
    "baskets.frequent_itemsets": {
        "itemset": "Product ids bought together (a list).",
        "length": "Number of products in the itemset.",
        "count": "Number of baskets containing the itemset.",
    },
    "baskets.association_rules": {
        "antecedents": "Products already in the basket (list of product ids).",
        "consequents": "Products the rule predicts (list of product ids).",
        "support": "Fraction of baskets containing antecedents and consequents, in (0, 1].",
        "confidence": "Share of baskets with the antecedents that also hold the consequents, in (0, 1].",
        "conviction": "(1 - consequent support) / (1 - confidence), >= 0; infinite for confidence 1.",
        "zhangs_metric": "Zhang's association measure in [-1, 1]; above 0 = positive association.",
        "certainty": "Certainty factor in [-1, 1]; above 0 = the antecedents raise the consequents' odds.",
        **SUPPORTS,
    },
    "baskets.cart_addons": {
        "product_id": "Product in the cart.",
        "rank": "Position among the product's add-ons, 1 = best.",
        "addon_product_id": "Suggested add-on product id.",
        "score": "rules: confidence of the best rule, in (0, 1]; similar: mean cosine of ALS factors, in (0, 1]; "
        "popular: share of customers who bought it, in (0, 1].",
        "source": "Where the add-on comes from: rules, similar (ALS factors) or popular (fallback).",
    },
    "baskets.product_graph": {
        "community": "Louvain community of the product, 0 = largest.",
        "community_size": "Products in the community.",
        "pagerank": "PageRank in the lift-weighted rule graph; sums to 1 over the products.",
        "support": "Fraction of baskets containing the product, in (0, 1].",
        "rank_in_community": "Position by pagerank within the community, 1 = highest.",
        "is_gateway": "True for the community's highest-pagerank product.",
    },
    "personalization.user_factors": {},
    "personalization.item_factors": {},
    "personalization.model_evaluation": {
        "model": "Model scored: als, bpr, bpr_<other loss>, popularity (baseline).",
        "precision": "Precision@k on the holdout, in [0, 1] (share of the top k that were held out).",
        "recall": "Recall@k on the holdout, in [0, 1] (share of held-out items found in the top k).",
        "ndcg": "Normalised discounted cumulative gain@k, in [0, 1].",
        "map": "Mean average precision@k, in [0, 1].",
        "coverage": "Share of the catalogue appearing in some customer's top k, in [0, 1].",
        "k": "Cut-off of the ranking metrics.",
        "n_users": "Customers with held-out items (the metrics average over them).",
        "fit_seconds": "Seconds to refit the model on the training split.",
    },
    "personalization.similar_items": {
        "similar_product_id": "A similar product (never the product itself).",
        "score": "Cosine similarity of the two products' ALS factors, in [-1, 1].",
        "rank": "Position among the product's similar products, 1 = most similar.",
    },
    "personalization.user_recommendations": {
        "rank": "Position in the customer's list, 1 = best.",
        "product_id": "Recommended product (never one the customer already bought).",
        "score": "Blend of the two parts, each min-max normalised per customer: "
        "(1 - rules_weight) * model + rules_weight * rules, in [0, 1].",
        "model_score": "ALS score blended with BPR-embedding similarity, min-max normalised per customer to [0, 1]; "
        "empty when only the rules proposed the product.",
        "rule_score": "Confidence of the best rule for the customer's last basket, in (0, 1]; "
        "empty when no rule proposed the product.",
        "source": "Which part proposed the product: model, rules or model+rules.",
    },
    "analytics.customer_saturation": {
        "n_distinct": "Distinct categories (or products, without categories) the customer bought.",
        "share": "n_distinct over all distinct categories (or products), in (0, 1].",
        "decile": "1 = most saturated tenth of customers, 10 = least.",
    },
    "analytics.cross_sell_potential": {
        "target": "Category not bought yet (a product id when the source has no categories).",
        "score": "Best ALS score (customer · product vector) among the target's products; higher = more likely.",
        "rank": "Position among the customer's targets, 1 = highest score.",
    },
    "analytics.product_substitutes": {
        "product_a": "First product of the pair (the smaller id).",
        "product_b": "Second product of the pair.",
        "name_a": "Name of product_a.",
        "name_b": "Name of product_b.",
        "category_a": "Category of product_a.",
        "category_b": "Category of product_b.",
        "support_a": "Fraction of baskets containing product_a, in (0, 1].",
        "support_b": "Fraction of baskets containing product_b, in (0, 1].",
        "support": "Fraction of baskets containing both, in (0, 1].",
        "confidence_a_to_b": "Share of baskets with product_a that also hold product_b, in [0, 1].",
        "confidence_b_to_a": "Share of baskets with product_b that also hold product_a, in [0, 1].",
        **SUPPORTS,
    },
    "vectors.item_vectors": {
        "id": "Row number of the product in the model (0-based).",
        "label": "Product id as in the source.",
        "vector": "ALS product factors (unit length when normalize is on): search by cosine.",
    },
    "vectors.user_vectors": {
        "id": "Row number of the customer in the model (0-based).",
        "label": "Customer id as in the source.",
        "vector": "ALS customer factors (unit length when normalize is on): search by cosine.",
    },
}

TABLES["ingest.daily_orders"] = TABLES["ingest.raw_transactions"]  # the same standard columns, day by day


def column_description(table: str, column: str) -> str | None:
    """Meaning of ``column`` in ``table`` ("schema.table"); None when it is not documented."""
    return TABLES.get(table, {}).get(column) or SHARED.get(column)
