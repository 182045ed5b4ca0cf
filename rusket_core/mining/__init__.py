"""Market-basket mining: exact frequent itemsets (numba), association rules and basket add-ons."""

from rusket_core.mining.fpgrowth import FPGrowth, min_count_for, mine_csr
from rusket_core.mining.metrics import METRICS
from rusket_core.mining.rules import RULE_COLUMNS, association_rules

__all__ = ["FPGrowth", "association_rules", "mine_csr", "min_count_for", "METRICS", "RULE_COLUMNS"]
