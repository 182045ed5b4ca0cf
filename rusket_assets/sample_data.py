"""Bundled synthetic store: a deterministic, structured default data set for the pipeline.

The generator is vectorised numpy (no per-row Python loops) and seeded, so the same arguments give
the same order lines on every machine. Structure planted so that every asset has something real to
find:

- popularity skew: product popularity within a category follows a Zipf law, categories differ too;
- category affinities: categories form segments; each customer shops mostly in three favourite
  categories of one segment (what ALS/BPR pick up);
- complementary products: popular "anchor" products pull a partner from a related category into
  the basket (what association rules and cart add-ons find);
- substitutes: the second most popular product of a category is mostly dropped from baskets that
  hold the most popular one (lift below 1). Few such pairs stay frequent enough to become rules;
  at the default support the pairs ``find_substitutes`` reports are mostly popular products of
  different customer segments, which are also bought together less than chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

CATEGORY_NAMES = (
    "coffee", "tea", "bakery", "dairy", "cheese", "fruit", "vegetables", "meat", "fish", "frozen",
    "snacks", "sweets", "cereal", "pasta", "sauces", "spices", "oils", "canned", "drinks", "wine",
    "beer", "baby", "pet", "cleaning", "laundry", "paper", "bath", "hair", "skincare", "pharmacy",
    "kitchenware", "coffee gear", "tableware", "storage", "garden", "tools", "stationery", "toys",
    "books", "electronics",
)  # fmt: skip

START = np.datetime64("2025-10-01T00:00:00", "s")


@dataclass(frozen=True)
class StoreSpec:
    """Size and seed of the synthetic store."""

    n_customers: int = 20_000
    n_products: int = 2_000
    n_categories: int = 40
    n_days: int = 90
    n_lines: int = 300_000
    seed: int = 7


def _category_names(n: int) -> np.ndarray:
    base = list(CATEGORY_NAMES)
    names = [base[i % len(base)] + ("" if i < len(base) else f" {i // len(base) + 1}") for i in range(n)]
    return np.array(names, dtype=object)


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return rng.permutation(w)


def generate_products(spec: StoreSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Products sorted by category: id, name, category index, price and within-category popularity."""
    n_p, n_c = spec.n_products, spec.n_categories
    if n_c < 2 or n_p < 2 * n_c:
        raise ValueError(f"need n_categories >= 2 and n_products >= 2 * n_categories, got {n_p}, {n_c}")
    # Uneven category sizes, at least two products each.
    sizes = 2 + rng.multinomial(n_p - 2 * n_c, rng.dirichlet(np.full(n_c, 4.0)))
    cat = np.repeat(np.arange(n_c), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    rank_in_cat = np.arange(n_p) - starts[cat]
    popularity = np.empty(n_p)
    for c in range(n_c):  # one numpy call per category (40), not per row
        popularity[starts[c] : starts[c + 1]] = _zipf(rng, sizes[c], 1.1)
    popularity /= np.bincount(cat, weights=popularity)[cat]
    base_price = rng.lognormal(2.0, 0.7, n_c)
    price = np.round(base_price[cat] * rng.lognormal(0.0, 0.35, n_p), 2).clip(0.29)
    names = _category_names(n_c)
    product_id = [f"SKU-{i:05d}" for i in range(1, n_p + 1)]
    product_name = [f"{names[c]} #{r + 1}" for c, r in zip(cat.tolist(), rank_in_cat.tolist(), strict=True)]
    return {
        "product_id": pa.array(product_id, pa.string()),
        "product_name": pa.array(product_name, pa.string()),
        "category_index": cat,
        "category": pa.array(names.tolist(), pa.string()),
        "price": price,
        "popularity": popularity,
        "starts": starts,
    }


def generate_store(spec: StoreSpec | None = None, part: int | None = None, **overrides: int) -> pa.Table:
    """Order lines of the synthetic store as a pyarrow Table.

    Columns: order_id (int64), customer_id (int64), product_id (string), product_name (string),
    category (string), quantity (int32), price (float64), revenue (float64), ordered_at
    (timestamp[s]). One row per (order, product); ``n_lines`` is approximate.

    ``part`` makes one chunk of a larger store: the same products, customers and affinities for
    every part, orders drawn from their own seed and numbered from ``part * 10**9 + 1`` (so chunks
    written one after another form one store without holding it in memory).
    """
    spec = spec or StoreSpec()
    if overrides:
        spec = StoreSpec(**{**spec.__dict__, **overrides})
    rng = np.random.default_rng(spec.seed)
    # order-level draws: the structure's generator for one whole store, a part's own otherwise
    orng = rng if part is None else np.random.default_rng([spec.seed, int(part)])
    prod = generate_products(spec, rng)
    n_p, n_c, n_u = spec.n_products, spec.n_categories, spec.n_customers
    cat_of = prod["category_index"]
    starts = prod["starts"]

    # Category popularity and segments (groups of related categories).
    cat_pop = _zipf(rng, n_c, 0.6)
    cat_pop /= cat_pop.sum()
    n_seg = max(2, n_c // 5)
    seg_of_cat = np.arange(n_c) % n_seg

    # Customers: one segment each, three favourite categories inside it, skewed activity.
    seg = rng.integers(0, n_seg, n_u)
    cats_by_seg = [np.flatnonzero(seg_of_cat == s) for s in range(n_seg)]
    seg_size = np.array([len(c) for c in cats_by_seg])
    seg_table = np.full((n_seg, seg_size.max()), -1)
    for s, cs in enumerate(cats_by_seg):
        seg_table[s, : len(cs)] = cs
    keys = rng.random((n_u, seg_size.max()))
    keys[seg_table[seg] < 0] = np.inf
    fav = np.take_along_axis(seg_table[seg], np.argsort(keys, axis=1)[:, :3], axis=1)
    fav = np.where(fav < 0, fav[:, :1], fav)
    fav_w = np.array([0.45, 0.3, 0.25])
    activity = rng.lognormal(0.0, 0.9, n_u)

    # Orders: customer by activity, time uniform over the window, ids in time order.
    mean_base_lines = 2.8
    n_orders = max(1, int(spec.n_lines / (mean_base_lines * 1.27)))
    # Every customer orders at least once (when there are enough orders); the rest follow activity.
    first = orng.permutation(n_u)[: min(n_u, n_orders)]
    extra = orng.choice(n_u, size=n_orders - len(first), p=activity / activity.sum())
    customer = orng.permutation(np.concatenate([first, extra]))
    seconds = np.sort(orng.integers(0, spec.n_days * 86_400, n_orders))
    size = 1 + orng.poisson(mean_base_lines - 1.0, n_orders)
    line_order = np.repeat(np.arange(n_orders), size)
    line_cust = customer[line_order]

    # Base lines: favourite category (85%) or any category by popularity, then product by Zipf.
    n_lines = len(line_order)
    pick_fav = orng.random(n_lines) < 0.85
    fav_slot = np.searchsorted(np.cumsum(fav_w), orng.random(n_lines) * fav_w.sum(), side="right")
    line_cat = np.where(
        pick_fav,
        fav[line_cust, np.minimum(fav_slot, 2)],
        np.searchsorted(np.cumsum(cat_pop), orng.random(n_lines) * 0.999999, side="right"),
    )
    # Popularity sums to 1 within each category and products are sorted by category, so the running
    # sum is (category index + share of the category up to and including the product).
    cum = np.cumsum(prod["popularity"])
    u = orng.random(n_lines) * 0.999999
    line_prod = np.searchsorted(cum, line_cat + u, side="left")
    line_prod = np.clip(line_prod, starts[line_cat], starts[line_cat + 1] - 1)

    # Complements: popular anchors pull a partner from another category of the same segment.
    order_pop = np.argsort(-prod["popularity"] * cat_pop[cat_of])
    anchors = order_pop[: max(1, n_p // 10)]
    partner_cat = np.array([rng.choice(cats_by_seg[seg_of_cat[cat_of[a]]]) for a in anchors])
    partner_cat = np.where(partner_cat == cat_of[anchors], (partner_cat + n_seg) % n_c, partner_cat)
    partner = starts[partner_cat] + rng.integers(0, 3, len(anchors)).clip(
        max=starts[partner_cat + 1] - starts[partner_cat] - 1
    )
    partner_of = np.full(n_p, -1)
    partner_of[anchors] = partner
    has_partner = partner_of[line_prod] >= 0
    add = has_partner & (orng.random(n_lines) < 0.6)
    line_order = np.concatenate([line_order, line_order[add]])
    line_prod = np.concatenate([line_prod, partner_of[line_prod[add]]])

    # One row per (order, product).
    key = np.sort(line_order.astype(np.int64) * n_p + line_prod)
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    line_order, line_prod = key // n_p, key % n_p

    # Substitutes: for pairs of popular products of one category, drop the second product from
    # most baskets that already hold the first.
    subs_a, subs_b = [], []
    for c in np.argsort(-cat_pop)[: max(1, n_c // 2)]:
        members = np.arange(starts[c], starts[c + 1])
        top = members[np.argsort(-prod["popularity"][members])][:2]
        if len(top) == 2:
            subs_a.append(top[0])
            subs_b.append(top[1])
    sub_of = np.full(n_p, -1)
    sub_of[np.array(subs_b, dtype=np.int64)] = np.array(subs_a, dtype=np.int64)
    is_b = sub_of[line_prod] >= 0
    wanted = line_order[is_b] * n_p + sub_of[line_prod[is_b]]
    has_a = key[np.searchsorted(key, wanted).clip(max=len(key) - 1)] == wanted
    drop = np.zeros(len(key), dtype=bool)
    drop[np.flatnonzero(is_b)[has_a & (orng.random(len(has_a)) < 0.8)]] = True
    line_order, line_prod = line_order[~drop], line_prod[~drop]

    quantity = orng.geometric(0.65, len(line_order)).astype(np.int32)
    price = prod["price"][line_prod]
    ordered_at = START + seconds[line_order].astype("timedelta64[s]")
    return pa.table(
        {
            "order_id": pa.array(line_order + 1 + (part or 0) * 10**9, pa.int64()),
            "customer_id": pa.array(customer[line_order] + 100_001, pa.int64()),
            "product_id": prod["product_id"].take(line_prod),
            "product_name": prod["product_name"].take(line_prod),
            "category": prod["category"].take(cat_of[line_prod]),
            "quantity": pa.array(quantity, pa.int32()),
            "price": pa.array(price, pa.float64()),
            "revenue": pa.array(np.round(quantity * price, 2), pa.float64()),
            "ordered_at": pa.array(ordered_at, pa.timestamp("s")),
        }
    )
